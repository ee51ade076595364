package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"appliance/internal/clock"
	"appliance/internal/testutil"
)

// The tests drive a supervisor with a fake clock and scripted children, and
// assert the exact sequence of events each rule produces.

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// script is a child whose runs the test controls.
type script struct {
	runs       chan *run
	ignoreStop bool // keep running after the context ends, until exit or kill
	killed     chan struct{}
}

type run struct {
	ctx  context.Context
	exit chan error
}

func newScript() *script {
	return &script{runs: make(chan *run, 16), killed: make(chan struct{}, 16)}
}

func (s *script) Serve(ctx context.Context) error {
	r := &run{ctx: ctx, exit: make(chan error, 1)}
	s.runs <- r
	if s.ignoreStop {
		return <-r.exit
	}
	select {
	case err := <-r.exit:
		return err
	case <-ctx.Done():
		return nil
	}
}

// next returns the script's next run.
func (s *script) next(t *testing.T) *run {
	t.Helper()
	select {
	case r := <-s.runs:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("child did not start")
		return nil
	}
}

// killable is a script that a supervisor can kill.
type killable struct{ *script }

func (k killable) Kill() {
	k.killed <- struct{}{}
	select {
	case r := <-k.runs:
		r.exit <- errors.New("killed")
	default:
	}
}

// rig is one supervisor under test with its fake clock and event stream.
type rig struct {
	t      *testing.T
	clk    *clock.Fake
	sup    *Supervisor
	events chan Event
	cancel context.CancelFunc
	done   chan error
	ended  bool
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newRig(t *testing.T, spec Spec, children ...Child) *rig {
	t.Helper()
	r := &rig{t: t, clk: clock.NewFake(epoch), events: make(chan Event, 1000), done: make(chan error, 1)}
	spec.Clock, spec.Logger = r.clk, quiet()
	if spec.Name == "" {
		spec.Name = "sup"
	}
	spec.Events = func(e Event) { r.events <- e }
	r.sup = New(spec, children...)
	return r
}

func (r *rig) serve() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.sup.Serve(ctx) }()
	r.t.Cleanup(func() {
		cancel()
		if !r.ended {
			select {
			case <-r.done:
			case <-time.After(5 * time.Second):
			}
		}
	})
}

// expect asserts the next events, each written "kind child".
func (r *rig) expect(want ...string) []Event {
	r.t.Helper()
	var got []Event
	for _, w := range want {
		select {
		case e := <-r.events:
			got = append(got, e)
			if s := e.Kind + " " + e.Child; s != w {
				r.t.Fatalf("event %d: got %q (%s), want %q", len(got), s, e.Reason, w)
			}
		case <-time.After(5 * time.Second):
			r.t.Fatalf("event %d: nothing, want %q", len(got)+1, w)
		}
	}
	return got
}

// quietNow asserts that no event is waiting.
func (r *rig) quietNow() {
	r.t.Helper()
	select {
	case e := <-r.events:
		r.t.Fatalf("unexpected event %s %s (%s)", e.Kind, e.Child, e.Reason)
	default:
	}
}

func (r *rig) wait() error {
	r.t.Helper()
	select {
	case err := <-r.done:
		r.ended = true
		return err
	case <-time.After(5 * time.Second):
		r.t.Fatal("Serve did not return")
		return nil
	}
}

func children(names ...string) ([]Child, map[string]*script) {
	var cs []Child
	scripts := map[string]*script{}
	for _, n := range names {
		s := newScript()
		scripts[n] = s
		cs = append(cs, Child{Name: n, Service: s, Shutdown: time.Second})
	}
	return cs, scripts
}

var errCrash = errors.New("crash")

