package statuspage

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/xlb-project/xlb/internal/testutil"
)

// TestBrowserAtScale opens the page in headless Chromium over 1,000 VIPs ×
// 100 backends: it draws one page of collapsed VIPs, opens one on a click,
// filters, pages, and fits a phone's width (tables scroll inside their
// frame, the page does not).
func TestBrowserAtScale(t *testing.T) {
	v := bigView(0)
	srv := httptest.NewServer(New(func() View { return v }, Options{}))
	t.Cleanup(srv.Close)
	ctx := testutil.Browser(t, 60*time.Second, "")

	count := func(sel string) int {
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, sel)))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	text := func(sel string) string {
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/status"), chromedp.WaitVisible(chromedp.CSS(`tr.group`))); err != nil {
		t.Fatal(err)
	}
	if n, m := count("tr.group"), count("tr.member"); n != DefaultPerPage || m != 0 {
		t.Fatalf("first page: %d VIP rows and %d backend rows, want %d collapsed", n, m, DefaultPerPage)
	}
	if s := text("#summary"); !strings.Contains(s, "1000 VIPs") || !strings.Contains(s, "100000 backends") || !strings.Contains(s, "10000 draining") {
		t.Errorf("summary %q", s)
	}
	if s := text("#pageinfo"); s != "page 1 of 20 (1000 VIPs)" {
		t.Errorf("page info %q", s)
	}
	name := v.Groups[2].Name
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr.group[data-group=%q]`, name))),
		chromedp.WaitVisible(chromedp.CSS(`tr.member`))); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the clicked VIP open with its 100 backends", func() bool { return count("tr.member") == 100 })
	if s := text(fmt.Sprintf(`tr.member[data-member=%q] .state`, name+"|198.51.2.10")); s != "draining" {
		t.Errorf("backend 198.51.2.10 shows %q, want draining", s)
	}
	if s := text(fmt.Sprintf(`tr.member[data-member=%q] .state`, name+"|198.51.2.7")); s != "down" {
		t.Errorf("backend 198.51.2.7 shows %q, want down", s)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#next`))); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "page 2", func() bool { return strings.HasPrefix(text("#pageinfo"), "page 2 of 20") })
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS(`#filter`), "198.51.13.99")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the filter down to the 5 VIPs of one backend, open", func() bool {
		return count("tr.group") == 5 && count("tr.member") == 500
	})
	// A phone: 390 px wide. The page itself never scrolls sideways.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile)); err != nil {
		t.Fatal(err)
	}
	overflow, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if overflow {
		t.Error("on a 390 px wide screen the page scrolls sideways")
	}
}
