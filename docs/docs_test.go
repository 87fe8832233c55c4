// Package docs holds xlb's documentation. Its tests keep the Markdown honest:
// every YAML example is loaded by the parser of the component it configures,
// and every relative link resolves.
package docs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/xlb-project/xlb/healthd"
	"github.com/xlb-project/xlb/proxy/config"
)

// The first line of every ```yaml block in the docs says what it is; the
// test refuses a block without one, so an example cannot escape checking.
const (
	markerDaemon   = "# xlb daemon config"
	markerProxy    = "# xlb proxy config"
	markerFragment = "# fragment:" // part of a config, named after the colon; parsed as YAML only
)

// markdownFiles are README.md and docs/*.md, relative to this directory.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join("..", "README.md"))
	sort.Strings(files)
	if len(files) < 2 {
		t.Fatalf("found %v: want README.md and docs/*.md", files)
	}
	return files
}

// block is one fenced code block.
type block struct {
	file string
	line int    // line of the opening fence
	info string // the fence's info string, e.g. "yaml"
	text string
}

// fenceRE matches an opening or closing fence: indentation, fence, info string.
var fenceRE = regexp.MustCompile("^( {0,3})(```+|~~~+)\\s*([^`\\s]*)")

// codeBlocks returns the fenced blocks of a Markdown file.
func codeBlocks(t *testing.T, file string) []block {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		out   []block
		cur   *block
		fence string
		lines []string
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		m := fenceRE.FindStringSubmatch(line)
		switch {
		case cur == nil && m != nil:
			cur = &block{file: file, line: n, info: strings.ToLower(m[3])}
			fence, lines = m[2], nil
		case cur != nil && m != nil && strings.HasPrefix(m[2], fence) && m[3] == "":
			cur.text = strings.Join(lines, "\n") + "\n"
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			lines = append(lines, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Errorf("%s:%d: code block never closed", file, cur.line)
	}
	return out
}

// TestConfigExamples loads every YAML example of the docs with the real
// parser and validation of the component its marker names.
func TestConfigExamples(t *testing.T) {
	counts := map[string]int{}
	for _, file := range markdownFiles(t) {
		for _, b := range codeBlocks(t, file) {
			if b.info != "yaml" && b.info != "yml" {
				continue
			}
			where := fmt.Sprintf("%s:%d", b.file, b.line)
			first, _, _ := strings.Cut(strings.TrimLeft(b.text, "\n"), "\n")
			first = strings.TrimSpace(first)
			switch {
			case first == markerDaemon:
				if _, err := healthd.ParseConfig([]byte(b.text)); err != nil {
					t.Errorf("%s: daemon config example does not load: %v", errorAt(b, err), err)
				}
				counts["daemon"]++
			case first == markerProxy:
				if _, err := config.Parse([]byte(b.text)); err != nil {
					t.Errorf("%s: proxy config example does not load: %v", errorAt(b, err), err)
				}
				counts["proxy"]++
			case strings.HasPrefix(first, markerFragment):
				if err := parseYAML(b.text); err != nil {
					t.Errorf("%s: fragment is not valid YAML: %v", where, err)
				}
				counts["fragment"]++
			default:
				t.Errorf("%s: yaml block starts with %q: want %q, %q or %q as its first line",
					where, first, markerDaemon, markerProxy, markerFragment+" WHAT")
			}
		}
	}
	// The docs show both components' configs; a marker typo that made the
	// test skip them all would show here.
	if counts["daemon"] == 0 || counts["proxy"] == 0 {
		t.Errorf("examples found: %v; want at least one daemon and one proxy config", counts)
	}
	t.Logf("examples loaded: %v", counts)
}

// parserLineRE finds the line a parser error names, counted from the
// block's first line.
var parserLineRE = regexp.MustCompile(`line (\d+)`)

// errorAt is file:line of a parser error inside block b: the line the error
// names, else the block's opening fence.
func errorAt(b block, err error) string {
	if m := parserLineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return fmt.Sprintf("%s:%d", b.file, b.line+n)
	}
	return fmt.Sprintf("%s:%d", b.file, b.line)
}

// linkRE matches an inline Markdown link or image; group 1 is the target.
var linkRE = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)

// TestRelativeLinks checks that every relative link between the docs names
// a file that exists and, with a #fragment, a heading of that file.
func TestRelativeLinks(t *testing.T) {
	anchors := map[string]map[string]bool{}
	anchorsOf := func(file string) map[string]bool {
		if a, ok := anchors[file]; ok {
			return a
		}
		a := headingAnchors(t, file)
		anchors[file] = a
		return a
	}
	checked := 0
	for _, file := range markdownFiles(t) {
		inFence := false
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			if fenceRE.MatchString(line) {
				inFence = !inFence
				continue
			}
			if inFence {
				continue
			}
			for _, m := range linkRE.FindAllStringSubmatch(stripCode(line), -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				where := fmt.Sprintf("%s:%d", file, i+1)
				path, frag, _ := strings.Cut(target, "#")
				dest := file
				if path != "" {
					dest = filepath.Join(filepath.Dir(file), path)
					if _, err := os.Stat(dest); err != nil {
						t.Errorf("%s: link %q: %v", where, target, err)
						continue
					}
				}
				if frag != "" {
					if !strings.HasSuffix(dest, ".md") {
						t.Errorf("%s: link %q: a #fragment only names headings of Markdown files", where, target)
					} else if !anchorsOf(dest)[frag] {
						t.Errorf("%s: link %q: no heading with anchor #%s in %s", where, target, frag, dest)
					}
				}
				checked++
			}
		}
	}
	if checked == 0 {
		t.Error("no relative link found: the link pattern is broken")
	}
}

// parseYAML checks that a fragment is well-formed YAML.
func parseYAML(text string) error {
	var v any
	return yaml.Unmarshal([]byte(text), &v)
}

// codeSpanRE matches an inline code span, whose brackets are not links.
var codeSpanRE = regexp.MustCompile("`[^`]*`")

func stripCode(line string) string { return codeSpanRE.ReplaceAllString(line, "") }

// headingAnchors returns the anchors GitHub gives a file's headings:
// lower case, punctuation other than - and _ dropped, spaces as -, and
// -1, -2 ... for repeats.
func headingAnchors(t *testing.T, file string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	seen := map[string]int{}
	inFence := false
	for _, line := range strings.Split(string(data), "\n") {
		if fenceRE.MatchString(line) {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		title = strings.ReplaceAll(title, "`", "")
		var b strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r > 127:
				b.WriteRune(r)
			}
		}
		a := b.String()
		if n := seen[a]; n > 0 {
			out[fmt.Sprintf("%s-%d", a, n)] = true
		} else {
			out[a] = true
		}
		seen[a]++
	}
	return out
}
