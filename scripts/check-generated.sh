#!/usr/bin/env bash
# Rebuilds the bpf2go output in a scratch copy and fails if it differs from
# what is committed, so the objects in loader/ always match bpf/.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls bpf/*.c >/dev/null 2>&1; then
	echo "check-generated: no BPF sources yet"
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -a loader "$tmp/before"
go generate ./loader/...
if ! diff -r "$tmp/before" loader >"$tmp/diff"; then
	cat "$tmp/diff" | head -20
	rm -rf loader && cp -a "$tmp/before" loader
	echo "check-generated: loader/ is stale; run 'make generate' and commit the result" >&2
	exit 1
fi
echo "check-generated: loader/ matches bpf/"
