package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"
)

// output is the -o flag shared by every reading command: a table for people,
// JSON for scripts. The JSON is the value passed to print, encoded as is, so
// its field names are part of the CLI's stable interface. The flag validates
// while the command line is parsed, before the command does anything.
type output struct {
	json bool
}

func (o *output) register(fs *pflag.FlagSet) {
	fs.VarP((*outputFlag)(o), "output", "o", "output format: table or json")
}

func (o *output) print(w io.Writer, v any, fill func(t *table)) error {
	if o.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	t := &table{w: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	fill(t)
	return t.w.Flush()
}

// outputFlag is the pflag.Value behind -o.
type outputFlag output

func (f *outputFlag) String() string {
	if f.json {
		return "json"
	}
	return "table"
}

func (f *outputFlag) Set(s string) error {
	switch s {
	case "table":
		f.json = false
	case "json":
		f.json = true
	default:
		return fmt.Errorf("allowed are table, json")
	}
	return nil
}

func (f *outputFlag) Type() string { return "format" }

// table writes aligned columns.
type table struct {
	w *tabwriter.Writer
}

func (t *table) header(cols ...string) { t.row(cols...) }

func (t *table) row(cols ...string) {
	fmt.Fprintln(t.w, strings.Join(cols, "\t"))
}
