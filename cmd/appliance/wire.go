package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"appliance/config"
	"appliance/control"
	"appliance/health"
	"appliance/hw"
	"appliance/internal/clock"
	"appliance/media"
	"appliance/status"
	"appliance/supervisor"
	"appliance/watchdog"
)

// rootIntensity is how often the root may restart a whole subtree (say,
// media after its workers crash-looped) before it gives up on the unit. It is
// deliberately slower than a subtree's own rule: giving up at the root means
// the box stops feeding its watchdogs and is restarted, then reset.
const (
	rootIntensity = 3
	rootPeriod    = 60 * time.Second
	// rootHeartbeat is how often the root loop shows it is alive when
	// nothing happens; the watchdogs are fed on it.
	rootHeartbeat = 250 * time.Millisecond
	// bootRetry is how often a boot record the disk refused is tried again.
	bootRetry = 10 * time.Second
)

// unit is the wired appliance: one instance per `appliance run`.
type unit struct {
	cfg     *config.Config
	files   configFiles
	listen  string // the status API address in use
	log     *slog.Logger
	clk     clock.Clock
	started time.Time
	events  *supervisor.EventLog
	acts    actionLog // what operators asked of the unit
	health  *health.Tracker
	media   *media.Manager
	hw      *hw.Monitor
	root    *supervisor.Supervisor
	api     *status.Server
	ctl     *control.Server
	keeper  *watchdog.Keeper
	pair    *pairUnit         // nil on a unit that runs alone
	updater *updater          // nil on a unit that does not run from the image
	held    chan []media.Held // a paired unit's held streams, for the pair loop
	exe     string            // this binary, for its children (workers, the pair beacon)
	argv0   string            // the name ps shows them under

	boot        watchdog.BootRecord
	bootUnsaved bool // the disk refused the record; keepBootRecord retries

	reloadMu sync.Mutex // one reload at a time
	running  atomic.Pointer[config.Config]
	gaveUp   atomic.Bool
}

// configFiles are the files a unit's config comes from.
type configFiles struct {
	path string // --config: the default, or the only file; "" for the embedded demo
	unit string // --unit-config: the unit's own, used instead of path when present and good; "" for none
}

