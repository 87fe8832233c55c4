package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// completeWith runs "xlb __complete WORDS" and returns its lines.
func completeWith(t *testing.T, words ...string) []string {
	t.Helper()
	code, out, errOut := runCLI(t, append([]string{"__complete"}, words...)...)
	if code != 0 {
		t.Fatalf("__complete %q: exit %d: %s", words, code, errOut)
	}
	return strings.Fields(out)
}

// TestCompleteFromDaemon: commands, flags, flag values, and VIPs and
// backends read from a running daemon's API.
func TestCompleteFromDaemon(t *testing.T) {
	r := newCLIRig(t)
	sock := r.socket
	tests := []struct {
		words []string
		want  []string
	}{
		{[]string{""}, []string{"backend", "backend-host", "completion", "daemon", "drain-self", "fleet-check", "lab", "proxy", "stats", "status", "undrain-self", "version", "veth-peer", "vip"}},
		{[]string{"ba"}, []string{"backend", "backend-host"}},
		{[]string{"backend", "d"}, []string{"drain"}},
		{[]string{"--socket", sock, "backend", "un"}, []string{"undrain"}},
		{[]string{"-"}, []string{"--help", "--output", "--socket", "-o"}},
		{[]string{"vip", "add", "--m"}, []string{"--mode"}},
		{[]string{"vip", "add", "203.0.113.9:80/tcp", "--mode", ""}, []string{"ipip", "l2dsr"}},
		{[]string{"vip", "list", "-o", "j"}, []string{"json"}},
		{[]string{"-o", ""}, []string{"json", "table"}},
		{[]string{"completion", ""}, nil}, // positional, not from the daemon
		{[]string{"daemon", "--config", ""}, []string{":files"}},
		{[]string{"--socket", ""}, []string{":files"}},
		// From the daemon: VIPs first, then the backends of the VIP given.
		{[]string{"backend", "drain", "--socket", sock, ""}, []string{"203.0.113.10:80/tcp", "[2001:db8:f::10]:443/tcp"}},
		{[]string{"--socket", sock, "backend", "drain", "203"}, []string{"203.0.113.10:80/tcp"}},
		{[]string{"--socket=" + sock, "backend", "list", "["}, []string{"[2001:db8:f::10]:443/tcp"}},
		{[]string{"--socket", sock, "backend", "drain", "203.0.113.10:80/tcp", ""}, []string{"198.51.100.11", "198.51.100.12", "198.51.100.13"}},
		{[]string{"--socket", sock, "backend", "drain", "--timeout", "5s", "203.0.113.10:80/tcp", "198.51.100.12"}, []string{"198.51.100.12"}},
		{[]string{"--socket", sock, "backend", "weight", "203.0.113.10:80/tcp", "198.51.100.12", ""}, nil}, // the weight
		{[]string{"--socket", sock, "vip", "remove", ""}, []string{"203.0.113.10:80/tcp", "[2001:db8:f::10]:443/tcp"}},
		{[]string{"--socket", sock, "vip", "add", ""}, nil}, // a new VIP: nothing to offer
		// No daemon on the socket: nothing, quickly, and no error.
		{[]string{"--socket", filepath.Join(t.TempDir(), "none.sock"), "backend", "drain", ""}, nil},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.words, " "), func(t *testing.T) {
			got := completeWith(t, tc.words...)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	// XLB_SOCKET when no --socket is given.
	t.Setenv(socketEnv, sock)
	if got := completeWith(t, "vip", "remove", "203"); !slices.Equal(got, []string{"203.0.113.10:80/tcp"}) {
		t.Errorf("with %s set: got %q", socketEnv, got)
	}
}

// buildXLB builds the CLI for the tests that run it from a shell.
func buildXLB(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "xlb")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build xlb: %v\n%s", err, out)
	}
	return bin
}

// shellRun runs script in shell with the built xlb first in PATH.
func shellRun(t *testing.T, bin, shell, script string) string {
	t.Helper()
	path, err := exec.LookPath(shell)
	if err != nil {
		t.Fatalf("%s is not installed (scripts/deps.sh installs it): %v", shell, err)
	}
	cmd := exec.Command(path, "-c", script)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", shell, err, out)
	}
	return string(out)
}

