package main

import (
	"github.com/spf13/pflag"
)

// checkConfigFlag is --check-config of "xlb daemon" and "xlb proxy": validate
// a configuration and exit, touching nothing. The file is the flag's value
// (--check-config=FILE), the argument after it (--check-config FILE, the
// form for ExecStartPre=) or --config.
type checkConfigFlag struct {
	set  bool
	path string
}

func (f *checkConfigFlag) register(fs *pflag.FlagSet) {
	fs.Var(f, "check-config", "validate the configuration FILE (or --config) and exit: 0 when valid, else the error with its line")
	// Optional value: alone it is a switch, so "--check-config FILE" leaves
	// FILE as an argument, which file() takes.
	fs.Lookup("check-config").NoOptDefVal = "true"
}

func (f *checkConfigFlag) String() string { return f.path }

func (f *checkConfigFlag) Set(s string) error {
	f.set = true
	if s != "true" {
		f.path = s
	}
	return nil
}

// Type is "bool" so that the help shows no value placeholder.
func (f *checkConfigFlag) Type() string { return "bool" }

// file returns the configuration to check from the flag, the positional
// arguments and --config, refusing two different ones.
func (f *checkConfigFlag) file(args []string, config string) (string, error) {
	path := f.path
	if len(args) > 1 || (len(args) == 1 && path != "") {
		return "", usageErrorf("--check-config takes one FILE; unexpected argument %q", args[len(args)-1])
	}
	if len(args) == 1 {
		path = args[0]
	}
	switch {
	case path == "" && config == "":
		return "", usageErrorf("--check-config needs the configuration: --check-config FILE")
	case path == "":
		return config, nil
	case config != "" && config != path:
		return "", usageErrorf("--check-config %s and --config %s name different files; give one", path, config)
	}
	return path, nil
}