func TestStartInOrderStopInReverse(t *testing.T) {
	// Each child notes the end of its context before it returns: so the
	// notes are in the order the supervisor stopped them, one at a time,
	// never all at once with the supervisor's own context.
	ended := make(chan string, 3)
	var cs []Child
	for _, n := range []string{"a", "b", "c"} {
		cs = append(cs, Child{Name: n, Shutdown: time.Second, Service: ServiceFunc(func(ctx context.Context) error {
			<-ctx.Done()
			ended <- n
			return nil
		})})
	}
	r := newRig(t, Spec{}, cs...)
	r.serve()
	r.expect("start a", "start b", "start c")
	r.cancel()
	r.expect("stop c", "stop b", "stop a")
	if err := r.wait(); err != nil {
		t.Fatalf("Serve after cancel: %v, want nil", err)
	}
	if got := []string{<-ended, <-ended, <-ended}; fmt.Sprint(got) != "[c b a]" {
		t.Errorf("children stopped in order %v, want [c b a]", got)
	}
}

func TestStrategies(t *testing.T) {
	tests := []struct {
		strategy Strategy
		after    []string // events after "exit b"
		restart  []string // children that get a new run
	}{
		{OneForOne, []string{"restart b", "start b"}, []string{"b"}},
		{OneForAll, []string{"stop c", "stop a", "restart a", "restart b", "restart c", "start a", "start b", "start c"}, []string{"a", "b", "c"}},
		{RestForOne, []string{"stop c", "restart b", "restart c", "start b", "start c"}, []string{"b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.strategy.String(), func(t *testing.T) {
			cs, sc := children("a", "b", "c")
			r := newRig(t, Spec{Strategy: tt.strategy}, cs...)
			r.serve()
			r.expect("start a", "start b", "start c")
			first := map[string]*run{}
			for _, n := range []string{"a", "b", "c"} {
				first[n] = sc[n].next(t)
			}
			first["b"].exit <- errCrash
			r.expect(append([]string{"exit b"}, tt.after...)...)
			restarted := map[string]bool{}
			for _, n := range tt.restart {
				restarted[n] = true
				sc[n].next(t)
			}
			for n, run := range first {
				if stopped := run.ctx.Err() != nil; stopped != restarted[n] {
					t.Errorf("child %s: context ended = %v, want %v", n, stopped, restarted[n])
				}
			}
			r.quietNow()
		})
	}
}

func TestRestartTypes(t *testing.T) {
	tests := []struct {
		restart RestartType
		err     error
		want    bool
	}{
		{Permanent, nil, true},
		{Permanent, errCrash, true},
		{Transient, nil, false},
		{Transient, errCrash, true},
		{Temporary, nil, false},
		{Temporary, errCrash, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%v", tt.restart, tt.err), func(t *testing.T) {
			s := newScript()
			r := newRig(t, Spec{}, Child{Name: "x", Service: s, Restart: tt.restart})
			r.serve()
			r.expect("start x")
			s.next(t).exit <- tt.err
			ev := r.expect("exit x")
			wantReason := "normal"
			if tt.err != nil {
				wantReason = tt.err.Error()
			}
			if ev[0].Reason != wantReason {
				t.Errorf("exit reason %q, want %q", ev[0].Reason, wantReason)
			}
			if tt.want {
				r.expect("restart x", "start x")
				s.next(t)
			} else {
				r.quietNow()
				if st := r.sup.Snapshot().Children[0].State; st != "stopped" {
					t.Errorf("state %q, want stopped", st)
				}
			}
		})
	}
}

// Temporary children are not brought back by a sibling's group restart.
func TestTemporaryNotRestartedWithGroup(t *testing.T) {
	a, tmp := newScript(), newScript()
	r := newRig(t, Spec{Strategy: OneForAll},
		Child{Name: "a", Service: a}, Child{Name: "tmp", Service: tmp, Restart: Temporary})
	r.serve()
	r.expect("start a", "start tmp")
	a.next(t).exit <- errCrash
	tmp.next(t)
	r.expect("exit a", "stop tmp", "restart a", "start a")
	r.quietNow()
}

