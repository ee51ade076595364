package watchdog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"appliance/internal/clock"
)

// Options configure a Keeper.
type Options struct {
	Device     Device        // nil: no hardware watchdog
	DevicePath string        // shown in the status only
	Timeout    time.Duration // hardware timeout to ask for; required with a Device

	Notifier        Notifier      // nil: no systemd at all
	SystemdInterval time.Duration // WATCHDOG_USEC; 0: systemd's watchdog is off (READY, STATUS, STOPPING still go out)

	// Progress reports the supervision root's last turn, as a reading of
	// Clock's Mono() (0 before the first), and whether it gave up:
	// (*supervisor.Supervisor).Progress, with the same clock. Required.
	Progress func() (last time.Duration, gaveUp bool)
	// Stale is how old progress may be and still count as alive. It must be
	// longer than the root's heartbeat. Default: half the shorter of the
	// hardware timeout and the systemd interval, 2s if neither is in use.
	Stale time.Duration
	// Status returns a one-line summary for systemd's STATUS=; may be nil.
	Status func() string

	Boot     BootRecord // this boot, from RecordBoot, for the status
	StateDir string     // where Stop marks a clean stop; "" for nowhere

	Clock  clock.Clock  // clock.Real() if nil
	Logger *slog.Logger // slog.Default() if nil
}

// Status is the keeper's state for the status API.
type Status struct {
	Device           string     `json:"device"`
	Identity         string     `json:"identity,omitempty"`
	Armed            bool       `json:"armed"` // the hardware watchdog is counting down
	TimeoutS         float64    `json:"timeout_s"`
	LastFeed         *time.Time `json:"last_feed"`
	Feeding          bool       `json:"feeding"`
	Reason           string     `json:"reason,omitempty"` // why not feeding
	LastResetReason  string     `json:"last_reset_reason"`
	BootCount        int        `json:"boot_count"`
	Systemd          bool       `json:"systemd"` // systemd's watchdog is fed too
	SystemdIntervalS float64    `json:"systemd_interval_s,omitempty"`
	// DeviceFeeds and SystemdFeeds count the feeds each watchdog took
	// (a keepalive, a WATCHDOG=1) since the keeper started.
	DeviceFeeds  uint64 `json:"device_feeds"`
	SystemdFeeds uint64 `json:"systemd_feeds"`
}

// gate is the verdict of one step.
type gate int

const (
	gateUnset gate = iota
	gateOK
	gateNotStarted
	gateStuck
	gateGaveUp
)

// what says, without numbers, why the keeper is not feeding.
func (g gate) what() string {
	switch g {
	case gateNotStarted:
		return "supervision root has not started"
	case gateStuck:
		return "supervision root stuck"
	case gateGaveUp:
		return "supervision root gave up"
	}
	return ""
}

// device lifecycle
const (
	devNone      = iota // no hardware watchdog
	devOpen             // open and counting down
	devDisarmed         // magic-closed by Stop
	devAbandoned        // closed without disarming: it will fire
)

// Keeper feeds the watchdogs while the supervision root is healthy.
type Keeper struct {
	o        Options
	clk      clock.Clock
	log      *slog.Logger
	timeout  time.Duration // granted by the driver; 0 without a device
	period   time.Duration // between steps
	stale    time.Duration
	identity string
	sdDog    bool // feed systemd's watchdog

	devMu    sync.Mutex // serializes device calls with Stop and the end of Serve
	devState int

	serving  atomic.Bool
	stopping atomic.Bool
	stopOnce sync.Once
	stopErr  error
	stopped  chan struct{}

	// Owned by the step, which only Serve runs.
	gaveUp     bool // latched: a root that gave up is never trusted again
	lastGate   gate
	readySent  bool
	statusSent string
	feedErr    string

	mu           sync.Mutex // guards the fields Snapshot reads
	lastFeed     time.Time
	feeding      bool
	reason       string
	deviceFeeds  uint64
	systemdFeeds uint64
}