func newUnit(cfg *config.Config, files configFiles, exe, argv0 string, clk clock.Clock, log *slog.Logger) (*unit, error) {
	u := &unit{cfg: cfg, files: files, listen: cfg.Status.Listen, log: log, clk: clk, started: clk.Now(), exe: exe, argv0: argv0,
		events: supervisor.NewEventLog(1024), health: health.NewTracker(clk, log)}

	u.running.Store(cfg)
	// This boot is counted, and marked running, before anything else can
	// fail: a crash from here on is never taken for a clean stop.
	u.recordBoot()

	m, err := media.NewManager(media.Options{
		Streams:          streamSpecs(cfg),
		ProgressInterval: time.Duration(cfg.Media.ProgressInterval),
		BatchWindow:      time.Duration(cfg.Media.BatchWindow),
		Workers:          cfg.Media.Workers,
		HangTimeout:      time.Duration(cfg.Media.HangTimeout),
		ReportInterval:   time.Duration(cfg.Media.ReportInterval),
		StandbyRing:      time.Duration(cfg.Media.StandbyRing),
		OutputAlarmAfter: time.Duration(cfg.Media.OutputAlarmAfter),
		Command:          []string{exe, "worker"},
		Argv0:            argv0,
		Alarms:           u.health,
		OnHeld:           u.onHeld(cfg),
		Clock:            clk,
		Logger:           log,
	})
	if err != nil {
		return nil, err
	}
	u.media = m

	// The socket and the API carry actions to the same implementation.
	act := unitActions{u}
	api, err := status.Listen(cfg.Status.Listen, apiOptions(cfg, act), u, log)
	if err != nil {
		m.Close()
		return nil, err
	}
	u.api = api

	ctl, err := control.Listen(cfg.Control.Socket, act, log)
	if err != nil {
		api.Close()
		m.Close()
		return nil, err
	}
	u.ctl = ctl

	links := make([]hw.LinkSpec, 0, len(cfg.HW.Links))
	for _, l := range cfg.HW.Links {
		links = append(links, hw.LinkSpec{Name: l.Name, Role: l.Role})
	}
	u.hw = hw.NewMonitor(hw.Options{
		Sysfs: cfg.HW.Sysfs, WarnC: cfg.HW.Temperature.WarnC, CritC: cfg.HW.Temperature.CritC,
		ClearMarginC: cfg.HW.Temperature.ClearMarginC, Links: links, LinkDebounce: time.Duration(cfg.HW.LinkDebounce),
		PollInterval: time.Duration(cfg.HW.PollInterval),
		Health:       u.health, Clock: clk, Logger: log,
	})

	if cfg.Pair != nil {
		p, err := newPair(u, cfg)
		if err != nil {
			ctl.Close()
			api.Close()
			m.Close()
			return nil, err
		}
		u.pair = p
	}
	events := u.events.Add
	if u.pair != nil {
		events = func(e supervisor.Event) {
			u.events.Add(e)
			u.pair.onEvent(e)
		}
	}

	r := cfg.Media.Restart
	mediaSup := supervisor.New(supervisor.Spec{
		Name:       "media",
		Strategy:   supervisor.OneForOne,
		Intensity:  r.Intensity,
		Period:     time.Duration(r.Period),
		Backoff:    time.Duration(r.Backoff),
		BackoffMax: time.Duration(r.BackoffMax),
		Clock:      clk,
		Events:     events,
		Logger:     log,
	}, m.Children()...)

	children := []supervisor.Child{
		{Name: "hw", Service: u.hw, Restart: supervisor.Permanent, Shutdown: 2 * time.Second},
		{Name: "media", Service: mediaSup, Restart: supervisor.Permanent, Shutdown: 10 * time.Second},
	}
	if u.pair != nil {
		children = append(children, supervisor.Child{Name: "pair", Service: u.pair, Restart: supervisor.Permanent, Shutdown: time.Second})
	}
	for i, ts := range cfg.TestSources {
		g := &media.Generator{To: ts.To.Addr, PPS: ts.PPS, Size: ts.Size, SSRC: ts.SSRC}
		children = append(children, supervisor.Child{
			Name: fmt.Sprintf("test-source-%d", i), Service: g, Restart: supervisor.Permanent, Shutdown: time.Second,
		})
	}
	u.root = supervisor.New(supervisor.Spec{
		Name: "root", Strategy: supervisor.OneForOne, Intensity: rootIntensity, Period: rootPeriod,
		Heartbeat: rootHeartbeat, Clock: clk, Events: events, Logger: log,
	}, children...)

	if up := newUpdater(cfg.Unit.StateDir, clk, log); up != nil {
		dev := cfg.Watchdog.Device
		up.healthy = func() (bool, string) { return unitHealthy(u.Report(), dev) }
		if u.pair != nil {
			up.handover = streamsToPeer(u.media.Streams, func(ctx context.Context, stream string) error {
				_, err := unitActions{u}.Handover(ctx, stream)
				return err
			})
		}
		u.updater = up
	}

	if err := u.openWatchdog(); err != nil {
		if u.pair != nil {
			u.pair.node.Close()
		}
		ctl.Close()
		api.Close()
		m.Close()
		return nil, err
	}
	return u, nil
}

// streamSpecs turns the configured streams into what the media layer takes.
func streamSpecs(cfg *config.Config) []media.StreamSpec {
	out := make([]media.StreamSpec, 0, len(cfg.Streams))
	for _, s := range cfg.Streams {
		// A paired unit starts every stream in standby: the pair decides
		// which unit forwards it. A VIP is bound before it is held.
		spec := media.StreamSpec{Name: s.Name, Input: s.Input.Addr, ClockRate: s.ClockRate,
			Standby: cfg.Pair != nil, FreeBind: s.InputMode == "vip", Group: s.Prefer}
		for _, o := range s.Outputs {
			spec.Outputs = append(spec.Outputs, o.Addr)
		}
		if s.Rewrite != nil {
			spec.RewriteSSRC = s.Rewrite.SSRC
		}
		out = append(out, spec)
	}
	return out
}