func TestIntensity(t *testing.T) {
	cs, sc := children("a", "b")
	r := newRig(t, Spec{Intensity: 3, Period: 5 * time.Second}, cs...)
	r.serve()
	r.expect("start a", "start b")
	sc["a"].next(t)
	// Three restarts within the period are allowed, even a second apart...
	for i := 0; i < 3; i++ {
		sc["b"].next(t).exit <- errCrash
		r.expect("exit b", "restart b", "start b")
		r.clk.Advance(time.Second)
	}
	// ...the fourth within 5 s is one too many: stop everything, give up.
	sc["b"].next(t).exit <- errCrash
	ev := r.expect("exit b", "stop a", "give_up b")
	if !strings.Contains(ev[2].Reason, "more than 3 restarts within 5s") {
		t.Errorf("give_up reason %q", ev[2].Reason)
	}
	err := r.wait()
	if !errors.Is(err, ErrGaveUp) {
		t.Fatalf("Serve returned %v, want ErrGaveUp", err)
	}
	if st := r.sup.Snapshot().State; st != "failed" {
		t.Errorf("supervisor state %q, want failed", st)
	}
}

// Restarts that fall out of the period no longer count.
func TestIntensityWindowSlides(t *testing.T) {
	s := newScript()
	r := newRig(t, Spec{Intensity: 2, Period: 5 * time.Second}, Child{Name: "x", Service: s})
	r.serve()
	r.expect("start x")
	for i := 0; i < 10; i++ {
		s.next(t).exit <- errCrash
		r.expect("exit x", "restart x", "start x")
		r.clk.Advance(2500 * time.Millisecond) // 2 restarts within any 5 s, never 3
	}
}

func TestBackoff(t *testing.T) {
	s := newScript()
	r := newRig(t, Spec{Intensity: 100, Period: 10 * time.Second, Backoff: 100 * time.Millisecond, BackoffMax: 400 * time.Millisecond},
		Child{Name: "x", Service: s})
	r.serve()
	r.expect("start x")
	// The first restart is immediate; then 100, 200, 400, 400 ms.
	for _, delay := range []time.Duration{0, 100, 200, 400, 400} {
		delay *= time.Millisecond
		s.next(t).exit <- errCrash
		r.expect("exit x", "restart x")
		if delay > 0 {
			if err := r.clk.WaitPending(context.Background(), 1); err != nil {
				t.Fatal(err)
			}
			if d := r.clk.Deadlines(); len(d) != 1 || d[0].Sub(r.clk.Now()) != delay {
				t.Fatalf("restart timer %v from now, want %v", d, delay)
			}
			r.clk.Advance(delay - time.Millisecond)
			r.quietNow()
			r.clk.Advance(time.Millisecond)
		}
		r.expect("start x")
	}
	// A run as long as the period is healthy: the next restart is immediate again.
	run := s.next(t)
	r.clk.Advance(10 * time.Second)
	run.exit <- errCrash
	r.expect("exit x", "restart x", "start x")
}

func TestEscalation(t *testing.T) {
	w := newScript()
	clk := clock.NewFake(epoch)
	events := make(chan Event, 100)
	spec := func(name string) Spec {
		return Spec{Name: name, Intensity: 1, Period: time.Minute, Clock: clk, Logger: quiet(),
			Events: func(e Event) { events <- e }}
	}
	media := New(spec("media"), Child{Name: "w", Service: w})
	root := New(spec("root"), Child{Name: "media", Service: media, Shutdown: time.Second})
	r := &rig{t: t, clk: clk, sup: root, events: events, done: make(chan error, 1)}
	r.serve()
	r.expect("start media", "start w")
	w.next(t).exit <- errCrash
	r.expect("exit w", "restart w", "start w")
	w.next(t).exit <- errCrash
	// media exceeds its intensity: it gives up, and root restarts it.
	ev := r.expect("exit w", "give_up w", "exit media", "restart media", "start media", "start w")
	if ev[1].Supervisor != "root/media" || ev[2].Supervisor != "root" {
		t.Errorf("event paths %q, %q; want root/media, root", ev[1].Supervisor, ev[2].Supervisor)
	}
	if !strings.Contains(ev[2].Reason, ErrGaveUp.Error()) {
		t.Errorf("root saw media exit with %q", ev[2].Reason)
	}
	w.next(t)
	n := root.Snapshot()
	if m := n.Children[0]; m.Kind != "supervisor" || m.Restarts != 1 || m.State != "running" || len(m.Children) != 1 {
		t.Errorf("media node %+v", m)
	}
}