// New sets the hardware timeout and returns a keeper ready to Serve. The
// device stays open either way; on error the caller decides its fate.
func New(o Options) (*Keeper, error) {
	if o.Progress == nil {
		return nil, errors.New("watchdog: Options.Progress is required: the keeper feeds only on the supervision root's progress")
	}
	if o.Timeout < 0 || o.SystemdInterval < 0 || o.Stale < 0 {
		return nil, fmt.Errorf("watchdog: negative duration (timeout %v, systemd interval %v, stale %v)", o.Timeout, o.SystemdInterval, o.Stale)
	}
	if o.Device != nil && o.Timeout == 0 {
		return nil, fmt.Errorf("watchdog: Options.Timeout is required with a device (%s): pass the configured watchdog timeout", o.DevicePath)
	}
	k := &Keeper{o: o, clk: o.Clock, log: o.Logger, stopped: make(chan struct{}), reason: "not started yet"}
	if k.clk == nil {
		k.clk = clock.Real()
	}
	if k.log == nil {
		k.log = slog.Default()
	}
	k.log = k.log.With("component", "watchdog")
	k.sdDog = o.Notifier != nil && o.SystemdInterval > 0

	if o.Device != nil {
		granted, err := o.Device.SetTimeout(o.Timeout)
		if err != nil {
			return nil, fmt.Errorf("watchdog: setting the timeout of %s to %v: %w", o.DevicePath, o.Timeout, err)
		}
		if granted <= 0 {
			granted = o.Timeout
		}
		if granted != o.Timeout {
			k.log.Warn("the driver granted another timeout than asked", "device", o.DevicePath, "asked", o.Timeout, "granted", granted)
		}
		k.timeout, k.devState = granted, devOpen
		if id, err := o.Device.Identity(); err == nil {
			k.identity = id
		}
		if d, ok := o.Device.(interface{ magicClose() bool }); ok && !d.magicClose() {
			k.log.Warn("the driver has no magic close: closing the device stops it, so a crash of the appliance does not reset the box, only a hang does", "device", o.DevicePath)
		}
	}

	shortest := k.timeout
	if k.sdDog && (shortest == 0 || o.SystemdInterval < shortest) {
		shortest = o.SystemdInterval
	}
	k.period, k.stale = time.Second, 2*time.Second
	if shortest > 0 {
		k.period = max(shortest/2, time.Millisecond)
		k.stale = k.period
	}
	if o.Stale > 0 {
		k.stale = o.Stale
	}
	return k, nil
}

// Serve feeds the watchdogs until ctx ends or Stop is called. It returns nil
// either way. When ctx ends it closes the device without disarming it: a stop
// the keeper did not choose must let the hardware watchdog fire. Call Stop
// first for an orderly shutdown.
func (k *Keeper) Serve(ctx context.Context) error {
	if !k.serving.CompareAndSwap(false, true) {
		return errors.New("watchdog: Serve is already running")
	}
	defer k.serving.Store(false)
	select {
	case <-k.stopped:
		return nil
	default:
	}
	k.devMu.Lock()
	abandoned := k.devState == devAbandoned
	k.devMu.Unlock()
	if abandoned {
		return fmt.Errorf("watchdog: %s: %w", k.o.DevicePath, ErrClosed)
	}

	k.log.Info("watchdog keeper running", "device", k.o.DevicePath, "timeout", k.timeout,
		"systemd_interval", k.o.SystemdInterval, "period", k.period, "stale", k.stale)
	k.step(k.clk.Now())
	// A timer re-armed after each step rather than a ticker: a step that
	// overran is not followed by a burst, and a fake clock shows when a step
	// is done (the timer is pending again).
	t := k.clk.NewTimer(k.period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			k.abandon()
			return nil
		case <-k.stopped:
			return nil
		case now := <-t.C():
			k.step(now)
			t.Reset(k.period)
		}
	}
}

