#!/usr/bin/env bash
# Maglev table build, next to github.com/kkdai/maglev in the same run.
set -euo pipefail
go test -run '^$' -bench . -benchmem ./maglev/
