#!/usr/bin/env bash
# L7 proxy benchmark (docs/performance.md, "L7 proxy"; method in DESIGN.md,
# Measuring, L7). The same job for every proxy: one route, two backends
# (nginx, one worker each, `return 200`), HTTP/1.1 keep-alive on both sides,
# X-Forwarded-For added, no access log. Each proxy runs alone on CPU
# L7_PROXY_CPU (Go programs with GOMAXPROCS=1); wrk, the open-loop generator
# and the backends share CPU L7_LOAD_CPU. For every proxy: a warm-up, then
# L7_RUNS closed-loop wrk runs (medians of requests/s, p50, p99, and the
# proxy's CPU time per request = utime+stime from /proc ÷ requests, and its
# system calls per request counted by perf: most of a proxy's CPU time here
# is in the kernel, and a read that finds nothing is a call wasted), then
# open-loop runs at 50% and 80% of its own maximum for tail latency. The xlb
# proxy runs twice: the same job, and with features on (sticky cookies when
# the config supports them, header rewriting, JSON access log to a file),
# and with a per-client rate limit that never triggers, local and shared
# through a redis-server on 127.0.0.1:39183 (on the load CPU).
# Only 127.0.0.1 ports 39180-39183 are used; every process started is killed
# and the temporary directory removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${L7_RUNS:-3}
DUR=${L7_DURATION:-5}          # seconds per closed-loop run
OPEN_DUR=${L7_OPEN_DURATION:-5} # seconds per open-loop run
CONNS=${L7_CONNS:-64}          # client connections
PROXY_CPU=${L7_PROXY_CPU:-0}
LOAD_CPU=${L7_LOAD_CPU:-1}
ONLY=${L7_ONLY:-}              # e.g. "nginx xlb": run only these rows
LISTEN=127.0.0.1:39180
B1=127.0.0.1:39181
B2=127.0.0.1:39182
REDIS_PORT=39183

echo "backend selection, sticky cookie and outlier checks (Go benchmarks: ns and allocations per call)"
go test -run '^$' -bench . -benchmem -benchtime 200ms ./proxy/balance/ ./proxy/sticky/ ./proxy/outlier/ |
	grep -E '^(Benchmark|ok|FAIL)'

scripts/deps.sh bench

tmp=$(mktemp -d /tmp/xlb-l7.XXXXXX)
chmod 755 "$tmp" # nginx workers run as nobody
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for port in 39180 39181 39182 $REDIS_PORT; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "60-l7: port $port on 127.0.0.1 is in use; stop whatever listens there" >&2
		exit 1
	fi
done

render() { # template -> $tmp/name, with placeholders filled
	sed -e "s|@DIR@|$tmp|g" -e "s|@LISTEN@|${3:-$LISTEN}|g" -e "s|@B1@|$B1|g" -e "s|@B2@|$B2|g" \
		-e "s|@NAME@|${4:-x}|g" "bench/l7/conf/$1" >"$tmp/$2"
}

