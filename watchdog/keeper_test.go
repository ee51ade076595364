package watchdog

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestFeedsWhileProgressIsFresh(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	if r.k.period != 2500*time.Millisecond || r.k.stale != 2500*time.Millisecond {
		t.Fatalf("period %v stale %v, want 2.5s each (half of the 5s systemd interval)", r.k.period, r.k.stale)
	}
	r.root.beat()
	r.start()
	if d := r.clk.Deadlines(); len(d) != 1 || !d[0].Equal(epoch.Add(2500*time.Millisecond)) {
		t.Fatalf("next step at %v, want one at +2.5s", d)
	}
	for range 4 {
		r.root.beat()
		r.step()
	}
	if got := r.keepalives(); got != 5 {
		t.Errorf("%d keepalives, want 5 (one at start, one per step)", got)
	}
	if got := r.note.count("WATCHDOG=1"); got != 5 {
		t.Errorf("%d WATCHDOG=1, want 5", got)
	}
	s := r.k.Snapshot()
	if !s.Feeding || s.Reason != "" || s.LastFeed == nil || !s.LastFeed.Equal(r.clk.Now()) {
		t.Errorf("snapshot %+v, want feeding with the last feed now", s)
	}
}

// Each watchdog's feeds are counted apart: a keepalive the device refused
// is not one, and a root that is not healthy gets neither counted.
func TestFeedsCounted(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	feeds := func(device, systemd uint64) {
		t.Helper()
		if s := r.k.Snapshot(); s.DeviceFeeds != device || s.SystemdFeeds != systemd {
			t.Errorf("%d device and %d systemd feeds, want %d and %d", s.DeviceFeeds, s.SystemdFeeds, device, systemd)
		}
	}
	r.root.beat()
	r.start()
	feeds(1, 1)
	r.root.beat()
	r.step()
	feeds(2, 2)
	r.dev.mu.Lock()
	r.dev.keepaliveErr = errInjected
	r.dev.mu.Unlock()
	r.root.beat()
	r.step()
	feeds(2, 3)
	r.dev.mu.Lock()
	r.dev.keepaliveErr = nil
	r.dev.mu.Unlock()
	r.root.beat()
	r.step()
	feeds(3, 4)
	r.step() // progress 5 s old: stuck, nothing fed
	feeds(3, 4)
	if got := r.keepalives(); got != 3 {
		t.Errorf("%d keepalives taken, %d counted", got, r.k.Snapshot().DeviceFeeds)
	}
	if got := r.note.count("WATCHDOG=1"); got != 4 {
		t.Errorf("%d WATCHDOG=1 sent, %d counted", got, r.k.Snapshot().SystemdFeeds)
	}
}

func TestNoFeedWhileStuckResumesWhenMoving(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	r.root.beat()
	r.start()
	r.step() // progress 2.5s old: still fresh
	if got := r.keepalives(); got != 2 {
		t.Fatalf("%d keepalives, want 2", got)
	}
	fedAt := r.clk.Now()
	for range 3 { // 5s, 7.5s, 10s old: stuck
		r.step()
	}
	if got, wd := r.keepalives(), r.note.count("WATCHDOG=1"); got != 2 || wd != 2 {
		t.Fatalf("fed a stuck root: %d keepalives, %d WATCHDOG=1; want 2 each", got, wd)
	}
	s := r.k.Snapshot()
	if s.Feeding || s.Reason != "supervision root stuck for 10s" || !s.LastFeed.Equal(fedAt) {
		t.Errorf("snapshot %+v", s)
	}
	if n := r.logs.count("not feeding the watchdogs"); n != 1 {
		t.Errorf("logged %d times that it stopped feeding, want once per transition", n)
	}

	r.root.beat()
	r.step()
	if got, wd := r.keepalives(), r.note.count("WATCHDOG=1"); got != 3 || wd != 3 {
		t.Errorf("after the root moved: %d keepalives, %d WATCHDOG=1; want 3 each", got, wd)
	}
	if s := r.k.Snapshot(); !s.Feeding || s.Reason != "" {
		t.Errorf("snapshot %+v, want feeding", s)
	}
	if n := r.logs.count("moving again"); n != 1 {
		t.Errorf("logged %d times that the root moves again, want 1", n)
	}
}

