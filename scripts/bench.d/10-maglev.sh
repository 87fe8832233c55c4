#!/usr/bin/env bash
# Maglev table build, next to github.com/kkdai/maglev v0.2.0 on the same inputs
# in the same `go test -bench` run, and the disruption figures. With the
# default -benchtime=1s kkdai's N=1000 build (about half a second or more and
# 530 MB) runs only once or twice, so this takes well under a minute.
set -euo pipefail
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -run '^$' -bench '^Benchmark(Build|Builder|Kkdai|VsKkdai)$' -benchmem \
	-benchtime "${MAGLEV_BENCHTIME:-1s}" ./maglev/ | tee "$out"
# 500 removals: at N = 100, each backend of each of the five Key sets once.
go test -run '^$' -bench '^BenchmarkDisruption$' -benchtime 500x ./maglev/ | grep '^Benchmark'
# Ratios: kkdai ns/op over ours at the same N and M.
awk '
	/^Benchmark(Build|Builder|Kkdai)\// {
		split($1, p, "/"); name = substr(p[1], 10); key = p[2] "/" p[3]; sub(/-[0-9]+$/, "", key)
		ns[name, key] = $3; keys[key] = 1
	}
	END {
		print ""
		printf "%-16s %14s %14s %14s %10s %10s\n", "maglev build", "kkdai ns/op", "Build ns/op", "Builder ns/op", "vs Build", "vs Builder"
		n = split("N=10/M=65537 N=100/M=65537 N=1000/M=65537 N=1000/M=1048573", order, " ")
		for (i = 1; i <= n; i++) {
			k = order[i]
			if (!((("Build", k) in ns))) continue
			if (("Kkdai", k) in ns)
				printf "%-16s %14.0f %14.0f %14.0f %9.0fx %9.0fx\n", k, ns["Kkdai", k], ns["Build", k], ns["Builder", k], ns["Kkdai", k] / ns["Build", k], ns["Kkdai", k] / ns["Builder", k]
			else
				printf "%-16s %14s %14.0f %14.0f %10s %10s\n", k, "-", ns["Build", k], ns["Builder", k], "-", "-"
		}
	}' "$out"
