package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	"github.com/xlb-project/xlb/healthd/api"
)

// socketFlag is the --socket flag of every command that talks to the daemon.
type socketFlag struct {
	path string
}

func (s *socketFlag) register(fs *pflag.FlagSet) {
	fs.StringVar(&s.path, "socket", defaultSocket(), "the daemon's API socket (default from $"+socketEnv+" when set)")
}

func (s *socketFlag) client() *api.Client { return api.NewClient(s.path) }

// vipArg checks a VIP argument before anything is sent.
func vipArg(s string) (string, error) {
	k, err := api.ParseVIPKey(s)
	if err != nil {
		return "", usageErrorf("VIP: %v", err)
	}
	return k.String(), nil
}

func backendArg(s string) (string, error) {
	a, err := api.ParseBackendAddr(s)
	if err != nil {
		return "", usageErrorf("backend address: %v", err)
	}
	return a.String(), nil
}

func weightArg(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n < 1 || n > api.MaxWeight {
		return 0, usageErrorf("weight %q: allowed are 1-%d", s, api.MaxWeight)
	}
	return uint32(n), nil
}

func exactArgs(args []string, n int, names string) error {
	if len(args) < n {
		return usageErrorf("missing arguments: want %s", names)
	}
	if len(args) > n {
		return usageErrorf("unexpected argument %q", args[n])
	}
	return nil
}

// ago formats how long before now t was, for tables.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func percent(f float64) string { return fmt.Sprintf("%.1f%%", f*100) }

// rate formats a per-second rate with an SI prefix.
func rate(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.1fG", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}
