package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"appliance/internal/clock"
)

// Service is a child that runs until its context ends or it fails. Returning
// nil is a normal exit, an error an abnormal one.
type Service interface {
	Serve(ctx context.Context) error
}

// ServiceFunc adapts a function to a Service.
type ServiceFunc func(ctx context.Context) error

// Serve calls f.
func (f ServiceFunc) Serve(ctx context.Context) error { return f(ctx) }

// Strategy says which children restart when one of them does.
type Strategy int

const (
	OneForOne  Strategy = iota // only the child that exited
	OneForAll                  // every child
	RestForOne                 // the child that exited and every child started after it
)

func (s Strategy) String() string {
	switch s {
	case OneForOne:
		return "one_for_one"
	case OneForAll:
		return "one_for_all"
	case RestForOne:
		return "rest_for_one"
	}
	return fmt.Sprintf("strategy(%d)", int(s))
}

// RestartType says whether a child that exited is restarted.
type RestartType int

const (
	Permanent RestartType = iota // always
	Transient                    // only after an abnormal exit
	Temporary                    // never
)

func (r RestartType) String() string {
	switch r {
	case Permanent:
		return "permanent"
	case Transient:
		return "transient"
	case Temporary:
		return "temporary"
	}
	return fmt.Sprintf("restart(%d)", int(r))
}

// Defaults for zero fields of Spec and Child.
const (
	DefaultIntensity  = 3
	DefaultPeriod     = 5 * time.Second
	DefaultBackoffMax = 2 * time.Second
	DefaultShutdown   = 5 * time.Second
)

// ErrGaveUp is wrapped by the error Serve returns when restart intensity was
// exceeded.
var ErrGaveUp = errors.New("restart intensity exceeded")

// Child is one supervised child.
type Child struct {
	Name     string
	Service  Service
	Restart  RestartType
	Shutdown time.Duration // how long a stop may take before a kill; DefaultShutdown if zero
}

// Spec configures a supervisor.
type Spec struct {
	Name       string
	Strategy   Strategy
	Intensity  int           // restarts allowed within Period; DefaultIntensity if zero
	Period     time.Duration // DefaultPeriod if zero
	Backoff    time.Duration // delay of the second restart in a row; 0 restarts at once, always
	BackoffMax time.Duration // cap of the doubling delay; DefaultBackoffMax if zero
	Clock      clock.Clock   // clock.Real() if nil
	Events     func(Event)   // called for every event, from any goroutine; may be nil
	Logger     *slog.Logger  // slog.Default() if nil
	// Heartbeat, if set, wakes the supervision loop that often even when
	// nothing happens, so that Progress shows it is alive. The watchdogs are
	// fed on the root's progress.
	Heartbeat time.Duration
}

// Supervisor runs children under a Spec. It is itself a Service, so trees are
// built by making one supervisor the child of another.
type Supervisor struct {
	spec     Spec
	clk      clock.Clock
	log      *slog.Logger
	children []*child
	exits    chan *instance

	// Owned by the Serve loop. Times are the clock's Mono() readings.
	restartTimes []time.Duration
	timer        clock.Timer
	timerAt      time.Duration
	beat         <-chan time.Time

	progress    atomic.Int64 // Mono() at the loop's last turn; 0 before the first
	started     chan struct{}
	startedOnce sync.Once

	mu      sync.Mutex // guards what Snapshot and event hooks read
	path    string
	state   string
	since   time.Time
	giveUps int // across Serves
}

type child struct {
	Child

	// Guarded by Supervisor.mu; written only by the Serve loop (pid also by
	// the start hook).
	inst     *instance
	state    string
	pid      int
	restarts int
	lastExit string
	since    time.Time

	// Owned by the Serve loop.
	failures  int // restarts in a row without a healthy run, for the backoff
	pending   bool
	pendingAt time.Duration // Mono() when a pending restart is due
}

// instance is one run of a child.
type instance struct {
	c        *child
	cancel   context.CancelFunc
	done     chan struct{} // closed when Serve has returned; err is then set
	err      error
	stopping chan struct{} // closed when the supervisor stops the instance itself
	started  time.Duration // Mono() at the start, to tell a healthy run
}

// New returns a supervisor of the given children, which must have distinct names.
func New(spec Spec, children ...Child) *Supervisor {
	if spec.Intensity <= 0 {
		spec.Intensity = DefaultIntensity
	}
	if spec.Period <= 0 {
		spec.Period = DefaultPeriod
	}
	if spec.BackoffMax <= 0 {
		spec.BackoffMax = DefaultBackoffMax
	}
	if spec.Clock == nil {
		spec.Clock = clock.Real()
	}
	if spec.Logger == nil {
		spec.Logger = slog.Default()
	}
	s := &Supervisor{
		spec: spec, clk: spec.Clock, log: spec.Logger.With("supervisor", spec.Name),
		exits: make(chan *instance), path: spec.Name, state: "stopped",
		started: make(chan struct{}),
	}
	seen := map[string]bool{}
	for _, c := range children {
		if c.Service == nil || c.Name == "" || seen[c.Name] {
			panic(fmt.Sprintf("supervisor %s: child %q: a child needs a unique name and a service", spec.Name, c.Name))
		}
		seen[c.Name] = true
		if c.Shutdown <= 0 {
			c.Shutdown = DefaultShutdown
		}
		s.children = append(s.children, &child{Child: c, state: "stopped"})
	}
	return s
}

