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
// its field names are part of the CLI's stable interface.
type output struct {
	format string
}

func (o *output) register(fs *pflag.FlagSet) {
	fs.StringVarP(&o.format, "output", "o", "table", "output format: table or json")
}

func (o *output) print(w io.Writer, v any, fill func(t *table)) error {
	switch o.format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "table", "":
		t := &table{w: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
		fill(t)
		return t.w.Flush()
	default:
		return usageErrorf("invalid value %q for -o/--output: allowed are table, json", o.format)
	}
}

// table writes aligned columns.
type table struct {
	w *tabwriter.Writer
}

func (t *table) header(cols ...string) { t.row(cols...) }

func (t *table) row(cols ...string) {
	fmt.Fprintln(t.w, strings.Join(cols, "\t"))
}
