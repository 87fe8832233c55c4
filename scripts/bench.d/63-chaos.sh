#!/usr/bin/env bash
# Resilience under failure (docs/proxy.md, "Chaos figures"): the xlb proxy in
# front of three loopback backends (healthy, failing 50% with 503, hanging),
# round-robin, under open-loop load from bench/l7/loadgen, with breakers,
# retries, per-try timeout and retry budget all on, then each off in turn.
# One row per run: client error rate, p50/p99 of the successful requests
# (from their scheduled send time), requests the healthy backend got per
# client request, its peak concurrency, and attempts per client request.
# Only 127.0.0.1 ports picked by the kernel are used; everything started is
# stopped before the next run and the binaries' directory removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

tmp=$(mktemp -d /tmp/xlb-chaos.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/loadgen" ./bench/l7/loadgen
go build -o "$tmp/chaos" ./bench/l7/chaos
"$tmp/chaos" -loadgen "$tmp/loadgen" -rate "${CHAOS_RATE:-500}" -duration "${CHAOS_DURATION:-10s}" \
	-conns "${CHAOS_CONNS:-256}" ${CHAOS_ONLY:+-only "$CHAOS_ONLY"}