// recordBoot counts this boot in the state directory. A record that cannot
// be written is still counted in memory and shown; it is written as soon as
// the disk allows (see keepBootRecord).
func (u *unit) recordBoot() {
	rec, err := watchdog.RecordBoot(u.cfg.Unit.StateDir, 0, false, u.clk.Now())
	if errors.Is(err, watchdog.ErrCorruptState) {
		u.log.Warn("boot record was damaged; counting starts again", "err", err)
	}
	switch {
	case errors.Is(err, watchdog.ErrUnwritable):
		u.bootUnsaved = true
		u.health.Set(health.StateUnwritable.Name, health.Warning, err.Error())
	case err != nil && !errors.Is(err, watchdog.ErrCorruptState):
		u.health.Set(health.StateUnwritable.Name, health.Warning, err.Error())
	}
	u.boot = rec
	u.log.Info("boot", "count", rec.BootCount, "last_reset_reason", rec.LastResetReason)
}

// keepBootRecord writes a boot record the disk refused, until it takes it.
func (u *unit) keepBootRecord(ctx context.Context) {
	if !u.bootUnsaved {
		return
	}
	t := u.clk.NewTicker(bootRetry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			if err := watchdog.SaveBootRecord(u.cfg.Unit.StateDir, u.boot); err != nil {
				continue
			}
			u.log.Info("boot record written")
			u.health.Clear(health.StateUnwritable.Name)
			return
		}
	}
}

// openWatchdog opens the hardware watchdog if one is configured and sets up
// the keeper that feeds both watchdogs. It comes last, as opening the device
// arms it. A configured device that cannot be opened does not stop the
// streams: it is a critical condition that says what to do.
func (u *unit) openWatchdog() error {
	wc := u.cfg.Watchdog
	var dev watchdog.Device
	if wc.Device != "" {
		d, err := watchdog.Open(wc.Device)
		if err != nil {
			u.health.Set(health.WatchdogUnavailable.Name, health.Critical, err.Error())
		} else {
			dev = d
			if bs, err := d.BootStatus(); err == nil && bs&watchdog.CardReset != 0 {
				u.boot.LastResetReason = watchdog.ReasonWatchdog
				if err := watchdog.SaveBootRecord(u.cfg.Unit.StateDir, u.boot); err != nil {
					u.bootUnsaved = true
				}
				u.log.Info("the hardware watchdog reset this box", "count", u.boot.BootCount)
			}
		}
	}
	rec := u.boot
	interval, _ := watchdog.SystemdWatchdogInterval()
	opts := watchdog.Options{
		Device: dev, DevicePath: wc.Device, Timeout: time.Duration(wc.Timeout),
		Notifier: watchdog.SystemdNotifier(), SystemdInterval: interval,
		Progress: u.root.Progress, Status: u.summary, Boot: rec, StateDir: u.cfg.Unit.StateDir,
		Clock: u.clk, Logger: u.log,
	}
	k, err := watchdog.New(opts)
	if err != nil && dev != nil {
		// The device refused the timeout: disarm it and go on without it,
		// as when it cannot be opened.
		u.health.Set(health.WatchdogUnavailable.Name, health.Critical, err.Error())
		if derr := dev.Disarm(); derr != nil {
			u.log.Error("disarming the watchdog device", "err", derr)
		}
		opts.Device = nil
		k, err = watchdog.New(opts)
	}
	if err != nil {
		return fmt.Errorf("watchdog keeper: %w", err)
	}
	u.keeper = k
	return nil
}

// summary is the one-line state systemd shows in `systemctl status`.
func (u *unit) summary() string {
	running := 0
	streams := u.media.Streams()
	for _, s := range streams {
		if s.State == "running" {
			running++
		}
	}
	line := fmt.Sprintf("%d/%d streams running, %d workers", running, len(streams), u.cfg.Media.Workers)
	if act := u.health.Active(); len(act) > 0 {
		line += fmt.Sprintf("; %s: %s", act[0].Severity, act[0].Name)
		if len(act) > 1 {
			line += fmt.Sprintf(" (+%d more)", len(act)-1)
		}
	} else {
		line += "; healthy"
	}
	return line
}

