package watchdog

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"appliance/internal/clock"
)

// fakeDevice is a hardware watchdog that records what was done to it.
type fakeDevice struct {
	mu           sync.Mutex
	timeout      time.Duration
	granted      time.Duration // 0: grants what is asked
	keepalives   int
	disarmed     bool
	closed       bool
	bootStatus   uint32
	keepaliveErr error
	setErr       error
}

func (d *fakeDevice) SetTimeout(t time.Duration) (time.Duration, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.setErr != nil {
		return 0, d.setErr
	}
	d.timeout = t
	if d.granted != 0 {
		d.timeout = d.granted
	}
	return d.timeout, nil
}

func (d *fakeDevice) Keepalive() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if d.keepaliveErr != nil {
		return d.keepaliveErr
	}
	d.keepalives++
	return nil
}

func (d *fakeDevice) Timeleft() (time.Duration, error) { return 0, ErrUnsupported }
func (d *fakeDevice) BootStatus() (uint32, error)      { return d.bootStatus, nil }
func (d *fakeDevice) Identity() (string, error)        { return "fake watchdog", nil }

func (d *fakeDevice) Disarm() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	d.disarmed, d.closed = true, true
	return nil
}

func (d *fakeDevice) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

func (d *fakeDevice) state() (keepalives int, disarmed, closed bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.keepalives, d.disarmed, d.closed
}

// fakeNotifier records sd_notify messages.
type fakeNotifier struct {
	mu   sync.Mutex
	msgs []string
}

func (n *fakeNotifier) Notify(state string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.msgs = append(n.msgs, state)
	return nil
}

func (n *fakeNotifier) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

func (n *fakeNotifier) count(msg string) int {
	c := 0
	for _, m := range n.all() {
		if m == msg {
			c++
		}
	}
	return c
}

// withPrefix returns the messages that start with prefix, in order.
func (n *fakeNotifier) withPrefix(prefix string) []string {
	var out []string
	for _, m := range n.all() {
		if strings.HasPrefix(m, prefix) {
			out = append(out, m)
		}
	}
	return out
}

// fakeRoot is the supervision root's liveness.
type fakeRoot struct {
	clk    *clock.Fake
	mu     sync.Mutex
	last   time.Duration // a Mono() reading
	gaveUp bool
}

func (r *fakeRoot) Progress() (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last, r.gaveUp
}

// beat is one turn of the root's loop, now.
func (r *fakeRoot) beat() { r.set(r.clk.Mono(), false) }

func (r *fakeRoot) set(last time.Duration, gaveUp bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last, r.gaveUp = last, gaveUp
}

// logBuffer collects log lines from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// rig runs a Keeper on a fake clock. Serve waits on one timer, re-armed after
// each step, so "the timer is pending again" means "the step is done".
type rig struct {
	t      *testing.T
	clk    *clock.Fake
	dev    *fakeDevice
	note   *fakeNotifier
	root   *fakeRoot
	logs   *logBuffer
	k      *Keeper
	cancel context.CancelFunc
	done   chan error
}

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newRig builds a keeper with a 10s hardware timeout and a 5s systemd
// interval (so it steps every 2.5s and stale is 2.5s), and lets mod change
// the options.
func newRig(t *testing.T, mod func(*Options)) *rig {
	t.Helper()
	clk := clock.NewFake(epoch)
	r := &rig{t: t, clk: clk, dev: &fakeDevice{}, note: &fakeNotifier{}, root: &fakeRoot{clk: clk}, logs: &logBuffer{}}
	o := Options{
		Device: r.dev, DevicePath: "/dev/watchdog", Timeout: 10 * time.Second,
		Notifier: r.note, SystemdInterval: 5 * time.Second,
		Progress: r.root.Progress,
		Boot:     BootRecord{BootCount: 7, LastResetReason: ReasonClean},
		Clock:    clk,
		Logger:   slog.New(slog.NewTextHandler(r.logs, nil)),
	}
	if mod != nil {
		mod(&o)
	}
	k, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	r.k = k
	t.Cleanup(func() {
		if r.cancel != nil {
			r.cancel()
			<-r.done
		}
		if t.Failed() {
			t.Logf("keeper log:\n%s", r.logs)
		}
	})
	return r
}

// start runs Serve and waits for its first step.
func (r *rig) start() {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.k.Serve(ctx) }()
	r.waitStep()
}

func (r *rig) waitStep() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.clk.WaitPending(ctx, 1); err != nil {
		r.t.Fatalf("the keeper did not come back to its timer: %v", err)
	}
}

// step advances the fake clock to the next step and waits until it is done.
func (r *rig) step() {
	r.t.Helper()
	r.clk.Advance(r.k.period)
	r.waitStep()
}

// stop cancels Serve's context and returns what Serve returned.
func (r *rig) stopCtx() error {
	r.t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.cancel = nil
		return err
	case <-time.After(10 * time.Second):
		r.t.Fatal("Serve did not return after its context ended")
	}
	return nil
}

func (r *rig) keepalives() int {
	n, _, _ := r.dev.state()
	return n
}

var errInjected = errors.New("injected")
