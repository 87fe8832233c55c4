#!/usr/bin/env bash
# L7 proxy: resident memory per idle keep-alive client connection. For each
# proxy (nginx with one worker as the reference, then the xlb proxy), the
# same job as 60-l7.sh (one route, one nginx backend), then
# bench/l7/idleconns opens L7_IDLE_CONNS connections, sends one GET on each,
# reads the answer and leaves the connection idle. Reported: the proxy's
# VmRSS (its workers' for nginx) before and with the idle connections, and
# the difference per connection. Only 127.0.0.1-127.0.0.4 ports 29186-29187
# (below the ephemeral range, which the client's connections fill)
# are used; every process started is killed and the temporary directory
# removed on exit. Every process (proxy, client) needs a file limit above
# the connection count: the soft limit is raised to the hard one, which is
# raised too when the process may (root with CAP_SYS_RESOURCE); a count
# that does not fit under it is said plainly and measured at the largest
# count that fits instead.
set -euo pipefail
cd "$(dirname "$0")/../.."

COUNTS=${L7_IDLE_CONNS:-"10000 50000"}
LISTEN=127.0.0.1:29186
B1=127.0.0.1:29187
SPARE=256 # descriptors a process needs besides the idle connections

scripts/deps.sh bench
want=$SPARE
for n in $COUNTS; do ((n + SPARE > want)) && want=$((n + SPARE)); done
if (($(ulimit -Hn) < want)); then
	ulimit -Hn "$want" 2>/dev/null || true
fi
ulimit -n "$(ulimit -Hn)"
limit=$(ulimit -n)
fit=$(((limit - SPARE) / 1000 * 1000)) # the largest round count that fits
counts=""
for n in $COUNTS; do
	if ((n + SPARE > limit)); then
		echo "62-l7-idle: $n idle connections do not fit this machine's file limit ($limit descriptors per process, and it cannot be raised here: that needs CAP_SYS_RESOURCE); measuring at $fit instead" >&2
		n=$fit
	fi
	case " $counts " in *" $n "*) ;; *) counts="$counts $n" ;; esac
done

tmp=$(mktemp -d /tmp/xlb-l7idle.XXXXXX)
chmod 755 "$tmp"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for port in 29186 29187; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "62-l7-idle: port $port on 127.0.0.1 is in use" >&2
		exit 1
	fi
done

go build -o "$tmp/xlb" ./cmd/xlb
go build -o "$tmp/idleconns" ./bench/l7/idleconns

max=0
for n in $counts; do ((n > max)) && max=$n; done
render() { # template -> $tmp/name
	sed -e "s|@DIR@|$tmp|g" -e "s|@LISTEN@|${3:-$LISTEN}|g" -e "s|@B1@|$B1|g" -e "s|@B2@|$B1|g" \
		-e "s|@NAME@|${4:-x}|g" -e "s|worker_connections 4096;|worker_connections $((max + SPARE / 2));|" \
		-e "s|^worker_processes 1;|worker_processes 1;\nworker_rlimit_nofile $limit;|" \
		"bench/l7/conf/$1" >"$tmp/$2"
}
render backend-nginx.conf be1.conf "$B1" be1
render proxy-nginx.conf proxy-nginx.conf
sed -e "s|@LISTEN@|$LISTEN|g" -e "s|@B1@|$B1|g" -e "/@B2@/d" bench/l7/conf/xlb.yaml >"$tmp/xlb.yaml"

start() { # NAME CMD...: sets $started
	local name=$1
	shift
	"$@" >"$tmp/$name.log" 2>&1 &
	started=$!
	pids+=("$started")
}
wait_port() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "62-l7-idle: nothing listens on $1" >&2
	return 1
}
rss_kb() { # PID: VmRSS of the process, or of its children when it has some (nginx's worker)
	local kids
	kids=$(pgrep -P "$1" || true)
	local total=0 p
	for p in ${kids:-$1}; do
		total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
	done
	echo "$total"
}

start be1 nginx -p "$tmp" -c "$tmp/be1.conf"
wait_port "$B1"

echo "file limit: $limit descriptors per process"
echo "| proxy | idle connections | RSS before (KiB) | RSS with them (KiB) | bytes per idle connection |"
echo "|---|---:|---:|---:|---:|"
measure() { # NAME N CMD...
	local name=$1 n=$2
	shift 2
	for _ in $(seq 100); do # the previous proxy's listener gone
		[ -z "$(ss -Hltn "sport = :${LISTEN##*:}")" ] && break
		sleep 0.1
	done
	start proxy "$@"
	local pid=$started
	wait_port "$LISTEN"
	"$tmp/idleconns" -addr "$LISTEN" -conns 200 </dev/null >/dev/null # warm-up
	sleep 1
	local before after fifo
	before=$(rss_kb "$pid")
	fifo=$tmp/hold
	rm -f "$fifo"
	mkfifo "$fifo"
	"$tmp/idleconns" -addr "$LISTEN" -conns "$n" <"$fifo" >"$tmp/idle.out" 2>&1 &
	local client=$!
	exec 4>"$fifo" # holds the client's stdin open
	for _ in $(seq 600); do
		grep -q '^ready' "$tmp/idle.out" && break
		kill -0 "$client" 2>/dev/null || break
		sleep 0.1
	done
	if ! grep -q '^ready' "$tmp/idle.out"; then
		echo "62-l7-idle: $name: $(cat "$tmp/idle.out")" >&2
		tail -5 "$tmp/proxy.log" >&2
		exec 4>&-
		wait "$client" || true
		kill "$pid"; wait "$pid" 2>/dev/null || true
		return 1
	fi
	sleep 15 # let idle connections park (xlb: after a sweeper second) and memory be returned (at most every 10s)
	after=$(rss_kb "$pid")
	exec 4>&- # the client closes its connections and exits
	wait "$client" || true
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	printf '| %s | %d | %d | %d | %.0f |\n' "$name" "$n" "$before" "$after" "$(awk -v a="$after" -v b="$before" -v n="$n" 'BEGIN {print (a - b) * 1024 / n}')"
}
for n in $counts; do
	measure nginx "$n" nginx -p "$tmp" -c "$tmp/proxy-nginx.conf" || true
	measure "xlb proxy" "$n" env GOMAXPROCS=1 "$tmp/xlb" proxy --config "$tmp/xlb.yaml" || true
done