func TestNoFeedAfterGiveUpEver(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	r.root.beat()
	r.start()
	r.root.set(r.clk.Mono(), true)
	r.step()
	r.root.beat() // even if it claimed to be back: a root that gave up is not trusted
	r.step()
	for range 5 {
		r.root.beat()
		r.step()
	}
	if got, wd := r.keepalives(), r.note.count("WATCHDOG=1"); got != 1 || wd != 1 {
		t.Errorf("fed after give-up: %d keepalives, %d WATCHDOG=1; want only the first", got, wd)
	}
	if s := r.k.Snapshot(); s.Feeding || s.Reason != "supervision root gave up" {
		t.Errorf("snapshot %+v", s)
	}
}

func TestReadyOnceAfterFirstGoodGate(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	r.start() // the root has not turned yet
	r.step()
	if n := r.note.count("READY=1"); n != 0 || r.keepalives() != 0 {
		t.Fatalf("READY=1 %d times and %d keepalives before the root ever moved", n, r.keepalives())
	}
	if s := r.k.Snapshot(); s.Reason != "supervision root has not started" {
		t.Errorf("reason %q", s.Reason)
	}
	r.root.beat()
	r.step()
	msgs := r.note.all()
	wd, ready := slices.Index(msgs, "WATCHDOG=1"), slices.Index(msgs, "READY=1")
	if ready < 0 || wd < 0 || ready < wd {
		t.Fatalf("want WATCHDOG=1 then READY=1, got %q", msgs)
	}
	for range 3 { // stuck, then moving again: not ready a second time
		r.step()
	}
	for range 3 {
		r.root.beat()
		r.step()
	}
	if n := r.note.count("READY=1"); n != 1 {
		t.Errorf("READY=1 sent %d times, want once", n)
	}
}

func TestMagicCloseOnlyOnStop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := newRig(t, func(o *Options) { o.StateDir = dir })
	if _, err := RecordBoot(dir, 0, true, epoch); err != nil {
		t.Fatal(err)
	}
	r.root.beat()
	r.start()
	if err := r.k.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		r.cancel = nil
		if err != nil {
			t.Errorf("Serve returned %v after Stop, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after Stop")
	}
	if _, disarmed, closed := r.dev.state(); !disarmed || !closed {
		t.Errorf("after Stop: disarmed %v closed %v, want both", disarmed, closed)
	}
	if n := r.note.count("STOPPING=1"); n != 1 {
		t.Errorf("STOPPING=1 sent %d times", n)
	}
	rec := readRecord(t, dir)
	if !rec.CleanStop {
		t.Errorf("no clean stop recorded: %+v", rec)
	}
	if s := r.k.Snapshot(); s.Armed || s.Feeding {
		t.Errorf("after Stop: %+v", s)
	}
	if err := r.k.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if n := r.note.count("STOPPING=1"); n != 1 {
		t.Errorf("STOPPING=1 sent %d times after a second Stop", n)
	}
}

func TestCancelLeavesWatchdogArmed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := newRig(t, func(o *Options) { o.StateDir = dir })
	if _, err := RecordBoot(dir, 0, true, epoch); err != nil {
		t.Fatal(err)
	}
	r.root.beat()
	r.start()
	if err := r.stopCtx(); err != nil {
		t.Errorf("Serve returned %v when its context ended, want nil", err)
	}
	if _, disarmed, closed := r.dev.state(); disarmed || !closed {
		t.Errorf("after the context ended: disarmed %v closed %v; want closed without magic close", disarmed, closed)
	}
	if n := r.note.count("STOPPING=1"); n != 0 {
		t.Errorf("STOPPING=1 sent on an unchosen stop")
	}
	if rec := readRecord(t, dir); rec.CleanStop {
		t.Errorf("clean stop recorded on an unchosen stop")
	}
	if s := r.k.Snapshot(); !s.Armed || s.Feeding || !strings.Contains(s.Reason, "will fire") {
		t.Errorf("snapshot %+v, want armed and not feeding", s)
	}
	// Too late to disarm: Stop says so and records no clean stop.
	if err := r.k.Stop(); !errors.Is(err, ErrClosed) {
		t.Errorf("Stop after the context ended: %v, want ErrClosed", err)
	}
	if _, disarmed, _ := r.dev.state(); disarmed {
		t.Error("disarmed after the device was abandoned")
	}
	if rec := readRecord(t, dir); rec.CleanStop {
		t.Errorf("clean stop recorded though the watchdog will fire")
	}
}

