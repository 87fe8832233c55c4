package proxy

import (
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/xlb-project/xlb/proxy/config"
)

// route is a compiled RouteConfig. Matching allocates nothing except when
// the route has query conditions (the query is parsed once per request).
type route struct {
	name    string
	hosts   []hostMatch
	path    pathMatch
	methods []string
	headers []valueMatch
	query   []valueMatch

	pool     *pool
	redirect *config.RedirectConfig
	respond  *config.RespondConfig
	rewrite  *rewrite
	reqOps   headerOps
	respOps  headerOps
	timeout  int64             // nanoseconds; 0 none
	retry    *routeRetry       // nil: no retries
	fallback *routeFallback    // nil: 503 when the pool has no usable backend
	body     config.BodyLimits // the route's own; the listener's apply where unset

	// handler is the route's chain: the middleware around the final
	// handler that forwards, redirects or responds.
	handler http.Handler
	metrics *routeMetrics
}

type hostMatch struct {
	name     string // lower case; for a wildcard the suffix with its dot, ".example.com"
	wildcard bool
}

type pathKind uint8

const (
	pathAny pathKind = iota
	pathExact
	pathPrefix
	pathPattern
)

type pathMatch struct {
	kind    pathKind
	value   string
	pattern []config.PatternSegment
}

type valueMatch struct {
	name    string // canonical for headers
	present bool   // presence only
	absent  bool
	exact   string
	hasExa  bool
	re      *regexp.Regexp
}

// rewrite works on the escaped path, so that encodings it does not touch
// (an encoded "/" in particular) reach the backend as the client sent them.
type rewrite struct {
	strip      string // decoded, as configured
	replaceEsc string // the replacement prefix, escaped
	re         *regexp.Regexp
	repl       string
}

type headerOps struct {
	remove []string
	set    [][2]string
	setVal [][]string // set[i][1] as a one-value slice of capacity 1, shared read-only
	add    [][2]string
	host   string // set "Host" on a request: changes the Host sent
}

func compileRoute(rc *config.RouteConfig, pools map[string]*pool) (*route, error) {
	r := &route{
		name:     rc.Name,
		methods:  rc.Match.Methods,
		redirect: rc.Redirect,
		respond:  rc.Respond,
		timeout:  int64(rc.Timeout),
		body:     rc.BodyLimits,
		reqOps:   compileOps(rc.RequestHeaders, true),
		respOps:  compileOps(rc.ResponseHeaders, false),
	}
	if rc.Pool != "" {
		r.pool = pools[rc.Pool]
	}
	for _, h := range rc.Match.Hosts {
		if s, ok := strings.CutPrefix(h, "*"); ok {
			r.hosts = append(r.hosts, hostMatch{name: s, wildcard: true})
		} else {
			r.hosts = append(r.hosts, hostMatch{name: h})
		}
	}
	if p := rc.Match.Path; p != nil {
		switch {
		case p.Exact != "":
			r.path = pathMatch{kind: pathExact, value: p.Exact}
		case p.Prefix != "":
			r.path = pathMatch{kind: pathPrefix, value: p.Prefix}
		default:
			segs, err := config.ParsePattern(p.Pattern)
			if err != nil {
				return nil, err
			}
			r.path = pathMatch{kind: pathPattern, pattern: segs}
		}
	}
	for _, h := range rc.Match.Headers {
		r.headers = append(r.headers, compileValue(h, true))
	}
	for _, q := range rc.Match.Query {
		r.query = append(r.query, compileValue(q, false))
	}
	if rw := rc.Rewrite; rw != nil {
		r.rewrite = &rewrite{strip: rw.StripPrefix, replaceEsc: (&url.URL{Path: rw.ReplacePrefix}).EscapedPath(), repl: rw.Replacement}
		if rw.Regex != "" {
			r.rewrite.re = regexp.MustCompile(rw.Regex) // validated
		}
	}
	return r, nil
}

func compileValue(v config.ValueMatch, header bool) valueMatch {
	m := valueMatch{name: v.Name, absent: v.Absent, exact: v.Exact, hasExa: v.Exact != ""}
	if header {
		m.name = http.CanonicalHeaderKey(v.Name)
	}
	if v.Regex != "" {
		m.re = regexp.MustCompile(v.Regex) // validated
	}
	m.present = !m.absent && !m.hasExa && m.re == nil
	return m
}

func compileOps(h config.HeaderOps, request bool) headerOps {
	var o headerOps
	for _, k := range h.Remove {
		o.remove = append(o.remove, http.CanonicalHeaderKey(k))
	}
	for k, v := range sortedKeys(h.Set) {
		k = http.CanonicalHeaderKey(k)
		if request && k == "Host" {
			o.host = v
			continue
		}
		o.set = append(o.set, [2]string{k, v})
		o.setVal = append(o.setVal, []string{v})
	}
	for k, v := range sortedKeys(h.Add) {
		o.add = append(o.add, [2]string{http.CanonicalHeaderKey(k), v})
	}
	return o
}

// sortedKeys iterates a map in key order so compiled ops are deterministic.
func sortedKeys(m map[string]string) func(func(string, string) bool) {
	return func(yield func(string, string) bool) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if !yield(k, m[k]) {
				return
			}
		}
	}
}

func (o *headerOps) apply(h http.Header) {
	for _, k := range o.remove {
		delete(h, k)
	}
	for i, kv := range o.set {
		h[kv[0]] = o.setVal[i][:1:1]
	}
	for _, kv := range o.add {
		h[kv[0]] = append(h[kv[0]], kv[1])
	}
}

