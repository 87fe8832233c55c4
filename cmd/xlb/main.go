// Command xlb is the single binary of the xlb load balancer: the L4 daemon,
// its command-line client, the backend-host helper, the L7 proxy and the lab.
//
// This file only parses the command line and dispatches to one file per verb.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// command is one node of the command tree. A node either has subcommands or
// runs; --help is available on every level.
type command struct {
	name     string
	summary  string // one line, shown in the parent's list
	usage    string // argument synopsis after the command path
	examples string // indented example lines, shown by --help
	sub      []*command
	// flags registers the command's flags; nil means none beyond --help.
	flags func(fs *pflag.FlagSet)
	// hidden keeps the command out of the help (but not out of dispatch).
	hidden bool
	// raw hands every argument to run, flags included (no flag parsing).
	raw bool
	// run executes the command with the positional arguments left after
	// flag parsing.
	run func(io *stdio, args []string) error
}

// stdio carries the streams so tests can capture what a command prints.
type stdio struct {
	out io.Writer
	err io.Writer
}

// errUsage marks an error whose message already says what was wrong with the
// command line; it is printed with a hint to --help.
var errUsage = errors.New("usage")

func usageErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, args...)...)
}

// root returns the whole command tree. Each verb lives in its own file.
func root() *command {
	return &command{
		name:    "xlb",
		summary: "XDP load balancer with a Maglev datapath and an L7 proxy",
		sub: []*command{
			daemonCommand(),
			vipCommand(),
			backendCommand(),
			statusCommand(),
			statsCommand(),
			drainSelfCommand(),
			undrainSelfCommand(),
			fleetCheckCommand(),
			versionCommand(),
			proxyCommand(),
			backendHostCommand(),
			vethPeerCommand(),
			labCommand(),
			completionCommand(),
			completeCommand(),
		},
	}
}

func main() {
	os.Exit(run(os.Args[1:], &stdio{out: os.Stdout, err: os.Stderr}))
}

// run executes the command line and returns the process exit code: 0 on
// success, 1 when the command failed, 2 for a malformed command line.
func run(args []string, io *stdio) int {
	err := dispatch(root(), nil, nil, args, io)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(io.err, "xlb: %s\n", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return 2
	default:
		fmt.Fprintf(io.err, "xlb: %s\n", withFix(err))
		return 1
	}
}

// dispatch walks down the command tree; globals are the global flags met
// before the command, handed to the command that runs.
func dispatch(c *command, path, globals, args []string, io *stdio) error {
	path = append(path, c.name)
	if len(c.sub) > 0 {
		g, rest, err := takeGlobals(args)
		if err != nil {
			return err
		}
		globals, args = append(globals, g...), rest
		if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			printHelp(io.out, c, path, nil)
			if len(args) == 0 {
				return usageErrorf("%s needs a subcommand", strings.Join(path, " "))
			}
			return pflag.ErrHelp
		}
		for _, s := range c.sub {
			if s.name == args[0] {
				return dispatch(s, path, globals, args[1:], io)
			}
		}
		return usageErrorf("unknown command %q for %q (run '%s --help')", args[0], strings.Join(path, " "), strings.Join(path, " "))
	}

	if c.raw {
		return c.run(io, args)
	}
	fs := pflag.NewFlagSet(strings.Join(path, " "), pflag.ContinueOnError)
	fs.SetOutput(io.err)
	fs.SortFlags = false
	if c.flags != nil {
		c.flags(fs)
	}
	fs.Usage = func() { printHelp(io.out, c, path, fs) }
	if err := checkGlobals(globals, fs, strings.Join(path, " ")); err != nil {
		return err
	}
	if err := fs.Parse(append(args, globals...)); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageErrorf("%s: %v", strings.Join(path, " "), err)
	}
	return c.run(io, fs.Args())
}

func printHelp(w io.Writer, c *command, path []string, fs *pflag.FlagSet) {
	name := strings.Join(path, " ")
	fmt.Fprintf(w, "%s — %s\n\nUsage:\n", name, c.summary)
	if len(c.sub) > 0 {
		fmt.Fprintf(w, "  %s COMMAND [flags]\n\nCommands:\n", name)
		for _, s := range c.sub {
			if !s.hidden {
				fmt.Fprintf(w, "  %-14s %s\n", s.name, s.summary)
			}
		}
		fmt.Fprintf(w, "\nRun '%s COMMAND --help' for more about a command.\n", name)
		return
	}
	fmt.Fprintf(w, "  %s %s\n", name, c.usage)
	if fs != nil && fs.HasFlags() {
		fmt.Fprintf(w, "\nFlags:\n%s", fs.FlagUsages())
	}
	if c.examples != "" {
		fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(c.examples, "\n"))
	}
}
