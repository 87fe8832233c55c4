package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// runCLI runs the command line in-process and returns exit code and output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &stdio{out: &out, err: &errOut})
	return code, out.String(), errOut.String()
}

func TestDispatch(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantOut    string // substring of stdout
		wantErr    string // substring of stderr
		wantNoErrs bool
	}{
		{name: "no args lists commands", args: nil, wantCode: 2, wantOut: "Commands:", wantErr: "needs a subcommand"},
		{name: "root help", args: []string{"--help"}, wantCode: 0, wantOut: "version"},
		{name: "help word", args: []string{"help"}, wantCode: 0, wantOut: "Commands:"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantErr: `unknown command "frobnicate"`},
		{name: "leaf help shows flags and examples", args: []string{"version", "--help"}, wantCode: 0, wantOut: "Examples:"},
		{name: "unknown flag", args: []string{"version", "--bogus"}, wantCode: 2, wantErr: "unknown flag: --bogus"},
		{name: "unexpected argument", args: []string{"version", "extra"}, wantCode: 2, wantErr: `unexpected argument "extra"`},
		{name: "bad output format", args: []string{"version", "-o", "yaml"}, wantCode: 2, wantErr: `invalid argument "yaml" for "-o, --output" flag: allowed are table, json`},
		{name: "table output", args: []string{"version"}, wantCode: 0, wantOut: "VERSION", wantNoErrs: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tt.wantCode, errOut)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("stdout %q does not contain %q", out, tt.wantOut)
			}
			if !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stderr %q does not contain %q", errOut, tt.wantErr)
			}
			if tt.wantNoErrs && errOut != "" {
				t.Errorf("unexpected stderr %q", errOut)
			}
			if tt.wantCode != 0 && strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
				t.Errorf("an error must be one line on stderr, got %q", errOut)
			}
		})
	}
}

func TestVersionJSON(t *testing.T) {
	code, out, _ := runCLI(t, "version", "-o", "json")
	if code != 0 {
		t.Fatalf("exit code %d", code)
	}
	var v versionInfo
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("version -o json is not JSON: %v\n%s", err, out)
	}
	if v.Version == "" || !strings.HasPrefix(v.GoVersion, "go") {
		t.Fatalf("incomplete version info: %+v", v)
	}
}

// Every command on every level must answer --help with exit code 0 and a
// usage line, so no verb can be added without help.
func TestHelpEverywhere(t *testing.T) {
	var walk func(c *command, path []string)
	walk = func(c *command, path []string) {
		args := append(append([]string{}, path...), "--help")
		code, out, errOut := runCLI(t, args...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("xlb %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, out, errOut)
		}
		for _, s := range c.sub {
			if !s.raw { // __complete takes every word as the line to complete
				walk(s, append(append([]string{}, path...), s.name))
			}
		}
	}
	walk(root(), nil)
}
