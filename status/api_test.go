package status

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"appliance/control"
	"appliance/internal/clock"
	"appliance/internal/testutil"
)

// The token the tests act with, and one that is not configured.
const (
	testToken  = "tok-7f3a9c2e5b8d1046a1b2c3d4e5f60718"
	wrongToken = "tok-00000000000000000000000000000000"
)

var testTokens = []Token{{Name: "noc", SHA256: sha256.Sum256([]byte(testToken))}}

// fakeActions records each call that reaches the unit.
type fakeActions struct {
	mu    sync.Mutex
	calls []string
	err   error // returned by every action when set
}

func (f *fakeActions) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return f.err
}

func (f *fakeActions) called() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeActions) Reload(ctx context.Context) (control.ReloadResult, error) {
	if err := f.record("reload"); err != nil {
		return control.ReloadResult{}, err
	}
	return control.ReloadResult{Added: []string{"cam9"}, Removed: []string{}, Changed: []string{}, Unchanged: []string{"cam1"}, RestartNeeded: []string{}}, nil
}

func (f *fakeActions) SetRole(ctx context.Context, stream, role string, from *uint16) (control.RoleResult, error) {
	return control.RoleResult{}, f.record("role " + stream + " " + role)
}

func (f *fakeActions) Handover(ctx context.Context, stream string) (control.HandoverResult, error) {
	if err := f.record("handover " + stream); err != nil {
		return control.HandoverResult{}, err
	}
	return control.HandoverResult{Stream: stream, To: "unit-b", Epoch: 4}, nil
}

func (f *fakeActions) Drill(ctx context.Context, scenario, stream string) (control.DrillResult, error) {
	if err := f.record("drill " + scenario + " " + stream); err != nil {
		return control.DrillResult{}, err
	}
	return control.DrillResult{Scenario: scenario, Result: "ok", Streams: 1, GapMs: 12.5}, nil
}

func (f *fakeActions) Restart(ctx context.Context, stream string) (control.RestartResult, error) {
	if err := f.record("restart " + stream); err != nil {
		return control.RestartResult{}, err
	}
	return control.RestartResult{Stream: stream, Worker: 0, WorkerPID: 4242, Restarts: 2}, nil
}

// apiRig is a server with fake actions, a fake clock and its log captured.
type apiRig struct {
	t    *testing.T
	s    *Server
	base string
	act  *fakeActions
	clk  *clock.Fake
	logs *testutil.SyncBuffer
	// bodies holds every response body the rig read, to check that none
	// quotes a token.
	mu     sync.Mutex
	bodies []string
}

func newRig(t *testing.T, edit func(*Options)) *apiRig {
	t.Helper()
	r := &apiRig{t: t, act: &fakeActions{}, clk: clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), logs: &testutil.SyncBuffer{}}
	opts := testOpts
	opts.Actions, opts.Tokens, opts.Clock = r.act, testTokens, r.clk
	opts.rates = &rates{clientBurst: 1000, clientEvery: time.Millisecond, globalBurst: 1000, globalEvery: time.Millisecond}
	if edit != nil {
		edit(&opts)
	}
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := Listen("127.0.0.1:0", opts, sample("running"), log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		r.noSecrets()
	})
	r.s, r.base = s, "http://"+s.Addr().String()
	return r
}

// noSecrets checks that no token reached the log or any answer.
func (r *apiRig) noSecrets() {
	r.t.Helper()
	logs := r.logs.String()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, secret := range []string{testToken, wrongToken, fmt.Sprintf("%x", testTokens[0].SHA256)} {
		if strings.Contains(logs, secret) {
			r.t.Errorf("the log holds a token or its hash:\n%s", logs)
		}
		for _, b := range r.bodies {
			if strings.Contains(b, secret) {
				r.t.Errorf("an answer holds a token or its hash: %s", b)
			}
		}
	}
}

// req is one request of a test.
type req struct {
	method, path string
	body         string
	ctype        string
	header       map[string]string
	cookie       *http.Cookie
}

type answer struct {
	code   int
	header http.Header
	body   string
	json   map[string]any
}

func (r *apiRig) do(q req) answer {
	r.t.Helper()
	var body io.Reader
	if q.body != "" {
		body = strings.NewReader(q.body)
	}
	hr, err := http.NewRequest(q.method, r.base+q.path, body)
	if err != nil {
		r.t.Fatal(err)
	}
	if q.ctype != "" {
		hr.Header.Set("Content-Type", q.ctype)
	}
	for k, v := range q.header {
		hr.Header.Set(k, v)
	}
	if q.cookie != nil {
		hr.AddCookie(q.cookie)
	}
	return r.send(hr)
}