// TestCompletionScripts runs each shell's script in that shell against a
// running daemon: bash and fish complete for real, zsh is parsed (its
// completion system needs an interactive terminal).
func TestCompletionScripts(t *testing.T) {
	r := newCLIRig(t)
	bin := buildXLB(t)
	t.Run("bash", func(t *testing.T) {
		bashComplete := func(line string) []string {
			script := `source <(xlb completion bash)
COMP_LINE='` + line + `'; COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<<"$COMP_LINE"; COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
[[ $COMP_LINE == *' ' ]] && COMP_CWORD=${#COMP_WORDS[@]}
_xlb; printf '%s\n' "${COMPREPLY[@]}"`
			return strings.Fields(shellRun(t, bin, "bash", script))
		}
		for _, tc := range []struct {
			line string
			want []string
		}{
			{"xlb ba", []string{"backend", "backend-host"}},
			{"xlb --socket " + r.socket + " backend drain ", []string{"203.0.113.10:80/tcp", "[2001:db8:f::10]:443/tcp"}},
			// bash replaces only the text after the last ':'.
			{"xlb --socket " + r.socket + " backend list 203.0.113.10:", []string{"80/tcp"}},
			{"xlb --socket " + r.socket + " backend undrain 203.0.113.10:80/tcp 198.51.100.1", []string{"198.51.100.11", "198.51.100.12", "198.51.100.13"}},
		} {
			if got := bashComplete(tc.line); !slices.Equal(got, tc.want) {
				t.Errorf("%q: got %q, want %q", tc.line, got, tc.want)
			}
		}
	})
	t.Run("fish", func(t *testing.T) {
		script := `xlb completion fish | source
complete -C'xlb backend dr'
complete -C'xlb --socket ` + r.socket + ` vip remove '`
		got := strings.Fields(shellRun(t, bin, "fish", script))
		want := []string{"drain", "203.0.113.10:80/tcp", "[2001:db8:f::10]:443/tcp"}
		if !slices.Equal(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("zsh", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "_xlb")
		if err := os.WriteFile(f, []byte(completionScripts["zsh"]), 0o644); err != nil {
			t.Fatal(err)
		}
		shellRun(t, bin, "zsh", "zsh -n "+f)
	})
	if code, _, errOut := runCLI(t, "completion", "tcsh"); code != 2 || !strings.Contains(errOut, "allowed are bash, zsh, fish") {
		t.Errorf("completion tcsh: exit %d, %q", code, errOut)
	}
}

// TestGlobalFlags: --socket and -o before the command, XLB_SOCKET, and the
// errors that say how to fix a wrong command line or a daemon that is not
// there.
func TestGlobalFlags(t *testing.T) {
	r := newCLIRig(t)
	missing := filepath.Join(t.TempDir(), "none.sock")
	tests := []struct {
		env      string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{"", []string{"--socket", r.socket, "vip", "list"}, 0, "203.0.113.10:80/tcp", ""},
		{"", []string{"--socket=" + r.socket, "-o", "json", "vip", "list"}, 0, `"address": "203.0.113.10:80/tcp"`, ""},
		{"", []string{"-ojson", "--socket", r.socket, "backend", "list"}, 0, `"address": "198.51.100.11"`, ""},
		{"", []string{"--output=json", "vip", "list", "--socket", r.socket}, 0, `"table_size": 4093`, ""},
		{"", []string{"-o", "json", "version"}, 0, `"go_version"`, ""},
		{r.socket, []string{"vip", "list"}, 0, "203.0.113.10:80/tcp", ""},
		{missing, []string{"--socket", r.socket, "vip", "list"}, 0, "203.0.113.10:80/tcp", ""}, // the flag wins
		{missing, []string{"vip", "list"}, 1, "", "XLB_SOCKET=PATH"},
		{"", []string{"--socket", missing, "status"}, 1, "", "to fix: start the daemon (systemctl start xlb"},
		{"", []string{"--socket", r.socket, "backend", "list", "203.0.113.99:80/tcp"}, 1, "", "to fix: see the VIPs with 'xlb vip list'"},
		{"", []string{"--socket", r.socket, "version"}, 2, "", "--socket does not apply to 'xlb version'"},
		{"", []string{"--iface", "eth0", "daemon"}, 2, "", `unknown flag "--iface" before the command: only --socket and -o/--output may come first`},
		{"", []string{"--socket"}, 2, "", "--socket needs a value"},
		{"", []string{"-o", "yaml", "vip", "list"}, 2, "", "allowed are table, json"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Setenv(socketEnv, tc.env)
			code, out, errOut := runCLI(t, tc.args...)
			if code != tc.wantCode || !strings.Contains(out, tc.wantOut) || !strings.Contains(errOut, tc.wantErr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
					code, out, errOut, tc.wantCode, tc.wantOut, tc.wantErr)
			}
		})
	}
}
