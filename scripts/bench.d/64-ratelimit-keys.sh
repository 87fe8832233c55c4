#!/usr/bin/env bash
# One million rate-limit keys inserted and expiring (docs/performance.md,
# "Rate-limit tables: one million keys"): the longest wait of a request of
# another key, sweep lock holds, GC pauses and map growth, next to the same
# rig without the limiter in the loop (busy) and without the inserter
# (idle), measured in the same run. Wall times: on a busy machine they
# include being descheduled; the "unpreempted" and "steady" figures leave
# that out.
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -run '^$' -bench MillionKeys -benchtime "${RATELIMIT_BENCHTIME:-3x}" ./proxy/middleware/ratelimit |
	grep -E '^(Benchmark|ok|FAIL)'