var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func (r *apiRig) send(hr *http.Request) answer {
	r.t.Helper()
	resp, err := noRedirects.Do(hr)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.bodies = append(r.bodies, string(b)+fmt.Sprint(resp.Header))
	r.mu.Unlock()
	a := answer{code: resp.StatusCode, header: resp.Header, body: string(b)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &a.json); err != nil {
			r.t.Fatalf("%s %s: %v: %s", hr.Method, hr.URL, err, b)
		}
	}
	return a
}

func bearer(token string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + token}
}

// login opens a session and returns its cookie and CSRF token.
func (r *apiRig) login() (*http.Cookie, string) {
	r.t.Helper()
	a := r.do(req{method: "POST", path: "/login", ctype: formType, body: url.Values{"token": {testToken}}.Encode()})
	if a.code != http.StatusSeeOther {
		r.t.Fatalf("login: %d %s", a.code, a.body)
	}
	cookies := (&http.Response{Header: a.header}).Cookies()
	if len(cookies) != 1 {
		r.t.Fatalf("login set %d cookies", len(cookies))
	}
	hr, _ := http.NewRequest("GET", "/", nil)
	hr.AddCookie(cookies[0])
	sess, ok := r.s.session(hr)
	if !ok || sess.Name != "noc" || len(sess.CSRF) < 40 {
		r.t.Fatalf("the new session: %+v, %v", sess, ok)
	}
	return cookies[0], sess.CSRF
}

// TestActions: each action with a valid token reaches the unit once, with
// its arguments, and answers what the unit said; the log names the token.
func TestActions(t *testing.T) {
	r := newRig(t, nil)
	for _, tc := range []struct {
		q    req
		call string
		key  string // the result's field in the answer
	}{
		{req{method: "POST", path: "/api/v1/streams/cam1/handover"}, "handover cam1", "handover"},
		{req{method: "POST", path: "/api/v1/streams/cam1/restart", ctype: jsonType, body: "{}"}, "restart cam1", "restart"},
		{req{method: "POST", path: "/api/v1/drills", ctype: jsonType, body: `{"scenario": "planned", "stream": "cam1"}`}, "drill planned cam1", "drill"},
		{req{method: "POST", path: "/api/v1/drills", ctype: "application/json; charset=utf-8", body: `{"scenario": "power-loss"}`}, "drill power-loss ", "drill"},
		{req{method: "POST", path: "/api/v1/config/reload"}, "reload", "reload"},
	} {
		before := len(r.act.called())
		tc.q.header = bearer(testToken)
		a := r.do(tc.q)
		calls := r.act.called()[before:]
		if a.code != 200 || a.json["ok"] != true || a.json[tc.key] == nil {
			t.Errorf("%s %s: %d %s", tc.q.method, tc.q.path, a.code, a.body)
		}
		if len(calls) != 1 || calls[0] != tc.call {
			t.Errorf("%s %s called %q, want once %q", tc.q.method, tc.q.path, calls, tc.call)
		}
	}
	if logs := r.logs.String(); strings.Count(logs, "api: action") != 5 || !strings.Contains(logs, "op=handover stream=cam1 scenario=\"\" by=noc via=token client=127.0.0.1") {
		t.Errorf("the actions are not logged with who acted:\n%s", logs)
	}
}

// TestActionOutcomes: the unit's answer decides the status code, and a
// request Do refuses never reaches the unit.
func TestActionOutcomes(t *testing.T) {
	r := newRig(t, nil)
	for _, tc := range []struct {
		err   error
		q     req
		code  int
		calls int
	}{
		{control.Mark(control.ErrNoStream, errors.New("no such stream: nope")), req{method: "POST", path: "/api/v1/streams/nope/restart"}, 404, 1},
		{errors.New("this unit is not paired: its config has no pair: section"), req{method: "POST", path: "/api/v1/streams/cam1/handover"}, 409, 1},
		{control.Mark(control.ErrFailed, errors.New("the unit has failed")), req{method: "POST", path: "/api/v1/config/reload"}, 503, 1},
		{nil, req{method: "POST", path: "/api/v1/drills", ctype: jsonType, body: `{"scenario": "meteor"}`}, 400, 0},
		{nil, req{method: "POST", path: "/api/v1/drills", ctype: jsonType, body: `{"stream": "cam1"}`}, 400, 0},
	} {
		r.act.mu.Lock()
		r.act.err, r.act.calls = tc.err, nil
		r.act.mu.Unlock()
		tc.q.header = bearer(testToken)
		a := r.do(tc.q)
		msg, _ := a.json["error"].(string)
		if a.code != tc.code || msg == "" || a.json["ok"] != false || (tc.err != nil && msg != tc.err.Error()) {
			t.Errorf("%s (%v): %d %s, want %d with the error", tc.q.path, tc.err, a.code, a.body, tc.code)
		}
		if n := len(r.act.called()); n != tc.calls {
			t.Errorf("%s reached the unit %d times, want %d", tc.q.path, n, tc.calls)
		}
	}
}

