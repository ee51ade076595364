package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"appliance/internal/testutil"
)

// screenshotPath is where a browser test keeps its picture called name:
// appliance-page-NAME.png in the temporary directory, or, when
// APPLIANCE_PAGE_SCREENSHOT names TestBrowserPage's file (say
// docs/page.png), beside it (docs/page-NAME.png).
func screenshotPath(name string) string {
	if p := os.Getenv(screenshotEnv); p != "" {
		return strings.TrimSuffix(p, filepath.Ext(p)) + "-" + name + ".png"
	}
	return filepath.Join(os.TempDir(), "appliance-page-"+name+".png")
}

// tryJS evaluates an expression in the page; unlike js, an error (the page
// is between two documents) is the caller's to judge.
func tryJS[T any](ctx context.Context, expr string) (T, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// TestBrowserPairHandover hands a stream over from the status page of a
// paired unit, in a real browser, as an operator would: without a login
// there is no button and the action is refused; logged in with a token
// from the config, the stream's "Hand over" button moves it to the peer,
// which its own API confirms, and the page shows the new owner.
func TestBrowserPairHandover(t *testing.T) {
	skipShort(t)
	ctx := browser(t)

	// A token of the operator's, configured on unit-a as the operator
	// does it: its line from `appliance token hash`.
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	token := base64.RawURLEncoding.EncodeToString(raw[:])
	line, errOut, code := runStdin(t, token+"\n", "token", "hash", "--name", "noc")
	if code != 0 || !strings.HasPrefix(line, "- {name: noc, sha256: ") {
		t.Fatalf("token hash: exit %d, %q, %s", code, line, errOut)
	}
	r := startPair(t, nil, withConfig("unit-a", "status:\n  tokens:\n    "+line))
	before := r.waitOwners(map[string]string{"s0": "unit-a", "s1": "unit-b"}, "each stream forwarded by the unit it prefers")

	if err := chromedp.Do(ctx, chromedp.Navigate(r.a.api+"/"), chromedp.WaitVisible(chromedp.CSS("#verdict-line"))); err != nil {
		t.Fatalf("opening %s/: %v", r.a.api, err)
	}
	if pair := js[string](t, ctx, `document.getElementById('pair').innerText`); !strings.Contains(pair, "unit-b") || strings.Contains(pair, "Not paired") {
		t.Fatalf("unit-a's pair section does not show its peer: %q", pair)
	}

	// Without a login: a login form, no hand-over button, and the form's
	// post refused, from a client with no cookie and from the browser.
	forms := js[struct{ Login, Handover, Buttons int }](t, ctx, `({Login: document.querySelectorAll('form[action="/login"]').length,
		Handover: document.querySelectorAll('form[action$="/handover"]').length,
		Buttons: document.querySelectorAll('button.handover').length})`)
	if forms.Login != 1 || forms.Handover != 0 || forms.Buttons != 0 {
		t.Errorf("unit-a's page without a login: %+v; want a login form and no hand-over", forms)
	}
	handover := "/api/v1/streams/s0/handover"
	resp, err := http.PostForm(r.a.api+handover, url.Values{"csrf": {"no-session"}, "next": {"/"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
		t.Errorf("the hand-over form posted without a cookie: %s, want 401 or 403", resp.Status)
	}
	browserCode, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch('`+handover+`', {method: 'POST', redirect: 'manual',
		body: new URLSearchParams({csrf: 'no-session', next: '/'})}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if browserCode != http.StatusUnauthorized && browserCode != http.StatusForbidden {
		t.Errorf("the hand-over posted by the browser before a login: %d, want 401 or 403", browserCode)
	}
	still := r.waitOwners(map[string]string{"s0": "unit-a", "s1": "unit-b"}, "the streams where they were")
	if still["s0"] != before["s0"] {
		t.Errorf("a refused hand-over moved s0: epoch %d became %d", before["s0"], still["s0"])
	}

	// The login form: the token typed in, the page back with who is logged
	// in, and the token nowhere on it.
	loggedIn, err := chromedp.RunResponse(ctx,
		chromedp.SendKeys(chromedp.CSS(`#login input[name="token"]`), token),
		chromedp.Click(chromedp.CSS(`#login button`)))
	if err != nil {
		t.Fatalf("logging in: %v", err)
	}
	if loggedIn.Status != http.StatusOK {
		t.Fatalf("logging in ended on %d %s", loggedIn.Status, loggedIn.URL)
	}
	if who := js[string](t, ctx, `(document.getElementById('who') || {}).innerText || ''`); who != "noc" {
		t.Fatalf("after the login the page says logged in as %q, want noc", who)
	}
	if js[bool](t, ctx, `document.documentElement.outerHTML.includes('`+token+`') || location.href.includes('`+token+`')`) {
		t.Error("the page shows the token")
	}
	buttons := js[struct{ S0, S1 int }](t, ctx, `({S0: document.querySelectorAll('tr[data-stream="s0"] button.handover').length,
		S1: document.querySelectorAll('tr[data-stream="s1"] button.handover').length})`)
	if buttons.S0 != 1 || buttons.S1 != 0 {
		t.Fatalf("hand-over buttons logged in: %+v; want one for s0 (forwarded by unit-a), none for s1 (unit-b's)", buttons)
	}

	// Press "Hand over" on s0. The live updates replace the streams table
	// every second; a press whose button is replaced between the mouse's
	// down and up is no click, so the page records the form it submits and
	// a missed press is pressed again.
	mark := r.rx[0].mark()
	js[chromedp.Void](t, ctx, `window.submitted = ''; window.beforeMove = 7;
		document.addEventListener('submit', e => { window.submitted = e.target.getAttribute('action') }, true)`)
	for try := 1; ; try++ {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := chromedp.Do(cctx, chromedp.Click(chromedp.CSS(`tr[data-stream="s0"] button.handover`)))
		cancel()
		state, jsErr := tryJS[struct {
			Submitted string
			Same      bool
		}](ctx, `({Submitted: window.submitted || '', Same: window.beforeMove === 7})`)
		if jsErr != nil || !state.Same || state.Submitted == handover {
			break // submitted, or already on the next page
		}
		if try == 5 {
			t.Fatalf("pressing Hand over on s0 submitted nothing in %d tries (last: %v, submitted %q)", try, err, state.Submitted)
		}
		t.Logf("press %d missed (%v): the row was replaced under the pointer; pressing again", try, err)
	}

	// The page comes back saying it is done.
	var flash struct{ Done, Error string }
	testutil.Eventually(t, 30*time.Second, "the page back with the hand-over's result", func() bool {
		f, err := tryJS[struct{ Done, Error string }](ctx, `({Done: (document.querySelector('p.flash.done') || {}).innerText || '',
			Error: (document.querySelector('p.flash.error') || {}).innerText || ''})`)
		flash = f
		return err == nil && (f.Done != "" || f.Error != "")
	})
	if flash.Error != "" || !strings.Contains(flash.Done, "s0 is now forwarded by unit-b") {
		t.Fatalf("after the hand-over the page says %+v", flash)
	}
	js[chromedp.Void](t, ctx, `window.afterMove = 9`)

	// unit-b's own API says it forwards s0 now, and unit-a's agrees.
	testutil.Eventually(t, 10*time.Second, "unit-b's API to report s0 active on unit-b", func() bool {
		rep, err := r.b.report()
		if err != nil {
			return false
		}
		for _, s := range rep.Streams {
			if s.Name == "s0" {
				return s.Role == "active" && s.Owner == "unit-b"
			}
		}
		return false
	})
	after := r.waitOwners(map[string]string{"s0": "unit-b", "s1": "unit-b"}, "both streams on unit-b, by both units' APIs")
	if after["s0"] <= before["s0"] {
		t.Errorf("s0's epoch went from %d to %d across the hand-over", before["s0"], after["s0"])
	}
	// Downstream, s0 went on as one stream, now sent by unit-b.
	testutil.Eventually(t, 5*time.Second, "s0's output to go on through unit-b", func() bool {
		return r.rx[0].mark() > mark+200 && r.rx[0].senders() == 2
	})
	r.rx[0].since(t, mark, "s0 across the hand-over from the page")

	// The page shows the new owner, without another reload.
	row := `(function(){var c=document.querySelectorAll('tr[data-stream="s0"] td');
		return {Role: c[2] ? c[2].innerText : '', Owner: c[3] ? c[3].innerText : '',
			Button: document.querySelectorAll('tr[data-stream="s0"] button.handover').length,
			Pair: document.getElementById('pair').innerText}})()`
	type rowState struct {
		Role, Owner, Pair string
		Button            int
	}
	var shown rowState
	polls := 0
	testutil.Eventually(t, 10*time.Second, "the page to show s0 on standby here, forwarded by unit-b", func() bool {
		polls++
		shown = js[rowState](t, ctx, row)
		return shown.Role == "standby" && shown.Owner == "unit-b" && shown.Button == 0 && strings.Contains(shown.Pair, "unit-b 2")
	})
	if js[int](t, ctx, `window.afterMove || 0`) != 9 {
		t.Error("the page was reloaded to show the new owner")
	}
	t.Logf("done message %q; the new owner on the page %s", flash.Done, map[bool]string{true: "as it came back", false: "by a live update"}[polls == 1])

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := screenshotPath("pair")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))

	if strings.Contains(r.a.logs.String(), token) || strings.Contains(r.b.logs.String(), token) {
		t.Error("a unit logged the token")
	}
}
