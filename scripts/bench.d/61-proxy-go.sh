#!/usr/bin/env bash
# The xlb proxy's own work per request (routing, backend selection,
# forwarding to a loopback backend over kept-alive connections), next to
# plain net/http/httputil.ReverseProxy doing the same job in the same run:
# compare ns/op and allocs/op between the rows. The full comparison with
# nginx, HAProxy and Caddy is 60-l7.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -run '^$' -bench 'ServeHTTP' -benchmem -benchtime "${PROXY_BENCHTIME:-20000x}" -count 3 ./proxy/ |
	grep -E '^(Benchmark|ok|FAIL)'
