#!/usr/bin/env bash
# The lab demo (make demo): brings up a client, a balancer running "xlb
# daemon" and three backends in network namespaces, sends 100 new TCP
# connections a second to the VIP and shows live how they spread; then
# drains one backend (its share drops to zero while a connection opened
# before keeps answering), stops the server of another (health checks take
# it out), restores both; then the L7 act: "xlb proxy" runs on every backend
# behind the VIP's port 8080 with a per-client limit shared through Redis,
# and one client is limited with 429 while another is served. Then it tears
# everything down. About a minute and a half.
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
echo "== xlb lab up: client, balancer lb1 (xlb daemon), backends be1..be3 (each with xlb proxy on 203.0.113.10:8080)"
"$XLB" lab up --backends 3 --check-interval 500ms --l7 --l7-redis --l7-rate 5 --l7-burst 5
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

echo
echo "== L7 act: xlb proxy on each backend behind 203.0.113.10:8080, per-client limit 5/s (burst 5) shared through Redis"
echo "   direct server return shows the proxies each client's own address: no X-Forwarded-For, no PROXY protocol"
ip -n xlb-client addr add 198.51.100.201/24 dev eth0
ip -n xlb-client addr add 198.51.100.202/24 dev eth0
# get SOURCE N: N requests from SOURCE on new connections; prints the statuses
# and the proxies that answered.
get() {
	local src=$1 n=$2 i
	for i in $(seq 1 "$n"); do
		nsenter --net=/run/netns/xlb-client curl -s -o /dev/null --interface "$src" \
			-w '%{http_code} %header{x-proxy}\n' http://203.0.113.10:8080/limited
	done
}
a=$(get 198.51.100.201 30)
b=$(get 198.51.100.202 3)
a_ok=$(grep -c '^200' <<<"$a" || true)
a_limited=$(grep -c '^429' <<<"$a" || true)
a_proxies=$(awk '$1 == 200 {print $2}' <<<"$a" | sort | uniq -c | awk '{printf "%s%s:%s", (NR > 1 ? " " : ""), $2, $1}')
b_ok=$(grep -c '^200' <<<"$b" || true)
echo "client 198.51.100.201, 30 requests in a row: $a_ok answered 200 (by proxies $a_proxies), $a_limited limited with 429"
echo "client 198.51.100.202, 3 requests:          $b_ok answered 200"
if [ "$a_limited" -eq 0 ] || [ "$b_ok" -ne 3 ]; then
	echo "demo: expected client .201 limited and client .202 served" >&2
	exit 1
fi