func TestStatusSentOnChange(t *testing.T) {
	t.Parallel()
	summary := make(chan string, 1)
	summary <- "3 streams, all healthy"
	cur := ""
	r := newRig(t, func(o *Options) {
		o.Status = func() string { // called only from the step
			select {
			case cur = <-summary:
			default:
			}
			return cur
		}
	})
	r.root.beat()
	r.start()
	r.root.beat()
	r.step()
	summary <- "3 streams, 1 degraded"
	r.root.beat()
	r.step()
	r.root.beat()
	r.step()
	r.step() // fresh
	r.step() // stuck
	r.step() // still stuck: no new line
	r.root.beat()
	r.step()
	want := []string{
		"STATUS=3 streams, all healthy",
		"STATUS=3 streams, 1 degraded",
		"STATUS=not feeding the watchdogs: supervision root stuck; 3 streams, 1 degraded",
		"STATUS=3 streams, 1 degraded",
	}
	if got := r.note.withPrefix("STATUS="); !slices.Equal(got, want) {
		t.Errorf("STATUS lines:\n got %q\nwant %q", got, want)
	}
}

func TestSystemdOnlyAndNeither(t *testing.T) {
	t.Parallel()
	t.Run("no systemd watchdog", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, func(o *Options) { o.SystemdInterval = 0 })
		if r.k.period != 5*time.Second {
			t.Errorf("period %v, want half the 10s hardware timeout", r.k.period)
		}
		r.root.beat()
		r.start()
		if r.keepalives() != 1 || r.note.count("WATCHDOG=1") != 0 || r.note.count("READY=1") != 1 {
			t.Errorf("keepalives %d, messages %q: want the hardware fed, READY=1 and no WATCHDOG=1", r.keepalives(), r.note.all())
		}
		if s := r.k.Snapshot(); s.Systemd || s.SystemdIntervalS != 0 || s.TimeoutS != 10 || s.DeviceFeeds != 1 || s.SystemdFeeds != 0 {
			t.Errorf("snapshot %+v", s)
		}
	})
	t.Run("systemd only", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, func(o *Options) { o.Device, o.DevicePath, o.SystemdInterval = nil, "", 3*time.Second })
		if r.k.period != 1500*time.Millisecond {
			t.Errorf("period %v, want half the 3s systemd interval", r.k.period)
		}
		r.root.beat()
		r.start()
		if s := r.k.Snapshot(); s.Armed || !s.Systemd || s.SystemdIntervalS != 3 || s.TimeoutS != 0 || s.LastFeed == nil || s.DeviceFeeds != 0 || s.SystemdFeeds != 1 {
			t.Errorf("snapshot %+v", s)
		}
		if err := r.k.Stop(); err != nil {
			t.Errorf("Stop without a device: %v", err)
		}
	})
	t.Run("neither", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, func(o *Options) { o.Device, o.Notifier, o.SystemdInterval = nil, nil, 0 })
		if r.k.period != time.Second {
			t.Errorf("period %v, want 1s", r.k.period)
		}
		r.root.beat()
		r.start()
		r.step()
		if s := r.k.Snapshot(); !s.Feeding || s.LastFeed != nil {
			t.Errorf("snapshot %+v: want healthy, but nothing fed", s)
		}
	})
}

// The root's progress and the keeper's judgement are both on the monotonic
// clock: a wall step either way neither starves a root that moves nor feeds
// one that stalls.
func TestWallClockSteps(t *testing.T) {
	t.Parallel()
	for _, step := range []time.Duration{time.Hour, -time.Hour} {
		t.Run(step.String(), func(t *testing.T) {
			t.Parallel()
			r := newRig(t, nil)
			r.root.beat()
			r.start()
			for range 4 { // a step between the root's turn and the judgement
				r.root.beat()
				r.clk.StepWall(step)
				r.step()
			}
			if got, wd := r.keepalives(), r.note.count("WATCHDOG=1"); got != 5 || wd != 5 {
				t.Fatalf("across wall steps of %v: %d keepalives, %d WATCHDOG=1; want 5 each", step, got, wd)
			}
			if s := r.k.Snapshot(); !s.Feeding || s.LastFeed == nil || !s.LastFeed.Equal(r.clk.Now()) {
				t.Errorf("snapshot %+v, want feeding, last fed at the stepped wall time %v", s, r.clk.Now())
			}

			// The root stalled after its last turn, 2.5s ago (still fresh
			// then): across another step it is found stuck on time.
			r.clk.StepWall(step)
			r.step()
			if got := r.keepalives(); got != 5 {
				t.Errorf("%d keepalives, want 5: none once the stalled root is stale", got)
			}
			if s := r.k.Snapshot(); s.Feeding || s.Reason != "supervision root stuck for 5s" {
				t.Errorf("snapshot %+v, want stuck for 5s", s)
			}
		})
	}
}

