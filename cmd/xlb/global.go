package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"github.com/xlb-project/xlb/healthd/api"
)

// Global flags may come before the command ("xlb --socket S vip list") as
// well as after it. They are moved to the end of the command's own flags,
// so each command still decides whether it takes them.
var globalFlags = map[string]string{ // flag -> its name in the FlagSet
	"--socket": "socket",
	"--output": "output",
	"-o":       "output",
}

// socketEnv names the environment variable that sets the daemon's socket
// when --socket is not given.
const socketEnv = "XLB_SOCKET"

// defaultSocket is --socket's default: $XLB_SOCKET, else the daemon's.
func defaultSocket() string {
	if s := os.Getenv(socketEnv); s != "" {
		return s
	}
	return api.DefaultSocket
}

// takeGlobals removes the global flags (with their values) from the front
// of args, stopping at the first word that is not one.
func takeGlobals(args []string) (globals, rest []string, err error) {
	for len(args) > 0 && strings.HasPrefix(args[0], "-") && args[0] != "-" {
		a := args[0]
		if a == "-h" || a == "--help" {
			break
		}
		name, _, hasValue := strings.Cut(a, "=")
		if !hasValue && strings.HasPrefix(a, "-o") && len(a) > 2 && !strings.HasPrefix(a, "--") {
			name, hasValue = "-o", true // -ojson
		}
		if _, ok := globalFlags[name]; !ok {
			return nil, nil, usageErrorf("unknown flag %q before the command: only --socket and -o/--output may come first; give the others after the command", a)
		}
		if hasValue {
			globals, args = append(globals, a), args[1:]
			continue
		}
		if len(args) < 2 {
			return nil, nil, usageErrorf("%s needs a value", a)
		}
		globals, args = append(globals, a, args[1]), args[2:]
	}
	return globals, args, nil
}

// checkGlobals refuses a global flag given before a command that does not
// take it, naming the command.
func checkGlobals(globals []string, fs *pflag.FlagSet, path string) error {
	for _, g := range globals {
		name, _, _ := strings.Cut(g, "=")
		if strings.HasPrefix(name, "-o") && !strings.HasPrefix(name, "--") {
			name = "-o"
		}
		flag, ok := globalFlags[name]
		if !ok {
			continue // a value
		}
		if fs.Lookup(flag) == nil {
			return usageErrorf("%s does not apply to '%s'", name, path)
		}
	}
	return nil
}

// withFix adds to an error a user can cause the way out of it, where the
// error alone does not say it; on the same line, as every error.
func withFix(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, api.ErrNotRunning):
		return fmt.Errorf("%w; to fix: start the daemon (systemctl start xlb, or xlb daemon --config FILE), "+
			"or point at the socket it listens on: --socket PATH or %s=PATH (default %s)", err, socketEnv, api.DefaultSocket)
	case strings.Contains(msg, "may not change anything"):
		return fmt.Errorf("%w; to fix: changes need root: run it with sudo", err)
	case strings.Contains(msg, "unknown VIP"):
		return fmt.Errorf("%w; to fix: see the VIPs with 'xlb vip list', add one with 'xlb vip add'", err)
	case strings.Contains(msg, "unknown backend"):
		return fmt.Errorf("%w; to fix: see the VIP's backends with 'xlb backend list VIP'", err)
	case strings.Contains(msg, "permission denied") && strings.Contains(msg, "connect to"):
		return fmt.Errorf("%w; to fix: run as root, or add yourself to the socket's group (usermod -aG xlb $USER, then log in again)", err)
	}
	return err
}
