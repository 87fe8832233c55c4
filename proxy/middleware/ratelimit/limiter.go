// Package ratelimit is the proxy's rate-limit middleware: a GCRA bucket
// per key (client address grouped by prefix, header, cookie, query
// parameter, or a combination), with API keys in a table of their own
// limits, answering 429 with Retry-After and the RateLimit-Policy and
// RateLimit fields of the IETF httpapi draft. Limits are local to one proxy
// or shared through Redis (one atomic script per decision, with a batch of
// requests reserved per round trip), and a shadow mode only counts.
//
// Memory is bounded per limit: at most max_keys keys of at most 48 bytes
// each (see table.go); idle keys are swept.
package ratelimit

import (
	"hash/maphash"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"
)

// epoch is the origin of the monotonic nanosecond clock the tables use.
var epoch = time.Now()

func monoNow() int64 { return int64(time.Since(epoch)) }

// LimitHeader names the limit on every response a limit refuses.
const LimitHeader = "Xlb-Limit"

// Options are a limiter's dependencies.
type Options struct {
	// Logger gets shadow-mode, limit and Redis logs (throttled). Default:
	// discard.
	Logger *slog.Logger
	// Client returns a request's client address; default the peer of
	// r.RemoteAddr. The proxy passes the address its trusted_proxies give
	// (middleware.ClientAddr).
	Client func(w http.ResponseWriter, r *http.Request) netip.Addr
	// Route labels metrics and logs.
	Route string
}

// Limiter applies one limit; Wrap makes it a handler in a route's chain.
type Limiter struct {
	cfg     *Config
	state   *state
	spec    keySpec
	def     *rule
	classes map[string]*rule // API key -> its rule; nil without a table
	policy  map[*rule][]string
	client  func(http.ResponseWriter, *http.Request) netip.Addr
	log     *slog.Logger
	route   string
	m       *limitCounters
	logged  atomic.Int64 // monoNow of the last throttled log line
}

// state is what outlives a reload when the limit's identity is unchanged:
// the buckets, the Redis client and leases.
type state struct {
	id    string // in the Set
	refs  int    // limiters using it, under the Set's lock
	route string // for metrics; empty for a global limit
	name  string
	seed  maphash.Seed
	local *table
	redis *redisStore
}

func tatExpired(tat, now int64) bool { return tat <= now }

func newState(c *Config) *state {
	st := &state{seed: maphash.MakeSeed(), local: newTable(c.MaxKeys, tatExpired)}
	if c.Redis != nil {
		st.redis = newRedisStore(c.Redis, c.MaxKeys)
	}
	return st
}

func (s *state) close() {
	if s.redis != nil {
		_ = s.redis.client.Close()
	}
}

func newLimiter(c *Config, st *state, opts Options, m *limitCounters) *Limiter {
	l := &Limiter{
		cfg:   c,
		state: st,
		spec: keySpec{
			client: c.Key.Client, v4Bits: c.Key.IPv4Prefix, v6Bits: c.Key.IPv6Prefix,
			header: canonicalHeader(c.Key.Header), cookie: c.Key.Cookie, query: c.Key.Query,
			byClassKey: len(c.Keys) > 0,
		},
		def:    newRule(c.Name, c.Rate, c.Per.D(), c.Burst),
		policy: map[*rule][]string{},
		client: opts.Client,
		log:    opts.Logger,
		route:  opts.Route,
		m:      m,
	}
	if c.Key.Header == "" {
		l.spec.header = ""
	}
	if l.m == nil {
		l.m = NewMetrics().counters(opts.Route, c.Name)
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.client == nil {
		l.client = remoteAddr
	}
	l.policy[l.def] = []string{policyField(l.def)}
	if len(c.Keys) > 0 {
		l.classes = make(map[string]*rule, len(c.Keys))
		for _, e := range c.Keys {
			ru := newRule(e.Name, e.Rate, e.Per.D(), e.Burst)
			l.classes[e.Value] = ru
			l.policy[ru] = []string{policyField(ru)}
		}
	}
	return l
}

func remoteAddr(_ http.ResponseWriter, r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// Wrap returns next behind the limit.
func (l *Limiter) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l.admit(w, r) {
			next.ServeHTTP(w, r)
		}
	})
}

// outcome of one decision, also the metric's result label.
type outcome int

const (
	allowed outcome = iota
	limited
	shadowLimited
	deniedMissing
	deniedUnknown
	failedOpen
	failedClosed
	outcomes
)

