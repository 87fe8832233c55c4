#!/usr/bin/env bash
# Rebuilds the bpf2go output from bpf/ in a scratch copy of the module and
# fails if it differs from what is committed in loader/. The working tree is
# never written to.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls bpf/*.c >/dev/null 2>&1; then
	echo "check-generated: no BPF sources yet"
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -a go.mod go.sum bpf loader "$tmp/"
(cd "$tmp" && go generate ./loader/...)
if ! diff -r loader "$tmp/loader" >"$tmp/diff"; then
	head -20 "$tmp/diff"
	echo "check-generated: loader/ is stale; run 'make generate' and commit the result" >&2
	exit 1
fi
echo "check-generated: loader/ matches bpf/"
