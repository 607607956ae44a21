package main

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write the dashboard test's screenshot to docs/dashboard.png")

// chromium returns the path of Debian's chromium (or another Chrome). It
// skips the test when there is none, and fails it under CI=true, where
// .ci/run installs it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (apt-get install chromium); CI requires the browser test")
	}
	t.Skip("chromium is not installed (apt-get install chromium): browser test skipped")
	return ""
}

// pageFigures reads every figure's value as the page shows it now.
const pageFigures = `Object.fromEntries([...document.querySelectorAll('tr[data-id]')].map(r =>
	[r.dataset.id, r.querySelector('td.value').textContent.trim()]))`

// TestDashboardInBrowser loads the dashboard in headless Chromium, runs
// commands against the runner and waits for the page, without a reload,
// to show their counts: 5 commands (4 ok, 1 rejected), 4 events, the
// head at 4 and the projections caught up. It saves a screenshot in the
// test's artifact directory (go test -artifacts keeps it).
func TestDashboardInBrowser(t *testing.T) {
	bin := chromium(t)
	s := start(t, testEnv(t.TempDir(), "EVENTCORE_PROJECTION_INTERVAL", "200ms"))

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.Headless,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1100, 1180))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelTab := chromedp.NewContext(actx)
	defer cancelTab()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	eval := func(expr string) string {
		t.Helper()
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return got
	}
	figures := func() map[string]string {
		t.Helper()
		got, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](pageFigures))
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		return got
	}
	text := func(sel string) string {
		t.Helper()
		return eval(`document.querySelector(` + strconv.Quote(sel) + `).textContent`)
	}
	chart := func() string {
		t.Helper()
		return eval(`document.querySelector('tr[data-id="commands_total"] polyline').getAttribute('points')`)
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(s.url+"/"), chromedp.WaitVisible(chromedp.CSS(`#figures`))); err != nil {
		t.Fatalf("load the dashboard: %v", err)
	}
	// Marks this document: a reload would lose the mark.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.loadedOnce = true`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the script to take over", func() bool { return text(`#mode`) == "live" })
	if f := figures(); f["commands_total"] != "0" || f["events_total"] != "0" {
		t.Fatalf("before any command the page shows %v", f)
	}
	chartBefore := chart()

	commands(t, s.url) // 4 events from 4 commands, and 1 refused

	want := map[string]string{
		"commands_total": "5", "events_total": "4", "head_position": "4",
		"lag/balances": "0", "lag/history": "0", "dead_letters/balances": "0",
	}
	var last map[string]string
	deadline := time.Now().Add(15 * time.Second)
	for {
		last = figures()
		ok := true
		for id, v := range want {
			ok = ok && last[id] == v
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page shows %v; want %v", last, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := text(`tr[data-id="commands_total"] td.detail`); !strings.Contains(got, "4 ok, 1 rejected") {
		t.Errorf("commands detail %q", got)
	}
	if p99 := last["latency_p99"]; !strings.HasSuffix(p99, " ms") {
		t.Errorf("p99 latency %q; want milliseconds", p99)
	}
	chartAfter := chart()
	loadedOnce, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.loadedOnce === true`))
	if err != nil {
		t.Fatal(err)
	}
	if chartAfter == chartBefore || chartAfter == "" {
		t.Errorf("the commands chart did not move: %q", chartAfter)
	}
	if !loadedOnce {
		t.Error("the page reloaded; it must update in place")
	}

	// Let a few samples pass so that the charts have a shape, then keep a
	// picture of the page.
	time.Sleep(3 * time.Second)
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(t.ArtifactDir(), "dashboard.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)
	if *updateScreenshot {
		if err := os.WriteFile(filepath.Join("..", "docs", "dashboard.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDashboardWithoutScript: the page as the server renders it is a
// table of the current figures.
func TestDashboardWithoutScript(t *testing.T) {
	s := start(t, testEnv(t.TempDir(), "EVENTCORE_PROJECTION_INTERVAL", "200ms"))
	commands(t, s.url)
	eventually(t, 10*time.Second, "the page to show 5 commands", func() bool {
		a := do(t, "GET", s.url+"/", "")
		if a.status != 200 || !strings.HasPrefix(a.header.Get("Content-Type"), "text/html") {
			t.Fatalf("GET / answered %d %q", a.status, a.header.Get("Content-Type"))
		}
		return strings.Contains(a.body, "<tr data-id=\"commands_total\">\n<th scope=\"row\">commands</th>\n<td class=\"value\">5</td>") &&
			strings.Contains(a.body, "4 ok, 1 rejected")
	})
	a := do(t, "GET", s.url+"/dashboard/static/dashboard.js", "")
	if a.status != 200 || !strings.Contains(a.body, "data.json") {
		t.Fatalf("script: %d", a.status)
	}
}
