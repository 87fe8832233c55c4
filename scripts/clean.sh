#!/usr/bin/env bash
# Removes what a crashed test, lab or demo may have left behind: lab
# namespaces (xlb-*) and test namespaces (xlbt-PID-*) whose test process is
# gone, the processes still running inside them, their pins under
# /sys/fs/bpf and the lab's state under /run. The daemon's own pin
# directory (/sys/fs/bpf/xlb) is not touched.
set -uo pipefail

# owner_alive NAME: true when NAME is a test namespace whose test still runs.
owner_alive() {
	local pid
	case "$1" in
	xlbt-*)
		pid=${1#xlbt-}
		pid=${pid%%-*}
		[[ "$pid" =~ ^[0-9]+$ ]] && [ -d "/proc/$pid" ]
		;;
	*) return 1 ;;
	esac
}

for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^xlbt?-'); do
	if owner_alive "$ns"; then
		echo "kept netns $ns (its test is running)"
		continue
	fi
	pids=$(ip netns pids "$ns" 2>/dev/null || true)
	if [ -n "$pids" ]; then
		kill $pids 2>/dev/null || true
		sleep 0.5
		kill -9 $pids 2>/dev/null || true
		echo "stopped processes in $ns: $pids"
	fi
	ip netns delete "$ns" && echo "deleted netns $ns"
done

for d in /sys/fs/bpf/xlb-* /sys/fs/bpf/xlbt-* /run/xlb-lab /run/xlbt-*; do
	[ -e "$d" ] || continue
	if owner_alive "$(basename "$d")"; then
		continue
	fi
	rm -rf "$d" && echo "removed $d"
done