type pathKey struct{}

// Serve starts the children in order and supervises them until ctx ends (it
// then stops them in reverse order and returns nil) or restart intensity is
// exceeded (it stops them and returns an error wrapping ErrGaveUp). A
// supervisor may be served again after Serve returns.
func (s *Supervisor) Serve(ctx context.Context) error {
	path := s.spec.Name
	if parent, ok := ctx.Value(pathKey{}).(string); ok {
		path = parent + "/" + path
	}
	now := s.clk.Now()
	s.mu.Lock()
	s.path, s.state, s.since = path, "running", now
	s.mu.Unlock()
	cctx := context.WithValue(ctx, pathKey{}, path)
	s.restartTimes = nil
	defer s.stopTimer()
	s.markProgress()
	if s.spec.Heartbeat > 0 {
		hb := s.clk.NewTicker(s.spec.Heartbeat)
		defer hb.Stop()
		s.beat = hb.C()
		defer func() { s.beat = nil }()
	}

	for _, c := range s.children {
		c.failures, c.pending = 0, false
		s.start(cctx, c)
	}
	for {
		var due <-chan time.Time
		if at, ok := s.nextPending(); ok {
			due = s.armTimer(at)
		}
		s.markProgress()
		s.startedOnce.Do(func() { close(s.started) })
		select {
		case <-s.beat:
		case <-ctx.Done():
			s.stopAll("shutdown")
			s.setState("stopped")
			return nil
		case inst := <-s.exits:
			if inst.c.inst != inst {
				continue // an instance already stopped by the supervisor
			}
			if ctx.Err() != nil {
				s.recordExit(inst) // shutting down: nothing restarts
				continue
			}
			if err := s.exited(cctx, inst); err != nil {
				s.setState("failed")
				return err
			}
		case <-due:
			s.timer = nil
			s.startDue(cctx)
		}
	}
}

func (s *Supervisor) markProgress() { s.progress.Store(int64(s.clk.Mono())) }

// Progress returns when the supervision loop last made progress, as a
// reading of the clock's Mono() (0 if it never ran), and whether it has given
// up. A loop that is waiting for a child to stop still makes progress; one
// that is stuck does not. Judge it against the same clock's Mono(): the wall
// clock may be stepped at any time.
func (s *Supervisor) Progress() (last time.Duration, gaveUp bool) {
	s.mu.Lock()
	failed := s.state == "failed"
	s.mu.Unlock()
	return time.Duration(s.progress.Load()), failed
}

// Started returns a channel that is closed once Serve has started the
// children and begun its first turn, so Progress is fresh. It stays closed
// after Serve returns, and across later Serves.
func (s *Supervisor) Started() <-chan struct{} { return s.started }

func (s *Supervisor) setState(state string) {
	s.mu.Lock()
	s.state, s.since = state, s.clk.Now()
	s.mu.Unlock()
}

// exited applies the restart rules to a child that exited on its own.
func (s *Supervisor) exited(ctx context.Context, inst *instance) error {
	c := inst.c
	reason := exitReason(inst.err)
	s.recordExit(inst)

	if !restarts(c.Restart, inst.err) {
		return nil
	}
	now := s.clk.Mono()
	if s.tooMany(now) {
		why := fmt.Sprintf("more than %d restarts within %v; last: %s: %s", s.spec.Intensity, s.spec.Period, c.Name, reason)
		s.stopAll("give up")
		s.mu.Lock()
		s.giveUps++
		s.mu.Unlock()
		s.emit(Event{Kind: EventGiveUp, Child: c.Name, Reason: why}, true)
		return fmt.Errorf("supervisor %s: %w: %s", s.spec.Name, ErrGaveUp, why)
	}

	if now-inst.started >= s.spec.Period {
		c.failures = 0
	}
	c.failures++
	delay := s.backoff(c.failures)

	group := s.group(c)
	for i := len(group) - 1; i >= 0; i-- {
		if g := group[i]; g != c && g.inst != nil {
			s.stop(g, "restart with "+c.Name)
		}
	}
	why := "after " + reason
	if delay > 0 {
		why += fmt.Sprintf(", in %v (backoff)", delay)
	}
	for _, g := range group {
		if g != c && g.Restart == Temporary {
			continue
		}
		g.pending, g.pendingAt = true, now+delay
		s.mu.Lock()
		g.state = "restarting"
		g.restarts++
		s.mu.Unlock()
		r := why
		if g != c {
			r = fmt.Sprintf("%s: %s %s", s.spec.Strategy, c.Name, why)
		}
		s.emit(Event{Kind: EventRestart, Child: g.Name, Reason: r}, false)
	}
	if delay == 0 {
		s.startDue(ctx)
	}
	return nil
}

