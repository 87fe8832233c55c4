#!/usr/bin/env bash
# XDP program cost: ns per packet of each xdp_lb path with BPF_PROG_RUN,
# repeat = 1, in a loop of 200000 calls per path, the thread pinned to one
# CPU, next to the minimal MAC-swapping xdp_swap measured the same way in the
# same run (DESIGN.md, Measuring); then the established path in a hot loop
# (BenchmarkXDPHot: its work apart from memory). Needs root. XLB_BENCH_CALLS
# changes the number of calls; XLB_PERCPU_LRU=1 measures the per-CPU LRU
# option.
set -euo pipefail
go test -count=1 -run '^$' -bench '^BenchmarkXDP(Cost|Hot)$' -benchtime=1x ./loader/ | grep -v '^\(goos\|goarch\|pkg\|cpu\|PASS\|ok\)'