// Each supervisor counts its own give-ups, across the restarts its parent
// makes; the count is in its node by the time the give_up event is out.
func TestGiveUpsCounted(t *testing.T) {
	w := newScript()
	clk := clock.NewFake(epoch)
	events := make(chan Event, 100)
	spec := func(name string) Spec {
		return Spec{Name: name, Intensity: 1, Period: time.Minute, Clock: clk, Logger: quiet(),
			Events: func(e Event) { events <- e }}
	}
	media := New(spec("media"), Child{Name: "w", Service: w})
	root := New(spec("root"), Child{Name: "media", Service: media, Shutdown: time.Second})
	r := &rig{t: t, clk: clk, sup: root, events: events, done: make(chan error, 1)}
	giveUps := func(wantRoot, wantMedia int) {
		t.Helper()
		n := root.Snapshot()
		if n.GiveUps != wantRoot || n.Children[0].GiveUps != wantMedia {
			t.Errorf("give-ups: root %d, media %d; want %d and %d", n.GiveUps, n.Children[0].GiveUps, wantRoot, wantMedia)
		}
	}
	r.serve()
	r.expect("start media", "start w")
	giveUps(0, 0)
	w.next(t).exit <- errCrash
	r.expect("exit w", "restart w", "start w")
	w.next(t).exit <- errCrash
	r.expect("exit w", "give_up w")
	giveUps(0, 1)
	r.expect("exit media", "restart media", "start media", "start w")
	giveUps(0, 1) // media runs again; its give-up stays counted

	w.next(t).exit <- errCrash
	r.expect("exit w", "restart w", "start w")
	w.next(t).exit <- errCrash
	// media gives up again, and root, allowed one restart a minute, too.
	r.expect("exit w", "give_up w", "exit media", "give_up media")
	if err := r.wait(); !errors.Is(err, ErrGaveUp) {
		t.Fatalf("root's Serve returned %v, want ErrGaveUp", err)
	}
	giveUps(1, 2)

	b, err := json.Marshal(root.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(b), `"give_ups":`); got != 2 {
		t.Errorf("give_ups %d times in %s, want once for each supervisor", got, b)
	}
}