// step judges the root and feeds the watchdogs only if it is healthy. now is
// the wall time, only to show when the watchdogs were last fed.
func (k *Keeper) step(now time.Time) {
	if k.stopping.Load() {
		return
	}
	g, reason := k.judge(k.clk.Mono())
	ok := g == gateOK
	var devFed, sdFed bool
	if ok {
		devFed, sdFed = k.feed()
		if !k.readySent && k.o.Notifier != nil {
			if err := k.o.Notifier.Notify("READY=1"); err != nil {
				k.log.Error("telling systemd the unit is ready", "err", err)
			} else {
				k.readySent = true
			}
		}
	}
	k.sendStatus(g)

	if g != k.lastGate {
		switch {
		case ok && k.lastGate == gateUnset:
			k.log.Info("feeding the watchdogs")
		case ok:
			k.log.Info("supervision root is moving again; feeding the watchdogs")
		case g == gateNotStarted:
			k.log.Warn("not feeding the watchdogs", "reason", reason)
		default:
			k.log.Error("not feeding the watchdogs: systemd will restart the service and the hardware will reset the box", "reason", reason)
		}
		k.lastGate = g
	}

	k.mu.Lock()
	defer k.mu.Unlock()
	k.feeding, k.reason = ok, reason
	if devFed {
		k.deviceFeeds++
	}
	if sdFed {
		k.systemdFeeds++
	}
	if devFed || sdFed {
		k.lastFeed = now
	}
}

// judge decides whether the root is healthy, at now on the monotonic clock.
// The root's progress is on the same clock, so its age is a plain
// difference, whatever happens to the wall clock; a root stuck before the
// keeper started is as old as it looks.
func (k *Keeper) judge(now time.Duration) (gate, string) {
	last, gaveUp := k.o.Progress()
	k.gaveUp = k.gaveUp || gaveUp
	if k.gaveUp {
		return gateGaveUp, gateGaveUp.what()
	}
	if last == 0 {
		return gateNotStarted, gateNotStarted.what()
	}
	if age := now - last; age > k.stale {
		return gateStuck, fmt.Sprintf("%s for %v", gateStuck.what(), age.Round(100*time.Millisecond))
	}
	return gateOK, ""
}

// feed keeps both watchdogs quiet and reports which were fed.
func (k *Keeper) feed() (device, systemd bool) {
	var errs []error
	k.devMu.Lock()
	if k.devState == devOpen {
		if err := k.o.Device.Keepalive(); err != nil {
			errs = append(errs, err)
		} else {
			device = true
		}
	}
	k.devMu.Unlock()
	if k.sdDog {
		if err := k.o.Notifier.Notify("WATCHDOG=1"); err != nil {
			errs = append(errs, fmt.Errorf("pinging systemd: %w", err))
		} else {
			systemd = true
		}
	}
	// Log a failure when it starts or changes, not at every step.
	err := errors.Join(errs...)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != k.feedErr {
		if err != nil {
			k.log.Error("feeding the watchdogs failed", "err", err)
		} else {
			k.log.Info("feeding the watchdogs works again")
		}
		k.feedErr = msg
	}
	return device, systemd
}

// sendStatus sends STATUS= when the line changed.
func (k *Keeper) sendStatus(g gate) {
	if k.o.Notifier == nil {
		return
	}
	line := ""
	if k.o.Status != nil {
		line = k.o.Status()
	}
	if g != gateOK {
		if line == "" {
			line = "not feeding the watchdogs: " + g.what()
		} else {
			line = "not feeding the watchdogs: " + g.what() + "; " + line
		}
	}
	if line == k.statusSent {
		return
	}
	if err := k.o.Notifier.Notify("STATUS=" + line); err != nil {
		k.log.Warn("sending the status to systemd", "err", err)
		return
	}
	k.statusSent = line
}

// abandon closes the device without disarming it.
func (k *Keeper) abandon() {
	k.devMu.Lock()
	defer k.devMu.Unlock()
	if k.devState != devOpen {
		return
	}
	k.devState = devAbandoned
	if err := k.o.Device.Close(); err != nil {
		k.log.Error("closing the watchdog device", "err", err)
	}
	k.log.Warn("stopped without a clean stop: the hardware watchdog stays armed and resets the box unless the appliance is back in time",
		"device", k.o.DevicePath, "timeout", k.timeout)
	k.mu.Lock()
	k.feeding, k.reason = false, "keeper stopped without a clean stop; the hardware watchdog will fire"
	k.mu.Unlock()
}

