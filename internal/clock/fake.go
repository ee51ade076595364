package clock

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Fake is a Clock that moves only when a test calls Advance. Timers and tickers
// fire in deadline order, each into a channel with a buffer of one, as real
// ones do: a tick nobody reads is dropped, not queued.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	waiters []*fakeWaiter
	changed chan struct{} // closed and replaced whenever the set of waiters changes
}

// NewFake returns a fake clock that reads start until advanced.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, changed: make(chan struct{})}
}

type fakeWaiter struct {
	clock  *Fake
	ch     chan time.Time
	when   time.Time
	period time.Duration // 0 for a timer
	active bool
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer returns a timer that fires once the fake time reaches now+d.
func (f *Fake) NewTimer(d time.Duration) Timer {
	w := &fakeWaiter{clock: f, ch: make(chan time.Time, 1)}
	f.mu.Lock()
	f.arm(w, d, 0)
	f.mu.Unlock()
	return fakeTimer{w}
}

// NewTicker returns a ticker that fires every d of fake time.
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

// Advance moves the fake time forward by d, firing every timer and ticker that
// falls due on the way, in deadline order.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := f.now.Add(d)
	for {
		var next *fakeWaiter
		for _, w := range f.waiters {
			if w.active && !w.when.After(end) && (next == nil || w.when.Before(next.when)) {
				next = w
			}
		}
		if next == nil {
			break
		}
		if next.when.After(f.now) {
			f.now = next.when
		}
		select {
		case next.ch <- f.now:
		default:
		}
		if next.period > 0 {
			next.when = next.when.Add(next.period)
		} else {
			f.disarm(next)
		}
	}
	f.now = end
}

// Pending returns how many timers and tickers are armed.
func (f *Fake) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters)
}

// Deadlines returns the fire times of the armed timers and tickers, earliest first.
func (f *Fake) Deadlines() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]time.Time, 0, len(f.waiters))
	for _, w := range f.waiters {
		out = append(out, w.when)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
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
	w.when = f.now.Add(d)
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
