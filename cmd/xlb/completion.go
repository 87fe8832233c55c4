package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/xlb-project/xlb/healthd/api"
)

// Shell completion: the scripts `xlb completion SHELL` prints call
// `xlb __complete WORD...` with the words typed after "xlb" (the last one
// being completed, maybe empty). It prints the candidates, one per line, or
// the single line completeFiles when the shell should complete file names.
// VIPs and backends come from the running daemon, asked with a short
// timeout so that a dead socket never blocks the shell.

const completeFiles = ":files"

// completeTimeout bounds the question to the daemon.
const completeTimeout = time.Second

// flagValues are the fixed values of flags, completed after the flag.
var flagValues = map[string][]string{
	"output":    {"table", "json"},
	"mode":      {"ipip", "l2dsr"},
	"hash":      {"5tuple", "src-ip"},
	"check":     {"tcp", "http:/", "https:/"},
	"log-level": {"debug", "info", "warn", "error"},
	"shell":     {"bash", "zsh", "fish"},
}

// fileFlags take a file or directory name.
var fileFlags = map[string]bool{
	"config": true, "socket": true, "state-dir": true, "bpffs": true, "state-file": true, "check-config": true,
}

func completionCommand() *command {
	return &command{
		name:    "completion",
		summary: "print the shell completion script for bash, zsh or fish",
		usage:   "bash|zsh|fish",
		examples: "  source <(xlb completion bash)              # this shell; ~/.bashrc to keep it\n" +
			"  xlb completion zsh > \"${fpath[1]}/_xlb\"     # then start a new shell\n" +
			"  xlb completion fish > ~/.config/fish/completions/xlb.fish",
		run: func(io *stdio, args []string) error {
			if err := exactArgs(args, 1, "bash, zsh or fish"); err != nil {
				return err
			}
			script, ok := completionScripts[args[0]]
			if !ok {
				return usageErrorf("shell %q: allowed are bash, zsh, fish", args[0])
			}
			_, err := fmt.Fprint(io.out, script)
			return err
		},
	}
}

// completeCommand is the hidden `xlb __complete`; it takes no flags of its
// own, all words are the command line being completed.
func completeCommand() *command {
	return &command{
		name:    "__complete",
		summary: "complete a command line (used by the completion scripts)",
		hidden:  true,
		raw:     true,
		run: func(io *stdio, args []string) error {
			for _, c := range complete(root(), args, statusFetcher) {
				fmt.Fprintln(io.out, c)
			}
			return nil
		},
	}
}

// fetchStatus asks the daemon at socket for its VIPs and backends.
type fetchStatus func(socket string) (api.Status, error)

func statusFetcher(socket string) (api.Status, error) {
	type result struct {
		st  api.Status
		err error
	}
	ch := make(chan result, 1)
	go func() {
		st, err := api.NewClient(socket).Status()
		ch <- result{st, err}
	}()
	select {
	case r := <-ch:
		return r.st, r.err
	case <-time.After(completeTimeout):
		return api.Status{}, fmt.Errorf("daemon at %s: no answer in %s", socket, completeTimeout)
	}
}