wait_port() { # host:port
	local host=${1%:*} port=${1##*:}
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "60-l7: nothing listens on $1 after 10s" >&2
	return 1
}

get200() { # host:port: one GET, true when the answer is 200
	local status
	status=$(
		exec 3<>"/dev/tcp/${1%:*}/${1##*:}"
		printf 'GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&3
		head -n1 <&3
	) || return 1
	[[ "$status" == "HTTP/1."?" 200"* ]]
}

# start NAME CMD...: runs CMD in the background, logging to $tmp/NAME.log;
# sets $started to its PID.
start() {
	local name=$1
	shift
	"$@" >"$tmp/$name.log" 2>&1 &
	started=$!
	pids+=("$started")
}

stop() { # PID
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

clk=$(getconf CLK_TCK)
# cpu_ticks PID: utime+stime of the process and its children (nginx's
# workers), in clock ticks.
cpu_ticks() {
	local total=0 p t
	for p in $(procs "$1" | tr , ' '); do
		[ -r "/proc/$p/stat" ] || continue
		t=$(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')
		total=$((total + t))
	done
	echo "$total"
}

# procs PID: the process and its children (nginx's workers), comma-separated.
procs() {
	local list=$1 p
	for p in $(pgrep -P "$1" || true); do list+=",$p"; done
	echo "$list"
}

have_perf=0
if perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; then
	have_perf=1
else
	echo "60-l7: perf cannot count system calls here; that column stays empty" >&2
fi

to_us() { # wrk latency like 812.00us, 1.53ms, 2.01s -> microseconds
	awk -v v="$1" 'BEGIN {
		n = v + 0
		if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n
	}'
}

median() {
	printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'
}

echo "building the reference proxy, the load generator and xlb"
go build -o "$tmp/refproxy" ./bench/l7/refproxy
go build -o "$tmp/loadgen" ./bench/l7/loadgen
have_xlb=0
if ! go build -o "$tmp/xlb" ./cmd/xlb 2>"$tmp/xlb-build.log"; then
	echo "60-l7: building xlb failed; its rows are skipped:" >&2
	cat "$tmp/xlb-build.log" >&2
elif "$tmp/xlb" proxy --help >/dev/null 2>&1; then
	have_xlb=1
fi

render backend-nginx.conf be1.conf "$B1" be1
render backend-nginx.conf be2.conf "$B2" be2
render proxy-nginx.conf proxy-nginx.conf
render haproxy.cfg haproxy.cfg
render Caddyfile Caddyfile
render xlb.yaml xlb.yaml
render xlb-features.yaml xlb-features.yaml
render xlb-ratelimit.yaml xlb-ratelimit.yaml
render xlb-ratelimit-redis.yaml xlb-ratelimit-redis.yaml
sed -i "s|@ACCESSLOG@|$tmp/access.log|g" "$tmp/xlb-features.yaml"

start be1 taskset -c "$LOAD_CPU" nginx -p "$tmp" -c "$tmp/be1.conf"
start be2 taskset -c "$LOAD_CPU" nginx -p "$tmp" -c "$tmp/be2.conf"
wait_port "$B1"
wait_port "$B2"

# row NAME CMD...: measures one proxy.
rows=()
row() {
	local name=$1
	shift
	if [ -n "$ONLY" ] && [[ " $ONLY " != *" ${name%% *} "* ]]; then return 0; fi
	start proxy env GOMAXPROCS=1 taskset -c "$PROXY_CPU" "$@"
	local pid=$started
	if ! wait_port "$LISTEN"; then
		cat "$tmp/proxy.log" >&2
		stop "$pid"
		return 1
	fi
	if ! get200 "$LISTEN"; then
		echo "60-l7: $name does not answer 200" >&2
		cat "$tmp/proxy.log" >&2
		stop "$pid"
		return 1
	fi
	taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "http://$LISTEN/" >/dev/null # warm-up
	local rps=() p50=() p99=() cpu=() sys=() out c0 c1 n i counter
	for i in $(seq "$RUNS"); do
		counter=()
		if [ "$have_perf" = 1 ]; then
			counter=(perf stat -x, -o "$tmp/syscalls" -e raw_syscalls:sys_enter -p "$(procs "$pid")" --)
		fi
		c0=$(cpu_ticks "$pid")
		out=$("${counter[@]}" taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "http://$LISTEN/")
		c1=$(cpu_ticks "$pid")
		n=$(awk '/requests in/ {print $1}' <<<"$out")
		if [ "$have_perf" = 1 ]; then
			sys+=("$(awk -F, -v n="$n" '/raw_syscalls/ {printf "%.2f", $1 / n}' "$tmp/syscalls")")
		fi
		if grep -q 'Non-2xx' <<<"$out"; then
			echo "60-l7: $name run $i: $(grep 'Non-2xx' <<<"$out")" >&2
		fi
		rps+=("$(awk '/Requests\/sec/ {print $2}' <<<"$out")")
		p50+=("$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")")
		p99+=("$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")")
		cpu+=("$(awk -v t=$((c1 - c0)) -v clk="$clk" -v n="$n" 'BEGIN {printf "%.1f", t / clk * 1e6 / n}')")
	done
	local mrps mp50 mp99 mcpu msys="–" half high o50 o80
	if [ ${#sys[@]} -gt 0 ]; then msys=$(median "${sys[@]}"); fi
	mrps=$(median "${rps[@]}")
	mp50=$(median "${p50[@]}")
	mp99=$(median "${p99[@]}")
	mcpu=$(median "${cpu[@]}")
	half=$(awk -v r="$mrps" 'BEGIN {printf "%d", r * 0.5}')
	high=$(awk -v r="$mrps" 'BEGIN {printf "%d", r * 0.8}')
	o50=$(GOMAXPROCS=1 taskset -c "$LOAD_CPU" "$tmp/loadgen" -addr "$LISTEN" -rate "$half" -duration "${OPEN_DUR}s" -conns "$CONNS")
	o80=$(GOMAXPROCS=1 taskset -c "$LOAD_CPU" "$tmp/loadgen" -addr "$LISTEN" -rate "$high" -duration "${OPEN_DUR}s" -conns "$CONNS")
	stop "$pid"
	local f='s/^rate=\([0-9]*\).*p50_us=\([0-9]*\).*p99_us=\([0-9]*\).*/\1 \2 \3/p'
	local r50 r80 op50_50 op99_50 op50_80 op99_80
	read -r r50 op50_50 op99_50 < <(sed -n "$f" <<<"$o50")
	read -r r80 op50_80 op99_80 < <(sed -n "$f" <<<"$o80")
	local err50 err80
	err50=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$o50")
	err80=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$o80")
	echo "  $name: rps ${rps[*]} | cpu_us ${cpu[*]} | syscalls/req ${sys[*]} | open 50%: $o50 | open 80%: $o80"
	rows+=("$name|$mrps|$mp50|$mp99|$mcpu|$msys|$r50/$half|$op50_50|$op99_50|$r80/$high|$op50_80|$op99_80|$((err50 + err80))")
}

echo "proxy on CPU $PROXY_CPU; wrk, load generator and backends on CPU $LOAD_CPU; $RUNS runs of ${DUR}s, $CONNS connections"
row nginx nginx -p "$tmp" -c "$tmp/proxy-nginx.conf" || echo "60-l7: row skipped" >&2
row haproxy haproxy -f "$tmp/haproxy.cfg" -db || echo "60-l7: row skipped" >&2
row caddy env HOME="$tmp" XDG_DATA_HOME="$tmp/caddy-data" XDG_CONFIG_HOME="$tmp/caddy-config" \
	caddy run --config "$tmp/Caddyfile" --adapter caddyfile || echo "60-l7: row skipped" >&2
row "httputil.ReverseProxy" "$tmp/refproxy" -listen "$LISTEN" -backends "$B1,$B2" || echo "60-l7: row skipped" >&2
if [ "$have_xlb" = 1 ]; then
	row "xlb proxy" "$tmp/xlb" proxy --config "$tmp/xlb.yaml" || echo "60-l7: row skipped" >&2
	row "xlb proxy (features on)" "$tmp/xlb" proxy --config "$tmp/xlb-features.yaml" || echo "60-l7: row skipped" >&2
	row "xlb proxy (rate limit, local)" "$tmp/xlb" proxy --config "$tmp/xlb-ratelimit.yaml" || echo "60-l7: row skipped" >&2
	if [ -z "$ONLY" ] || [[ " $ONLY " == *" xlb "* ]]; then
		start redis taskset -c "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp"
		wait_port "127.0.0.1:$REDIS_PORT"
		row "xlb proxy (rate limit, redis)" "$tmp/xlb" proxy --config "$tmp/xlb-ratelimit-redis.yaml" || echo "60-l7: row skipped" >&2
	fi
else
	echo "  (xlb proxy: 'xlb proxy' is not available in this build; row skipped)"
fi

nginx_cpu=""
xlb_cpu=""
for r in "${rows[@]}"; do
	IFS='|' read -r name _ _ _ cpu _ <<<"$r"
	if [ "$name" = nginx ]; then nginx_cpu=$cpu; fi
	if [ "$name" = "xlb proxy" ]; then xlb_cpu=$cpu; fi
done
echo
echo "Closed loop (wrk, $CONNS connections): medians of $RUNS runs. Open loop (bench/l7/loadgen): sent at 50% and 80% of"
echo "the proxy's own closed-loop req/s; 'achieved/target' below the target means the generator or its CPU was the limit."
echo
echo "| proxy | req/s | p50 µs | p99 µs | CPU µs/req | CPU × nginx | system calls/req | open 50%: achieved/target req/s, p50 / p99 µs | open 80%: achieved/target req/s, p50 / p99 µs | open-loop errors |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for r in "${rows[@]}"; do
	IFS='|' read -r name rps p50 p99 cpu sys t50 a50 b50 t80 a80 b80 errs <<<"$r"
	ratio="–"
	if [ -n "$nginx_cpu" ]; then ratio=$(awk -v a="$cpu" -v b="$nginx_cpu" 'BEGIN {printf "%.2f", a / b}'); fi
	# An open-loop run that fell 5% or more short of its target measured the
	# generator's backlog, not the proxy: say so instead of a latency.
	o50="$a50 / $b50"
	o80="$a80 / $b80"
	if awk -v t="$t50" 'BEGIN {split(t, x, "/"); exit !(x[1] < 0.95 * x[2])}'; then o50="(generator-bound)"; fi
	if awk -v t="$t80" 'BEGIN {split(t, x, "/"); exit !(x[1] < 0.95 * x[2])}'; then o80="(generator-bound)"; fi
	printf '| %s | %.0f | %.0f | %.0f | %s | %s | %s | %s, %s | %s, %s | %s |\n' \
		"$name" "$rps" "$p50" "$p99" "$cpu" "$ratio" "$sys" "$t50" "$o50" "$t80" "$o80" "$errs"
done
if [ -n "$xlb_cpu" ]; then
	echo
	echo "Rate limits (a limit that never triggers), CPU per request × the xlb proxy row (budget for local: 1.10):"
	for r in "${rows[@]}"; do
		IFS='|' read -r name _ _ _ cpu _ <<<"$r"
		if [[ "$name" == "xlb proxy (rate limit"* ]]; then
			awk -v n="$name" -v a="$cpu" -v b="$xlb_cpu" 'BEGIN {printf "  %s: %.2f\n", n, a / b}'
		fi
	done
fi