func TestShutdownTimeout(t *testing.T) {
	t.Run("abandoned", func(t *testing.T) {
		s := newScript()
		s.ignoreStop = true
		r := newRig(t, Spec{}, Child{Name: "x", Service: s, Shutdown: 3 * time.Second})
		r.serve()
		r.expect("start x")
		run := s.next(t)
		r.cancel()
		if err := r.clk.WaitPending(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		r.clk.Advance(3 * time.Second)
		ev := r.expect("stop_timeout x")
		if !strings.Contains(ev[0].Reason, "abandoned") {
			t.Errorf("reason %q", ev[0].Reason)
		}
		r.wait()
		run.exit <- nil
	})
	t.Run("killed", func(t *testing.T) {
		k := killable{newScript()}
		k.ignoreStop = true
		r := newRig(t, Spec{}, Child{Name: "x", Service: k, Shutdown: 3 * time.Second})
		r.serve()
		r.expect("start x")
		run := k.next(t)
		k.runs <- run // let Kill find it
		r.cancel()
		if err := r.clk.WaitPending(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		r.clk.Advance(3 * time.Second)
		ev := r.expect("stop_timeout x")
		if !strings.Contains(ev[0].Reason, "killed") {
			t.Errorf("reason %q", ev[0].Reason)
		}
		if len(k.killed) != 1 {
			t.Errorf("Kill called %d times, want 1", len(k.killed))
		}
		r.wait()
	})
}

type panicker struct{ n int }

func (p *panicker) Serve(ctx context.Context) error {
	p.n++
	if p.n == 1 {
		panic("boom")
	}
	<-ctx.Done()
	return nil
}

func TestPanicIsACrash(t *testing.T) {
	r := newRig(t, Spec{}, Child{Name: "p", Service: &panicker{}})
	r.serve()
	ev := r.expect("start p", "exit p", "restart p", "start p")
	if ev[1].Reason != "panic: boom" {
		t.Errorf("exit reason %q", ev[1].Reason)
	}
}

func TestSnapshot(t *testing.T) {
	cs, sc := children("a", "b")
	r := newRig(t, Spec{Name: "root", Strategy: RestForOne}, cs...)
	r.serve()
	r.expect("start a", "start b")
	sc["a"].next(t)
	sc["b"].next(t).exit <- errCrash
	r.expect("exit b", "restart b", "start b")
	sc["b"].next(t)
	n := r.sup.Snapshot()
	if n.Name != "root" || n.Kind != "supervisor" || n.Strategy != "rest_for_one" || n.State != "running" {
		t.Errorf("root node %+v", n)
	}
	if len(n.Children) != 2 {
		t.Fatalf("%d children", len(n.Children))
	}
	if a := n.Children[0]; a.State != "running" || a.Restarts != 0 || a.LastExit != "" {
		t.Errorf("a: %+v", a)
	}
	if b := n.Children[1]; b.State != "running" || b.Restarts != 1 || b.LastExit != "crash" || b.Kind != "service" {
		t.Errorf("b: %+v", b)
	}
}

func TestEventLog(t *testing.T) {
	l := NewEventLog(3)
	if got := l.Recent(10); len(got) != 0 {
		t.Fatalf("empty log: %v", got)
	}
	for i := 1; i <= 5; i++ {
		l.Add(Event{PID: i})
	}
	var pids []int
	for _, e := range l.Recent(0) {
		pids = append(pids, e.PID)
	}
	if fmt.Sprint(pids) != "[5 4 3]" {
		t.Errorf("recent %v, want [5 4 3]", pids)
	}
	if got := l.Recent(2); len(got) != 2 || got[0].PID != 5 {
		t.Errorf("Recent(2) = %v", got)
	}
}

// Progress moves with the heartbeat while the loop is free, also while it
// waits for a slow child to stop, and stands still when the loop is stuck.
func TestProgress(t *testing.T) {
	s := newScript()
	s.ignoreStop = true
	block, entered := make(chan struct{}), make(chan struct{}, 1)
	var blocking atomic.Bool
	r := newRig(t, Spec{Heartbeat: time.Second}, Child{Name: "x", Service: s, Shutdown: 10 * time.Second})
	events := r.events
	r.sup.spec.Events = func(e Event) {
		if blocking.Load() && e.Kind == EventExit {
			entered <- struct{}{}
			<-block // a stuck loop: an event sink that does not return
		}
		events <- e
	}
	r.serve()
	r.expect("start x")
	run := s.next(t)
	waitProgress := func(want time.Duration) {
		t.Helper()
		testutil.Eventually(t, 5*time.Second, "progress at "+want.String(), func() bool {
			last, _ := r.sup.Progress()
			return last == want
		})
	}
	waitProgress(clock.FakeMonoStart)
	r.clk.Advance(time.Second)
	waitProgress(clock.FakeMonoStart + time.Second)

	// Waiting for a child to stop is progress.
	r.cancel()
	if err := r.clk.WaitPending(context.Background(), 2); err != nil { // heartbeat + shutdown timer
		t.Fatal(err)
	}
	r.clk.Advance(time.Second)
	waitProgress(clock.FakeMonoStart + 2*time.Second)
	run.exit <- nil
	r.expect("stop x")
	r.wait()

	// A stuck loop is not.
	s.ignoreStop = false
	blocking.Store(true)
	r2 := &rig{t: t, clk: r.clk, sup: r.sup, events: events, done: make(chan error, 1)}
	r2.serve()
	r2.expect("start x")
	s.next(t).exit <- errCrash
	<-entered
	before, _ := r.sup.Progress()
	r.clk.Advance(5 * time.Second)
	if last, gaveUp := r.sup.Progress(); last != before || gaveUp {
		t.Errorf("stuck loop: progress %v (was %v), gave up %v", last, before, gaveUp)
	}
	close(block)
	r2.expect("exit x", "restart x", "start x")
}

// Started closes once the children are started and the loop turns, with
// fresh progress, so a caller can wait for it instead of polling Progress.
func TestStarted(t *testing.T) {
	s := newScript()
	r := newRig(t, Spec{}, Child{Name: "x", Service: s})
	select {
	case <-r.sup.Started():
		t.Fatal("Started closed before Serve")
	default:
	}
	if last, _ := r.sup.Progress(); last != 0 {
		t.Fatalf("progress %v before Serve, want 0", last)
	}
	r.serve()
	select {
	case <-r.sup.Started():
	case <-time.After(5 * time.Second):
		t.Fatal("Started not closed after Serve began")
	}
	if last, _ := r.sup.Progress(); last != clock.FakeMonoStart {
		t.Errorf("progress %v once started, want %v", last, clock.FakeMonoStart)
	}
	if len(r.events) == 0 {
		t.Error("Started closed before the children were started")
	}
	r.expect("start x")
	s.next(t)
	r.cancel()
	r.expect("stop x")
	r.wait()
	select {
	case <-r.sup.Started():
	default:
		t.Error("Started reopened after Serve returned")
	}
}

// Progress is a monotonic reading: a wall step does not move it.
func TestProgressIgnoresWallSteps(t *testing.T) {
	r := newRig(t, Spec{Heartbeat: time.Second}, Child{Name: "x", Service: newScript()})
	r.serve()
	<-r.sup.Started()
	for _, step := range []time.Duration{time.Hour, -2 * time.Hour} {
		r.clk.StepWall(step)
		before := r.clk.Mono()
		r.clk.Advance(time.Second)
		testutil.Eventually(t, 5*time.Second, "progress one second later", func() bool {
			last, _ := r.sup.Progress()
			return last == before+time.Second
		})
	}
}

// Restart intensity counts restarts within Period of monotonic time: a
// wall step back does not keep old restarts in the window, and a step
// forward does not forget recent ones.
func TestIntensityIgnoresWallSteps(t *testing.T) {
	t.Run("backward", func(t *testing.T) {
		s := newScript()
		r := newRig(t, Spec{Intensity: 2, Period: 5 * time.Second}, Child{Name: "x", Service: s})
		r.serve()
		r.expect("start x")
		for range 10 {
			s.next(t).exit <- errCrash
			r.expect("exit x", "restart x", "start x")
			r.clk.StepWall(-time.Hour)
			r.clk.Advance(2500 * time.Millisecond) // 2 restarts within any 5 s, never 3
		}
	})
	t.Run("forward", func(t *testing.T) {
		s := newScript()
		r := newRig(t, Spec{Intensity: 3, Period: 5 * time.Second}, Child{Name: "x", Service: s})
		r.serve()
		r.expect("start x")
		for range 3 {
			s.next(t).exit <- errCrash
			r.expect("exit x", "restart x", "start x")
			r.clk.StepWall(time.Hour)
		}
		s.next(t).exit <- errCrash
		r.expect("exit x", "give_up x")
		if err := r.wait(); !errors.Is(err, ErrGaveUp) {
			t.Fatalf("Serve returned %v, want ErrGaveUp", err)
		}
	})
}

// Backoff delays run on the monotonic clock, and a wall step forward does
// not pass for a healthy run that resets them.
func TestBackoffIgnoresWallSteps(t *testing.T) {
	s := newScript()
	r := newRig(t, Spec{Intensity: 100, Period: 10 * time.Second, Backoff: 100 * time.Millisecond, BackoffMax: 400 * time.Millisecond},
		Child{Name: "x", Service: s})
	r.serve()
	r.expect("start x")
	steps := []time.Duration{time.Hour, -time.Hour, -time.Hour, time.Hour, time.Hour}
	for i, delay := range []time.Duration{0, 100, 200, 400, 400} {
		delay *= time.Millisecond
		run := s.next(t)
		r.clk.StepWall(steps[i]) // during the run: a forward step must not look like a long, healthy run
		run.exit <- errCrash
		ev := r.expect("exit x", "restart x")
		if delay > 0 {
			if want := fmt.Sprintf("in %v (backoff)", delay); !strings.Contains(ev[1].Reason, want) {
				t.Fatalf("restart %d: reason %q, want %q", i+1, ev[1].Reason, want)
			}
			if err := r.clk.WaitPending(context.Background(), 1); err != nil {
				t.Fatal(err)
			}
			r.clk.StepWall(-steps[i]) // while the restart waits
			r.clk.Advance(delay - time.Millisecond)
			r.quietNow()
			r.clk.Advance(time.Millisecond)
		}
		r.expect("start x")
	}
}