// TestSameAnswerAsControlSocket: the socket and the API carry the same
// request to the same actions and give the same answer.
func TestSameAnswerAsControlSocket(t *testing.T) {
	r := newRig(t, nil)
	sock := filepath.Join(t.TempDir(), "control.sock")
	cs, err := control.Listen(sock, r.act, discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cs.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	for _, tc := range []struct {
		ctl  control.Request
		http req
		err  error
	}{
		{control.Request{Op: control.OpHandover, Stream: "cam1"}, req{method: "POST", path: "/api/v1/streams/cam1/handover"}, nil},
		{control.Request{Op: control.OpRestart, Stream: "cam1"}, req{method: "POST", path: "/api/v1/streams/cam1/restart"}, nil},
		{control.Request{Op: control.OpDrill, Scenario: "overheat"}, req{method: "POST", path: "/api/v1/drills", ctype: jsonType, body: `{"scenario":"overheat"}`}, nil},
		{control.Request{Op: control.OpReload}, req{method: "POST", path: "/api/v1/config/reload"}, nil},
		{control.Request{Op: control.OpDrill, Scenario: "meteor"}, req{method: "POST", path: "/api/v1/drills", ctype: jsonType, body: `{"scenario":"meteor"}`}, nil},
		{control.Request{Op: control.OpRestart, Stream: "nope"}, req{method: "POST", path: "/api/v1/streams/nope/restart"},
			control.Mark(control.ErrNoStream, errors.New("no such stream: nope"))},
	} {
		r.act.mu.Lock()
		r.act.err, r.act.calls = tc.err, nil
		r.act.mu.Unlock()
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		want, err := control.Call(cctx, sock, tc.ctl)
		ccancel()
		if err != nil {
			t.Fatal(err)
		}
		viaSocket := r.act.called()
		tc.http.header = bearer(testToken)
		a := r.do(tc.http)
		var got control.Response
		if err := json.Unmarshal([]byte(a.body), &got); err != nil {
			t.Fatalf("%s: %v", tc.http.path, err)
		}
		wantJSON, _ := json.Marshal(want)
		gotJSON, _ := json.Marshal(got)
		if string(wantJSON) != string(gotJSON) {
			t.Errorf("%+v: the socket answered %s, the API %s", tc.ctl, wantJSON, gotJSON)
		}
		if calls := r.act.called(); !slices.Equal(calls[len(viaSocket):], viaSocket) {
			t.Errorf("%+v: the socket called %q, then the API %q", tc.ctl, viaSocket, calls[len(viaSocket):])
		}
	}
}

// TestRefusals: every request the API must refuse is refused with the
// right status and a message, and changes nothing.
func TestRefusals(t *testing.T) {
	r := newRig(t, nil)
	cookie, csrf := r.login()
	expired := func() *http.Cookie {
		c, _ := r.login()
		return c
	}()
	big := `{"scenario": "planned", "stream": "` + strings.Repeat("x", maxBody) + `"}`
	handover := "/api/v1/streams/cam1/handover"
	for _, tc := range []struct {
		what string
		q    req
		code int
		want string
	}{
		{"no token", req{method: "POST", path: handover}, 401, "Authorization: Bearer TOKEN"},
		{"a wrong token", req{method: "POST", path: handover, header: bearer(wrongToken)}, 401, "not one of status.tokens"},
		{"an empty token", req{method: "POST", path: handover, header: bearer("")}, 401, ""},
		{"basic auth", req{method: "POST", path: handover, header: map[string]string{"Authorization": "Basic " + testToken}}, 401, "Bearer TOKEN"},
		{"a cookie that is no session", req{method: "POST", path: handover, cookie: &http.Cookie{Name: sessionCookie, Value: testToken}}, 401, "log in again"},
		{"a session without its CSRF token", req{method: "POST", path: handover, cookie: cookie}, 403, "CSRF"},
		{"a session with a wrong CSRF token", req{method: "POST", path: handover, cookie: cookie, header: map[string]string{csrfHeader: csrf + "x"}}, 403, "CSRF"},
		{"a form without its CSRF token", req{method: "POST", path: handover, cookie: cookie, ctype: formType, body: "next=/"}, 403, "CSRF"},
		{"a body too big", req{method: "POST", path: "/api/v1/drills", header: bearer(testToken), ctype: jsonType, body: big}, 413, "larger than 65536 bytes"},
		{"malformed JSON", req{method: "POST", path: "/api/v1/drills", header: bearer(testToken), ctype: jsonType, body: `{"scenario": "planned"`}, 400, "not a JSON object"},
		{"two JSON values", req{method: "POST", path: "/api/v1/drills", header: bearer(testToken), ctype: jsonType, body: `{"scenario": "planned"} {}`}, 400, "one object"},
		{"an unknown field", req{method: "POST", path: "/api/v1/drills", header: bearer(testToken), ctype: jsonType, body: `{"scenario": "planned", "force": true}`}, 400, `unknown field "force"`},
		{"a body where none is taken", req{method: "POST", path: handover, header: bearer(testToken), ctype: jsonType, body: `{"stream": "cam2"}`}, 400, "in the path"},
		{"plain text", req{method: "POST", path: "/api/v1/drills", header: bearer(testToken), ctype: "text/plain", body: "planned"}, 415, "application/json"},
		{"a body without a type", req{method: "POST", path: "/api/v1/drills", header: bearer(testToken), body: `{"scenario": "planned"}`}, 415, "Content-Type: application/json"},
		{"GET on an action", req{method: "GET", path: handover, header: bearer(testToken)}, 405, "POST"},
		{"DELETE on drills", req{method: "DELETE", path: "/api/v1/drills", header: bearer(testToken)}, 405, "POST a drill"},
	} {
		a := r.do(tc.q)
		msg, _ := a.json["error"].(string)
		if tc.q.ctype == formType {
			msg = a.body // a page for the browser
		}
		if a.code != tc.code || msg == "" || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %d %s, want %d saying %q", tc.what, a.code, a.body, tc.code, tc.want)
		}
		if a.code == 401 && a.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: a 401 without WWW-Authenticate", tc.what)
		}
	}
	// A session past its time is refused like none.
	r.clk.Advance(sessionTTL)
	if a := r.do(req{method: "POST", path: handover, cookie: expired, header: map[string]string{csrfHeader: csrf}}); a.code != 401 {
		t.Errorf("an expired session: %d %s", a.code, a.body)
	}
	if calls := r.act.called(); len(calls) != 0 {
		t.Errorf("refused requests reached the unit: %q", calls)
	}
	if strings.Count(r.logs.String(), "api: request refused") < 15 {
		t.Errorf("refusals are not logged:\n%s", r.logs.String())
	}
}

