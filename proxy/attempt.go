package proxy

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/xlb-project/xlb/proxy/config"
	"github.com/xlb-project/xlb/proxy/lastgood"
	"github.com/xlb-project/xlb/proxy/retry"
)

// routeRetry is a route's retry policy and budget.
type routeRetry struct {
	cfg    *config.RetryConfig
	policy retry.Policy
	budget *retry.Budget
}

// routeFallback is what a route answers when its pool has no usable backend.
type routeFallback struct {
	cfg      *config.FallbackConfig
	lastGood *lastgood.Cache       // nil: none
	pool     *pool                 // nil: none
	respond  *config.RespondConfig // nil: none
}

// compileResilience sets up rt's retries and fallback, keeping the retry
// budget and last-good cache of old (the route of the same name in the
// running state) when their config is unchanged.
func (rt *route) compileResilience(rc *config.RouteConfig, pools map[string]*pool, old *route) error {
	if c := rc.Retry; c != nil {
		rr := &routeRetry{cfg: c, policy: c.Policy()}
		if old != nil && old.retry != nil && sameConfig(&old.retry.cfg.Budget, &c.Budget) {
			rr.budget = old.retry.budget
		} else {
			b, err := retry.NewBudget(c.BudgetConfig())
			if err != nil {
				return err
			}
			rr.budget = b
		}
		rt.retry = rr
	}
	if c := rc.Fallback; c != nil {
		fb := &routeFallback{cfg: c, respond: c.Respond}
		if c.Pool != "" {
			fb.pool = pools[c.Pool]
		}
		if lg := c.LastGood; lg != nil {
			if old != nil && old.fallback != nil && old.fallback.lastGood != nil && sameConfig(old.fallback.cfg.LastGood, lg) {
				fb.lastGood = old.fallback.lastGood
			} else {
				cache, err := lastgood.New(lg.LastGood())
				if err != nil {
					return err
				}
				fb.lastGood = cache
			}
		}
		rt.fallback = fb
	}
	return nil
}

// forwardPlain sends a request that is not an upgrade: admission through the
// pool's breakers and limiter, attempts and retries by the route's policy,
// and the fallback when the pool has no usable backend.
func (rt *route) forwardPlain(w http.ResponseWriter, e *exchange, r *http.Request) {
	ctx := r.Context()
	if rt.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(rt.timeout))
		defer cancel()
	}
	attempts := 1
	var body *retry.Body
	var pol *retry.Policy
	if rr := rt.retry; rr != nil {
		pol = &rr.policy
		rr.budget.Request(time.Now())
		if pol.Deadline > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, pol.Deadline)
			defer cancel()
		}
		if pol.Eligible(r.Method, r.Header) {
			buf, rest, err := retry.Buffer(r.Body, r.ContentLength, pol.BodyLimit)
			if err != nil {
				// The client's body: never the backend's fault.
				failClient(w, e, err)
				return
			}
			if buf != nil {
				body, attempts = buf, pol.Attempts
			} else {
				// Too big to keep: streamed once, not retried.
				r.Body = readCloser{rest, r.Body}
			}
		}
	}
	pl := rt.pool
	var tried []*backend
	fellBack := false
	for try := 1; ; {
		a, why := pl.admit(w, r, e, tried)
		if a.b == nil {
			if why == shedRequest {
				e.st.metrics.res.shed.WithLabelValues(pl.name).Inc()
				pl.shed(w)
				return
			}
			if fb := rt.fallback; fb != nil && !fellBack {
				if rt.serveFallback(w, e, r) {
					return
				}
				if fb.pool != nil {
					e.st.metrics.res.fallbacks.WithLabelValues(rt.name, "pool").Inc()
					pl, tried, fellBack = fb.pool, nil, true
					w.Header()["Xlb-Fallback"] = []string{"pool"}
					continue
				}
			}
			e.st.metrics.noBackend.WithLabelValues(pl.name).Inc()
			if rt.fallback != nil {
				e.st.metrics.res.fallbacks.WithLabelValues(rt.name, "none").Inc()
			}
			http.Error(w, "no backend available", http.StatusServiceUnavailable)
			return
		}
		if body != nil {
			r.Body, r.ContentLength = body.Reader(), body.Len()
		}
		reason, backoff, again := rt.attempt(w, e, r, ctx, pl, &a, try, attempts, pol)
		if !again {
			return
		}
		e.st.metrics.res.retries.WithLabelValues(rt.name, string(reason)).Inc()
		rt.metrics.retries.Inc()
		if !retry.Wait(ctx, backoff) {
			fail(w, e, ctx, ctx.Err()) // the client went away, or the deadline came
			return
		}
		tried = append(tried, a.b)
		try++
	}
}

// release ends b's part in exchange e, begun at sent: the in-flight gauge
// and, unless the client's body broke the exchange (which says nothing about
// the backend: no latency sample, no outcome), the latency, the balancer's
// release and the outcome report (bad: a failure or a 5xx). It returns the
// latency.
func (pl *pool) release(e *exchange, b *backend, sent time.Time, bad bool) time.Duration {
	if e.respondedAt.IsZero() {
		e.respondedAt = time.Now()
	}
	lat := e.respondedAt.Sub(sent)
	b.metrics.inFlight.Dec()
	if e.clientFault {
		b.Abandon()
		return lat
	}
	b.metrics.duration.Observe(lat.Seconds())
	b.Release(lat, e.failed)
	pl.report(b, bad)
	return lat
}

