#!/usr/bin/env bash
# The xlb proxy's own work per request (routing, backend selection,
# forwarding to a loopback backend over kept-alive connections), next to
# plain net/http/httputil.ReverseProxy doing the same job in the same run:
# compare ns/op and allocs/op between the rows. LeanPath sends requests over
# one raw keep-alive connection through a running proxy (the lean HTTP/1.1
# listener) to a backend that allocates nothing: its allocs/op are the
# proxy's own plus about 8 of the benchmark's HTTP client. The full
# comparison with nginx, HAProxy and Caddy is 60-l7.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -run '^$' -bench 'ServeHTTP|LeanPath' -benchmem -benchtime "${PROXY_BENCHTIME:-20000x}" -count 3 ./proxy/ |
	grep -E '^(Benchmark|ok|FAIL)'