// TestNoTokens: a unit without tokens refuses every action and login, and
// says how to add a token.
func TestNoTokens(t *testing.T) {
	r := newRig(t, func(o *Options) { o.Tokens = nil })
	for _, q := range []req{
		{method: "POST", path: "/api/v1/config/reload", header: bearer(testToken)},
		{method: "POST", path: "/api/v1/streams/cam1/restart"},
		{method: "POST", path: "/login", ctype: formType, body: "token=" + testToken, header: map[string]string{"Accept": jsonType}},
	} {
		a := r.do(q)
		if msg, _ := a.json["error"].(string); a.code != 401 || !strings.Contains(msg, "appliance token hash") {
			t.Errorf("%s: %d %s", q.path, a.code, a.body)
		}
	}
	if calls := r.act.called(); len(calls) != 0 {
		t.Errorf("actions ran without tokens: %q", calls)
	}
}

// TestRateLimits: past its burst a client is refused with Retry-After until
// its bucket refills, wrong tokens count too, and nothing runs meanwhile.
func TestRateLimits(t *testing.T) {
	r := newRig(t, func(o *Options) {
		o.rates = &rates{clientBurst: 3, clientEvery: time.Minute, globalBurst: 100, globalEvery: time.Second}
	})
	reload := req{method: "POST", path: "/api/v1/config/reload", header: bearer(testToken)}
	for i := range 3 {
		if a := r.do(reload); a.code != 200 {
			t.Fatalf("request %d: %d %s", i, a.code, a.body)
		}
	}
	a := r.do(reload)
	if msg, _ := a.json["error"].(string); a.code != 429 || a.header.Get("Retry-After") != "60" || !strings.Contains(msg, "try again in 60 s") {
		t.Errorf("past the burst: %d %v %s", a.code, a.header, a.body)
	}
	if n := len(r.act.called()); n != 3 {
		t.Errorf("%d actions ran, want 3", n)
	}
	r.clk.Advance(time.Minute)
	if a := r.do(reload); a.code != 200 {
		t.Errorf("after a minute: %d %s", a.code, a.body)
	}
	// Guessing is rate-limited too: wrong tokens and logins spend the bucket.
	r.clk.Advance(3 * time.Minute)
	for range 2 {
		r.do(req{method: "POST", path: "/api/v1/config/reload", header: bearer(wrongToken)})
	}
	r.do(req{method: "POST", path: "/login", ctype: formType, body: "token=" + wrongToken})
	if a := r.do(req{method: "POST", path: "/login", ctype: formType, body: "token=" + testToken}); a.code != 429 {
		t.Errorf("a login after three bad guesses: %d %s", a.code, a.body)
	}
	if n := len(r.act.called()); n != 4 {
		t.Errorf("%d actions ran, want 4", n)
	}
}

