#!/usr/bin/env bash
# Control plane: 1,000 VIPs x 100 backends from config, one backend shared by
# all VIPs flips unhealthy/healthy; time from the event to all tables
# installed (budget < 1 s), next to one Maglev build of the same set, and the
# daemon's heap. In-memory datapath at full scale (the loader's maps hold
# 4,095 backend IDs); the real loader with 40 VIPs x 100 backends when root;
# and the cost of one API change at full scale.
set -euo pipefail
go test -run '^$' -bench 'BenchmarkScale' -benchtime 10x ./healthd/
