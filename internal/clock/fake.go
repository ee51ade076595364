package clock

import (
	"context"
	"sort"
	"sync"
	"time"
)

// FakeMonoStart is what a new Fake's Mono reads: not zero, so that code which
// takes zero for "no reading" is tested honestly.
const FakeMonoStart = time.Hour

// Fake is a Clock that moves only when a test says so. Advance moves both of
// its clocks; StepWall moves only the wall clock, as NTP or an operator
// setting the date does. Timers and tickers run on the monotonic clock, as
// real ones do: they fire in deadline order during Advance, each into a
// channel with a buffer of one (a tick nobody reads is dropped, not queued),
// and a wall step neither fires nor delays them.
type Fake struct {
	mu      sync.Mutex
	now     time.Time     // wall
	mono    time.Duration // monotonic
	waiters []*fakeWaiter
	changed chan struct{} // closed and replaced whenever the set of waiters changes
}

// NewFake returns a fake clock whose Now reads start and whose Mono reads
// FakeMonoStart until it is moved.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, mono: FakeMonoStart, changed: make(chan struct{})}
}

type fakeWaiter struct {
	clock  *Fake
	ch     chan time.Time
	when   time.Duration // on the monotonic clock
	period time.Duration // 0 for a timer
	active bool
}

// Now returns the fake wall time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Mono returns the fake monotonic reading.
func (f *Fake) Mono() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mono
}

// NewTimer returns a timer that fires once d has passed.
func (f *Fake) NewTimer(d time.Duration) Timer {
	w := &fakeWaiter{clock: f, ch: make(chan time.Time, 1)}
	f.mu.Lock()
	f.arm(w, d, 0)
	f.mu.Unlock()
	return fakeTimer{w}
}

// NewTicker returns a ticker that fires every d.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive ticker period")
	}
	w := &fakeWaiter{clock: f, ch: make(chan time.Time, 1)}
	f.mu.Lock()
	f.arm(w, d, d)
	f.mu.Unlock()
	return fakeTicker{w}
}

// Advance moves both clocks forward by d, firing every timer and ticker that
// falls due on the way, in deadline order. A tick carries the wall time it
// fired at.
func (f *Fake) Advance(d time.Duration) {
	if d < 0 {
		panic("clock: Advance with a negative duration: the monotonic clock never goes back (StepWall moves the wall clock)")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	end := f.mono + d
	for {
		var next *fakeWaiter
		for _, w := range f.waiters {
			if w.active && w.when <= end && (next == nil || w.when < next.when) {
				next = w
			}
		}
		if next == nil {
			break
		}
		f.moveTo(next.when)
		select {
		case next.ch <- f.now:
		default:
		}
		if next.period > 0 {
			next.when += next.period
		} else {
			f.disarm(next)
		}
	}
	f.moveTo(end)
}

// moveTo moves both clocks to the monotonic reading m, if it is ahead.
func (f *Fake) moveTo(m time.Duration) {
	if m > f.mono {
		f.now = f.now.Add(m - f.mono)
		f.mono = m
	}
}

// StepWall moves only the wall clock, by d, which may be negative: what an
// NTP step or a date set by hand does to a real machine. Nothing fires.
func (f *Fake) StepWall(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

// Pending returns how many timers and tickers are armed.
func (f *Fake) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters)
}

// Deadlines returns the fire times of the armed timers and tickers, earliest
// first, as wall times: when they will fire if the wall clock is not stepped.
func (f *Fake) Deadlines() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]time.Time, 0, len(f.waiters))
	for _, w := range f.waiters {
		out = append(out, f.now.Add(w.when-f.mono))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// Unread returns how many armed timers and tickers hold a tick that nobody
// has received yet. A test that polls it down to zero knows that the code
// under test has taken every tick it was sent (though it may still be
// acting on the last one).
func (f *Fake) Unread() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, w := range f.waiters {
		n += len(w.ch)
	}
	return n
}

// WaitPending blocks until at least n timers or tickers are armed, or ctx ends.
// Tests use it to know that the code under test has reached its next wait.
func (f *Fake) WaitPending(ctx context.Context, n int) error {
	for {
		f.mu.Lock()
		got, changed := len(f.waiters), f.changed
		f.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *Fake) arm(w *fakeWaiter, d, period time.Duration) {
	w.when = f.mono + d
	w.period = period
	if !w.active {
		w.active = true
		f.waiters = append(f.waiters, w)
		f.notify()
	}
}

func (f *Fake) disarm(w *fakeWaiter) bool {
	if !w.active {
		return false
	}
	w.active = false
	for i, x := range f.waiters {
		if x == w {
			f.waiters = append(f.waiters[:i], f.waiters[i+1:]...)
			break
		}
	}
	f.notify()
	return true
}

func (f *Fake) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

type fakeTimer struct{ w *fakeWaiter }

func (t fakeTimer) C() <-chan time.Time { return t.w.ch }

func (t fakeTimer) Stop() bool {
	t.w.clock.mu.Lock()
	defer t.w.clock.mu.Unlock()
	return t.w.clock.disarm(t.w)
}

// Reset re-arms the timer; as with time.Timer since Go 1.23, a stale tick is drained.
func (t fakeTimer) Reset(d time.Duration) bool { return t.w.reset(d, 0) }

type fakeTicker struct{ w *fakeWaiter }

func (t fakeTicker) C() <-chan time.Time { return t.w.ch }

func (t fakeTicker) Stop() {
	t.w.clock.mu.Lock()
	defer t.w.clock.mu.Unlock()
	t.w.clock.disarm(t.w)
}

func (t fakeTicker) Reset(d time.Duration) {
	if d <= 0 {
		panic("clock: non-positive ticker period")
	}
	t.w.reset(d, d)
}

func (w *fakeWaiter) reset(d, period time.Duration) bool {
	w.clock.mu.Lock()
	defer w.clock.mu.Unlock()
	was := w.active
	select {
	case <-w.ch:
	default:
	}
	w.clock.arm(w, d, period)
	return was
}