// TestLimiter: the unit's bucket is shared by every client; the clients'
// table stays bounded.
func TestLimiter(t *testing.T) {
	t.Parallel()
	var now time.Duration = time.Hour
	l := newLimiter(rates{clientBurst: 2, clientEvery: time.Second, globalBurst: 3, globalEvery: time.Second}, func() time.Duration { return now })
	for i := range 3 {
		if ref := l.client(fmt.Sprintf("192.0.2.%d", i)); ref != nil {
			t.Fatal(ref.msg)
		}
		if ref := l.unit(); ref != nil {
			t.Fatalf("client %d: %s", i, ref.msg)
		}
	}
	if ref := l.unit(); ref == nil || ref.code != 429 || ref.retryAfter != "1" {
		t.Errorf("a fourth action on the unit: %+v", ref)
	}
	now += 500 * time.Millisecond
	if ref := l.unit(); ref == nil {
		t.Error("half a token let an action through")
	}
	now += 500 * time.Millisecond
	if ref := l.unit(); ref != nil {
		t.Errorf("after a second: %s", ref.msg)
	}
	l = newLimiter(l.r, func() time.Duration { return now })
	for i := range maxClients {
		if ref := l.client(fmt.Sprintf("2001:db8::%x", i)); ref != nil {
			t.Fatalf("client %d: %s", i, ref.msg)
		}
	}
	if ref := l.client("198.51.100.1"); ref == nil || ref.code != 429 {
		t.Errorf("a new client while %d others are active: %+v", maxClients, ref)
	}
	now += time.Minute
	if ref := l.client("198.51.100.1"); ref != nil || len(l.clients) != 1 {
		t.Errorf("once the others' buckets are full again: %v, %d kept", ref, len(l.clients))
	}
}

// TestAPIDocumented: docs/api.md has a section and an example for every
// endpoint of API v1, and names every status code the API answers with.
func TestAPIDocumented(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, h := range []string{"GET /healthz", "GET /api/v1/status", "GET /api/v1/events", "GET /api/v1/streams/{name}", "GET /api/v1/drills",
		"POST /api/v1/streams/{name}/restart", "POST /api/v1/streams/{name}/handover", "POST /api/v1/drills", "POST /api/v1/config/reload"} {
		i := strings.Index(doc, "\n### "+h+"\n")
		if i < 0 {
			t.Errorf("docs/api.md has no section \"### %s\"", h)
			continue
		}
		if !strings.Contains(doc[i:], "$ curl") {
			t.Errorf("docs/api.md: %s has no example", h)
		}
	}
	for _, s := range []string{"POST /login", "POST /logout", "GET /api/v1/session", "X-CSRF-Token", "Retry-After"} {
		if !strings.Contains(doc, s) {
			t.Errorf("docs/api.md does not mention %s", s)
		}
	}
	for _, code := range []int{400, 401, 403, 404, 405, 409, 413, 415, 429, 503, 504} {
		if !strings.Contains(doc, fmt.Sprintf("| %d |", code)) || !strings.Contains(doc, fmt.Sprintf("HTTP/1.1 %d ", code)) && code != 504 {
			t.Errorf("docs/api.md does not explain or show status %d", code)
		}
	}
}