// run serves until ctx ends. If the root gives up, the API stays up to say
// so and the watchdogs go hungry, so that systemd and then the hardware
// take the next rungs of the ladder.
func (u *unit) run(ctx context.Context) error {
	defer u.media.Close()
	apiCtx, stopAPI := context.WithCancel(context.Background())
	if u.updater != nil {
		// Before the socket and the API take an update.
		u.updater.start(apiCtx)
	}
	apiDone := make(chan error, 1)
	go func() { apiDone <- u.api.Serve(apiCtx) }()
	ctlDone := make(chan error, 1)
	go func() { ctlDone <- u.ctl.Serve(apiCtx) }()
	go u.keepBootRecord(apiCtx)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			u.reloadOnSignal()
		}
	}()

	u.log.Info("appliance running", "unit", u.cfg.Unit.Name, "version", version,
		"status", "http://"+u.api.Addr().String(), "streams", len(u.cfg.Streams), "workers", u.cfg.Media.Workers)

	rootDone := make(chan error, 1)
	go func() { rootDone <- u.root.Serve(ctx) }()
	// The keeper judges the root by its progress: start it once the root
	// has begun, so the first judgement is not "has not started".
	select {
	case <-u.root.Started():
	case <-ctx.Done():
	}
	keeperDone := make(chan error, 1)
	go func() { keeperDone <- u.keeper.Serve(context.Background()) }()

	rootErr := <-rootDone
	if rootErr != nil && ctx.Err() == nil {
		u.gaveUp.Store(true)
		u.media.SetStopped(true)
		u.health.Set(health.SupervisorGaveUp.Name, health.Critical, rootErr.Error())
		u.log.Error("supervision root gave up; the watchdogs are no longer fed", "err", rootErr)
		<-ctx.Done()
	}
	// A stop we were asked for: say so to systemd, disarm the hardware
	// watchdog and note the clean stop for the next boot.
	if err := u.keeper.Stop(); err != nil {
		u.log.Warn("stopping the watchdog keeper", "err", err)
	}
	<-keeperDone
	stopAPI()
	<-ctlDone
	if err := <-apiDone; err != nil {
		return err
	}
	u.log.Info("appliance stopped")
	return nil
}

// reloadOnSignal answers SIGHUP the way `appliance reload` is answered.
func (u *unit) reloadOnSignal() { _, _ = u.Reload(context.Background()) }

// unitConfigChosen reports which file the unit runs on, and raises
// unit-config.invalid when its own file is there but unusable: the unit then
// runs on the default, alive and feeding its watchdogs, carrying nothing of
// its own, and the API says what is wrong with the file and what to do.
func (u *unit) unitConfigChosen(c config.Choice) {
	if u.files.unit == "" {
		return
	}
	if !c.Fallback() {
		u.health.Clear(health.UnitConfigInvalid.Name)
		u.log.Info("config", "file", c.Path)
		return
	}
	u.health.Set(health.UnitConfigInvalid.Name, health.Critical, unitConfigProblem(u.files, c.UnitErr))
	u.log.Error("the unit's own config cannot be used; running on the default, carrying none of its streams",
		"unit_config", u.files.unit, "default", u.files.path, "problems", c.UnitErr.Error())
}

// unitConfigProblem is the operator's message for a unit config that cannot
// be used: which file, every problem, what the unit does meanwhile and what
// to do.
func unitConfigProblem(f configFiles, err error) string {
	return fmt.Sprintf("the unit's config %s cannot be used, so this unit runs on the default %s and carries none of its own streams: %v; "+
		"fix or replace the file (`appliance check --config %s --unit-config %s` lists every problem), then restart the service (systemctl restart appliance)",
		f.unit, f.path, strings.ReplaceAll(err.Error(), "\n", "; "), f.path, f.unit)
}

