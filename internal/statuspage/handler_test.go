package statuspage

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// bigView is 1,000 VIPs with 100 backends each, every tenth draining and
// every seventh down.
func bigView(requests uint64) View {
	v := View{Kind: "l4", Title: "xlb daemon", GroupLabel: "VIP", MemberLabel: "backend", Time: time.Unix(1700000000, 0)}
	for i := range 1000 {
		g := Group{Name: fmt.Sprintf("203.0.%d.%d:80/tcp", i/250, i%250), Active: 100, Healthy: 90}
		for j := range 100 {
			m := Member{Address: fmt.Sprintf("198.51.%d.%d", i%200, j), Weight: 1, Admin: "active", Health: "healthy",
				Share: 0.01, Packets: uint64(i * j), Requests: requests}
			if j%10 == 0 {
				m.Admin = "draining"
			}
			if j%7 == 0 {
				m.Health = "unhealthy"
				m.LastError = "connect: connection refused"
			}
			g.Members = append(g.Members, m)
		}
		v.Groups = append(v.Groups, g)
	}
	v.Drops = []Drop{{Reason: "no_vip", Packets: 10, Passed: true}, {Reason: "too_big", Packets: requests}}
	return v
}

func get(t testing.TB, h http.Handler, target string) (*httptest.ResponseRecorder, Answer) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
	var a Answer
	if w.Code == http.StatusOK && strings.HasPrefix(target, "/status.json") {
		if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
			t.Fatalf("%s: %v", target, err)
		}
	}
	return w, a
}

// TestReadOnly: every method but GET and HEAD is refused on every path,
// before the state is even read.
func TestReadOnly(t *testing.T) {
	var calls atomic.Int32
	h := New(func() View { calls.Add(1); return bigView(0) }, Options{})
	for _, path := range []string{"/", "/status", "/status.json", "/status.js", "/status.css", "/metrics", "/v1/backends/drain"} {
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, "DRAIN"} {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(method, path+"?open=x", strings.NewReader(`{"admin":"draining"}`)))
			if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: %d, Allow %q; want 405 with Allow: GET, HEAD", method, path, w.Code, w.Header().Get("Allow"))
			}
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("refused requests read the state %d times", n)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodHead, "/status.json", nil))
	if w.Code != http.StatusOK || w.Body.Len() != 0 {
		t.Errorf("HEAD /status.json: %d with %d bytes", w.Code, w.Body.Len())
	}
}

// TestSelfContained: the page loads nothing from elsewhere, and its policy
// forbids the browser to.
func TestSelfContained(t *testing.T) {
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?(https?:)?//|fetch\(\s*["']https?:`)
	err := fs.WalkDir(assets, "assets", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := assets.ReadFile(path)
		if m := external.Find(b); m != nil {
			t.Errorf("%s refers to something outside the binary: %q", path, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	h := New(func() View { return View{} }, Options{})
	for path, ctype := range map[string]string{"/": "text/html", "/status": "text/html", "/status.js": "text/javascript", "/status.css": "text/css"} {
		w, _ := get(t, h, path)
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), ctype) {
			t.Errorf("GET %s: %d %q", path, w.Code, w.Header().Get("Content-Type"))
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("GET %s: policy %q", path, csp)
		}
	}
	if w, _ := get(t, h, "/other"); w.Code != http.StatusNotFound {
		t.Errorf("GET /other: %d, want 404", w.Code)
	}
}

// TestPagingAtScale: 1,000 VIPs × 100 backends answer with one page of 50
// collapsed VIPs, a small body; a VIP opened, a filter by backend address,
// and the summary over everything.
func TestPagingAtScale(t *testing.T) {
	h := New(func() View { return bigView(0) }, Options{})
	w, a := get(t, h, "/status.json")
	if a.Summary.Groups != 1000 || a.Summary.Members != 100000 || a.Matched != 1000 || a.Pages != 20 || len(a.Groups) != DefaultPerPage {
		t.Fatalf("summary %+v, matched %d, pages %d, groups %d", a.Summary, a.Matched, a.Pages, len(a.Groups))
	}
	// 10 draining of 100 per VIP; down: multiples of 7 not already draining.
	if a.Summary.Draining != 10000 || a.Summary.Down != 13000 || a.Summary.Up != 77000 {
		t.Errorf("summary %+v", a.Summary)
	}
	for _, g := range a.Groups {
		if g.Open || g.Members != nil || g.Total != 100 || g.Draining != 10 {
			t.Fatalf("collapsed group %s: open %v, %d members sent, total %d, draining %d", g.Name, g.Open, len(g.Members), g.Total, g.Draining)
		}
	}
	if w.Body.Len() > 64<<10 {
		t.Errorf("a page of 1,000 × 100 is %d bytes; want at most 64 KiB", w.Body.Len())
	}
	name := bigView(0).Groups[120].Name
	_, a = get(t, h, "/status.json?page=3&open="+name)
	if a.Page != 3 || a.Groups[20].Name != name || !a.Groups[20].Open || len(a.Groups[20].Members) != 100 {
		t.Fatalf("page 3 with %s open: page %d, group 20 %s open %v with %d members", name, a.Page, a.Groups[20].Name, a.Groups[20].Open, len(a.Groups[20].Members))
	}
	if m := a.Groups[20].Members[10]; m.State != "draining" || a.Groups[20].Members[7].State != "down" || a.Groups[20].Members[1].State != "up" {
		t.Errorf("member states: %s %s %s", m.State, a.Groups[20].Members[7].State, a.Groups[20].Members[1].State)
	}
	// A backend address finds its VIPs (i%200 == 13: five of them), which
	// are then few enough to open.
	_, a = get(t, h, "/status.json?q=198.51.13.99")
	if a.Matched != 5 || !a.Groups[0].Open || len(a.Groups[0].Members) != 100 {
		t.Errorf("filter by backend: matched %d, first open %v", a.Matched, a.Groups[0].Open)
	}
	if _, a = get(t, h, "/status.json?page=99"); a.Page != 20 {
		t.Errorf("page 99 of 20 answered page %d", a.Page)
	}
	for _, bad := range []string{"?page=0", "?page=x", "?per_page=0", "?per_page=501"} {
		if w, _ := get(t, h, "/status.json"+bad); w.Code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, w.Code)
		}
	}
}

