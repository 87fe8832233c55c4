package config

import (
	"errors"
	"strings"
	"testing"
)

// TestErrorLines: a validation error names the line of its field, found by
// list index or by element name, in block and flow style.
func TestErrorLines(t *testing.T) {
	const head = "listeners:\n  - name: web\n    address: 127.0.0.1:8080\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"pool by name, backend by index", head + `
pools:
  - name: other
    backends: [{address: "127.0.0.1:1"}]
  - name: app
    backends:
      - address: "127.0.0.1:9001"
      - address: "127.0.0.1:9001"
routes: [{name: r, pool: app}]
`, `line 11: pools[app].backends[1].address "127.0.0.1:9001"`},
		{"listener field", "listeners:\n  - name: web\n    address: \"8080\"\npools: [{name: app, backends: [{address: \"127.0.0.1:1\"}]}]\nroutes: [{name: r, pool: app}]\n",
			`line 3: listeners[0].address "8080"`},
		{"route by name, flow style", head + "pools: [{name: app, backends: [{address: \"127.0.0.1:1\"}]}]\nroutes:\n  - {name: a, pool: app}\n  - {name: r, pool: nope}\n",
			`line 7: routes[r].pool "nope"`},
		{"a field of a pool in block style", head + "pools:\n  - name: app\n    algorithm: fastest\n    backends: [{address: \"127.0.0.1:1\"}]\nroutes: [{name: r, pool: app}]\n",
			`line 6: pools[app].algorithm "fastest"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v; want one containing %q", err, tc.want)
			}
		})
	}
}
