package status

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"appliance/health"
	"appliance/internal/clock"
	"appliance/internal/testutil"
)

// liveSource is a fixed source whose report a test may change while it is served.
type liveSource struct {
	mu  sync.Mutex
	rep Report
}

func (b *liveSource) Report() Report {
	b.mu.Lock()
	defer b.mu.Unlock()
	rep := b.rep
	rep.Streams = append(rep.Streams[:0:0], rep.Streams...)
	return rep
}
func (b *liveSource) State() string { return "running" }

func (b *liveSource) edit(f func(*Report)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(&b.rep)
}

// pageServer serves src with the page's clock in the test's hands: the
// page's report is as old as that clock says, so every sample the test
// makes the page take is a new report.
func pageServer(t *testing.T, src Source, opts Options) (*Server, *clock.Fake, string) {
	t.Helper()
	s := serveWith(t, src, opts)
	return s, s.page.clk.(*clock.Fake), "http://" + s.Addr().String()
}

// tickPage moves the page's clock by d one tick of its loop at a time,
// each once the loop waits for it and taken before the next: a ticker, like
// a real one, drops a tick that comes while the last is still unread, and
// an advance before the loop's ticker exists moves nothing.
func tickPage(t *testing.T, fake *clock.Fake, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := fake.WaitPending(ctx, 1); err != nil {
		t.Fatalf("the page's loop never waited for its clock: %v", err)
	}
	for moved := time.Duration(0); moved < d; moved += liveEvery {
		fake.Advance(liveEvery)
		testutil.Eventually(t, 5*time.Second, "the page's loop to take its tick", func() bool { return fake.Unread() == 0 })
	}
}

