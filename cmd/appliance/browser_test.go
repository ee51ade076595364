package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"appliance/internal/testutil"
)

// screenshotEnv names the file the browser test writes its screenshot to,
// instead of appliance-page.png in the temporary directory; docs/page.png
// is a copy of one.
const screenshotEnv = "APPLIANCE_PAGE_SCREENSHOT"

// browser starts Debian's chromium, headless, with a profile of its own,
// or skips the test when it is not installed.
func browser(t *testing.T) context.Context {
	t.Helper()
	testutil.NeedTools(t, testutil.Tool{Name: "chromium", Package: "chromium"})
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
	})
	return ctx
}

// js evaluates an expression in the page.
func js[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// TestBrowserPage opens the status page of a unit that carries real
// streams in a real browser: every section renders, a counter moves
// without a reload, the hand-over action is absent and refused without a
// login, and a dropped connection says so and comes back.
func TestBrowserPage(t *testing.T) {
	skipShort(t)
	ctx := browser(t)

	ports := freeUDPPorts(t, 6)
	in, out := ports[:3], ports[3:]
	var extra strings.Builder
	extra.WriteString("test_sources:\n")
	for _, p := range in {
		fmt.Fprintf(&extra, "  - {to: \"udp://127.0.0.1:%d\", pps: 200, size: 1328}\n", p)
	}
	u := startUnit(t, streamsConfig(2, in, out, nil, "")+extra.String())
	testutil.Eventually(t, 10*time.Second, "every stream to relay", func() bool {
		for _, s := range u.mustReport().Streams {
			if s.PacketsOut == 0 {
				return false
			}
		}
		return true
	})

	if err := chromedp.Do(ctx, chromedp.Navigate(u.api+"/"), chromedp.WaitVisible(chromedp.CSS("#verdict-line"))); err != nil {
		t.Fatalf("opening %s/: %v", u.api, err)
	}
	title := js[string](t, ctx, `document.title`)
	if !strings.Contains(title, "e2e") {
		t.Errorf("title %q does not name the unit", title)
	}

	// Every section is there, with something in it, in the operator's order.
	sections := js[[]string](t, ctx, `Array.from(document.querySelectorAll('main > section')).map(s => s.id + ':' + s.innerText.trim().length)`)
	want := []string{"health", "unit", "pair", "streams", "tree", "hardware", "watchdog", "events", "drills"}
	if len(sections) != len(want) {
		t.Fatalf("sections %v, want %v", sections, want)
	}
	for i, s := range sections {
		id, n, _ := strings.Cut(s, ":")
		if id != want[i] || n == "0" {
			t.Errorf("section %d: %s, want %s with text", i, s, want[i])
		}
	}
	verdict := js[string](t, ctx, `document.getElementById('verdict-line').className + ' ' + document.getElementById('verdict-line').innerText`)
	if !strings.Contains(verdict, "carrying 3 of 3 streams") {
		t.Errorf("verdict %q", verdict)
	}
	lone := js[string](t, ctx, `document.getElementById('pair').innerText`)
	if !strings.Contains(lone, "Not paired") {
		t.Errorf("pair section of a lone unit: %q", lone)
	}

	// A counter moves without a reload: the marker set now survives.
	counter := `document.querySelector('tr[data-stream="s0"] td.packets-in').innerText`
	before := js[string](t, ctx, counter)
	js[chromedp.Void](t, ctx, `window.notReloaded = 42`)
	testutil.Eventually(t, 10*time.Second, "the packet counter of s0 to change on the page", func() bool {
		return js[string](t, ctx, counter) != before
	})
	if js[int](t, ctx, `window.notReloaded || 0`) != 42 {
		t.Fatal("the page was reloaded: the counter did not change live")
	}

	// Without a login: a login form, no hand-over or other action form,
	// and the action itself refused.
	forms := js[struct{ Login, Handover, Actions int }](t, ctx, `({Login: document.querySelectorAll('form[action="/login"]').length,
		Handover: document.querySelectorAll('form[action$="/handover"]').length,
		Actions: document.querySelectorAll('form[action^="/api/"]').length})`)
	if forms.Login != 1 || forms.Handover != 0 || forms.Actions != 0 {
		t.Errorf("forms without a login: %+v; want a login form and no action", forms)
	}
	before0 := u.stream("s0")
	resp, err := http.PostForm(u.api+"/api/v1/streams/s0/handover", url.Values{"csrf": {"guess"}, "next": {"/"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !refused(t, resp.StatusCode) {
		t.Errorf("a hand-over without a login: %s, want 401 or 403", resp.Status)
	}
	if after := u.stream("s0"); after.Role != before0.Role || after.Owner != before0.Owner || after.WorkerPID != before0.WorkerPID {
		t.Errorf("the refused hand-over changed s0: %+v -> %+v", before0, after)
	}

	// The picture for the README.
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(os.TempDir(), "appliance-page.png")
	if p := os.Getenv(screenshotEnv); p != "" {
		shot = p
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))

	// The unit goes away: the page says it is reconnecting; a unit on the
	// same address again: the page is live again, without a reload.
	addr := strings.TrimPrefix(u.api, "http://")
	u.stop()
	banner := `(function(){var b=document.getElementById('conn'); return b.hidden ? '' : b.innerText})()`
	testutil.Eventually(t, 10*time.Second, "the reconnecting banner", func() bool {
		return strings.HasPrefix(js[string](t, ctx, banner), "Reconnecting…")
	})
	again := exec.Command(bin, "run", "--config", u.config, "--listen", addr)
	logs := &testutil.SyncBuffer{}
	again.Stdout, again.Stderr = logs, logs
	again.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := again.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = again.Process.Signal(syscall.SIGTERM)
		_ = again.Wait()
		if t.Failed() {
			t.Logf("second unit:\n%s", logs.String())
		}
	})
	before = js[string](t, ctx, counter)
	testutil.Eventually(t, 30*time.Second, "the banner to go and the counter to move again", func() bool {
		return js[string](t, ctx, banner) == "" && js[string](t, ctx, counter) != before
	})
	if js[int](t, ctx, `window.notReloaded || 0`) != 42 {
		t.Error("the page was reloaded to reconnect")
	}
}

// refused reports whether an action's answer is a refusal for want of a
// login.
func refused(t *testing.T, code int) bool {
	t.Helper()
	return code == http.StatusUnauthorized || code == http.StatusForbidden
}