func (m *pathMatch) match(path string) bool {
	switch m.kind {
	case pathAny:
		return true
	case pathExact:
		return path == m.value
	case pathPrefix:
		if !strings.HasPrefix(path, m.value) {
			return false
		}
		return len(path) == len(m.value) || m.value[len(m.value)-1] == '/' || path[len(m.value)] == '/'
	}
	rest := strings.TrimPrefix(path, "/")
	for i, s := range m.pattern {
		if s.Rest {
			return true
		}
		seg, tail, more := strings.Cut(rest, "/")
		if s.Wild {
			if seg == "" {
				return false
			}
		} else if seg != s.Literal {
			return false
		}
		if i == len(m.pattern)-1 {
			return !more
		}
		if !more {
			// "/a/{x...}" also matches "/a": the rest is empty.
			return i == len(m.pattern)-2 && m.pattern[i+1].Rest
		}
		rest = tail
	}
	return false
}

// hostOnly returns the request's host without port, as sent.
func hostOnly(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		host = host[:i]
	}
	return strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), ".")
}

func hostMatches(hosts []hostMatch, host string) bool {
	if len(hosts) == 0 {
		return true
	}
	for _, h := range hosts {
		if h.wildcard {
			if len(host) > len(h.name) && strings.EqualFold(host[len(host)-len(h.name):], h.name) {
				return true
			}
		} else if strings.EqualFold(host, h.name) {
			return true
		}
	}
	return false
}

func (v *valueMatch) matchValue(vals []string) bool {
	switch {
	case v.absent:
		return len(vals) == 0
	case len(vals) == 0:
		return false
	case v.present:
		return true
	case v.hasExa:
		return vals[0] == v.exact
	default:
		return v.re.MatchString(vals[0])
	}
}

// match reports whether the request satisfies every condition of the route.
// host is hostOnly(r.Host); query is parsed lazily through q.
func (rt *route) match(r *http.Request, host string, q *queryCache) bool {
	if !hostMatches(rt.hosts, host) {
		return false
	}
	if !rt.path.match(r.URL.Path) {
		return false
	}
	if len(rt.methods) > 0 {
		ok := false
		for _, m := range rt.methods {
			if m == r.Method {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for i := range rt.headers {
		if !rt.headers[i].matchValue(r.Header[rt.headers[i].name]) {
			return false
		}
	}
	if len(rt.query) > 0 {
		vals := q.get(r)
		for i := range rt.query {
			if !rt.query[i].matchValue(vals[rt.query[i].name]) {
				return false
			}
		}
	}
	return true
}

// queryCache parses the query string at most once per request.
type queryCache struct {
	vals url.Values
	done bool
}

func (q *queryCache) get(r *http.Request) url.Values {
	if !q.done {
		q.vals, _ = url.ParseQuery(r.URL.RawQuery)
		q.done = true
	}
	return q.vals
}

// apply rewrites the request path in place. The prefix is stripped from
// the escaped path (however the client encoded the characters of the
// prefix) and the regex runs on the escaped path.
func (rw *rewrite) apply(u *url.URL) {
	orig := u.EscapedPath()
	p := orig
	if rw.strip != "" {
		if rest, ok := cutDecodedPrefix(p, rw.strip); ok {
			p = rw.replaceEsc + rest
			if p == "" || p[0] != '/' {
				p = "/" + p
			}
		}
	}
	if rw.re != nil {
		p = rw.re.ReplaceAllString(p, rw.repl)
		if p == "" || p[0] != '/' {
			p = "/" + p
		}
	}
	if p != orig {
		setEscapedPath(u, p)
	}
}

// cutDecodedPrefix cuts from the escaped path esc the characters that
// decode to prefix.
func cutDecodedPrefix(esc, prefix string) (rest string, ok bool) {
	i := 0
	for j := 0; j < len(prefix); j++ {
		if i >= len(esc) {
			return "", false
		}
		c, n := esc[i], 1
		if c == '%' && i+2 < len(esc) {
			if v, err := strconv.ParseUint(esc[i+1:i+3], 16, 8); err == nil {
				c, n = byte(v), 3
			}
		}
		if c != prefix[j] {
			return "", false
		}
		i += n
	}
	return esc[i:], true
}

// setEscapedPath makes p the path of u; a p that is not a valid escaped
// path is taken as a decoded one.
func setEscapedPath(u *url.URL, p string) {
	dec, err := url.PathUnescape(p)
	if err != nil {
		u.Path, u.RawPath = p, ""
		return
	}
	u.Path, u.RawPath = dec, ""
	if dec != p {
		u.RawPath = p // EscapedPath checks it still encodes Path
	}
}

// redirectURL builds the Location of a redirect route.
func redirectURL(rc *config.RedirectConfig, r *http.Request, tls bool) string {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	if rc.Scheme != "" {
		scheme = rc.Scheme
	}
	host := r.Host
	if rc.Host != "" {
		host = rc.Host
	}
	if rc.Port != 0 {
		h := hostOnly(host)
		if strings.Contains(h, ":") {
			h = "[" + h + "]"
		}
		host = h + ":" + strconv.Itoa(rc.Port)
	} else if rc.Scheme != "" || rc.Host != "" {
		// A scheme change drops a port that belonged to the old scheme.
		if rc.Host == "" {
			h := hostOnly(host)
			if strings.Contains(h, ":") {
				h = "[" + h + "]"
			}
			host = h
		}
	}
	path := r.URL.EscapedPath()
	if rc.Path != "" {
		path = rc.Path
	}
	u := scheme + "://" + host + path
	if !rc.StripQuery && r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	return u
}
