#!/usr/bin/env bash
# Installs the Debian package on this machine and takes it off again,
# checking each step: dpkg -i, the files, the conffiles, the user and group,
# systemd-analyze verify and security of the units, /usr/bin/xlb version and
# --check-config of the shipped configs, dpkg -r (only conffiles left),
# dpkg --purge (nothing left). Needs root. Whatever happens, the package is
# purged again on exit. Usage: scripts/deb-test.sh [PACKAGE.deb]
# (default: build one with scripts/deb.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "deb-test: FAIL: $*" >&2; exit 1; }
step() { echo "deb-test: $*"; }

[ "$(id -u)" -eq 0 ] || fail "needs root (dpkg -i)"
for tool in dpkg systemd-analyze; do
	command -v "$tool" >/dev/null || fail "$tool is missing (scripts/deps.sh build installs it)"
done
# Never touch an xlb that was there before: the purge below would remove it.
if dpkg-query -W -f='${Status}' xlb 2>/dev/null | grep -qv 'not-installed'; then
	fail "package xlb is already on this machine; remove it first (dpkg --purge xlb)"
fi
getent group xlb >/dev/null && fail "group xlb exists already; the purge would remove it"
getent passwd xlb >/dev/null && fail "user xlb exists already; the purge would remove it"
[ -e /etc/xlb ] && fail "/etc/xlb exists already; the purge would remove it"

deb=${1:-}
if [ -z "$deb" ]; then
	deb=$(scripts/deb.sh | tail -n 1)
fi
[ -f "$deb" ] || fail "no package at $deb"

# dpkg refuses to run while another dpkg or apt holds its lock: wait a while.
dpkg_locked() {
	local i out
	for i in $(seq 1 60); do
		if out=$("$@" 2>&1); then
			printf '%s\n' "$out"
			return 0
		fi
		case "$out" in
		*"dpkg frontend lock"* | *"dpkg status database is locked"* | *"lock-frontend"*) sleep 2 ;;
		*) printf '%s\n' "$out" >&2; return 1 ;;
		esac
	done
	printf '%s\n' "$out" >&2
	return 1
}

proxy_pid=
cleanup() {
	if [ -n "$proxy_pid" ]; then
		kill "$proxy_pid" 2>/dev/null || true
		rm -rf /run/xlb-proxy
	fi
	if dpkg-query -W -f='${Status}' xlb 2>/dev/null | grep -qv 'not-installed'; then
		echo "deb-test: purging xlb after a failure" >&2
		dpkg_locked dpkg --purge xlb >/dev/null || true
	fi
}
trap cleanup EXIT

step "dpkg -i $deb"
dpkg_locked dpkg -i "$deb" >/dev/null || fail "dpkg -i $deb"

files=(/usr/bin/xlb /usr/lib/systemd/system/xlb.service /usr/lib/systemd/system/xlb-proxy.service
	/etc/xlb/xlb.yaml /etc/xlb/proxy.yaml /usr/share/doc/xlb/copyright
	/usr/share/doc/xlb/examples/xlb.yaml /usr/share/doc/xlb/examples/proxy.yaml)
for f in "${files[@]}"; do
	[ -f "$f" ] || fail "$f is not installed"
	dpkg -S "$f" >/dev/null 2>&1 || fail "$f is not owned by the package"
done
[ -x /usr/bin/xlb ] || fail "/usr/bin/xlb is not executable"
conffiles=$(dpkg-query -W -f='${Conffiles}' xlb)
for f in /etc/xlb/xlb.yaml /etc/xlb/proxy.yaml; do
	grep -q " $f " <<<"$conffiles " || fail "$f is not a conffile (conffiles: $conffiles)"
done
getent group xlb >/dev/null || fail "postinst made no group xlb"
getent passwd xlb >/dev/null || fail "postinst made no user xlb"
[ "$(stat -c %G:%a /etc/xlb/proxy.yaml)" = xlb:640 ] || fail "/etc/xlb/proxy.yaml is $(stat -c %G:%a /etc/xlb/proxy.yaml), want xlb:640"

step "systemd-analyze verify"
units=(/usr/lib/systemd/system/xlb.service /usr/lib/systemd/system/xlb-proxy.service)
systemd-analyze verify "${units[@]}" || fail "systemd-analyze verify ${units[*]}"
# The sandboxing stays as tight as it is now: exposure 2.6 (daemon: root
# with four capabilities) and 1.9 (proxy) of 10; --threshold counts tenths.
check_exposure() {
	systemd-analyze security --offline=true --threshold="$2" "$1" >/dev/null ||
		fail "$1: exposure above $2/100: systemd-analyze security --offline=true $1"
}
check_exposure /usr/lib/systemd/system/xlb.service 26
check_exposure /usr/lib/systemd/system/xlb-proxy.service 20

