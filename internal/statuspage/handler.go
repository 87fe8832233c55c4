package statuspage

import (
	"embed"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed assets
var assets embed.FS

// Paging of the JSON snapshot: a page of groups at a time, and members only
// for the groups the page has open, so that 1,000 VIPs with 100 backends
// each stay a small answer and a short page.
const (
	DefaultPerPage = 50
	MaxPerPage     = 500
	// AutoOpen: when this few groups match, all of them are open.
	AutoOpen = 10
	// MaxOpen bounds the groups one request may open.
	MaxOpen = 50
)

// Options tune a Handler.
type Options struct {
	// MinInterval is the least time between two snapshots taken from the
	// source; requests in between share the last one. Default 1s.
	MinInterval time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Handler serves the page at / and /status, its assets, and the JSON
// snapshot at /status.json (query: q=filter, page=N, per_page=N, open=GROUP
// repeated). Any method but GET and HEAD is refused with 405.
type Handler struct {
	source func() View
	opts   Options

	mu    sync.Mutex
	taken time.Time
	snap  snap
	prev  counters // of the snapshot before this one, for rates
}

// snap is a View with what every answer needs counted once: each group's
// members by state, and the summary.
type snap struct {
	view    View
	groups  []groupOut // Members still all there
	summary Summary
}

// counters remembers monotonic counters of one snapshot by key.
type counters struct {
	time  time.Time
	value map[string]uint64
}

// New returns a Handler reading its snapshots from source.
func New(source func() View, opts Options) *Handler {
	if opts.MinInterval == 0 {
		opts.MinInterval = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Handler{source: source, opts: opts}
}

var files = map[string]struct{ name, ctype string }{
	"/":            {"assets/index.html", "text/html; charset=utf-8"},
	"/status":      {"assets/index.html", "text/html; charset=utf-8"},
	"/status.css":  {"assets/status.css", "text/css; charset=utf-8"},
	"/status.js":   {"assets/status.js", "text/javascript; charset=utf-8"},
	"/favicon.ico": {"", ""},
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "read-only: this page allows GET and HEAD; change state with the xlb command", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == "/status.json" {
		h.serveJSON(w, r)
		return
	}
	f, ok := files[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if f.name == "" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	b, err := assets.ReadFile(f.name)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	hd.Set("Content-Type", f.ctype)
	hd.Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}

// snapshot returns the current view, taking a new one from the source when
// the last is older than MinInterval, with rates from the one before.
func (h *Handler) snapshot() snap {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.opts.Now()
	if !h.taken.IsZero() && now.Sub(h.taken) < h.opts.MinInterval {
		return h.snap
	}
	v := h.source()
	cur := counters{time: now, value: map[string]uint64{}}
	dt := now.Sub(h.prev.time).Seconds()
	rate := func(key string, n uint64) float64 {
		cur.value[key] = n
		old, ok := h.prev.value[key]
		if !ok || dt <= 0 || n < old {
			return 0
		}
		return float64(n-old) / dt
	}
	for gi := range v.Groups {
		g := &v.Groups[gi]
		var pr, br, rr float64
		for mi := range g.Members {
			m := &g.Members[mi]
			if m.State == "" {
				m.State = MemberState(m.Admin, m.Health)
			}
			if m.RequestRate == 0 && m.Requests > 0 {
				m.RequestRate = rate("r\x00"+g.Name+"\x00"+m.Address, m.Requests)
			}
			pr, br, rr = pr+m.PacketRate, br+m.ByteRate, rr+m.RequestRate
		}
		if g.PacketRate == 0 {
			g.PacketRate = pr
		}
		if g.ByteRate == 0 {
			g.ByteRate = br
		}
		if g.RequestRate == 0 {
			g.RequestRate = rr
		}
	}
	for i := range v.Drops {
		if v.Drops[i].Rate == 0 {
			v.Drops[i].Rate = rate("d\x00"+v.Drops[i].Reason, v.Drops[i].Packets)
		}
	}
	sn := snap{view: v, groups: make([]groupOut, len(v.Groups))}
	for i, g := range v.Groups {
		o := groupOut{Group: g, Total: len(g.Members)}
		for mi := range g.Members {
			switch g.Members[mi].State {
			case "up":
				o.Up++
			case "down":
				o.Down++
			case "draining":
				o.Draining++
			default:
				o.Unknown++
			}
		}
		sm := &sn.summary
		sm.Groups++
		sm.Members += o.Total
		sm.Up += o.Up
		sm.Down += o.Down
		sm.Draining += o.Draining
		sm.Unknown += o.Unknown
		if g.Panic {
			sm.Panic++
		}
		sn.groups[i] = o
	}
	h.prev, h.snap, h.taken = cur, sn, now
	return sn
}

// groupOut is a group as the JSON answer carries it: members only when
// open, and the count of members in each state always.
type groupOut struct {
	Group
	Open     bool `json:"open"`
	Total    int  `json:"total"`
	Up       int  `json:"up"`
	Down     int  `json:"down"`
	Draining int  `json:"draining"`
	Unknown  int  `json:"unknown"`
}

// Answer is the JSON snapshot.
type Answer struct {
	View
	Query   string     `json:"query"`
	Page    int        `json:"page"`
	Pages   int        `json:"pages"`
	PerPage int        `json:"per_page"`
	Matched int        `json:"matched"` // groups matching the query
	Summary Summary    `json:"summary"`
	Groups  []groupOut `json:"groups"`
}

// Summary counts over every group, matching the query or not.
type Summary struct {
	Groups   int `json:"groups"`
	Members  int `json:"members"`
	Up       int `json:"up"`
	Down     int `json:"down"`
	Draining int `json:"draining"`
	Unknown  int `json:"unknown"`
	Panic    int `json:"panic"` // groups in panic
}

func (h *Handler) serveJSON(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	perPage := DefaultPerPage
	if s := q.Get("per_page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPerPage {
			http.Error(w, "per_page: allowed are 1-"+strconv.Itoa(MaxPerPage), http.StatusBadRequest)
			return
		}
		perPage = n
	}
	page := 1
	if s := q.Get("page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			http.Error(w, "page: allowed is a number from 1", http.StatusBadRequest)
			return
		}
		page = n
	}
	open := q["open"]
	if len(open) > MaxOpen {
		open = open[:MaxOpen]
	}
	filter := strings.ToLower(strings.TrimSpace(q.Get("q")))
	if len(filter) > 200 {
		filter = filter[:200]
	}
	sn := h.snapshot()
	a := Answer{View: sn.view, Query: filter, PerPage: perPage, Summary: sn.summary}
	matched := sn.groups
	if filter != "" {
		matched = nil
		for _, o := range sn.groups {
			hit := strings.Contains(strings.ToLower(o.Name), filter)
			for mi := 0; !hit && mi < len(o.Members); mi++ {
				hit = strings.Contains(strings.ToLower(o.Members[mi].Address), filter)
			}
			if hit {
				matched = append(matched, o)
			}
		}
	}
	a.Matched = len(matched)
	a.Pages = max(1, (len(matched)+perPage-1)/perPage)
	a.Page = min(page, a.Pages)
	start := (a.Page - 1) * perPage
	end := min(start+perPage, len(matched))
	a.Groups = append([]groupOut(nil), matched[start:end]...) // the snapshot's stay whole
	for i := range a.Groups {
		g := &a.Groups[i]
		g.Open = len(matched) <= AutoOpen || slices.Contains(open, g.Name)
		if !g.Open {
			g.Members = nil
		} else if g.Members == nil {
			g.Members = []Member{}
		}
	}
	if a.Groups == nil {
		a.Groups = []groupOut{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if r.Method == http.MethodHead {
		return
	}
	_ = json.NewEncoder(w).Encode(a)
}