// complete returns the candidates for the last of words (the words after
// "xlb"), filtered by its prefix.
func complete(c *command, words []string, fetch fetchStatus) []string {
	if len(words) == 0 {
		words = []string{""}
	}
	cur, done := words[len(words)-1], words[:len(words)-1]
	var globals []string
	// Walk down the tree over the finished words.
	for len(c.sub) > 0 {
		if len(done) == 0 {
			if strings.HasPrefix(cur, "-") {
				return filter([]string{"--socket", "--output", "-o", "--help"}, cur)
			}
			var names []string
			for _, s := range c.sub {
				if !s.hidden {
					names = append(names, s.name)
				}
			}
			return filter(names, cur)
		}
		w := done[0]
		if _, ok := globalFlags[w]; ok {
			if len(done) == 1 { // completing the global flag's value
				return valuesOf(globalFlags[w], cur)
			}
			globals, done = append(globals, w, done[1]), done[2:]
			continue
		}
		if strings.HasPrefix(w, "-") {
			globals, done = append(globals, w), done[1:]
			continue
		}
		next := c.find(w)
		if next == nil {
			return nil
		}
		c, done = next, done[1:]
	}
	if c.raw {
		return nil
	}
	fs := pflag.NewFlagSet(c.name, pflag.ContinueOnError)
	if c.flags != nil {
		c.flags(fs)
	}
	// The value of a flag just typed.
	if n := len(done); n > 0 {
		if f := flagOf(fs, done[n-1]); f != nil && f.NoOptDefVal == "" && !strings.Contains(done[n-1], "=") {
			return valuesOf(f.Name, cur)
		}
	}
	if strings.HasPrefix(cur, "-") {
		var names []string
		fs.VisitAll(func(f *pflag.Flag) {
			names = append(names, "--"+f.Name)
			if f.Shorthand != "" {
				names = append(names, "-"+f.Shorthand)
			}
		})
		return filter(append(names, "--help"), cur)
	}
	// Positional arguments: VIPs and backends from the daemon, where the
	// command's synopsis starts with them.
	var pos []string
	for i := 0; i < len(done); i++ {
		if f := flagOf(fs, done[i]); f != nil {
			if f.NoOptDefVal == "" && !strings.Contains(done[i], "=") {
				i++
			}
			continue
		}
		pos = append(pos, done[i])
	}
	kind := positionalKind(c.usage, len(pos))
	if kind == "" {
		return nil
	}
	socket := defaultSocket()
	all := append(append([]string{}, globals...), done...)
	for i, w := range all {
		if v, ok := strings.CutPrefix(w, "--socket="); ok {
			socket = v
		} else if w == "--socket" && i+1 < len(all) {
			socket = all[i+1]
		}
	}
	st, err := fetch(socket)
	if err != nil {
		return nil
	}
	var cands []string
	for _, v := range st.VIPs {
		switch kind {
		case "VIP":
			cands = append(cands, v.Address)
		case "ADDR":
			if len(pos) > 0 && v.Address == pos[0] {
				for _, b := range v.Backends {
					cands = append(cands, b.Address)
				}
			}
		}
	}
	return filter(cands, cur)
}

// positionalKind reads the n-th positional argument of a synopsis such as
// "VIP ADDR [--weight N]" or "[VIP] [-o table|json]": VIP, ADDR or "".
func positionalKind(usage string, n int) string {
	fields := strings.Fields(usage)
	if n >= len(fields) {
		return ""
	}
	for _, f := range fields[:n+1] {
		if strings.HasPrefix(strings.Trim(f, "[]"), "-") {
			return ""
		}
	}
	switch k := strings.Trim(fields[n], "[]"); {
	case k == "VIP" && n == 0:
		return "VIP"
	case k == "ADDR" && n == 1 && strings.Trim(fields[0], "[]") == "VIP":
		return "ADDR"
	}
	return ""
}

// flagOf returns the flag a word such as --mode, --mode=x or -o names.
func flagOf(fs *pflag.FlagSet, w string) *pflag.Flag {
	name, _, _ := strings.Cut(w, "=")
	switch {
	case strings.HasPrefix(name, "--"):
		return fs.Lookup(name[2:])
	case strings.HasPrefix(name, "-") && len(name) == 2:
		return fs.ShorthandLookup(name[1:])
	}
	return nil
}

func valuesOf(flag, cur string) []string {
	if fileFlags[flag] {
		return []string{completeFiles}
	}
	return filter(flagValues[flag], cur)
}

func filter(cands []string, prefix string) []string {
	var out []string
	for _, c := range cands {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

func (c *command) find(name string) *command {
	for _, s := range c.sub {
		if s.name == name {
			return s
		}
	}
	return nil
}