// Reload implements control.Actions: it reads the config file again (with a
// unit config: chooses again between it and the default) and applies its
// streams live. Streams that did not change are not touched. A file with
// problems changes nothing; the error lists every problem with its line.
// Other changed settings are named: only a restart applies them.
func (u *unit) Reload(ctx context.Context) (control.ReloadResult, error) {
	if u.files.path == "" {
		return control.ReloadResult{}, errors.New("the unit runs on the embedded demo config; there is no file to reload (start it with --config FILE)")
	}
	u.reloadMu.Lock()
	defer u.reloadMu.Unlock()
	var out control.ReloadResult
	var chosen config.Choice
	err := u.keeper.Reloading(func() error {
		c, err := config.LoadUnit(u.files.path, u.files.unit, machineEnv())
		if err != nil {
			return err
		}
		if c.Fallback() {
			return fmt.Errorf("%w\n%s cannot be used: nothing changed (fix it and reload again)", c.UnitErr, u.files.unit)
		}
		chosen = c
		cfg := c.Config
		cur := u.running.Load()
		cfg.Status.Listen = u.listen // --listen outranks the file, as at start
		if u.pair != nil {
			if err := samePairStreams(cur, cfg); err != nil {
				return err
			}
		}
		res, err := u.media.Apply(ctx, streamSpecs(cfg))
		if err != nil {
			return err
		}
		next := *cur
		next.Streams = cfg.Streams
		u.running.Store(&next)
		out = control.ReloadResult{Added: res.Added, Removed: res.Removed, Changed: res.Changed, Unchanged: res.Unchanged,
			Failed: res.Failed, RestartNeeded: config.RestartNeeded(cur, cfg)}
		if out.RestartNeeded == nil {
			out.RestartNeeded = []string{}
		}
		return nil
	})
	if err != nil {
		u.log.Error("reload: nothing changed", "problems", err.Error())
		return out, err
	}
	u.unitConfigChosen(chosen)
	u.log.Info("reload applied", "added", out.Added, "removed", out.Removed, "changed", out.Changed,
		"failed", out.Failed, "restart_needed", out.RestartNeeded)
	return out, nil
}

// samePairStreams refuses a reload that would change what the pair decides
// on: both units' state machines index the same stream list and compare a
// digest of it, and the machine is built once, at start. Such a change
// takes a restart of each unit in turn.
func samePairStreams(cur, next *config.Config) error {
	key := func(c *config.Config) []string {
		var out []string
		for _, s := range c.Streams {
			vip := ""
			if s.VIP != nil {
				vip = s.VIP.Address.String() + "@" + s.VIP.Interface
			}
			out = append(out, fmt.Sprintf("%s %s %s %s %d", s.Name, s.InputMode, vip, s.Prefer, s.Priority))
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(key(cur), key(next)) {
		return errors.New("this unit is paired: adding or removing streams, or changing an input_mode, vip, prefer or priority, needs a restart (restart one unit, then the other; the streams move to the peer meanwhile); outputs and rewrite reload live")
	}
	return nil
}

// SetRole implements control.Actions.
func (u *unit) SetRole(ctx context.Context, stream, role string, from *uint16) (control.RoleResult, error) {
	if u.pair != nil {
		return control.RoleResult{}, errors.New("this unit is paired: the pair decides which unit forwards a stream; use `appliance handover STREAM` on the unit that forwards it")
	}
	r, err := u.media.SetRole(ctx, stream, role, from)
	if err != nil {
		return control.RoleResult{}, err
	}
	return control.RoleResult{LastForwarded: r.LastForwarded, Replayed: r.Replayed}, nil
}

// State implements status.Source: constant work, for /healthz.
func (u *unit) State() string {
	if u.gaveUp.Load() {
		return "failed"
	}
	return "running"
}

// Report implements status.Source.
func (u *unit) Report() status.Report {
	state := u.State()
	now := u.clk.Now()
	rep := status.Report{
		Unit: status.Unit{
			Name: u.cfg.Unit.Name, Version: version, Started: u.started,
			UptimeS: now.Sub(u.started).Seconds(), State: state,
		},
		Streams:    u.media.Streams(),
		Supervisor: u.root.Snapshot(),
		Hardware:   u.hw.Snapshot(),
		Health:     u.health.Active(),
		Watchdog:   u.keeper.Snapshot(),
		Workers:    u.media.Workers(),
		Events: status.MergeEvents(status.MaxEvents,
			status.SupervisorEvents(u.events.Recent(status.MaxEvents)), status.HealthEvents(u.health.Events(status.MaxEvents)), u.acts.recent()),
	}
	// The API speaks of the pair's roles: a stream is active where it is
	// forwarded, standby where it is held.
	for i := range rep.Streams {
		s := &rep.Streams[i]
		if s.Role == media.RoleForward {
			s.Role = "active"
		}
		s.Owner = u.cfg.Unit.Name
	}
	if u.pair != nil {
		u.pair.report(&rep)
	}
	if u.updater != nil {
		rep.Slots = u.updater.snapshot()
	}
	return rep
}
