#!/usr/bin/env bash
# Builds the Debian package bin/xlb_VERSION_ARCH.deb: a static /usr/bin/xlb,
# the systemd units and the default configs (packaging/nfpm.yaml), with nfpm
# run as a Go tool pinned in go.mod. Prints the package's path last.
# XLB_VERSION overrides the version (default: from git describe).
set -euo pipefail
cd "$(dirname "$0")/.."

# A Debian version starts with a digit: v1.2.3 -> 1.2.3, v1.2.3-4-gabc ->
# 1.2.3+4.gabc, no tag -> 0.0.0+gitDATE.SHA (DATE of the commit, so that
# later commits sort later).
debian_version() {
	local d
	if d=$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null); then
		d=${d#v}
		echo "${d/-/+}" | tr '-' '.'
		return
	fi
	local sha date
	sha=$(git rev-parse --short=12 HEAD)
	date=$(git log -1 --format=%cd --date=format:%Y%m%d%H%M%S)
	d="0.0.0+git${date}.${sha}"
	git diff --quiet HEAD -- 2>/dev/null || d="${d}.dirty"
	echo "$d"
}

export XLB_VERSION=${XLB_VERSION:-$(debian_version)}
export XLB_ARCH=$(go env GOARCH)
mkdir -p bin/deb

CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${XLB_VERSION}" -o bin/deb/xlb ./cmd/xlb
out="bin/xlb_${XLB_VERSION}_${XLB_ARCH}.deb"
rm -f "$out"
go tool nfpm package --config packaging/nfpm.yaml --packager deb --target "$out" >&2
echo "$out"