// Stop is the deliberate, clean stop: it tells systemd the service is
// stopping, disarms the hardware watchdog (magic close), marks a clean stop in
// Options.StateDir and makes Serve return. Call it before cancelling Serve's
// context: once that has closed the device, it can no longer be disarmed.
// Only the first call does anything; later ones return its result.
func (k *Keeper) Stop() error {
	k.stopOnce.Do(func() {
		k.stopping.Store(true)
		var errs []error
		if k.o.Notifier != nil {
			if err := k.o.Notifier.Notify("STOPPING=1"); err != nil {
				errs = append(errs, fmt.Errorf("telling systemd: %w", err))
			}
		}
		disarmed := true
		k.devMu.Lock()
		switch k.devState {
		case devOpen:
			if err := k.o.Device.Disarm(); err != nil {
				disarmed = false
				errs = append(errs, err)
			}
			k.devState = devDisarmed
		case devAbandoned:
			disarmed = false
			errs = append(errs, fmt.Errorf("disarming %s: %w without disarming it when Serve's context ended: it will fire", k.o.DevicePath, ErrClosed))
		}
		k.devMu.Unlock()
		// A clean stop is recorded only if the watchdog will not fire: if it
		// does, the next boot learns that from the device anyway.
		if disarmed && k.o.StateDir != "" {
			if err := MarkCleanStop(k.o.StateDir); err != nil {
				errs = append(errs, err)
			}
		}
		k.mu.Lock()
		k.feeding = false
		if disarmed {
			k.reason = "stopped cleanly"
		} else {
			k.reason = "stopped, but the hardware watchdog could not be disarmed: it will fire"
		}
		k.mu.Unlock()
		k.stopErr = errors.Join(errs...)
		if k.stopErr != nil {
			k.log.Error("clean stop", "err", k.stopErr)
		} else {
			k.log.Info("clean stop: the watchdogs are disarmed")
		}
		close(k.stopped)
	})
	return k.stopErr
}

// Reloading tells systemd that the service reloads its configuration while
// fn runs (RELOADING=1 with MONOTONIC_USEC=, then READY=1), and returns fn's
// error. READY=1 follows a failed reload too: the old configuration serves on.
func (k *Keeper) Reloading(fn func() error) error {
	n := k.o.Notifier
	if n != nil {
		if err := n.Notify(reloadingMessage()); err != nil {
			k.log.Warn("telling systemd about the reload", "err", err)
		}
	}
	err := fn()
	if n != nil {
		if nerr := n.Notify("READY=1"); nerr != nil {
			k.log.Warn("telling systemd the reload is done", "err", nerr)
		}
	}
	return err
}

// Snapshot returns the keeper's state for the status API.
func (k *Keeper) Snapshot() Status {
	k.devMu.Lock()
	armed := k.devState == devOpen || k.devState == devAbandoned
	k.devMu.Unlock()
	k.mu.Lock()
	defer k.mu.Unlock()
	s := Status{
		Device:          k.o.DevicePath,
		Identity:        k.identity,
		Armed:           armed,
		TimeoutS:        k.timeout.Seconds(),
		Feeding:         k.feeding,
		LastResetReason: k.o.Boot.LastResetReason,
		BootCount:       k.o.Boot.BootCount,
		Systemd:         k.sdDog,
		DeviceFeeds:     k.deviceFeeds,
		SystemdFeeds:    k.systemdFeeds,
	}
	if !k.feeding {
		s.Reason = k.reason
	}
	if !k.lastFeed.IsZero() {
		t := k.lastFeed
		s.LastFeed = &t
	}
	if k.sdDog {
		s.SystemdIntervalS = k.o.SystemdInterval.Seconds()
	}
	return s
}