var outcomeNames = [outcomes]string{"allowed", "limited", "shadow_limited", "denied_missing_key", "denied_unknown_key", "redis_failed_open", "redis_failed_closed"}

// admit decides r and, when it is refused, answers it; it reports whether
// the request goes on.
func (l *Limiter) admit(w http.ResponseWriter, r *http.Request) bool {
	var k key
	l.spec.extract(r, l.client(w, r), &k)
	ru := l.def
	switch {
	case l.spec.missing(&k):
		if l.cfg.Missing == "deny" {
			l.count(deniedMissing)
			l.refuse(w, http.StatusUnauthorized, "missing rate-limit key\n")
			return false
		}
	case l.classes != nil:
		if c, ok := l.classes[l.spec.classKey(&k)]; ok {
			ru = c
		} else if l.cfg.Unknown == "deny" {
			l.count(deniedUnknown)
			l.refuse(w, http.StatusForbidden, "unknown rate-limit key\n")
			return false
		}
	}
	now := monoNow()
	h := k.sum64(l.state.seed)
	var v verdict
	if rs := l.state.redis; rs != nil {
		var err error
		v, err = rs.take(r.Context(), h, &k, ru, now)
		if err != nil {
			l.m.redisErrors.Inc()
			l.logThrottled(now, "rate limit: redis failed", "err", err, "on_error", l.cfg.Redis.OnError)
			switch l.cfg.Redis.OnError {
			case "fail_closed":
				l.count(failedClosed)
				w.Header().Set("Retry-After", "1")
				l.refuse(w, http.StatusServiceUnavailable, "rate limit unavailable\n")
				return false
			case "local":
				v = l.takeLocal(h, ru, now)
			default:
				l.count(failedOpen)
				return true
			}
		}
	} else {
		v = l.takeLocal(h, ru, now)
	}
	if v.allowed {
		l.count(allowed)
		if l.cfg.Headers == "all" && !l.cfg.Shadow {
			l.setFields(w.Header(), ru, v)
		}
		return true
	}
	if l.cfg.Shadow {
		l.count(shadowLimited)
		l.logThrottled(now, "rate limit: would limit (shadow)", "client", l.client(w, r).String(), "policy", ru.name)
		return true
	}
	l.count(limited)
	hd := w.Header()
	if l.cfg.Headers != "none" {
		l.setFields(hd, ru, v)
	}
	hd["Retry-After"] = []string{strconv.FormatInt(max(1, ceilSeconds(v.retry)), 10)}
	l.refuse(w, http.StatusTooManyRequests, "rate limit exceeded\n")
	return false
}

func (l *Limiter) takeLocal(h uint64, ru *rule, now int64) verdict {
	var v verdict
	l.state.local.update(h, now, func(tat int64, found bool) (int64, bool) {
		nt := tat
		v, nt = ru.take(tat, now)
		return nt, v.allowed || found
	})
	return v
}

func (l *Limiter) count(o outcome) { l.m.outcomes[o].Inc() }

func (l *Limiter) refuse(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h[LimitHeader] = []string{l.cfg.Name}
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

// logThrottled logs at most one line per second per limit.
func (l *Limiter) logThrottled(now int64, msg string, args ...any) {
	last := l.logged.Load()
	if now-last < int64(time.Second) || !l.logged.CompareAndSwap(last, now) {
		return
	}
	l.log.Warn(msg, append(args, "route", l.route, "limit", l.cfg.Name)...)
}

// setFields writes the RateLimit-Policy and RateLimit fields
// (draft-ietf-httpapi-ratelimit-headers): the policy as quota q per window
// w seconds, and the remaining requests r with t seconds until the bucket
// is full again.
func (l *Limiter) setFields(h map[string][]string, ru *rule, v verdict) {
	h["Ratelimit-Policy"] = l.policy[ru]
	var buf [96]byte
	b := append(buf[:0], '"')
	b = append(b, ru.name...)
	b = append(b, `";r=`...)
	b = strconv.AppendInt(b, v.remaining, 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, ceilSeconds(v.reset), 10)
	h["Ratelimit"] = []string{string(b)}
}

func policyField(ru *rule) string {
	q, w := ru.rate, int64(ru.per/time.Second)
	if ru.per%time.Second != 0 {
		// The window is whole seconds: state the rate per second.
		q, w = int64(float64(ru.rate)/ru.per.Seconds()), 1
	}
	return `"` + ru.name + `";q=` + strconv.FormatInt(q, 10) + ";w=" + strconv.FormatInt(w, 10)
}

func ceilSeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	return max(s, 0)
}
