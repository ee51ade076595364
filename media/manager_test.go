package media

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"appliance/internal/testutil"
	"appliance/supervisor"
)

// TestWorkerExitReasonReachesEvents: a worker that dies of a Go panic is
// reported with the panic's first line, not only "exit code 2", in the
// supervision events that the API shows.
func TestWorkerExitReasonReachesEvents(t *testing.T) {
	var mu sync.Mutex
	var events []supervisor.Event
	m, err := NewManager(Options{
		Streams:        []StreamSpec{{Name: "cam1", Input: netip.MustParseAddrPort("127.0.0.1:0"), Outputs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}, ClockRate: 90000}},
		Workers:        1,
		HangTimeout:    5 * time.Second,
		ReportInterval: 100 * time.Millisecond,
		Command:        []string{"sh", "-c", `echo "goroutine noise" >&2; echo "panic: runtime error: index out of range [3] with length 3" >&2; exit 2`},
		Stderr:         &strings.Builder{},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sup := supervisor.New(supervisor.Spec{Name: "media", Intensity: 1000, Period: time.Second, Backoff: 10 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler),
		Events: func(e supervisor.Event) { mu.Lock(); events = append(events, e); mu.Unlock() }}, m.Children()...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	var reason string
	testutil.Eventually(t, 10*time.Second, "the worker's exit event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range events {
			if e.Kind == supervisor.EventExit && e.Child == "worker-0" {
				reason = e.Reason
				return true
			}
		}
		return false
	})
	if reason != "exit code 2: panic: runtime error: index out of range [3] with length 3" {
		t.Errorf("exit reason %q; want the exit code and the panic", reason)
	}
}
