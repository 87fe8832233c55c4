package proxy

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/xlb-project/xlb/internal/statuspage"
	"github.com/xlb-project/xlb/proxy/config"
)

// StatusPage returns the read-only status page of the proxy, served next to
// /metrics on admin.metrics_address.
func (p *Proxy) StatusPage() http.Handler {
	return statuspage.New(p.StatusView, statuspage.Options{})
}

// StatusView is the proxy's state for the status page: every pool with its
// backends (drain flag, health since when, last check error, requests) and
// every route; the breaker state where the pool has breakers.
func (p *Proxy) StatusView() statuspage.View {
	st := p.state.Load()
	host, _ := os.Hostname()
	v := statuspage.View{
		Kind: "l7", Title: "xlb proxy", GroupLabel: "pool", MemberLabel: "backend", Time: time.Now(),
		Groups: make([]statuspage.Group, 0, len(st.cfg.Pools)),
	}
	if host != "" {
		v.Title += " on " + host
	}
	now := time.Now()
	for _, pc := range st.cfg.Pools {
		pl := st.pools[pc.Name]
		alg := pc.Algorithm
		if alg == "" {
			alg = "round_robin"
		}
		g := statuspage.Group{Name: pc.Name, Detail: alg}
		bs := pl.members.Load().backends
		totalWeight := 0
		for _, b := range bs {
			if !b.drained.Load() {
				totalWeight += b.Weight
			}
		}
		for _, b := range bs {
			total, failed := b.Requests()
			m := statuspage.Member{
				Address: b.ID, Weight: uint32(b.Weight), Admin: "active", Health: b.healthState().String(),
				Requests: total, Failures: failed, InFlight: b.InFlight(), Breaker: b.breakerState(now),
			}
			if b.drained.Load() {
				m.Admin = "draining"
			} else {
				g.Active++
				if totalWeight > 0 {
					m.Share = float64(b.Weight) / float64(totalWeight)
				}
				if m.Health == "healthy" {
					g.Healthy++
				}
			}
			if cs, ok := p.prober.Status(b.healthID()); ok {
				m.HealthSince, m.LastError = cs.Since, cs.LastErr
			}
			if d := pl.detector; d != nil && d.Ejected(b.ID, now) {
				m.LastError = strings.TrimSpace("ejected by outlier detection; " + m.LastError)
			}
			m.State = statuspage.MemberState(m.Admin, m.Health)
			g.Requests += total
			g.Members = append(g.Members, m)
		}
		v.Groups = append(v.Groups, g)
	}
	for _, rc := range st.cfg.Routes {
		r := statuspage.Route{Name: rc.Name, Match: describeMatch(rc.Match), Pool: rc.Pool}
		switch {
		case rc.Respond != nil:
			r.Action = fmt.Sprintf("respond %d", rc.Respond.Status)
		case rc.Redirect != nil:
			r.Action = "redirect"
		}
		v.Routes = append(v.Routes, r)
	}
	return v
}

// describeMatch sums up a route's match in one line.
func describeMatch(m config.MatchConfig) string {
	var parts []string
	if len(m.Hosts) > 0 {
		parts = append(parts, "host "+strings.Join(m.Hosts, ","))
	}
	if m.Path != nil {
		switch {
		case m.Path.Exact != "":
			parts = append(parts, "path = "+m.Path.Exact)
		case m.Path.Prefix != "":
			parts = append(parts, "path "+m.Path.Prefix+"*")
		case m.Path.Pattern != "":
			parts = append(parts, "path "+m.Path.Pattern)
		}
	}
	if len(m.Methods) > 0 {
		parts = append(parts, strings.Join(m.Methods, ","))
	}
	for _, h := range m.Headers {
		parts = append(parts, "header "+h.Name)
	}
	for _, q := range m.Query {
		parts = append(parts, "query "+q.Name)
	}
	if len(parts) == 0 {
		return "everything"
	}
	return strings.Join(parts, "; ")
}
