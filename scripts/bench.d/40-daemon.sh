#!/usr/bin/env bash
# Control plane: 1,000 VIPs x 100 backends from config, one backend shared by
# all VIPs flips unhealthy/healthy; time from the event to all tables
# installed (target 100 ms; docs/performance.md) and the CPU time a flip takes,
# next to one Maglev build of the same set, and the
# daemon's heap. On the in-memory datapath and, as root, on the real loader
# sized for the 100,000 VIP-backend pairs (loader Options.MaxBackends; also
# reports the kernel memory of its maps, 1,000 inner tables included); and
# the cost of one API change at full scale.
set -euo pipefail
go test -run '^$' -bench 'BenchmarkScale' -benchtime 10x ./healthd/
