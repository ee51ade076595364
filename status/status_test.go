package status

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"appliance/media"
	"appliance/supervisor"
)

type fixed struct{ rep Report }

func (f *fixed) Report() Report { return f.rep }
func (f *fixed) State() string  { return f.rep.Unit.State }

var testOpts = Options{MaxConnections: 64, IdleTimeout: 10 * time.Second}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func serve(t *testing.T, src Source) string {
	t.Helper()
	return "http://" + serveWith(t, src, testOpts).Addr().String()
}

// serveWith serves src until the test ends.
func serveWith(t *testing.T, src Source, opts Options) *Server {
	t.Helper()
	s, err := Listen("127.0.0.1:0", opts, src, discard())
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
	})
	return s
}

func get(t *testing.T, method, url string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: content type %q", method, url, ct)
	}
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp.StatusCode, body
}

func sample(state string) *fixed {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &fixed{Report{
		Unit:       Unit{Name: "unit-a", Version: "test", UptimeS: 12.5, Started: now, State: state},
		Streams:    []media.StreamStatus{{Name: "cam1", State: "running", WorkerPID: 42, Restarts: 1}},
		Supervisor: supervisor.Node{Name: "root", Kind: "supervisor", State: "running", Children: []supervisor.Node{{Name: "media", State: "running"}}},
		Events: SupervisorEvents([]supervisor.Event{
			{Time: now, Supervisor: "root/media", Child: "worker-0", Kind: "restart"},
			{Time: now, Supervisor: "root/media", Child: "worker-0", Kind: "exit", Reason: "killed by signal KILL", PID: 41},
			{Time: now, Supervisor: "root/media", Child: "worker-0", Kind: "start", PID: 41},
		}),
	}}
}

// The field names are a contract: this test spells out the ones the issue
// and operators' scripts rely on.
func TestStatusContract(t *testing.T) {
	base := serve(t, sample("running"))
	code, body := get(t, "GET", base+"/api/v1/status")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	unit := body["unit"].(map[string]any)
	for _, k := range []string{"name", "version", "uptime_s", "state"} {
		if _, ok := unit[k]; !ok {
			t.Errorf("unit lacks %q", k)
		}
	}
	stream := body["streams"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "state", "worker_pid", "packets_in", "packets_out", "bytes_in", "bitrate_bps",
		"lost", "duplicates", "reordered", "jitter_ms", "cc_errors", "malformed", "restarts"} {
		if _, ok := stream[k]; !ok {
			t.Errorf("stream lacks %q", k)
		}
	}
	sup := body["supervisor"].(map[string]any)
	for _, k := range []string{"name", "state", "restarts", "children"} {
		if _, ok := sup[k]; !ok {
			t.Errorf("supervisor lacks %q", k)
		}
	}
	for _, k := range []string{"hardware", "health", "watchdog"} {
		if _, ok := body[k]; !ok {
			t.Errorf("status lacks %q", k)
		}
	}
	wd := body["watchdog"].(map[string]any)
	for _, k := range []string{"device", "armed", "timeout_s", "last_feed", "last_reset_reason", "boot_count", "systemd"} {
		if _, ok := wd[k]; !ok {
			t.Errorf("watchdog lacks %q", k)
		}
	}
	hwm := body["hardware"].(map[string]any)
	for _, k := range []string{"temperatures", "power_supplies", "links"} {
		if _, ok := hwm[k]; !ok {
			t.Errorf("hardware lacks %q", k)
		}
	}
	ev := body["events"].([]any)
	if len(ev) != 3 || ev[1].(map[string]any)["reason"] != "killed by signal KILL" {
		t.Errorf("events %v", ev)
	}
}

func TestHealthz(t *testing.T) {
	for _, tt := range []struct {
		state string
		code  int
	}{{"running", 200}, {"failed", 503}} {
		base := serve(t, sample(tt.state))
		code, body := get(t, "GET", base+"/healthz")
		if code != tt.code || body["state"] != tt.state {
			t.Errorf("state %s: %d %v, want %d", tt.state, code, body, tt.code)
		}
	}
}

func TestEventsLimit(t *testing.T) {
	base := serve(t, sample("running"))
	code, body := get(t, "GET", base+"/api/v1/events?limit=2")
	if code != 200 || len(body["events"].([]any)) != 2 {
		t.Errorf("limit=2: %d %v", code, body)
	}
	code, body = get(t, "GET", base+"/api/v1/events?limit=200")
	if code != 200 || len(body["events"].([]any)) != 3 {
		t.Errorf("limit=200: %d %v", code, body)
	}
	for _, bad := range []string{"0", "-1", "x", "1e3", "201"} {
		code, body := get(t, "GET", base+"/api/v1/events?limit="+bad)
		if code != 400 || !strings.Contains(body["error"].(string), "limit") {
			t.Errorf("limit=%s: %d %v", bad, code, body)
		}
	}
	code, body = get(t, "GET", base+"/api/v1/events?limit=500")
	if want := "limit 500 is above the cap of 200; ask for 200 or fewer"; code != 400 || body["error"] != want {
		t.Errorf("limit=500: %d %v, want 400 %q", code, body, want)
	}
}

// Bad requests get a JSON error that says what to do, never a crash.
func TestBadRequests(t *testing.T) {
	base := serve(t, sample("running"))
	for _, tt := range []struct {
		method, path string
		code         int
	}{
		{"POST", "/api/v1/status", 405},
		{"DELETE", "/healthz", 405},
		{"PUT", "/api/v1/events", 405},
		{"GET", "/api/v2/status", 404},
		{"GET", "/../../etc/passwd", 404},
	} {
		code, body := get(t, tt.method, base+tt.path)
		if code != tt.code || body["error"] == "" {
			t.Errorf("%s %s: %d %v, want %d with an error", tt.method, tt.path, code, body, tt.code)
		}
	}
}

func TestListenBusy(t *testing.T) {
	s, err := Listen("127.0.0.1:0", testOpts, sample("running"), discard())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Listen(s.Addr().String(), testOpts, sample("running"), discard())
	if err == nil || !strings.Contains(err.Error(), "status.listen") {
		t.Fatalf("second listen: %v, want an error naming status.listen", err)
	}
}
