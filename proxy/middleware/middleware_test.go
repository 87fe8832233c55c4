package middleware

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestChainOrder: the first middleware listed sees the request first and
// the response last; one that answers itself stops the chain.
func TestChainOrder(t *testing.T) {
	var trace []string
	tag := func(name string, stop bool) Middleware {
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				trace = append(trace, name+" in")
				if stop {
					w.WriteHeader(http.StatusTooManyRequests)
				} else {
					next.ServeHTTP(w, r)
				}
				trace = append(trace, name+" out")
			})
		}
	}
	final := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { trace = append(trace, "final") })

	h := Chain(final, tag("a", false), tag("b", false))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if got, want := strings.Join(trace, ","), "a in,b in,final,b out,a out"; got != want {
		t.Errorf("order %q, want %q", got, want)
	}

	trace = nil
	rec := httptest.NewRecorder()
	Chain(final, tag("a", true), tag("b", false)).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if got, want := strings.Join(trace, ","), "a in,a out"; got != want || rec.Code != http.StatusTooManyRequests {
		t.Errorf("stopping middleware: order %q (want %q), status %d", got, want, rec.Code)
	}

	if Chain(final) == nil {
		t.Error("empty chain")
	}
}