// recordExit notes that a child exited on its own, with why.
func (s *Supervisor) recordExit(inst *instance) {
	c := inst.c
	reason := exitReason(inst.err)
	s.mu.Lock()
	pid := c.pid
	c.inst, c.pid, c.lastExit, c.state, c.since = nil, 0, reason, "stopped", s.clk.Now()
	s.mu.Unlock()
	s.emit(Event{Kind: EventExit, Child: c.Name, Reason: reason, PID: pid}, inst.err != nil)
}

func restarts(r RestartType, err error) bool {
	switch r {
	case Permanent:
		return true
	case Transient:
		return err != nil
	}
	return false
}

// tooMany records a restart at now (a Mono reading) and reports whether that
// makes more than Intensity within Period.
func (s *Supervisor) tooMany(now time.Duration) bool {
	kept := s.restartTimes[:0]
	for _, t := range s.restartTimes {
		if now-t < s.spec.Period {
			kept = append(kept, t)
		}
	}
	s.restartTimes = append(kept, now)
	return len(s.restartTimes) > s.spec.Intensity
}

// backoff is the delay before the n-th restart in a row: 0, Backoff,
// 2*Backoff, ... up to BackoffMax.
func (s *Supervisor) backoff(n int) time.Duration {
	if n <= 1 || s.spec.Backoff <= 0 {
		return 0
	}
	d := s.spec.Backoff
	for i := 2; i < n && d < s.spec.BackoffMax; i++ {
		d *= 2
	}
	return min(d, s.spec.BackoffMax)
}

// group is the set of children that restart with c, in start order.
func (s *Supervisor) group(c *child) []*child {
	switch s.spec.Strategy {
	case OneForAll:
		return s.children
	case RestForOne:
		for i, g := range s.children {
			if g == c {
				return s.children[i:]
			}
		}
	}
	return []*child{c}
}

func (s *Supervisor) nextPending() (time.Duration, bool) {
	var at time.Duration
	found := false
	for _, c := range s.children {
		if c.pending && (!found || c.pendingAt < at) {
			at, found = c.pendingAt, true
		}
	}
	return at, found
}

func (s *Supervisor) armTimer(at time.Duration) <-chan time.Time {
	if s.timer != nil && at == s.timerAt {
		return s.timer.C()
	}
	s.stopTimer()
	s.timer, s.timerAt = s.clk.NewTimer(at-s.clk.Mono()), at
	return s.timer.C()
}

func (s *Supervisor) stopTimer() {
	if s.timer != nil {
		s.timer.Stop()
		s.timer, s.timerAt = nil, 0
	}
}

// startDue starts, in order, every pending child whose time has come.
func (s *Supervisor) startDue(ctx context.Context) {
	now := s.clk.Mono()
	for _, c := range s.children {
		if c.pending && c.pendingAt <= now {
			c.pending = false
			s.start(ctx, c)
		}
	}
}

// startReporter is implemented by services that report their own start, with
// a PID, through the hook in their context.
type startReporter interface{ reportsStart() }

type startHookKey struct{}

func (s *Supervisor) start(ctx context.Context, c *child) {
	// A child's context carries the tree's values but not its parent's
	// cancellation: the supervisor stops its children itself, one at a time
	// in reverse start order, and a child must not see the shutdown before
	// its turn.
	ictx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	inst := &instance{c: c, cancel: cancel, done: make(chan struct{}), stopping: make(chan struct{}), started: s.clk.Mono()}
	if _, ok := c.Service.(startReporter); ok {
		ictx = context.WithValue(ictx, startHookKey{}, func(pid int) {
			s.mu.Lock()
			current := c.inst == inst
			if current {
				c.pid = pid
			}
			s.mu.Unlock()
			if current {
				s.emit(Event{Kind: EventStart, Child: c.Name, PID: pid}, false)
			}
		})
	}
	s.mu.Lock()
	c.inst, c.state, c.since = inst, "running", s.clk.Now()
	s.mu.Unlock()
	if _, ok := c.Service.(startReporter); !ok {
		s.emit(Event{Kind: EventStart, Child: c.Name}, false)
	}
	go func() {
		inst.err = s.run(ictx, c)
		cancel()
		close(inst.done)
		select {
		case s.exits <- inst:
		case <-inst.stopping:
		}
	}()
}

