package main

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/xlb-project/xlb/healthd/api"
	"github.com/xlb-project/xlb/healthd/fleet"
)

// errFleetDiffers makes fleet-check exit 1 after printing the report.
var errFleetDiffers = errors.New("the fleet's tables differ")

func fleetCheckCommand() *command {
	var (
		peers   []string
		out     output
		timeout time.Duration
	)
	return &command{
		name:    "fleet-check",
		summary: "compare every VIP's table inputs and installed table across balancers",
		usage:   "--peer SOCKET|URL --peer SOCKET|URL ... [-o table|json]",
		examples: "  xlb fleet-check --peer /run/xlb/xlb.sock --peer http://198.51.100.3:9437 --peer http://198.51.100.4:9437\n" +
			"  (a URL is a daemon's metrics_addr, which serves /fleet read-only)",
		flags: func(fs *pflag.FlagSet) {
			fs.StringArrayVar(&peers, "peer", nil, "a balancer: its API socket path or its metrics URL (http://ADDR:PORT); at least two")
			fs.DurationVar(&timeout, "timeout", 5*time.Second, "per peer")
			out.register(fs)
		},
		run: func(io *stdio, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if len(peers) < 2 {
				return usageErrorf("--peer: %d given, at least two balancers are needed", len(peers))
			}
			for _, p := range peers {
				if !isURL(p) && !strings.HasPrefix(p, "/") {
					return usageErrorf("--peer %q: allowed are an absolute socket path or an http:// URL", p)
				}
			}
			hc := &http.Client{Timeout: timeout}
			var bs []fleet.Balancer
			for _, p := range peers {
				b, err := fetchFleet(hc, p)
				if err != nil {
					return fmt.Errorf("peer %s: %w", p, err)
				}
				b.Name = p
				bs = append(bs, b)
			}
			diffs := fleet.Compare(bs)
			report := struct {
				Balancers   []string           `json:"balancers"`
				VIPs        int                `json:"vips"`
				Differences []fleet.Difference `json:"differences"`
			}{Balancers: peers, Differences: diffs}
			if report.Differences == nil {
				report.Differences = []fleet.Difference{}
			}
			seen := map[string]bool{}
			for _, b := range bs {
				for _, v := range b.VIPs {
					seen[v.VIP] = true
				}
			}
			report.VIPs = len(seen)
			err := out.print(io.out, report, func(t *table) {
				if len(diffs) == 0 {
					fmt.Fprintf(t.w, "OK: %d VIPs build the same tables on %d balancers\n", report.VIPs, len(bs))
					return
				}
				fmt.Fprintf(t.w, "DIFFERENT: %d of %d VIPs differ across %d balancers\n", len(diffs), report.VIPs, len(bs))
				for _, d := range diffs {
					fmt.Fprintf(t.w, "VIP %s\n", d.VIP)
					for _, r := range d.Reasons {
						fmt.Fprintf(t.w, "  %s\n", r)
					}
				}
			})
			if err != nil {
				return err
			}
			if len(diffs) > 0 {
				return errFleetDiffers
			}
			return nil
		},
	}
}

func isURL(peer string) bool {
	return strings.HasPrefix(peer, "http://") || strings.HasPrefix(peer, "https://")
}

// fetchFleet reads a balancer's fleet report from its socket or URL.
func fetchFleet(hc *http.Client, peer string) (fleet.Balancer, error) {
	if isURL(peer) {
		return api.FetchFleet(hc, peer)
	}
	return api.NewClient(peer).Fleet()
}