// readCloser reads from one reader and closes another.
type readCloser struct {
	io.Reader
	c io.Closer
}

func (rc readCloser) Close() error { return rc.c.Close() }

// attempt sends r to a.b once, as try number try of attempts. When the
// attempt failed in a way the policy retries, nothing went to the client
// yet, the budget has a retry and the backoff fits the deadline, it returns
// the reason, the backoff to wait and true; otherwise it answers the client.
func (rt *route) attempt(w http.ResponseWriter, e *exchange, r *http.Request, ctx context.Context, pl *pool, a *admission, try, attempts int, pol *retry.Policy) (retry.Reason, time.Duration, bool) {
	b := a.b
	e.backend, e.failed, e.respondedAt = b, false, time.Time{}
	tctx := ctx
	if pol != nil && pol.PerTryTimeout > 0 {
		var cancel context.CancelFunc
		tctx, cancel = context.WithTimeout(ctx, pol.PerTryTimeout)
		defer cancel()
	}
	b.Acquire()
	b.metrics.inFlight.Inc()
	sent := time.Now()
	e.sent = sent
	res := attemptResult{kind: resultClient}
	var backoff time.Duration
	again := false
	// Deferred: a response cut by the backend aborts the handler with a
	// panic (http.ErrAbortHandler), and the accounting must still happen.
	defer func() {
		failed := e.failed
		lat := pl.release(e, b, sent, failed || (res.kind == resultOK && res.status >= 500))
		// Also after a client fault: a breaker's probe slot is given back.
		pl.settle(a, res, lat, time.Now())
		if again {
			// finish counts only the last attempt.
			if failed {
				b.metrics.requests[0].Inc()
				b.metrics.failures.Inc()
			} else {
				b.metrics.requests[classIndex(res.status)].Inc()
			}
			e.failed = false
		}
	}()

	resp, err := e.st.roundTrip(tctx, w, e, r)
	e.respondedAt = time.Now()
	res = classify(err, r.Context(), tctx)
	if resp != nil {
		res.status = resp.Status
	}
	// fail (below) sees respondedAt set and leaves e.failed alone.
	e.failed = res.failed()
	var reason retry.Reason
	if try < attempts && !e.interim && ctx.Err() == nil {
		switch {
		case res.kind == resultConnect:
			reason = retry.ConnectFailure
		case res.kind == resultReset:
			reason = retry.Reset
		case res.kind == resultTimeout:
			// The attempt's own limit (per-try or response-header timeout):
			// the overall one has not passed (ctx.Err() is nil, and the
			// backoff must still fit before its deadline). The socket
			// deadline may fire a moment before tctx's timer, so tctx.Err()
			// is not the test.
			reason = retry.PerTryTimeout
		case res.kind == resultOK:
			reason = retry.Status
		}
	}
	if reason != "" && pol.RetriesOn(reason, res.status) {
		now := time.Now()
		backoff = pol.Backoff(try, retry.Rand())
		dl, ok := ctx.Deadline()
		switch {
		case ok && dl.Sub(now) <= backoff:
			// No time left for another attempt.
		case !rt.retry.budget.Withdraw(now):
			e.st.metrics.res.budgetOut.WithLabelValues(rt.name).Inc()
		default:
			again = true
		}
	}
	if again {
		if resp != nil {
			resp.Release() // unread: the connection is closed
		}
		return reason, backoff, true
	}
	if err != nil {
		fail(w, e, ctx, err)
		return "", 0, false
	}
	defer resp.Release()
	e.st.relay(w, e, r, resp, rt.lastGoodFor(r))
	return "", 0, false
}

// lastGoodFor returns the route's last-good cache for a request whose
// response may be kept: a GET.
func (rt *route) lastGoodFor(r *http.Request) *lastgood.Cache {
	if fb := rt.fallback; fb != nil && fb.lastGood != nil && r.Method == http.MethodGet {
		return fb.lastGood
	}
	return nil
}

func lastGoodKey(r *http.Request) string {
	uri := r.RequestURI
	if uri == "" {
		uri = r.URL.RequestURI()
	}
	return lastgood.Key(r.Host, uri)
}

// serveFallback answers from the last-good cache (GET, HEAD) or with the
// fixed response, and reports whether it did; the fallback pool is the
// caller's.
func (rt *route) serveFallback(w http.ResponseWriter, e *exchange, r *http.Request) bool {
	fb := rt.fallback
	if fb.lastGood != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		now := time.Now()
		if ent, ok := fb.lastGood.Get(lastGoodKey(r), now); ok {
			e.st.metrics.res.fallbacks.WithLabelValues(rt.name, "last_good").Inc()
			h := w.Header()
			for k, vv := range ent.Header {
				h[k] = vv
			}
			h["Xlb-Fallback"] = []string{"last_good"}
			h["Age"] = []string{strconv.Itoa(int(now.Sub(ent.Stored) / time.Second))}
			w.WriteHeader(ent.Status)
			if r.Method != http.MethodHead {
				_, _ = w.Write(ent.Body)
			}
			return true
		}
	}
	if fb.pool != nil {
		return false
	}
	if rs := fb.respond; rs != nil {
		e.st.metrics.res.fallbacks.WithLabelValues(rt.name, "respond").Inc()
		h := w.Header()
		h["Content-Type"] = []string{rs.ContentType}
		h["Xlb-Fallback"] = []string{"respond"}
		w.WriteHeader(rs.Status)
		if r.Method != http.MethodHead {
			_, _ = w.Write([]byte(rs.Body))
		}
		return true
	}
	return false
}
