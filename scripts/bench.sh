#!/usr/bin/env bash
# Runs every benchmark docs/performance.md reports: each
# scripts/bench.d/*.sh in name order. BENCH=NAME runs only the files whose
# name contains NAME (e.g. BENCH=maglev make bench).
set -euo pipefail
cd "$(dirname "$0")/.."
for f in scripts/bench.d/*.sh; do
	[ -e "$f" ] || continue
	case "$(basename "$f")" in *"${BENCH:-}"*) ;; *) continue ;; esac
	echo "== $(basename "$f" .sh)"
	bash "$f"
done
