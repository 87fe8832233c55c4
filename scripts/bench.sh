#!/usr/bin/env bash
# Runs every benchmark the README's performance section reports.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== Maglev table build (vs github.com/kkdai/maglev in the same run)"
go test -run '^$' -bench . -benchmem ./maglev/