// run calls the child's Serve, turning a panic into an abnormal exit.
func (s *Supervisor) run(ctx context.Context, c *child) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("child panicked", "child", c.Name, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return c.Service.Serve(ctx)
}

// killer is implemented by children that can be forced to stop.
type killer interface{ Kill() }

// stop stops one running child: cancel, wait up to its shutdown time, then
// kill it if it can be killed.
func (s *Supervisor) stop(c *child, why string) {
	inst := c.inst
	close(inst.stopping)
	inst.cancel()
	s.mu.Lock()
	pid := c.pid
	s.mu.Unlock()

	k, canKill := c.Service.(killer)
	switch {
	case s.await(inst.done, c.Shutdown):
		s.emit(Event{Kind: EventStop, Child: c.Name, Reason: why, PID: pid}, false)
	case !canKill:
		s.emit(Event{Kind: EventStopTimeout, Child: c.Name,
			Reason: fmt.Sprintf("%s: still running after %v, abandoned", why, c.Shutdown)}, true)
	default:
		k.Kill()
		what := "killed"
		if !s.await(inst.done, c.Shutdown) {
			what = "killed, and still running: abandoned"
		}
		s.emit(Event{Kind: EventStopTimeout, Child: c.Name, PID: pid,
			Reason: fmt.Sprintf("%s: still running after %v, %s", why, c.Shutdown, what)}, true)
	}
	s.mu.Lock()
	c.inst, c.pid, c.state, c.since = nil, 0, "stopped", s.clk.Now()
	s.mu.Unlock()
}

// await waits up to d for done, still beating meanwhile; it reports whether
// done closed.
func (s *Supervisor) await(done <-chan struct{}, d time.Duration) bool {
	t := s.clk.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-done:
			return true
		case <-t.C():
			return false
		case <-s.beat:
			s.markProgress()
		}
	}
}

// stopAll stops every running child in reverse start order and drops pending
// restarts.
func (s *Supervisor) stopAll(why string) {
	for i := len(s.children) - 1; i >= 0; i-- {
		c := s.children[i]
		if c.pending {
			c.pending = false
			s.mu.Lock()
			c.state = "stopped"
			s.mu.Unlock()
		}
		if c.inst != nil {
			s.stop(c, why)
		}
	}
}

func (s *Supervisor) emit(e Event, warn bool) {
	s.mu.Lock()
	e.Supervisor = s.path
	s.mu.Unlock()
	e.Time = s.clk.Now()
	attrs := []any{"child", e.Child, "event", e.Kind}
	if e.PID != 0 {
		attrs = append(attrs, "pid", e.PID)
	}
	if e.Reason != "" {
		attrs = append(attrs, "reason", e.Reason)
	}
	if warn {
		s.log.Warn("supervision", attrs...)
	} else {
		s.log.Info("supervision", attrs...)
	}
	if s.spec.Events != nil {
		s.spec.Events(e)
	}
}

func exitReason(err error) string {
	if err == nil {
		return "normal"
	}
	return err.Error()
}

// Node is one node of the supervision tree as the API shows it. The JSON
// names are a contract.
type Node struct {
	Name     string    `json:"name"`
	Kind     string    `json:"kind"` // supervisor, process or service
	Strategy string    `json:"strategy,omitempty"`
	State    string    `json:"state"` // running, restarting, stopped, failed
	PID      int       `json:"pid,omitempty"`
	Restarts int       `json:"restarts"`
	LastExit string    `json:"last_exit,omitempty"`
	Since    time.Time `json:"since"`
	Children []Node    `json:"children,omitempty"`
	// GiveUps counts the times a supervisor gave up (more than its
	// intensity of restarts within its period), over all its runs;
	// absent for none and for other kinds.
	GiveUps int `json:"give_ups,omitempty"`
}

// describer lets a child add to its own node: a supervisor its subtree, a
// process its kind and PID.
type describer interface{ describe(n *Node) }

// Snapshot returns the tree under this supervisor.
func (s *Supervisor) Snapshot() Node {
	s.mu.Lock()
	n := Node{Name: s.spec.Name, Kind: "supervisor", Strategy: s.spec.Strategy.String(), State: s.state, Since: s.since, GiveUps: s.giveUps}
	for _, c := range s.children {
		n.Children = append(n.Children, Node{
			Name: c.Name, Kind: "service", State: c.state, PID: c.pid,
			Restarts: c.restarts, LastExit: c.lastExit, Since: c.since,
		})
	}
	s.mu.Unlock()
	for i, c := range s.children {
		if d, ok := c.Service.(describer); ok {
			d.describe(&n.Children[i])
		}
	}
	return n
}

func (s *Supervisor) describe(n *Node) {
	inner := s.Snapshot()
	n.Kind, n.Strategy, n.Children, n.GiveUps = inner.Kind, inner.Strategy, inner.Children, inner.GiveUps
}
