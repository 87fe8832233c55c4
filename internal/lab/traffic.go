package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// TrafficConfig configures a stream of new connections to a VIP with a live
// display of how they spread over the backends.
type TrafficConfig struct {
	VIP netip.AddrPort // the TCP echo port of a VIP
	// Rate is new connections per second; default 100.
	Rate int
	// Duration ends the stream; 0 runs until ctx ends.
	Duration time.Duration
	// Window is the span the "now" column counts over; default 2s.
	Window time.Duration
	// Backends are the names shown, in order, even before they answer.
	Backends []string
	// Hold keeps one long-lived connection open and echoes on it every
	// refresh, to show that it survives what happens to new connections.
	Hold bool
	// HoldFile, when set, receives the name of the held connection's
	// backend once it is open (the demo drains that backend).
	HoldFile string
	// PhaseFile, when set, is read at every refresh and shown as the
	// current phase (the demo writes what it is doing there).
	PhaseFile string
	// Out receives the display; Live redraws it in place (a terminal),
	// otherwise one summary line is written per refresh.
	Out  io.Writer
	Live bool
}

// TrafficResult sums up a stream.
type TrafficResult struct {
	Total    map[string]int // connections per backend
	Failed   int            // connections that did not complete
	Held     string         // backend of the long-lived connection
	HeldOK   int            // echoes answered on it
	HeldFail int            // echoes that failed on it
}

type sample struct {
	at      time.Time
	backend string // "" for a failure
}

// RunTraffic opens Rate new TCP connections per second from c to cfg.VIP,
// each reading the greeting that names its backend, and refreshes the display
// twice a second.
func RunTraffic(ctx context.Context, c Client, cfg TrafficConfig) (TrafficResult, error) {
	if cfg.Rate <= 0 {
		cfg.Rate = 100
	}
	if cfg.Window <= 0 {
		cfg.Window = 2 * time.Second
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	res := TrafficResult{Total: map[string]int{}}
	var (
		mu      sync.Mutex
		samples []sample
		wg      sync.WaitGroup
	)
	var held *Conn
	if cfg.Hold {
		var err error
		held, err = c.Open(cfg.VIP)
		if err != nil {
			return res, fmt.Errorf("open long-lived connection: %w", err)
		}
		defer held.Close()
		res.Held = held.Backend
		if cfg.HoldFile != "" {
			if err := os.WriteFile(cfg.HoldFile, []byte(held.Backend+"\n"), 0o644); err != nil {
				return res, fmt.Errorf("write hold file: %w", err)
			}
		}
	}

	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(cfg.Rate))
	defer tick.Stop()
	refresh := time.NewTicker(500 * time.Millisecond)
	defer refresh.Stop()
	// At most this many connections are in flight, so a black hole does
	// not pile up goroutines.
	sem := make(chan struct{}, 64)
	d := &display{cfg: cfg, start: start}
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			mu.Lock()
			d.draw(time.Now(), samples, res)
			mu.Unlock()
			return res, nil
		case <-tick.C:
			select {
			case sem <- struct{}{}:
			default:
				continue
			}
			wg.Go(func() {
				defer func() { <-sem }()
				name, err := c.Hello(cfg.VIP)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					res.Failed++
					name = ""
				} else {
					res.Total[name]++
				}
				samples = append(samples, sample{at: time.Now(), backend: name})
			})
		case now := <-refresh.C:
			if held != nil {
				if err := held.Echo(fmt.Sprintf("ping %d", res.HeldOK+res.HeldFail)); err != nil {
					res.HeldFail++
				} else {
					res.HeldOK++
				}
			}
			mu.Lock()
			cut := now.Add(-cfg.Window)
			i := 0
			for i < len(samples) && samples[i].at.Before(cut) {
				i++
			}
			samples = samples[i:]
			d.draw(now, samples, res)
			mu.Unlock()
		}
	}
}

type display struct {
	cfg   TrafficConfig
	start time.Time
	lines int // drawn last time, to redraw in place
}

func (d *display) draw(now time.Time, window []sample, res TrafficResult) {
	recent := map[string]int{}
	failed := 0
	for _, s := range window {
		if s.backend == "" {
			failed++
		} else {
			recent[s.backend]++
		}
	}
	names := slices.Clone(d.cfg.Backends)
	for n := range res.Total {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	inWindow := len(window) - failed

	var b strings.Builder
	phase := ""
	if d.cfg.PhaseFile != "" {
		if p, err := os.ReadFile(d.cfg.PhaseFile); err == nil {
			phase = strings.TrimSpace(string(p))
		}
	}
	if !d.cfg.Live {
		fmt.Fprintf(&b, "%5.1fs", now.Sub(d.start).Seconds())
		for _, n := range names {
			fmt.Fprintf(&b, "  %s %3.0f%%", n, pct(recent[n], inWindow))
		}
		fmt.Fprintf(&b, "  failed %d", res.Failed)
		if res.Held != "" {
			fmt.Fprintf(&b, "  held(%s) ok %d failed %d", res.Held, res.HeldOK, res.HeldFail)
		}
		if phase != "" {
			fmt.Fprintf(&b, "  | %s", phase)
		}
		fmt.Fprintln(d.cfg.Out, b.String())
		return
	}
	fmt.Fprintf(&b, "xlb lab: %d new connections/s to %s   %.0fs\n", d.cfg.Rate, d.cfg.VIP, now.Sub(d.start).Seconds())
	if phase != "" {
		fmt.Fprintf(&b, "now: %s\n", phase)
	} else {
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "\n%-8s %7s %6s  %-30s %7s\n", "BACKEND", "LAST "+d.cfg.Window.String(), "SHARE", "", "TOTAL")
	for _, n := range names {
		share := pct(recent[n], inWindow)
		bar := strings.Repeat("█", int(share*30/100+0.5))
		fmt.Fprintf(&b, "%-8s %7d %5.0f%%  %-30s %7d\n", n, recent[n], share, bar, res.Total[n])
	}
	fmt.Fprintf(&b, "%-8s %7d %6s  %-30s %7d\n", "failed", failed, "", "", res.Failed)
	if d.cfg.Hold {
		state := "ok"
		if res.HeldFail > 0 {
			state = fmt.Sprintf("%d FAILED", res.HeldFail)
		}
		fmt.Fprintf(&b, "\nlong-lived connection on %s: %d echoes answered, %s\n", res.Held, res.HeldOK, state)
	}
	out := b.String()
	if d.lines > 0 {
		// Move up over the previous drawing and clear to the end.
		fmt.Fprintf(d.cfg.Out, "\033[%dA\033[J", d.lines)
	}
	fmt.Fprint(d.cfg.Out, out)
	d.lines = strings.Count(out, "\n")
}

func pct(n, total int) float64 {
	if total == 0 {
		return 0
	}
	return 100 * float64(n) / float64(total)
}