func pageFetch(t *testing.T, method, url string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

// pairedReport is a liveSource paired unit: 1,000 streams, half owned by the
// peer, with a failed stream, an idle one and a failing output.
func pairedReport() Report {
	rep := syntheticReport(1000, 2, MaxEvents)
	for i := range rep.Streams {
		s := &rep.Streams[i]
		s.Role, s.Owner = "active", rep.Unit.Name
		if i%2 == 1 {
			s.Role, s.Owner = "standby", "rack7-unit-b"
		}
	}
	rep.Streams[500].State, rep.Streams[500].Error = "failed", "input udp://239.1.2.0:5000: address already in use"
	rep.Streams[700].State = "idle"
	rep.Streams[900].Outputs[1].State = "failing"
	rep.Health = append(rep.Health, health.Condition{Name: "stream.failed:channel-0500", Severity: health.Critical,
		Message: "input cannot be bound", Since: rep.Unit.Started})
	rtt, heard := 0.21, 3.0
	rep.Pair = &Pair{Peer: "rack7-unit-b", PeerState: "up", Agreement: true, State: "up", Realtime: true, DetectMs: 30,
		Paths: []PairPath{
			{Local: "10.0.0.1:7000", Remote: "10.0.0.2:7000", Up: true, RTTMs: &rtt, LastHeardMs: &heard, Sent: 1000, Received: 998},
			{Local: "10.1.0.1:7000", Remote: "10.1.0.2:7000"},
		},
		Witness: &Witness{Address: "10.9.0.1:7001", Lease: true, RTTMs: &rtt},
		Drills:  []Drill{{Scenario: "planned", Started: rep.Unit.Started, Result: "ok", Streams: 12, GapMs: 1.5}},
	}
	return rep
}

// sectionOrder is the order the operator asks in.
var sectionOrder = []string{`id="health"`, `id="unit"`, `id="pair"`, `id="streams"`, `id="tree"`,
	`id="hardware"`, `id="watchdog"`, `id="events"`, `id="drills"`}

// The page is at /: every section, in the operator's order, in the HTML
// itself (readable without JavaScript), with the headers of a page that
// runs no script but its own.
func TestPageAtRoot(t *testing.T) {
	rep := pairedReport()
	_, _, base := pageServer(t, &fixed{rep}, testOpts)
	code, h, body := pageFetch(t, "GET", base+"/")
	if code != 200 {
		t.Fatalf("GET /: %d %s", code, body)
	}
	if ct := h.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("content type %q", ct)
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	if cc := h.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	last := -1
	for _, id := range sectionOrder {
		i := strings.Index(body, id)
		if i < 0 {
			t.Errorf("no section %s", id)
			continue
		}
		if i < last {
			t.Errorf("section %s out of order", id)
		}
		last = i
	}
	for _, want := range []string{
		`class="verdict red"`, "stream.failed:channel-0500",
		"rack7-unit-a", "1.4.2", "Boot count</dt><dd>17", "Last reset</dt><dd>power-on",
		"rack7-unit-b", "10.0.0.2:7000", "0.2 ms", "10.9.0.1:7001", "<b>rack7-unit-a</b> 500", "<b>rack7-unit-b</b> 500",
		"worker-0", "killed by signal KILL", "4101",
		"cpu at 82.0", "eth0", "10,000 Mb/s",
		"/dev/watchdog0", "iTCO_wdt", "30 s",
		"restart", "planned",
		"1000 streams", "Showing 1–50, trouble first", "page 1 of 20",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	// A JSON 404 stays for everything that is neither page nor API.
	code, h, _ = pageFetch(t, "GET", base+"/nope")
	if code != 404 || h.Get("Content-Type") != "application/json" {
		t.Errorf("GET /nope: %d %s", code, h.Get("Content-Type"))
	}
	code, _, _ = pageFetch(t, "POST", base+"/")
	if code != 405 {
		t.Errorf("POST /: %d, want 405", code)
	}
}

// rows are the stream names of a page's table, in order.
var rowName = regexp.MustCompile(`<tr class="lvl-(\w+)" data-stream="([^"]+)"`)

func tableRows(body string) (names, levels []string) {
	for _, m := range rowName.FindAllStringSubmatch(body, -1) {
		levels = append(levels, m[1])
		names = append(names, m[2])
	}
	return names, levels
}

// 1,000 streams stay usable: trouble first, then by name; filtered by q
// (also by level); paged; a page past the end shows the last one.
func TestStreamsTroubleFirstFilteredPaged(t *testing.T) {
	rep := pairedReport()
	_, _, base := pageServer(t, &fixed{rep}, testOpts)

	_, _, body := pageFetch(t, "GET", base+"/")
	names, levels := tableRows(body)
	if len(names) != pageSize {
		t.Fatalf("%d rows on page 1, want %d", len(names), pageSize)
	}
	want := []string{"channel-0500", "channel-0700", "channel-0900", "channel-0000", "channel-0001"}
	if got := names[:5]; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("first rows %v, want %v", got, want)
	}
	if fmt.Sprint(levels[:4]) != "[critical warning warning ok]" {
		t.Errorf("levels %v", levels[:4])
	}

	_, _, body = pageFetch(t, "GET", base+"/?page=2")
	if names, _ := tableRows(body); len(names) != pageSize || names[0] != "channel-0047" {
		t.Errorf("page 2 starts with %v", names[:1])
	}
	if !strings.Contains(body, `href="/?page=3"`) || !strings.Contains(body, `href="/"`) {
		t.Errorf("page 2 lacks its neighbours' links")
	}
	_, _, body = pageFetch(t, "GET", base+"/?page=99")
	if names, _ := tableRows(body); len(names) != pageSize || names[len(names)-1] != "channel-0999" || !strings.Contains(body, "page 20 of 20") {
		t.Errorf("page 99: %d rows", len(names))
	}

	_, _, body = pageFetch(t, "GET", base+"/?q=channel-09")
	if names, _ := tableRows(body); len(names) != pageSize || names[0] != "channel-0900" || !strings.Contains(body, "100 match") {
		t.Errorf("q=channel-09: %v", names[:1])
	}
	if !strings.Contains(body, `href="/?page=2&amp;q=channel-09"`) {
		t.Errorf("the next page's link loses the filter")
	}
	_, _, body = pageFetch(t, "GET", base+"/?q="+url.QueryEscape("critical"))
	if names, _ := tableRows(body); fmt.Sprint(names) != "[channel-0500]" {
		t.Errorf("q=critical: %v", names)
	}
	_, _, body = pageFetch(t, "GET", base+"/?q="+url.QueryEscape("unit-b 0901"))
	if names, _ := tableRows(body); fmt.Sprint(names) != "[channel-0901]" {
		t.Errorf("q=unit-b 0901: %v", names)
	}
	_, _, body = pageFetch(t, "GET", base+"/?q=nothing-like-it")
	if names, _ := tableRows(body); len(names) != 0 || !strings.Contains(body, "No stream matches") {
		t.Errorf("q=nothing-like-it: %v", names)
	}

	for _, bad := range []string{"page=0", "page=x", "page=-1", "page=1e3", "q=" + strings.Repeat("a", maxQuery+1)} {
		code, h, body := pageFetch(t, "GET", base+"/?"+bad)
		if code != 400 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(body, "Bad request") {
			t.Errorf("?%s: %d %q", bad, code, h.Get("Content-Type"))
		}
	}
}

func TestVerdict(t *testing.T) {
	base := func() Report {
		rep := syntheticReport(3, 1, 0)
		rep.Health = nil
		return rep
	}
	for _, tt := range []struct {
		name  string
		edit  func(*Report)
		level string
		says  []string
	}{
		{"healthy", func(*Report) {}, "green", []string{"Healthy: carrying 3 of 3 streams (3 forwarded here, 0 on standby), no alarms."}},
		{"warning", func(r *Report) {
			r.Health = []health.Condition{{Name: "temp:cpu", Severity: health.Warning, Message: "cpu at 82 °C"}}
		}, "amber", []string{"Warning: temp:cpu (cpu at 82 °C)", "carrying 3 of 3"}},
		{"idle stream", func(r *Report) { r.Streams[1].State = "idle" }, "amber", []string{"1 stream with warnings"}},
		{"failed stream", func(r *Report) {
			r.Streams[2].State = "failed"
			r.Health = []health.Condition{
				{Name: "stream.failed:channel-0002", Severity: health.Critical, Message: "port taken"},
				{Name: "link.down:eth0", Severity: health.Critical, Message: "eth0 has no carrier"},
			}
		}, "red", []string{"stream.failed:channel-0002 (port taken) and 1 more critical alarms", "1 stream in critical trouble", "carrying 2 of 3"}},
		{"gave up", func(r *Report) { r.Unit.State = "failed" }, "red", []string{"supervision root gave up"}},
		{"recent loss", func(r *Report) {}, "amber", []string{"1 stream with warnings"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rep := base()
			tt.edit(&rep)
			recent := map[string]recentCounts{}
			if tt.name == "recent loss" {
				recent["channel-0001"] = recentCounts{Lost: 3}
			}
			v := mainView(&rep, rep.Unit.Started, pageParams{Page: 1}, recent, Session{}, false)
			if v.Verdict.Level != tt.level {
				t.Errorf("level %s, want %s (%s)", v.Verdict.Level, tt.level, v.Verdict.Text)
			}
			for _, s := range tt.says {
				if !strings.Contains(v.Verdict.Text, s) {
					t.Errorf("verdict %q lacks %q", v.Verdict.Text, s)
				}
			}
		})
	}
}

// A unit alone says so plainly, and has no drills.
func TestLoneUnitNotPaired(t *testing.T) {
	_, _, base := pageServer(t, &fixed{syntheticReport(3, 1, 3)}, testOpts)
	_, _, body := pageFetch(t, "GET", base+"/")
	for _, want := range []string{"Not paired: this unit runs alone", "No drills: a drill moves streams to the paired unit"} {
		if !strings.Contains(body, want) {
			t.Errorf("lacks %q", want)
		}
	}
}

func renderPage(t *testing.T, name string, v any) string {
	t.Helper()
	var b bytes.Buffer
	if err := pageTmpl.ExecuteTemplate(&b, name, v); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// Forms appear only to a logged-in operator, each with the session's CSRF
// token and the page to come back to; without a login there is only the
// login form. The server's own answer (the session stub) is not logged in.
func TestActionFormsOnlyWhenLoggedIn(t *testing.T) {
	rep := pairedReport()
	p := pageParams{Q: "channel-00", Page: 2}
	sess := Session{Name: "noc", CSRF: "csrf-token-1234"}

	out := renderPage(t, "main", mainView(&rep, rep.Unit.Started, p, nil, Session{}, false))
	if strings.Contains(out, "/api/v1/") && strings.Contains(out, `method="post" action="/api/v1`) {
		t.Error("a page without a login has action forms")
	}
	if !strings.Contains(out, `action="/login"`) || !strings.Contains(out, `name="next" value="/?page=2&amp;q=channel-00"`) {
		t.Error("no login form coming back to this view")
	}

	out = renderPage(t, "main", mainView(&rep, rep.Unit.Started, p, nil, sess, true))
	for _, want := range []string{
		`action="/api/v1/streams/channel-0050/handover"`, // owned here: can be handed over
		`action="/api/v1/streams/channel-0051/restart"`,
		`action="/api/v1/drills"`, `name="scenario"`, `name="stream"`,
		`action="/api/v1/config/reload"`,
		`action="/logout"`, "Logged in as <b id=\"who\">noc</b>",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logged in: lacks %q", want)
		}
	}
	if strings.Contains(out, `action="/api/v1/streams/channel-0051/handover"`) {
		t.Error("a stream the peer owns has a hand-over form")
	}
	forms := strings.Count(out, `method="post" action="/api/v1/`)
	csrf := strings.Count(out, `name="csrf" value="csrf-token-1234"`)
	if forms == 0 || csrf != forms+1 { // every action form, and the logout form
		t.Errorf("%d action forms, %d CSRF fields", forms, csrf)
	}
	if strings.Contains(out, `action="/login"`) {
		t.Error("a logged-in page has the login form")
	}

	sv, _ := streamPageView(&rep, rep.Unit.Started, "channel-0050", nil, nil, sess, true)
	out = renderPage(t, "stream", sv)
	if !strings.Contains(out, `action="/api/v1/streams/channel-0050/handover"`) || !strings.Contains(out, `name="next" value="/streams/channel-0050"`) {
		t.Error("the stream page of a logged-in operator lacks its hand-over form")
	}
	sv, _ = streamPageView(&rep, rep.Unit.Started, "channel-0050", nil, nil, Session{}, false)
	if out = renderPage(t, "stream", sv); strings.Contains(out, "/handover") {
		t.Error("the stream page without a login has a hand-over form")
	}

	// What the server itself renders today: nobody is logged in.
	_, _, base := pageServer(t, &fixed{rep}, testOpts)
	for _, path := range []string{"/", "/streams/channel-0050"} {
		_, _, body := pageFetch(t, "GET", base+path)
		if strings.Contains(body, `action="/api/v1`) || !strings.Contains(body, `action="/login"`) {
			t.Errorf("%s without a session: action forms or no login form", path)
		}
	}
}

// An action's outcome comes back in the query and is shown, escaped.
func TestFlash(t *testing.T) {
	_, _, base := pageServer(t, &fixed{syntheticReport(3, 1, 3)}, testOpts)
	_, _, body := pageFetch(t, "GET", base+"/?done="+url.QueryEscape("channel-0001 handed over to rack7-unit-b"))
	if !strings.Contains(body, `<p class="flash done" role="status">Done: channel-0001 handed over to rack7-unit-b</p>`) {
		t.Error("no done message")
	}
	_, _, body = pageFetch(t, "GET", base+"/streams/channel-0001?error="+url.QueryEscape("<script>alert(1)</script>"))
	if strings.Contains(body, "<script>alert") || !strings.Contains(body, "Refused: &lt;script&gt;") {
		t.Error("the error message is not shown escaped")
	}
}

// A stream's page: its counters, a sparkline per counter once sampled,
// its events; unknown or impossible names are a 404 page.
func TestStreamPage(t *testing.T) {
	src := &liveSource{rep: pairedReport()}
	src.rep.Events = append([]Event{
		{Time: src.rep.Unit.Started, Source: "health", Kind: "raised", Condition: "output.failing:channel-0900:10.20.1.150:6900", Severity: "warning", Message: "no route"},
		{Time: src.rep.Unit.Started, Source: "health", Kind: "raised", Condition: "output.failing:channel-0901:10.20.1.151:6901", Severity: "warning", Message: "no route"},
	}, src.rep.Events...)
	s, fake, base := pageServer(t, src, testOpts)

	code, _, body := pageFetch(t, "GET", base+"/streams/channel-0900")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	for _, want := range []string{"Stream channel-0900", "udp://10.20.1.150:6900", "failing", "No sample yet",
		"output.failing:channel-0900:10.20.1.150:6900"} {
		if !strings.Contains(body, want) {
			t.Errorf("lacks %q", want)
		}
	}
	if strings.Contains(body, "channel-0901:") {
		t.Error("shows another stream's events")
	}

	for i := range 3 {
		src.edit(func(r *Report) { r.Streams[900].PacketsIn += 1000 })
		tickPage(t, fake, historyEvery)
		testutil.Eventually(t, 5*time.Second, "a sample", func() bool { _, tick := s.page.hist.series("channel-0900"); return tick == uint32(i+1) })
	}
	_, _, body = pageFetch(t, "GET", base+"/streams/channel-0900")
	if n := strings.Count(body, "<polyline points="); n != 5 {
		t.Errorf("%d sparklines, want 5", n)
	}
	if !strings.Contains(body, "Packets in <span class=\"muted\">(/s)</span>: <b>500</b>") {
		i := strings.Index(body, "Packets in <span")
		t.Errorf("the packets sparkline does not end at 1000 packets in 2 s: %s", body[i:i+200])
	}

	for _, path := range []string{"/streams/no-such", "/streams/Bad%20Name", "/streams/" + strings.Repeat("a", 70)} {
		code, h, body := pageFetch(t, "GET", base+path)
		if code != 404 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(body, "No such stream") {
			t.Errorf("%s: %d", path, code)
		}
	}
}