step "/usr/bin/xlb version and --check-config of the shipped configs"
want=$(dpkg-query -W -f='${Version}' xlb)
got=$(/usr/bin/xlb version -o json)
grep -q "\"version\": \"$want\"" <<<"$got" || fail "xlb version says $got, want version $want"
/usr/bin/xlb daemon --check-config /etc/xlb/xlb.yaml || fail "xlb daemon --check-config /etc/xlb/xlb.yaml"
/usr/bin/xlb proxy --check-config /etc/xlb/proxy.yaml || fail "xlb proxy --check-config /etc/xlb/proxy.yaml"

step "the proxy runs as xlb-proxy.service runs it: user xlb, only CAP_NET_BIND_SERVICE, the shipped config"
# In a network namespace of its own (its ports cannot meet anything else
# on this machine); the admin socket is a file, reachable from here.
install -d -o xlb -g xlb -m 0750 /run/xlb-proxy
proxy_log=$(mktemp)
unshare --net sh -c 'ip link set lo up && exec setpriv --reuid=xlb --regid=xlb --init-groups \
	--bounding-set=-all,+net_bind_service --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service \
	--no-new-privs -- /usr/bin/xlb proxy --config /etc/xlb/proxy.yaml' >"$proxy_log" 2>&1 &
proxy_pid=$! # unshare and sh exec, so this is the proxy itself
stop_proxy() {
	kill "$proxy_pid" 2>/dev/null || true
	wait "$proxy_pid" 2>/dev/null || true
	proxy_pid=
	rm -rf /run/xlb-proxy
}
for _ in $(seq 1 100); do
	[ -S /run/xlb-proxy/admin.sock ] && break
	kill -0 "$proxy_pid" 2>/dev/null || break
	sleep 0.1
done
if ! [ -S /run/xlb-proxy/admin.sock ]; then
	stop_proxy
	fail "the proxy as user xlb did not open /run/xlb-proxy/admin.sock; its log: $(cat "$proxy_log")"
fi
[ "$(stat -c %U:%G /run/xlb-proxy/admin.sock)" = xlb:xlb ] || { stop_proxy; fail "admin socket is $(stat -c %U:%G /run/xlb-proxy/admin.sock), want xlb:xlb"; }
/usr/bin/xlb proxy backend list --config /etc/xlb/proxy.yaml | grep -q '127.0.0.1:9001' || { stop_proxy; fail "xlb proxy backend list through the packaged admin socket"; }
/usr/bin/xlb proxy reload --config /etc/xlb/proxy.yaml >/dev/null || { stop_proxy; fail "xlb proxy reload (the unit's ExecReload)"; }
stop_proxy
rm -f "$proxy_log"

step "dpkg -r: only the conffiles stay"
echo "# changed by the operator" >>/etc/xlb/xlb.yaml
dpkg_locked dpkg -r xlb >/dev/null || fail "dpkg -r xlb"
[ "$(dpkg-query -W -f='${Status}' xlb)" = "deinstall ok config-files" ] ||
	fail "after dpkg -r the status is $(dpkg-query -W -f='${Status}' xlb), want 'deinstall ok config-files'"
for f in "${files[@]}"; do
	case "$f" in
	/etc/xlb/*) [ -f "$f" ] || fail "dpkg -r removed the conffile $f" ;;
	*) [ -e "$f" ] && fail "dpkg -r left $f" ;;
	esac
done
grep -q "changed by the operator" /etc/xlb/xlb.yaml || fail "dpkg -r lost the operator's change to /etc/xlb/xlb.yaml"

step "dpkg --purge: nothing stays"
dpkg_locked dpkg --purge xlb >/dev/null || fail "dpkg --purge xlb"
dpkg-query -W -f='${Status}' xlb 2>/dev/null | grep -qv 'not-installed' && fail "dpkg still knows xlb after the purge"
for p in /etc/xlb /var/lib/xlb /run/xlb /run/xlb-proxy "${files[@]}"; do
	[ -e "$p" ] && fail "dpkg --purge left $p"
done
getent group xlb >/dev/null && fail "dpkg --purge left group xlb"
getent passwd xlb >/dev/null && fail "dpkg --purge left user xlb"
echo "deb-test: ok: $deb installs, verifies, runs and goes away cleanly"
