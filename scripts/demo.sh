#!/usr/bin/env bash
# The lab demo (make demo): brings up a client, a balancer running "xlb
# daemon" and three backends in network namespaces, sends 100 new TCP
# connections a second to the VIP and shows live how they spread; then
# drains one backend (its share drops to zero while a connection opened
# before keeps answering), stops the server of another (health checks take
# it out), restores both and tears everything down. About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "demo: run as root: it creates network namespaces and attaches XDP programs" >&2
	exit 1
fi
XLB=${XLB:-bin/xlb}
[ -x "$XLB" ] || { echo "demo: $XLB missing; run 'make build' (or 'make demo')" >&2; exit 1; }

STATE=/run/xlb-lab/xlb
SOCK=$STATE/lb1/xlb.sock
VIP=203.0.113.10:7/tcp
traffic=""

cleanup() {
	trap - EXIT INT TERM
	if [ -n "$traffic" ]; then
		kill -INT "$traffic" 2>/dev/null || true
		wait "$traffic" 2>/dev/null || true
	fi
	echo
	echo "== tearing down"
	"$XLB" lab down || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

phase() { echo "$*" >"$STATE/phase"; }
# lbcli runs an xlb client command inside the balancer's namespace.
lbcli() { nsenter --net=/run/netns/xlb-lb1 "$XLB" "$@" --socket "$SOCK"; }
healthy() { lbcli backend list "$VIP" -o json | grep -c '"health": "healthy"' || true; }
wait_healthy() {
	local want=$1 i
	for i in $(seq 1 100); do
		[ "$(healthy)" -eq "$want" ] && return 0
		sleep 0.1
	done
	echo "demo: expected $want healthy backends, have $(healthy)" >&2
	return 1
}

"$XLB" lab down >/dev/null 2>&1 || true # leftovers of an interrupted run
echo "== xlb lab up: client, balancer lb1 (xlb daemon), backends be1..be3"
"$XLB" lab up --backends 3 --check-interval 500ms
wait_healthy 3

echo
echo "== 100 new connections/s from the client to $VIP, and one long-lived connection"
phase "all three backends active and healthy: each gets about a third"
"$XLB" lab traffic --rate 100 --hold &
traffic=$!
sleep 8

held=$(cat "$STATE/traffic.held")
held_addr=198.51.100.$((10 + ${held#be}))
phase "draining $held ($held_addr): no new connections; the long-lived one on it keeps answering"
lbcli backend drain "$VIP" "$held_addr" --timeout 5m >/dev/null
sleep 10

other=be1
[ "$held" = be1 ] && other=be2
phase "stopped the server on $other: its connections fail until health checks (every 0.5s, fall 2) take it out"
"$XLB" lab server stop "$other"
sleep 10

phase "restored: $held undrained, server on $other started (back after rise 2)"
lbcli backend undrain "$VIP" "$held_addr" >/dev/null
"$XLB" lab server start "$other"
sleep 10

phase "done"
sleep 1
kill -INT "$traffic"
status=0
wait "$traffic" || status=$?
traffic=""
if [ "$status" -ne 0 ]; then
	echo "demo: the long-lived connection failed" >&2
	exit 1
fi
echo
echo "== the long-lived connection to $held answered throughout"
