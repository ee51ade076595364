package status

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"appliance/internal/clock"
	"appliance/internal/testutil"
)

// liveServer is pageServer with a hook run before serving, and a stop
// that the test calls itself.
func liveServer(t *testing.T, src Source, opts Options, setup func(*Server)) (s *Server, fake *clock.Fake, base string, stop func() error) {
	t.Helper()
	s, err := Listen("127.0.0.1:0", opts, src, discard())
	if err != nil {
		t.Fatal(err)
	}
	fake = s.page.clk.(*clock.Fake)
	if setup != nil {
		setup(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, fake, "http://" + s.Addr().String(), stop
}

// sseClient reads server-sent events.
type sseClient struct {
	resp *http.Response
	r    *bufio.Reader
}

func openLive(t *testing.T, url string) *sseClient {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s %s", url, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	return &sseClient{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next returns the next event's name and data, skipping comments.
func (c *sseClient) next() (string, string, error) {
	var name, data string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return "", "", err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if name != "" || data != "" {
				return name, data, nil
			}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data += strings.TrimPrefix(line, "data: ")
		}
	}
}

// sections waits for the next sections event, moving the page's clock a
// tick at a time until one comes.
func (c *sseClient) sections(t *testing.T, fake *clock.Fake) map[string]string {
	t.Helper()
	got := make(chan map[string]string, 1)
	errc := make(chan error, 1)
	go func() {
		name, data, err := c.next()
		if err != nil {
			errc <- err
			return
		}
		if name != "sections" {
			errc <- fmt.Errorf("event %q, want sections", name)
			return
		}
		var m map[string]string
		if err := json.Unmarshal([]byte(data), &m); err != nil {
			errc <- fmt.Errorf("event data %q: %v", data, err)
			return
		}
		got <- m
	}()
	deadline := time.After(10 * time.Second)
	for {
		fake.Advance(liveEvery)
		select {
		case m := <-got:
			return m
		case err := <-errc:
			t.Fatal(err)
		case <-deadline:
			t.Fatal("no sections event within 10 s")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func keys(m map[string]string) string {
	var ks []string
	for _, k := range mainSections {
		if _, ok := m[k]; ok {
			ks = append(ks, k)
		}
	}
	return strings.Join(ks, ",")
}

// A live client is sent every section once, then only those whose HTML
// changed: a counter moves without a reload.
func TestLiveSendsWhatChanged(t *testing.T) {
	src := &liveSource{rep: syntheticReport(60, 1, 5)}
	src.rep.Health = nil
	_, fake, base, _ := liveServer(t, src, testOpts, nil)
	c := openLive(t, base+"/live?q=channel-000")

	first := c.sections(t, fake)
	if keys(first) != strings.Join(mainSections, ",") {
		t.Fatalf("first event has %s, want every section", keys(first))
	}
	if !strings.Contains(first["streams"], "66,640,003") || strings.Contains(first["streams"], "channel-0010") {
		t.Error("the streams section is not the filtered view asked for")
	}

	src.edit(func(r *Report) { r.Streams[3].PacketsIn = 77_000_000 })
	second := c.sections(t, fake)
	if !strings.Contains(second["streams"], "77,000,000") {
		t.Errorf("the changed counter is not sent: %s", keys(second))
	}
	for _, static := range []string{"pair", "drills", "events"} {
		if _, ok := second[static]; ok {
			t.Errorf("section %s was sent again though it did not change", static)
		}
	}
}

// A stream's page has live sections of its own.
func TestLiveStreamPage(t *testing.T) {
	src := &liveSource{rep: syntheticReport(3, 1, 5)}
	_, fake, base, _ := liveServer(t, src, testOpts, nil)
	c := openLive(t, base+"/live?stream=channel-0001")
	m := c.sections(t, fake)
	for _, k := range streamSections {
		if _, ok := m[k]; !ok {
			t.Errorf("no %s section", k)
		}
	}
	if !strings.Contains(m["stream"], "66,640,001") {
		t.Error("the stream section is not the stream's")
	}
	src.edit(func(r *Report) { r.Streams = r.Streams[:1] })
	m = c.sections(t, fake)
	if !strings.Contains(m["stream"], "no longer on the unit") {
		t.Errorf("a removed stream: %q", m["stream"])
	}
}

func TestLiveBadRequests(t *testing.T) {
	_, _, base, _ := liveServer(t, &fixed{syntheticReport(3, 1, 3)}, testOpts, nil)
	for _, tt := range []struct {
		method, path string
		code         int
		says         string
	}{
		{"GET", "/live?page=x", 400, "page must be a whole number"},
		{"GET", "/live?stream=Bad%20Name", 400, "not a stream name"},
		{"GET", "/live?stream=", 400, "not a stream name"},
		{"POST", "/live", 405, "read-only"},
	} {
		code, h, body := pageFetch(t, tt.method, base+tt.path)
		if code != tt.code || h.Get("Content-Type") != "application/json" || !strings.Contains(body, tt.says) {
			t.Errorf("%s %s: %d %s", tt.method, tt.path, code, body)
		}
	}
}

// HEAD answers at once: there is no stream to hold open.
func TestLiveHead(t *testing.T) {
	_, _, base, _ := liveServer(t, &fixed{syntheticReport(3, 1, 3)}, testOpts, nil)
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Head(base + "/live")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Errorf("HEAD /live: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// Live clients are bounded (a quarter of the connections): one more is
// told to come back later, and a slot freed is taken again.
func TestLiveClientsBounded(t *testing.T) {
	opts := Options{MaxConnections: 8, IdleTimeout: 10 * time.Second}
	s, _, base, _ := liveServer(t, &fixed{syntheticReport(3, 1, 3)}, opts, nil)
	a := openLive(t, base+"/live")
	openLive(t, base+"/live")
	code, h, body := pageFetch(t, "GET", base+"/live")
	if code != 503 || h.Get("Retry-After") == "" || !strings.Contains(body, "too many live pages are open (2)") {
		t.Fatalf("a third live client: %d %q %s", code, h.Get("Retry-After"), body)
	}
	a.resp.Body.Close()
	testutil.Eventually(t, 5*time.Second, "the closed client's slot", func() bool {
		s.page.mu.Lock()
		defer s.page.mu.Unlock()
		return s.page.subs == 1
	})
	openLive(t, base+"/live")
}

// The server's read and write timeouts, which bound every other request,
// do not end a live stream: it outlives them several times over.
func TestLiveOutlivesServerTimeouts(t *testing.T) {
	const short = 150 * time.Millisecond
	src := &liveSource{rep: syntheticReport(3, 1, 3)}
	_, fake, base, _ := liveServer(t, src, testOpts, func(s *Server) {
		s.srv.ReadTimeout, s.srv.WriteTimeout = short, short
	})
	c := openLive(t, base+"/live")
	until := time.Now().Add(4 * short)
	for n := 0; time.Now().Before(until) || n < 3; n++ {
		src.edit(func(r *Report) { r.Streams[0].PacketsIn++ })
		c.sections(t, fake)
	}
}

// A live stream ends after its longest life with a word to reconnect.
func TestLiveMaxAge(t *testing.T) {
	_, _, base, _ := liveServer(t, &fixed{syntheticReport(3, 1, 3)}, testOpts, func(s *Server) {
		s.page.maxAge = 50 * time.Millisecond
	})
	c := openLive(t, base+"/live")
	name, _, err := c.next()
	if err != nil || name != "bye" {
		t.Fatalf("event %q, %v; want bye", name, err)
	}
	if _, _, err := c.next(); err != io.EOF {
		t.Errorf("after bye: %v, want the end of the stream", err)
	}
}

// A client that stops reading is cut off once a write has waited for the
// write timeout, and its slot is freed.
func TestLiveSlowClientCutOff(t *testing.T) {
	src := &liveSource{rep: syntheticReport(1000, 2, 50)}
	small := func(opt int) func(fd uintptr) {
		return func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, 4096) }
	}
	s, fake, base, _ := liveServer(t, src, testOpts, func(s *Server) {
		s.page.wait = 50 * time.Millisecond
		// Accepted connections inherit the listener's small send buffer,
		// so a few events fill it.
		rc, err := s.ln.Listener.(*net.TCPListener).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		_ = rc.Control(small(syscall.SO_SNDBUF))
	})
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error { return c.Control(small(syscall.SO_RCVBUF)) }}
	conn, err := d.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /live HTTP/1.1\r\nHost: unit\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the live client to be counted", func() bool {
		s.page.mu.Lock()
		defer s.page.mu.Unlock()
		return s.page.subs == 1
	})
	n := uint64(0)
	testutil.Eventually(t, 5*time.Second, "the client that does not read to be cut off", func() bool {
		for range 20 {
			n++
			src.edit(func(r *Report) {
				for i := range r.Streams {
					r.Streams[i].PacketsIn += n
				}
			})
			fake.Advance(liveEvery)
		}
		s.page.mu.Lock()
		defer s.page.mu.Unlock()
		return s.page.subs == 0
	})
}

// Stopping the server ends live streams at once: shutdown does not wait
// for them.
func TestLiveEndsAtShutdown(t *testing.T) {
	_, _, base, stop := liveServer(t, &fixed{syntheticReport(3, 1, 3)}, testOpts, nil)
	c := openLive(t, base+"/live")
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("shutdown took %v with a live client", d)
	}
	if _, _, err := c.next(); err == nil {
		t.Error("the live stream goes on after shutdown")
	}
}

// panicky is a source whose report panics.
type panicky struct {
	fixed
	calls atomic.Int64
}

func (p *panicky) Report() Report {
	p.calls.Add(1)
	panic("report broke")
}

// A report that panics costs the page a sample, not the unit: the
// sampling goes on and the API still answers.
func TestSamplerOutlivesAPanickingReport(t *testing.T) {
	src := &panicky{}
	src.rep.Unit.State = "running"
	_, fake, base, _ := liveServer(t, src, testOpts, nil)
	testutil.Eventually(t, 5*time.Second, "the sampler to try twice", func() bool {
		fake.Advance(liveEvery)
		return src.calls.Load() >= 2
	})
	if code, _ := get(t, "GET", base+"/healthz"); code != 200 {
		t.Errorf("/healthz after panicking reports: %d", code)
	}
}
