package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"appliance/internal/clock"
	"appliance/internal/testutil"
)

func shell(script string) func() (*exec.Cmd, error) {
	return func() (*exec.Cmd, error) { return exec.Command("/bin/sh", "-c", script), nil }
}

func TestProcessExitReasons(t *testing.T) {
	tests := []struct {
		script string
		want   string // "" for a clean exit
	}{
		{"exit 0", ""},
		{"exit 3", "exit code 3"},
		{"kill -KILL $$", "killed by signal KILL"},
		{"kill -SEGV $$", "killed by signal SEGV"},
	}
	for _, tt := range tests {
		t.Run(tt.script, func(t *testing.T) {
			p := &Process{Name: "p", Command: shell(tt.script), Logger: quiet()}
			err := p.Serve(context.Background())
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want a clean exit", err)
				}
				return
			}
			var ee *ExitError
			if !errors.As(err, &ee) || ee.Reason != tt.want {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
	p := &Process{Name: "p", Command: func() (*exec.Cmd, error) { return exec.Command("/nonexistent/binary"), nil }, Logger: quiet()}
	if err := p.Serve(context.Background()); err == nil || !strings.Contains(err.Error(), "cannot start") {
		t.Errorf("missing binary: %v", err)
	}
}

// A process that stops beating is killed when HangTimeout has passed on the
// clock, and not before.
func TestProcessHang(t *testing.T) {
	clk, pr, done := serveSleeper(t, 3*time.Second)
	alive := func() bool { return unix.Kill(pr.PID, 0) == nil }
	advance := tickSteps(t, clk)

	advance(2 * time.Second) // within the start grace: no beat needed yet
	pr.Beat()
	advance(875 * time.Millisecond) // within HangTimeout of the beat
	select {
	case err := <-done:
		t.Fatalf("killed early: %v", err)
	default:
	}
	if !alive() {
		t.Fatal("process died early")
	}
	advance(250 * time.Millisecond) // 1.125 s without a beat
	select {
	case err := <-done:
		var ee *ExitError
		if !errors.As(err, &ee) || !ee.Hung || !strings.HasPrefix(ee.Reason, "hung: no heartbeat for 1") {
			t.Fatalf("got %v, want a hang", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("hung process not killed")
	}
	if alive() {
		t.Error("hung process still alive")
	}
}

// serveSleeper serves a process that sleeps and beats only when the test
// says, with a 1 s hang timeout on a fake clock, and returns once its hang
// check waits on the clock.
func serveSleeper(t *testing.T, grace time.Duration) (*clock.Fake, *Proc, <-chan error) {
	t.Helper()
	clk := clock.NewFake(epoch)
	attached := make(chan *Proc, 1)
	p := &Process{
		Name: "p", Command: shell("exec sleep 60"), Clock: clk, Logger: quiet(),
		HangTimeout: time.Second, StartGrace: grace,
		Attach: func(ctx context.Context, pr *Proc) error {
			attached <- pr
			<-ctx.Done()
			return nil
		},
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(context.Background()) }()
	pr := <-attached
	if err := clk.WaitPending(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	return clk, pr, done
}

// tickSteps returns a function that moves the clock in hang-check ticks
// (HangTimeout/8 of a 1 s timeout), letting the check take each one.
func tickSteps(t *testing.T, clk *clock.Fake) func(time.Duration) {
	return func(d time.Duration) {
		t.Helper()
		for ; d > 0; d -= 125 * time.Millisecond {
			clk.Advance(125 * time.Millisecond)
			testutil.Eventually(t, 5*time.Second, "the hang check to take its tick", func() bool { return clk.Unread() == 0 })
		}
	}
}

// A parent that was stopped (the whole unit, SIGSTOP, or a starved
// process) does not blame its child for the silence: the child's beats
// wait unread meanwhile. The child gets a full timeout from the resume,
// and a child that stays silent is still found.
func TestProcessHangNotBlamedForOwnStall(t *testing.T) {
	clk, pr, done := serveSleeper(t, time.Second)
	advance := tickSteps(t, clk)
	pr.Beat()
	advance(500 * time.Millisecond)
	pr.Beat()
	// Stopped for 3 s: one late tick, no beat read.
	clk.Advance(3 * time.Second)
	testutil.Eventually(t, 5*time.Second, "the late hang check", func() bool { return clk.Unread() == 0 })
	advance(500 * time.Millisecond) // the queued beats are not read yet
	select {
	case err := <-done:
		t.Fatalf("killed for its parent's stall: %v", err)
	default:
	}
	pr.Beat()
	advance(500 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("killed after beating: %v", err)
	default:
	}
	// Now silent for real: found one timeout after its last beat.
	advance(375 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("killed early: %v", err)
	default:
	}
	advance(250 * time.Millisecond)
	select {
	case err := <-done:
		var ee *ExitError
		if !errors.As(err, &ee) || !ee.Hung {
			t.Fatalf("got %v, want a hang", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a child silent after the resume was not killed")
	}
}

// A wall-clock step in either direction, during the start grace, between
// beats or during a real hang, neither kills a process that beats nor hides
// one that stops: silence is measured on the monotonic clock.
func TestProcessHangIgnoresWallSteps(t *testing.T) {
	for _, step := range []time.Duration{time.Hour, -time.Hour} {
		t.Run(fmt.Sprintf("step %+v", step), func(t *testing.T) {
			clk := clock.NewFake(epoch)
			attached := make(chan *Proc, 1)
			beats := make(chan chan struct{})
			p := &Process{
				Name: "p", Command: shell("exec sleep 60"), Clock: clk, Logger: quiet(),
				HangTimeout: time.Second, StartGrace: time.Second,
				// Beats on the test's schedule, as a worker's reports arrive.
				Attach: func(ctx context.Context, pr *Proc) error {
					attached <- pr
					for {
						select {
						case <-ctx.Done():
							return nil
						case done := <-beats:
							pr.Beat()
							close(done)
						}
					}
				},
			}
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan struct{}) // closed once Serve returned err
			var err error
			go func() { err = p.Serve(ctx); close(served) }()
			t.Cleanup(func() { cancel(); <-served })
			pr := <-attached
			if err := clk.WaitPending(ctx, 1); err != nil {
				t.Fatal(err)
			}
			beat := func() {
				b := make(chan struct{})
				beats <- b
				<-b
			}
			// advance moves the clock in hang-check ticks (HangTimeout/8),
			// letting the process take each one.
			advance := func(d time.Duration) {
				t.Helper()
				for ; d > 0; d -= 125 * time.Millisecond {
					clk.Advance(125 * time.Millisecond)
					testutil.Eventually(t, 5*time.Second, "the hang check to take its tick", func() bool { return clk.Unread() == 0 })
					select {
					case <-served:
						t.Fatalf("healthy process killed at %v of monotonic time after a wall step of %v: %v", clk.Mono()-clock.FakeMonoStart, step, err)
					default:
					}
				}
			}

			clk.StepWall(step) // before the first beat, within the start grace
			advance(750 * time.Millisecond)
			for i := range 16 { // beats every 250ms, for 4s
				beat()
				if i == 8 {
					clk.StepWall(step)
				}
				advance(250 * time.Millisecond)
			}
			if unix.Kill(pr.PID, 0) != nil {
				t.Fatal("process died while it was beating")
			}

			// A real hang after a step is still found, on time.
			beat()
			clk.StepWall(step)
			advance(875 * time.Millisecond)
			clk.Advance(125 * time.Millisecond)
			select {
			case <-served:
				var ee *ExitError
				if !errors.As(err, &ee) || !ee.Hung || ee.Reason != "hung: no heartbeat for 1s" {
					t.Fatalf("got %v, want a hang found one HangTimeout after the last beat", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("hang not found one HangTimeout after the last beat, past a wall step of %v", step)
			}
		})
	}
}

// Why a process exited, as its Attach saw it, follows the exit reason, even
// when Attach learns it only after the process has gone.
func TestProcessExitNote(t *testing.T) {
	const note = "worker: stream cam1: input fd 5 is not open"
	tests := []struct {
		name, script string
		after        bool   // set the note after the process exited
		note         string // "" for none
		want         string // "" for a clean exit
	}{
		{"exit code", "exit 1", false, note, "exit code 1: " + note},
		{"set on the way out", "exit 1", true, note, "exit code 1: " + note},
		{"signal", "kill -SEGV $$", true, "panic: runtime error\ngoroutine 1 [running]:", "killed by signal SEGV: panic: runtime error goroutine 1 [running]:"},
		{"no note", "exit 2", false, "", "exit code 2"},
		{"clean exit ignores it", "exit 0", true, note, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Process{Name: "p", Command: shell(tt.script), Logger: quiet(),
				Attach: func(ctx context.Context, pr *Proc) error {
					if tt.note != "" && !tt.after {
						pr.SetExitNote(tt.note)
					}
					<-ctx.Done()
					if tt.note != "" && tt.after {
						pr.SetExitNote(tt.note)
					}
					return nil
				}}
			err := p.Serve(context.Background())
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want a clean exit", err)
				}
				return
			}
			var ee *ExitError
			if !errors.As(err, &ee) || ee.Reason != tt.want {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
			if tt.note != "" && ee.Note != cleanNote(tt.note) {
				t.Errorf("Note %q, want %q", ee.Note, cleanNote(tt.note))
			}
		})
	}
}

// The note reaches the supervisor's exit event and the node's last exit.
func TestExitNoteInEventsAndSnapshot(t *testing.T) {
	const want = "exit code 1: worker: stream cam1: input fd 5 is not open"
	p := &Process{Name: "w", Command: shell("exit 1"), Logger: quiet(),
		Attach: func(ctx context.Context, pr *Proc) error {
			<-ctx.Done()
			pr.SetExitNote("worker: stream cam1: input fd 5 is not open")
			return nil
		}}
	events := make(chan Event, 100)
	sup := New(Spec{Name: "s", Logger: quiet(), Events: func(e Event) { events <- e }},
		Child{Name: "w", Service: p, Restart: Temporary})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	for {
		select {
		case e := <-events:
			if e.Kind != EventExit {
				continue
			}
			if e.Reason != want {
				t.Errorf("exit event reason %q, want %q", e.Reason, want)
			}
			if got := sup.Snapshot().Children[0].LastExit; got != want {
				t.Errorf("last_exit %q, want %q", got, want)
			}
			return
		case <-time.After(5 * time.Second):
			t.Fatal("no exit event")
		}
	}
}

func TestCleanNote(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 200) // 400 bytes
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"  first line\nsecond\r\n\tthird  ", "first line second third"},
		{"bell\a and escape\x1b[31m", "bell and escape [31m"},
		{"bad \xff byte", "bad \uFFFD byte"},
		{long, strings.Repeat("é", 148) + "…"},
		{strings.Repeat("a", MaxExitNote), strings.Repeat("a", MaxExitNote)},
	}
	for _, tt := range tests {
		got := cleanNote(tt.in)
		if got != tt.want {
			t.Errorf("cleanNote(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if len(got) > MaxExitNote || !utf8.ValidString(got) || strings.ContainsAny(got, "\r\n") {
			t.Errorf("cleanNote(%q) = %q: longer than %d bytes, not UTF-8, or more than a line", tt.in, got, MaxExitNote)
		}
	}
}

// An Attach that fails (say, a protocol error) kills the process.
func TestProcessAttachError(t *testing.T) {
	p := &Process{Name: "p", Command: shell("exec sleep 60"), Logger: quiet(),
		Attach: func(ctx context.Context, pr *Proc) error { return errors.New("garbled report") }}
	err := p.Serve(context.Background())
	if err == nil || err.Error() != "killed: garbled report" {
		t.Fatalf("got %v", err)
	}
}

// Stopping sends SIGTERM to the whole group; a process that ignores it is
// killed with its children after the shutdown timeout.
func TestProcessStopKillsGroup(t *testing.T) {
	for _, tt := range []struct {
		name, script string
		kind         string
	}{
		{"obeys", "sleep 60 & wait", "stop"},
		{"ignores", "trap '' TERM; sleep 60 & while :; do wait; done", "stop_timeout"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := &Process{Name: "p", Command: shell(tt.script), Logger: quiet()}
			events := make(chan Event, 100)
			sup := New(Spec{Name: "s", Logger: quiet(), Events: func(e Event) { events <- e }},
				Child{Name: "p", Service: p, Shutdown: 300 * time.Millisecond})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- sup.Serve(ctx) }()
			var pgid int
			testutil.Eventually(t, 5*time.Second, "the process to start", func() bool { pgid = p.PID(); return pgid != 0 })
			// Wait for the shell's child to exist in the group.
			testutil.Eventually(t, 5*time.Second, "the group to hold two processes", func() bool { return liveInGroup(pgid) >= 2 })
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			var last Event
			for len(events) > 0 {
				last = <-events
			}
			if last.Kind != tt.kind {
				t.Errorf("last event %s (%s), want %s", last.Kind, last.Reason, tt.kind)
			}
			if n := liveInGroup(pgid); n != 0 {
				t.Errorf("%d processes of the group still alive after the stop", n)
			}
		})
	}
}

// A process killed from outside is restarted by its supervisor with a new PID,
// and the events name both PIDs.
func TestProcessRestartAfterKill(t *testing.T) {
	p := &Process{Name: "p", Command: shell("exec sleep 60"), Logger: quiet()}
	events := make(chan Event, 100)
	sup := New(Spec{Name: "s", Logger: quiet(), Events: func(e Event) { events <- e }},
		Child{Name: "p", Service: p, Shutdown: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sup.Serve(ctx)
	next := func() Event {
		select {
		case e := <-events:
			return e
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
			return Event{}
		}
	}
	start := next()
	if start.Kind != EventStart || start.PID == 0 {
		t.Fatalf("first event %+v", start)
	}
	if err := unix.Kill(start.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exit, restart, again := next(), next(), next()
	if exit.Kind != EventExit || exit.PID != start.PID || exit.Reason != "killed by signal KILL" {
		t.Errorf("exit event %+v", exit)
	}
	if restart.Kind != EventRestart {
		t.Errorf("restart event %+v", restart)
	}
	if again.Kind != EventStart || again.PID == 0 || again.PID == start.PID {
		t.Errorf("second start %+v", again)
	}
	if n := sup.Snapshot().Children[0]; n.Kind != "process" || n.PID != again.PID || n.Restarts != 1 {
		t.Errorf("node %+v", n)
	}
}

// liveInGroup counts the processes of a process group that are not zombies
// (a killed grandchild may wait a while for init to reap it).
func liveInGroup(pgid int) int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	n := 0
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			n++
		}
	}
	return n
}
