#!/usr/bin/env bash
# Health checking: 10,000 TCP checks a second (10,000 backends at a 1s
# interval) against loopback listeners in a separate process. Reports the
# checker's CPU as a share of one core (budget: under 25%), split into user
# and system time, its CPU per check next to bare connect loops at the same
# rate measured in the same run, and how evenly the check starts spread.
# XLB_HEALTH_BENCH_SECONDS (default 10) sets the measured time.
set -euo pipefail
go test -run '^$' -bench 'BenchmarkProber10kTCP' -benchtime=1x ./healthd/check/