// TestRatesAndSnapshots: requests and drops become rates between two
// snapshots; snapshots are taken at most once a MinInterval.
func TestRatesAndSnapshots(t *testing.T) {
	now := time.Unix(1700000000, 0)
	var calls int
	requests := uint64(100)
	h := New(func() View { calls++; return bigView(requests) }, Options{Now: func() time.Time { return now }})
	_, a := get(t, h, "/status.json?q=203.0.0.1:80/tcp")
	if a.Groups[0].Members[1].RequestRate != 0 {
		t.Errorf("first snapshot has a rate: %v", a.Groups[0].Members[1].RequestRate)
	}
	requests = 130
	now = now.Add(500 * time.Millisecond)
	get(t, h, "/status.json")
	if calls != 1 {
		t.Fatalf("a second request within MinInterval took a new snapshot (%d)", calls)
	}
	now = now.Add(time.Second) // 1.5 s after the first
	_, a = get(t, h, "/status.json?q=203.0.0.1:80/tcp")
	if calls != 2 {
		t.Fatalf("snapshots taken: %d, want 2", calls)
	}
	if r := a.Groups[0].Members[1].RequestRate; r != 20 {
		t.Errorf("request rate %v, want 30 requests / 1.5 s = 20", r)
	}
	if r := a.Groups[0].RequestRate; r != 2000 {
		t.Errorf("group request rate %v, want 100 backends × 20", r)
	}
	if a.Drops[1].Reason != "too_big" || a.Drops[1].Rate != 20 {
		t.Errorf("drops %+v", a.Drops)
	}
}

// BenchmarkStatusJSON: one answer for 1,000 VIPs × 100 backends (the
// snapshot is cached, as between two source reads).
func BenchmarkStatusJSON(b *testing.B) {
	v := bigView(0)
	h := New(func() View { return v }, Options{MinInterval: time.Hour})
	open := v.Groups[3].Name
	var n int
	for b.Loop() {
		w, _ := get(b, h, "/status.json?open="+open)
		n = w.Body.Len()
	}
	b.ReportMetric(float64(n), "bytes")
}

// BenchmarkWholeViewJSON is the reference for BenchmarkStatusJSON: encoding
// every VIP with every backend, what a page without paging would fetch.
func BenchmarkWholeViewJSON(b *testing.B) {
	v := bigView(0)
	var n int
	for b.Loop() {
		out, err := json.Marshal(v.Groups)
		if err != nil {
			b.Fatal(err)
		}
		n = len(out)
	}
	b.ReportMetric(float64(n), "bytes")
}
