#!/usr/bin/env bash
# Removes what a crashed test, lab or demo may have left behind: test
# namespaces (xlbt-*), lab namespaces (xlb-*) and their pins.
set -uo pipefail
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^xlbt?-'); do
	ip netns delete "$ns" && echo "deleted netns $ns"
done
