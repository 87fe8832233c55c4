package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestInvalidConfigs parses every file in testdata/proxy/invalid; the first
// line of each is "# want: SUBSTRING" of the expected error.
func TestInvalidConfigs(t *testing.T) {
	files, err := filepath.Glob("../../testdata/proxy/invalid/*.yaml")
	if err != nil || len(files) < 10 {
		t.Fatalf("invalid configs: %v (%d files)", err, len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(data), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok {
				t.Fatalf("first line %q: want \"# want: ...\"", first)
			}
			_, err = Parse(data)
			if err == nil {
				t.Fatalf("parsed without error; want %q", want)
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error %v does not wrap ErrConfig", err)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error:\n  %v\nwant it to contain:\n  %s", err, want)
			}
		})
	}
}

func TestLoadNamesFile(t *testing.T) {
	_, err := Load("../../testdata/proxy/invalid/no-routes.yaml")
	if err == nil || !strings.Contains(err.Error(), "no-routes.yaml") {
		t.Fatalf("error %v does not name the file", err)
	}
}

// TestBodyAndPathDefaults: the listener gets body_read_timeout 60s and no
// other body limit; a route inherits (zero); paths are merged and encoded
// slashes refused unless said otherwise.
func TestBodyAndPathDefaults(t *testing.T) {
	c, err := Parse([]byte(`
listeners: [{address: ":8080"}]
pools: [{name: app, backends: [{address: "127.0.0.1:9000"}]}]
routes: [{name: all, pool: app, max_body_bytes: 10}]
`))
	if err != nil {
		t.Fatal(err)
	}
	l := c.Listeners[0].BodyLimits
	if l != (BodyLimits{BodyReadTimeout: Duration(60 * time.Second)}) {
		t.Errorf("listener body limits %+v, want only body_read_timeout 60s", l)
	}
	if got := l.Merge(c.Routes[0].BodyLimits); got.MaxBodyBytes != 10 || got.BodyReadTimeout != l.BodyReadTimeout {
		t.Errorf("route limits merged: %+v", got)
	}
	if pn := c.PathNormalization; pn.MergeSlashes == nil || !*pn.MergeSlashes || pn.EncodedSlashes != "reject" {
		t.Errorf("path normalisation defaults: %+v", pn)
	}
}
