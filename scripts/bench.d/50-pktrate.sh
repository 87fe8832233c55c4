#!/usr/bin/env bash
# Packet rate: frames/s forwarded by xdp_lb (established flows, new TCP and
# UDP flows, a 90/10 mix) on the veth rig, next to xdp_swap as the ceiling
# in the same run, and the programs' in-path ns/packet from the kernel's BPF
# run-time statistics (BenchmarkPacketRate, needs BPF_PROG_RUN live frames:
# it skips where the kernel refuses them); then the same rows' in-path
# ns/packet with the frames sent through a packet socket
# (BenchmarkPacketPath, runs everywhere). Needs root (network namespace,
# XDP).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
	echo "pktrate: skipped (needs root)"
	exit 0
fi
go test -run '^$' -bench 'Packet(Rate|Path)' -benchtime 1x ./internal/lab/ | grep -v '^goos\|^goarch\|^pkg\|^cpu'
