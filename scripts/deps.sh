#!/usr/bin/env bash
# Installs the Debian packages xlb needs to build and test, when missing.
# Usage: scripts/deps.sh [build|bench]   (build is the default)
#   build: clang, llvm, libbpf headers, the network tools the tests use,
#          redis-server (the shared rate-limit tests start their own), frr
#          (the router of the fleet tests, whose daemons the tests run) and
#          what the packaging, rules and status-page tests run: systemd
#          (systemd-analyze), prometheus (promtool), chromium (headless),
#          zsh and fish (shell completion)
#   bench: additionally the L7 peers and load generator (nginx, haproxy, caddy,
#          wrk) and perf (system calls per request)
set -euo pipefail

want=(clang llvm libbpf-dev iproute2 ethtool iputils-ping util-linux curl redis-server frr systemd prometheus chromium zsh fish)
if [ "${1:-build}" = bench ]; then
	want+=(nginx haproxy caddy wrk linux-perf)
fi

missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "missing packages: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
	exit 1
fi
echo "installing: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts nginx, haproxy, redis, frr and prometheus on install; the
# tests and benchmarks run their own (of prometheus, only promtool).
for s in nginx haproxy caddy redis-server frr prometheus; do
	if [[ " ${missing[*]} " == *" $s "* ]]; then
		systemctl disable --now "$s" >/dev/null 2>&1 || service "$s" stop >/dev/null 2>&1 || true
	fi
done
