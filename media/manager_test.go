package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
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
		Streams:          []StreamSpec{{Name: "cam1", Input: netip.MustParseAddrPort("127.0.0.1:0"), Outputs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}, ClockRate: 90000}},
		Workers:          1,
		HangTimeout:      5 * time.Second,
		ReportInterval:   100 * time.Millisecond,
		ProgressInterval: 5 * time.Millisecond,
		Command:          []string{"sh", "-c", `echo "goroutine noise" >&2; echo "panic: runtime error: index out of range [3] with length 3" >&2; exit 2`},
		Stderr:           &strings.Builder{},
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

// TestRefusedStreamIsFailed: a stream its worker will not take is shown
// failed, with the worker's reason, and the other streams run.
func TestRefusedStreamIsFailed(t *testing.T) {
	out := newSink(t)
	m, err := NewManager(Options{
		Streams: []StreamSpec{
			{Name: "bad", Input: netip.MustParseAddrPort("127.0.0.1:0"), Outputs: []netip.AddrPort{out.addr}, ClockRate: 0},
			{Name: "good", Input: netip.MustParseAddrPort("127.0.0.1:0"), Outputs: []netip.AddrPort{out.addr}, ClockRate: 90000},
		},
		Workers:          1,
		HangTimeout:      5 * time.Second,
		ReportInterval:   50 * time.Millisecond,
		ProgressInterval: 5 * time.Millisecond,
		Command:          []string{os.Args[0], "-test.run=^$"},
		Env:              []string{benchChildEnv + "=worker"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sup := supervisor.New(supervisor.Spec{Name: "media", Logger: slog.New(slog.DiscardHandler)}, m.Children()...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	testutil.Eventually(t, 10*time.Second, "the refused stream to show failed and the other to run", func() bool {
		st := map[string]StreamStatus{}
		for _, s := range m.Streams() {
			st[s.Name] = s
		}
		return st["bad"].State == "failed" && strings.Contains(st["bad"].Error, "worker-0 refused it: stream bad: clock rate 0") &&
			st["good"].State != "failed" && st["good"].WorkerPID != 0
	})
}

// TestGroupsSpreadOverWorkers: streams are placed by group first, so each
// group's streams are spread over every worker (a paired unit groups by
// preferred unit: a takeover's streams land on every worker), and the
// totals stay even.
func TestGroupsSpreadOverWorkers(t *testing.T) {
	// Alternating, as a pair's config often has them: by count alone,
	// worker 0 would get every other stream, and with them all of group a.
	groups := []string{"a", "b", "a", "b", "a", "b", "a", "b"}
	var specs []StreamSpec
	for i, g := range groups {
		specs = append(specs, StreamSpec{Name: fmt.Sprintf("s%d", i), Group: g, Input: netip.MustParseAddrPort("127.0.0.1:0"),
			Outputs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}, ClockRate: 90000})
	}
	m, err := NewManager(Options{Streams: specs, Workers: 2, HangTimeout: 5 * time.Second, ReportInterval: 100 * time.Millisecond,
		ProgressInterval: 5 * time.Millisecond, Command: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	type place struct {
		worker int
		group  string
	}
	count := map[place]int{}
	for _, s := range m.Streams() {
		count[place{s.Worker, groups[s.Name[1]-'0']}]++
	}
	for _, w := range []int{0, 1} {
		for _, g := range []string{"a", "b"} {
			if n := count[place{w, g}]; n != 2 {
				t.Errorf("worker %d has %d streams of group %s, want 2 (placement: %v)", w, n, g, count)
			}
		}
	}
}

// TestRoleBeforeWorkerStarts: a role change for a stream whose worker has
// not started is kept (the stream starts in it) and says so in a way the
// caller can tell from a refusal.
func TestRoleBeforeWorkerStarts(t *testing.T) {
	m, err := NewManager(Options{Streams: []StreamSpec{{Name: "cam1", Input: netip.MustParseAddrPort("127.0.0.1:0"),
		Outputs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}, ClockRate: 90000, Standby: true}},
		Workers: 1, HangTimeout: 5 * time.Second, ReportInterval: 100 * time.Millisecond, ProgressInterval: 5 * time.Millisecond, Command: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out := m.SetRoles(context.Background(), []RoleChange{{Name: "cam1", Role: RoleForward}})
	if err := out[0].Err; !errors.Is(err, ErrWorkerStarting) || !errors.Is(err, ErrNotCarried) {
		t.Fatalf("role change before the worker starts: %v; want ErrWorkerStarting and ErrNotCarried", err)
	}
	m.mu.Lock()
	standby := m.byName["cam1"].standby.Load()
	m.mu.Unlock()
	if standby {
		t.Error("the role is not kept: the stream would start in standby")
	}
}
