// Package discovery reads the backends of an L7 pool from outside the
// proxy's config: a file that operators or tools rewrite, or DNS (A, AAAA or
// SRV records). A Source returns the current list; Watch polls a Source and
// hands every changed list to the pool.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Target is one backend as discovered.
type Target struct {
	// Addr is host:port; an IP address for DNS sources, as written for files.
	Addr string
	// Weight is the backend's relative share, at least 1.
	Weight int
}

// Source returns the current targets of a pool.
type Source interface {
	Targets(ctx context.Context) ([]Target, error)
}

// Errors a caller can act on.
var (
	// ErrNoTargets: the source answered with no target at all. Watch keeps
	// the last list rather than empty the pool.
	ErrNoTargets = errors.New("no targets")
	// ErrConfig: a source is misconfigured; wrapped with the field and value.
	ErrConfig = errors.New("invalid discovery setting")
)

// DefaultInterval is how often Watch polls when no interval is given.
const DefaultInterval = 5 * time.Second

// Watch calls src.Targets at once and then every interval until ctx ends, and
// calls update with the targets (sorted by Addr) each time they differ from
// the last list passed to it, the first time included. A failing or empty
// answer is logged and the last list stays. Watch returns when ctx ends; it
// returns an error only when the very first answer fails, without calling
// update, so a pool never starts from nothing by accident.
func Watch(ctx context.Context, src Source, interval time.Duration, log *slog.Logger, update func([]Target)) error {
	if interval <= 0 {
		interval = DefaultInterval
	}
	current, err := fetch(ctx, src)
	if err != nil {
		return fmt.Errorf("first discovery: %w", err)
	}
	update(current)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		next, err := fetch(ctx, src)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("discovery failed; keeping the last targets", "err", err, "targets", len(current))
			}
			continue
		}
		if !slices.Equal(next, current) {
			log.Info("discovered targets changed", "before", len(current), "after", len(next))
			current = next
			update(slices.Clone(current))
		}
	}
}

func fetch(ctx context.Context, src Source) ([]Target, error) {
	ts, err := src.Targets(ctx)
	if err != nil {
		return nil, err
	}
	if len(ts) == 0 {
		return nil, ErrNoTargets
	}
	return normalise(ts), nil
}

// normalise sorts by Addr and merges duplicates, adding their weights.
func normalise(ts []Target) []Target {
	out := slices.Clone(ts)
	for i := range out {
		if out[i].Weight < 1 {
			out[i].Weight = 1
		}
	}
	slices.SortFunc(out, func(a, b Target) int { return strings.Compare(a.Addr, b.Addr) })
	merged := out[:0]
	for _, t := range out {
		if n := len(merged); n > 0 && merged[n-1].Addr == t.Addr {
			merged[n-1].Weight += t.Weight
			continue
		}
		merged = append(merged, t)
	}
	return merged
}

// Static is a fixed list, for tests and for pools declared in the config.
type Static []Target

// Targets returns the list.
func (s Static) Targets(context.Context) ([]Target, error) {
	return slices.Clone(s), nil
}

// DNS types a DNS source may query.
const (
	TypeA    = "A"
	TypeAAAA = "AAAA"
	TypeIP   = "A+AAAA" // both families
	TypeSRV  = "SRV"
)

// DNS reads targets from DNS. For A, AAAA and A+AAAA every address of Name
// becomes a target on Port with weight 1. For SRV, the records of Name with
// the lowest priority become targets: each record's target host is resolved
// (A and AAAA) and every address gets the record's port and weight (0 counts
// as 1).
type DNS struct {
	Name string
	// Type is A, AAAA, A+AAAA or SRV; default A+AAAA.
	Type string
	// Port for A/AAAA answers; SRV records carry their own.
	Port uint16
	// Resolver to ask; nil means net.DefaultResolver.
	Resolver *net.Resolver
	// Timeout for one refresh; default 5s.
	Timeout time.Duration
}

// Validate checks the fields; errors name the field and value.
func (d *DNS) Validate() error {
	if d.Name == "" {
		return fmt.Errorf("%w: dns name is empty: want a domain name", ErrConfig)
	}
	switch d.Type {
	case "", TypeA, TypeAAAA, TypeIP:
		if d.Port == 0 {
			return fmt.Errorf("%w: dns port 0 for %s records: want 1 to 65535", ErrConfig, d.typ())
		}
	case TypeSRV:
	default:
		return fmt.Errorf("%w: dns type %q: allowed A, AAAA, A+AAAA, SRV", ErrConfig, d.Type)
	}
	return nil
}

func (d *DNS) typ() string {
	if d.Type == "" {
		return TypeIP
	}
	return d.Type
}

func (d *DNS) resolver() *net.Resolver {
	if d.Resolver != nil {
		return d.Resolver
	}
	return net.DefaultResolver
}

// Targets resolves the name now.
func (d *DNS) Targets(ctx context.Context) ([]Target, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if d.typ() == TypeSRV {
		return d.srv(ctx)
	}
	network := map[string]string{TypeA: "ip4", TypeAAAA: "ip6", TypeIP: "ip"}[d.typ()]
	ips, err := d.resolver().LookupNetIP(ctx, network, d.Name)
	if err != nil {
		return nil, fmt.Errorf("resolve %s %s: %w", d.typ(), d.Name, err)
	}
	out := make([]Target, 0, len(ips))
	for _, ip := range ips {
		out = append(out, Target{Addr: netip.AddrPortFrom(ip.Unmap(), d.Port).String(), Weight: 1})
	}
	return normalise(out), nil
}

func (d *DNS) srv(ctx context.Context) ([]Target, error) {
	_, records, err := d.resolver().LookupSRV(ctx, "", "", d.Name)
	if err != nil {
		return nil, fmt.Errorf("resolve SRV %s: %w", d.Name, err)
	}
	if len(records) == 0 {
		return nil, nil
	}
	best := records[0].Priority
	for _, r := range records {
		best = min(best, r.Priority)
	}
	var out []Target
	for _, r := range records {
		if r.Priority != best || r.Target == "." {
			continue
		}
		ips, err := d.resolver().LookupNetIP(ctx, "ip", r.Target)
		if err != nil {
			return nil, fmt.Errorf("resolve SRV target %s of %s: %w", r.Target, d.Name, err)
		}
		for _, ip := range ips {
			out = append(out, Target{Addr: netip.AddrPortFrom(ip.Unmap(), r.Port).String(), Weight: max(int(r.Weight), 1)})
		}
	}
	return normalise(out), nil
}

// parsePort reads a port number 1–65535.
func parsePort(s string) (uint16, bool) {
	n, err := strconv.ParseUint(s, 10, 16)
	return uint16(n), err == nil && n > 0
}
