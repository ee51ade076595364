package status

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"appliance/internal/testutil"
	"appliance/media"
)

// counting is a Source that counts Report calls and, while gate is open
// (non-nil and not closed), makes each one wait for it.
type counting struct {
	rep   Report
	gate  chan struct{}
	calls atomic.Int64
}

func (c *counting) Report() Report {
	c.calls.Add(1)
	if c.gate != nil {
		<-c.gate
	}
	return c.rep
}

func (c *counting) State() string { return c.rep.Unit.State }

// /healthz answers from State even while building the report is stuck, and
// never asks for the report at all.
func TestHealthzNeverBuildsReport(t *testing.T) {
	src := &counting{rep: sample("running").rep, gate: make(chan struct{})}
	base := serve(t, src)
	t.Cleanup(func() { close(src.gate) }) // runs before the server is shut down

	stuck := make(chan error, 1)
	go func() {
		resp, err := http.Get(base + "/api/v1/status")
		if err == nil {
			resp.Body.Close()
		}
		stuck <- err
	}()
	testutil.Eventually(t, 5*time.Second, "a status request to be building the report", func() bool {
		return src.calls.Load() == 1
	})
	// A timeout, so that a /healthz stuck behind the report fails the test
	// instead of hanging it.
	client := &http.Client{Timeout: 10 * time.Second}
	for range 20 {
		resp, err := client.Get(base + "/healthz")
		if err != nil {
			t.Fatalf("/healthz while the report is stuck: %v", err)
		}
		var body map[string]string
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != 200 || err != nil || body["state"] != "running" {
			t.Fatalf("/healthz: %d %v %v", resp.StatusCode, body, err)
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("Report called %d times; /healthz must not call it", n)
	}
	select {
	case err := <-stuck:
		t.Fatalf("the status request finished (%v) while Report was blocked", err)
	default:
	}
}

// Requests that arrive while a report is being built share it.
func TestConcurrentRequestsShareOneReport(t *testing.T) {
	src := &counting{rep: sample("running").rep, gate: make(chan struct{})}
	s := serveWith(t, src, testOpts)
	// Every request finds the last rendering stale, so only sharing the one
	// in flight can keep the count down.
	var asked atomic.Int64
	start := time.Now()
	s.render.now = func() time.Time {
		return start.Add(time.Duration(asked.Add(1)) * time.Hour)
	}
	base := "http://" + s.Addr().String()

	const clients = 10
	var wg sync.WaitGroup
	codes := make(chan int, clients)
	for range clients {
		wg.Go(func() {
			resp, err := http.Get(base + "/api/v1/status")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	testutil.Eventually(t, 5*time.Second, "every request to ask for the report", func() bool {
		return asked.Load() == clients
	})
	close(src.gate)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("status %d", c)
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("%d concurrent requests made %d reports, want 1", clients, n)
	}
}

// A document is reused until it is reuseFor old, then rebuilt.
func TestDocumentReusedForAWhile(t *testing.T) {
	src := &counting{rep: sample("running").rep}
	s := serveWith(t, src, testOpts)
	var mu sync.Mutex
	now := time.Now()
	s.render.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	base := "http://" + s.Addr().String()

	for _, step := range []struct {
		advance time.Duration
		want    int64
	}{{0, 1}, {0, 1}, {reuseFor - time.Millisecond, 1}, {time.Millisecond, 2}, {reuseFor / 2, 2}, {reuseFor, 3}} {
		advance(step.advance)
		if code, _ := get(t, "GET", base+"/api/v1/status"); code != 200 {
			t.Fatalf("status %d", code)
		}
		if code, _ := get(t, "GET", base+"/api/v1/events"); code != 200 {
			t.Fatalf("events %d", code)
		}
		if n := src.calls.Load(); n != step.want {
			t.Fatalf("after advancing %v: %d reports, want %d", step.advance, n, step.want)
		}
	}
}

// Fifty clients polling as fast as they can cost about one report per
// reuseFor, not one per request. The bound is derived from the measured
// duration, so a slow machine only makes it looser.
func TestPollersCoalesce(t *testing.T) {
	src := &counting{rep: syntheticReport(1000, 2, MaxEvents)}
	base := serve(t, src)
	tr := &http.Transport{MaxIdleConnsPerHost: 100}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	var requests atomic.Int64
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/status", nil)
				resp, err := client.Do(req)
				if err != nil {
					return // the deadline cut it short
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("status %d", resp.StatusCode)
					return
				}
				requests.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	calls, served := src.calls.Load(), requests.Load()
	limit := int64(elapsed/reuseFor) + 2
	t.Logf("%d requests in %v answered from %d reports (bound %d)", served, elapsed.Round(time.Millisecond), calls, limit)
	if calls > limit {
		t.Errorf("%d reports in %v for %d requests; want at most %d (one per %v, plus slack)", calls, elapsed, served, limit, reuseFor)
	}
	if served < 50 {
		t.Errorf("only %d requests answered by 50 clients", served)
	}
}

// fetch GETs url with the given Accept-Encoding, as sent, and returns the
// response and its body as received.
func fetch(t *testing.T, url, acceptEncoding string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Accept-Encoding", acceptEncoding)
	resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("%s: headers %v", url, resp.Header)
	}
	return resp, body
}

// The compact, gzipped and indented documents say the same thing.
func TestEncodings(t *testing.T) {
	base := serve(t, sample("running"))
	_, plain := fetch(t, base+"/api/v1/status", "identity")
	if bytes.Contains(plain, []byte("\n  ")) || !json.Valid(plain) {
		t.Errorf("want compact JSON, got %.80s", plain)
	}
	resp, zipped := fetch(t, base+"/api/v1/status", "br;q=1, gzip;q=0.5")
	if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("Vary") != "Accept-Encoding" {
		t.Errorf("gzip asked for: headers %v", resp.Header)
	}
	zr, err := gzip.NewReader(bytes.NewReader(zipped))
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(unzipped, plain) {
		t.Errorf("gunzipped document differs (%v)", err)
	}
	resp, indented := fetch(t, base+"/api/v1/status?pretty=1", "gzip")
	if resp.Header.Get("Content-Encoding") != "" || !bytes.Contains(indented, []byte("\n  \"unit\": {")) {
		t.Errorf("?pretty=1: %v\n%.80s", resp.Header, indented)
	}
	var a, b bytes.Buffer
	if json.Compact(&a, plain) != nil || json.Compact(&b, indented) != nil || a.String() != b.String() {
		t.Errorf("the indented document says something else than the compact one")
	}
	_, events := fetch(t, base+"/api/v1/events?limit=2", "identity")
	_, prettyEvents := fetch(t, base+"/api/v1/events?limit=2&pretty=1", "identity")
	a.Reset()
	if json.Compact(&a, prettyEvents) != nil || a.String()+"\n" != string(events) || !bytes.Contains(prettyEvents, []byte("\n  ")) {
		t.Errorf("events:\n%s\npretty:\n%s", events, prettyEvents)
	}
}

// A report that cannot be encoded is a 500 that says so, not an empty 200;
// the events, which can be encoded, are still served.
func TestUnencodableReport(t *testing.T) {
	rep := sample("running").rep
	rep.Streams = []media.StreamStatus{{Name: "cam1", BitrateBps: math.NaN()}}
	base := serve(t, &fixed{rep})
	code, body := get(t, "GET", base+"/api/v1/status")
	if msg, _ := body["error"].(string); code != 500 || !strings.Contains(msg, "NaN") || !strings.Contains(msg, "report it") {
		t.Errorf("status: %d %v", code, body)
	}
	if code, body := get(t, "GET", base+"/api/v1/events"); code != 200 || len(body["events"].([]any)) != 3 {
		t.Errorf("events: %d %v", code, body)
	}
}

// TestPollerPacedPerConnection: a client asking back to back on one
// connection gets each rendering once: never two answers with the same
// document, so a greedy poller costs one answer per reuseFor.
func TestPollerPacedPerConnection(t *testing.T) {
	src := &counting{rep: syntheticReport(10, 1, 10)}
	base := serve(t, src)
	client := &http.Client{Transport: &http.Transport{}}
	var prev time.Time
	var gaps []time.Duration
	for i := 0; i < 6; i++ {
		resp, err := client.Get(base + "/api/v1/status")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		now := time.Now()
		if i > 0 {
			gaps = append(gaps, now.Sub(prev))
		}
		prev = now
	}
	// 6 answers on one connection take 5 renderings after the first, each
	// built no sooner than reuseFor after the one before.
	if calls := src.calls.Load(); calls != 6 {
		t.Errorf("%d answers came from %d reports; want one report each", 6, calls)
	}
	t.Logf("gaps between answers on one connection: %v", gaps)
}