func TestStuckBeforeStart(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	r.root.set(r.clk.Mono()-10*time.Second, false)
	r.start()
	r.step()
	if got := r.keepalives(); got != 0 {
		t.Errorf("%d keepalives for a root stuck before the keeper started, want 0", got)
	}
	if s := r.k.Snapshot(); s.Reason != "supervision root stuck for 12.5s" {
		t.Errorf("reason %q", s.Reason)
	}
}

func TestFeedErrorsLoggedOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	r.dev.keepaliveErr = errInjected
	r.root.beat()
	r.start()
	for range 3 {
		r.root.beat()
		r.step()
	}
	if n := r.logs.count("feeding the watchdogs failed"); n != 1 {
		t.Errorf("logged the failure %d times, want once", n)
	}
	// systemd was still fed, so there is a last feed.
	if s := r.k.Snapshot(); s.LastFeed == nil || r.note.count("WATCHDOG=1") != 4 {
		t.Errorf("snapshot %+v, messages %q", s, r.note.all())
	}
}

func TestReloading(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	ran := false
	err := r.k.Reloading(func() error { ran = true; return errInjected })
	if !ran || !errors.Is(err, errInjected) {
		t.Fatalf("ran %v, err %v", ran, err)
	}
	msgs := r.note.all()
	if len(msgs) != 2 || !regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[0-9]+$`).MatchString(msgs[0]) || msgs[1] != "READY=1" {
		t.Errorf("messages %q", msgs)
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	if _, err := New(Options{}); err == nil || !strings.Contains(err.Error(), "Progress") {
		t.Errorf("New without Progress: %v", err)
	}
	progress := func() (time.Duration, bool) { return 0, false }
	dev := &fakeDevice{}
	if _, err := New(Options{Device: dev, DevicePath: "/dev/watchdog0", Progress: progress}); err == nil || !strings.Contains(err.Error(), "Timeout is required") {
		t.Errorf("New with a device and no timeout: %v, want an error asking for the timeout", err)
	}
	if dev.timeout != 0 {
		t.Errorf("a timeout of %v was set though none was given", dev.timeout)
	}
	if _, err := New(Options{Progress: progress, Notifier: &fakeNotifier{}}); err != nil {
		t.Errorf("New without a device needs no timeout: %v", err)
	}
	dev = &fakeDevice{setErr: errInjected}
	if _, err := New(Options{Device: dev, Timeout: 10 * time.Second, Progress: progress}); !errors.Is(err, errInjected) {
		t.Errorf("New with a failing SetTimeout: %v", err)
	}
	dev = &fakeDevice{granted: 12 * time.Second}
	k, err := New(Options{Device: dev, DevicePath: "/dev/watchdog0", Timeout: 10 * time.Second, Progress: progress, Boot: BootRecord{BootCount: 3, LastResetReason: ReasonWatchdog}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if dev.timeout != 12*time.Second || k.period != 6*time.Second {
		t.Errorf("granted %v, period %v: want the granted 12s to count", dev.timeout, k.period)
	}
	b, err := json.Marshal(k.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"device":"/dev/watchdog0","identity":"fake watchdog","armed":true,"timeout_s":12,"last_feed":null,"feeding":false,"reason":"not started yet","last_reset_reason":"watchdog","boot_count":3,"systemd":false,"device_feeds":0,"systemd_feeds":0}`
	if string(b) != want {
		t.Errorf("status JSON\n got %s\nwant %s", b, want)
	}
}

func TestServeAfterStopReturns(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	if err := r.k.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := r.k.Serve(context.Background()); err != nil {
		t.Errorf("Serve after Stop: %v", err)
	}
	if r.keepalives() != 0 {
		t.Error("fed after Stop")
	}
}

func readRecord(t *testing.T, dir string) BootRecord {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, bootFile))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := parseBootRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}
