#!/usr/bin/env bash
# Packet rate: frames/s forwarded by xdp_lb (established and new flows) on
# the veth rig, next to xdp_swap as the ceiling in the same run, and the
# programs' in-path ns/packet from the kernel's BPF run-time statistics.
# Needs root (network namespace, XDP, BPF_PROG_RUN live frames).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
	echo "pktrate: skipped (needs root)"
	exit 0
fi
go test -run '^$' -bench 'PacketRate' -benchtime 1x ./internal/lab/ | grep -v '^goos\|^goarch\|^pkg\|^cpu'
