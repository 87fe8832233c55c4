package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Browser starts headless Chromium (Debian's chromium package) with a fresh
// profile and returns a context that drives it with chromedp (through a
// pipe, so the browser may live in another network namespace); the browser
// is closed when the test ends. netns, when not "", is the path of the
// network namespace to run it in (/run/netns/NAME). It fails the test when
// Chromium is missing: scripts/deps.sh installs it.
func Browser(tb testing.TB, timeout time.Duration, netns string) context.Context {
	tb.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		tb.Fatal("chromium is not installed (Debian package chromium; scripts/deps.sh installs it)")
	}
	if netns != "" {
		nsenter, err := exec.LookPath("nsenter")
		if err != nil {
			tb.Fatalf("nsenter (util-linux) runs the browser in %s: %v", netns, err)
		}
		wrapper := filepath.Join(tb.TempDir(), "chromium-in-netns")
		script := fmt.Sprintf("#!/bin/sh\nexec %s --net=%s -- %s \"$@\"\n", nsenter, netns, path)
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			tb.Fatal(err)
		}
		path = wrapper
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.WindowSize(1100, 760),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	tb.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc() // waits for the browser process to exit
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		tb.Fatalf("start chromium: %v", err)
	}
	return ctx
}
