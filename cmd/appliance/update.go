package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"appliance/control"
	"appliance/internal/clock"
	"appliance/media"
	"appliance/status"
	"appliance/update"

	"golang.org/x/sys/unix"
)

// Where the appliance image keeps what an update needs (image/build.sh;
// docs/image.md, "Update and rollback").
const (
	updateKeyPath = "/usr/share/appliance/update.pub"
	// rebootRequest is created to ask for a reboot: appliance-reboot.path
	// (root) reboots. The appliance itself may not.
	rebootRequest = "/run/appliance/reboot"
	// trialDeadline is how long the trial boot of a new slot has to be
	// healthy, from the start of `appliance trial`; then it reboots, and
	// the old slot boots.
	trialDeadline = 3 * time.Minute
	// trialPoll is how often a trial boot looks at the unit's health.
	trialPoll = time.Second
)

// imageLayout is the image's: the boot partition at /boot, the slots by
// their GPT names.
func imageLayout(stateDir string) update.Layout {
	l := update.Layout{Boot: "/boot", Cmdline: "/proc/cmdline", State: stateDir,
		Devices: map[string]string{}, PartUUID: map[string]string{}}
	for _, s := range update.Slots {
		dev := "/dev/disk/by-partlabel/root-" + s
		l.Devices[s] = dev
		l.PartUUID[s] = partUUID(dev)
	}
	return l
}

// partUUID is the GUID of the partition dev, from udev's by-partuuid links.
func partUUID(dev string) string {
	target, err := filepath.EvalSymlinks(dev)
	if err != nil {
		return ""
	}
	des, _ := os.ReadDir("/dev/disk/by-partuuid")
	for _, de := range des {
		if t, err := filepath.EvalSymlinks(filepath.Join("/dev/disk/by-partuuid", de.Name())); err == nil && t == target {
			return de.Name()
		}
	}
	return ""
}

// updater writes update bundles to the slot that is not running and judges
// the trial boot of a new slot. One per unit that runs from the image.
type updater struct {
	l        update.Layout
	pub      ed25519.PublicKey
	version  string // this slot's image version
	clk      clock.Clock
	log      *slog.Logger
	healthy  func() (bool, string)           // is the unit healthy, and if not, why
	handover func(ctx context.Context) error // a paired unit's planned handover of its streams; nil alone
	reboot   func() error                    // asks for the reboot into the written slot

	life     context.Context // the unit's: an update runs until it ends
	busy     atomic.Bool
	progress atomic.Pointer[status.UpdateProgress]
	done     atomic.Int64 // bytes of the current pass
	slots    atomic.Pointer[status.Slots]
	trial    atomic.Bool   // this boot is a trial not yet committed
	judged   chan struct{} // closed once a trial is judged (tests)
}

// newUpdater returns the unit's updater, or nil when the unit does not run
// from the image (no update key).
func newUpdater(stateDir string, clk clock.Clock, log *slog.Logger) *updater {
	pub, err := update.ReadPublicKey(updateKeyPath)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("update key unreadable: updates are refused", "err", err)
		}
		return nil
	}
	return &updater{l: imageLayout(stateDir), pub: pub, version: version, clk: clk, log: log,
		reboot: func() error { return os.WriteFile(rebootRequest, []byte("update\n"), 0o640) }}
}

// start settles the record of the last update at the unit's start (see
// update.Resolve) and, on a trial boot, judges it until ctx ends.
func (up *updater) start(ctx context.Context) {
	up.life = ctx
	up.judged = make(chan struct{})
	running, err := up.l.Running()
	entries, eerr := up.l.Entries()
	if err == nil && eerr == nil {
		rec, ok, rerr := update.ReadRecord(up.l.State)
		if rerr != nil {
			up.log.Warn("update record unreadable; the next update replaces it", "err", rerr)
		}
		if ok {
			note, haveNote := update.ReadTrialNote(up.l.State)
			if next, changed, _ := update.Resolve(rec, running, entries, note, haveNote, up.clk.Now()); changed {
				up.writeRecord(next)
				up.log.Info("last update", "outcome", next.Outcome, "version", next.Version, "slot", next.Slot, "reason", next.Reason)
			}
		}
		if e, ok := entries[running]; ok && e.Counted {
			up.trial.Store(true)
			go up.judge(ctx, e)
		} else {
			close(up.judged)
		}
	} else {
		close(up.judged)
	}
	up.refresh()
}

// judge commits this trial boot once the unit is healthy: the slot's entry
// loses its counter. Until then nothing is decided here: appliance-trial
// reboots the unit at its deadline, and the old slot boots.
func (up *updater) judge(ctx context.Context, e update.Entry) {
	defer close(up.judged)
	up.log.Info("trial boot: the slot is committed once the unit is healthy", "slot", e.Slot, "version", e.Version)
	t := up.clk.NewTicker(trialPoll)
	defer t.Stop()
	why := ""
	for {
		ok, w := up.healthy()
		if ok {
			break
		}
		if w != why {
			up.log.Info("trial boot: not healthy yet", "why", w)
			why = w
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
	if err := up.l.Bless(e); err != nil {
		up.log.Error("trial boot: healthy, but the slot could not be committed; the next boot goes back to the old slot", "err", err)
		return
	}
	up.trial.Store(false)
	rec, ok, _ := update.ReadRecord(up.l.State)
	if ok && rec.Slot == e.Slot && rec.Outcome == update.Trial {
		rec.Outcome, rec.Reason, rec.Finished = update.Committed, "", up.clk.Now()
		up.writeRecord(rec)
	}
	up.log.Info("trial boot: healthy; slot committed", "slot", e.Slot, "version", e.Version)
	up.refresh()
}

func (up *updater) writeRecord(r update.Record) {
	if err := update.WriteRecord(up.l.State, r); err != nil {
		up.log.Error("writing the update record", "err", err)
	}
}

// Update implements control.Updater: it starts an update from bundle and
// answers at once; the status report follows it.
func (up *updater) Update(ctx context.Context, bundle string) (control.UpdateResult, error) {
	src, err := update.SourceFor(bundle)
	if err != nil {
		return control.UpdateResult{}, control.Mark(control.ErrInvalid, err)
	}
	running, err := up.l.Running()
	if err != nil {
		return control.UpdateResult{}, err
	}
	if up.trial.Load() {
		return control.UpdateResult{}, fmt.Errorf("this boot is the trial of slot %s, not yet committed: wait until the API shows it committed, then update", running)
	}
	if !up.busy.CompareAndSwap(false, true) {
		return control.UpdateResult{}, errors.New("an update is already under way: GET /api/v1/status shows it (slots.update)")
	}
	target := update.Other(running)
	p := &status.UpdateProgress{Bundle: bundle, State: "checking", Slot: target, Started: up.clk.Now()}
	up.done.Store(0)
	up.progress.Store(p)
	go up.run(src, running, p)
	return control.UpdateResult{Bundle: bundle, Slot: target, From: running, State: p.State}, nil
}

// run is one update: check, hand over, write, reboot. It hashes and copies
// hundreds of MiB: it runs on a thread of its own at the lowest priority
// (nice 19), so that it never holds up the supervision loop, the watchdog
// feeds or the API (a starved unit is restarted by systemd's watchdog).
// The thread ends with the goroutine.
func (up *updater) run(src update.Source, running string, p *status.UpdateProgress) {
	defer up.busy.Store(false)
	runtime.LockOSThread()
	if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19); err != nil {
		up.log.Warn("update: could not lower its priority", "err", err)
	}
	ctx := up.life
	rec := update.Record{Slot: p.Slot, From: running, FromVersion: up.version, Started: p.Started, Outcome: update.Checking}
	up.writeRecord(rec)
	fail := func(err error) {
		rec.Outcome, rec.Reason, rec.Finished = update.Failed, err.Error(), up.clk.Now()
		up.writeRecord(rec)
		up.progress.Store(nil)
		up.log.Error("update failed", "bundle", src.String(), "err", err)
		up.refresh()
	}
	count := func(n int64) { up.done.Add(n) }
	m, signed, err := update.Check(ctx, src, up.pub, up.l, count)
	if err != nil {
		fail(err)
		return
	}
	rec.Version = m.Version
	var total int64
	for _, part := range m.Parts {
		total += part.Size
	}
	step := func(state string) {
		q := *p
		q.State, q.Version, q.TotalBytes = state, m.Version, total
		up.done.Store(0)
		up.progress.Store(&q)
	}
	if up.handover != nil {
		step("handover")
		if err := up.handover(ctx); err != nil {
			fail(fmt.Errorf("the streams could not be handed to the peer first (%w); nothing was written", err))
			return
		}
	}
	step("writing")
	rec.Outcome = update.Writing
	up.writeRecord(rec)
	if _, err := update.Write(ctx, src, up.pub, up.l, signed, count); err != nil {
		fail(err)
		return
	}
	_ = os.Remove(filepath.Join(up.l.State, update.TrialFile)) // a note from an earlier trial is not this one's
	rec.Outcome = update.Trial
	up.writeRecord(rec)
	up.log.Info("update written; rebooting into it for its trial", "slot", p.Slot, "version", m.Version)
	step("rebooting")
	up.refresh()
	if err := up.reboot(); err != nil {
		up.log.Error("asking for the reboot; reboot the unit to try the new slot", "err", err)
	}
}

// refresh publishes the slots as the disk has them.
func (up *updater) refresh() {
	s := &status.Slots{}
	running, err := up.l.Running()
	entries, eerr := up.l.Entries()
	s.Running = running
	if err = errors.Join(err, eerr); err != nil {
		s.Error = err.Error()
	}
	for _, name := range update.Slots {
		sl := status.Slot{Name: name, Running: name == running}
		if e, ok := entries[name]; ok {
			// The running slot's counter is at 0 during its own trial
			// boot: it is on trial, not bad.
			sl.Version, sl.Committed, sl.Bad, sl.Generation = e.Version, e.Committed(), e.Bad() && name != running, e.Generation
			if e.Counted {
				left := e.Left
				sl.TriesLeft = &left
			}
		}
		s.Slots = append(s.Slots, sl)
	}
	if rec, ok, _ := update.ReadRecord(up.l.State); ok {
		lu := &status.LastUpdate{Version: rec.Version, Slot: rec.Slot, From: rec.From, FromVersion: rec.FromVersion,
			Outcome: rec.Outcome, Reason: rec.Reason, Started: rec.Started}
		if !rec.Finished.IsZero() {
			f := rec.Finished
			lu.Finished = &f
		}
		s.LastUpdate = lu
	}
	up.slots.Store(s)
}

// snapshot is the slots section of the status report.
func (up *updater) snapshot() *status.Slots {
	s := up.slots.Load()
	if s == nil {
		return nil
	}
	out := *s
	if p := up.progress.Load(); p != nil {
		q := *p
		q.DoneBytes = up.done.Load()
		out.Update = &q
	}
	return &out
}

// unitHealthy is what a trial boot waits for: the supervision tree
// running, every stream this unit forwards carrying, and the watchdog fed.
func unitHealthy(rep status.Report, watchdogDevice string) (bool, string) {
	if rep.Unit.State != "running" || rep.Supervisor.State != "running" {
		return false, fmt.Sprintf("supervision %s", rep.Supervisor.State)
	}
	for _, s := range rep.Streams {
		if s.Role != "standby" && s.State != "running" {
			return false, fmt.Sprintf("stream %s is %s", s.Name, s.State)
		}
	}
	w := rep.Watchdog
	if !w.Feeding || (watchdogDevice != "" && (!w.Armed || w.DeviceFeeds == 0)) {
		return false, "the watchdog is not fed yet"
	}
	return true, ""
}

// streamsToPeer is a paired unit's planned handover before an update:
// every stream it forwards goes to the peer, one by one, as `appliance
// handover` would hand it.
func streamsToPeer(streams func() []media.StreamStatus, handover func(ctx context.Context, stream string) error) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		for _, s := range streams() {
			if s.Role != media.RoleForward {
				continue
			}
			if err := handover(ctx, s.Name); err != nil {
				return fmt.Errorf("%s: %w", s.Name, err)
			}
		}
		return nil
	}
}

// cmdUpdate is `appliance update FILE|URL`.
func cmdUpdate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("update", stdout, stderr)
	socket := controlFlags(fs)
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	var bundle string
	if len(args) > 0 && len(args[len(args)-1]) > 0 && args[len(args)-1][0] != '-' {
		bundle, args = args[len(args)-1], args[:len(args)-1]
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if bundle == "" {
		return fs.usageError("name the bundle, e.g. appliance update /var/tmp/appliance-1.4.0.bundle")
	}
	if !strings.Contains(bundle, "://") {
		abs, err := filepath.Abs(bundle)
		if err != nil {
			return err
		}
		bundle = abs
	}
	resp, err := callUnit(ctx, socket(), control.Request{Op: control.OpUpdate, Bundle: bundle}, stderr)
	if err != nil {
		return err
	}
	r := resp.Update
	if *asJSON {
		return json.NewEncoder(stdout).Encode(r)
	}
	fmt.Fprintf(stdout, "update started: %s is checked in full, then written to slot %s (slot %s runs); the unit then reboots into it on trial.\n"+
		"`appliance status --json` (slots) follows it; a bundle that does not check is refused before anything is written.\n", r.Bundle, r.Slot, r.From)
	return nil
}

// cmdTrial is `appliance trial`, run by appliance-trial.service at boot: on
// a trial boot of a new slot it waits for the appliance to commit it, and
// notes on the data partition what it sees of appliance.service (the why
// of a rollback). Not committed by the deadline: it fails, and the service
// reboots the unit. On any other boot it exits at once.
func cmdTrial(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("trial", stdout, stderr)
	state := fs.String("state", "/var/lib/appliance", "the data partition's state `DIR`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return judgeTrial(ctx, imageLayout(*state), clock.Real(), trialDeadline, serviceState, stdout)
}

// judgeTrial is cmdTrial's work, with its clock and its view of the
// service given.
func judgeTrial(ctx context.Context, l update.Layout, clk clock.Clock, deadline time.Duration, observe func(context.Context) string, out io.Writer) error {
	running, err := l.Running()
	if err != nil {
		fmt.Fprintln(out, "not a trial boot:", err)
		return nil
	}
	entries, err := l.Entries()
	e, ok := entries[running]
	if err != nil || !ok || !e.Counted {
		fmt.Fprintf(out, "not a trial boot: slot %s is committed\n", running)
		return nil
	}
	fmt.Fprintf(out, "trial boot of slot %s (%s): waiting up to %v for the appliance to commit it\n", running, e.Version, deadline)
	start := clk.Now()
	last := ""
	note := func(s string) {
		if s == last {
			return
		}
		last = s
		fmt.Fprintln(out, s)
		_ = update.WriteTrialNote(l.State, update.TrialNote{Slot: running, Version: e.Version, Note: s, Time: clk.Now()})
	}
	t := clk.NewTicker(trialPoll)
	defer t.Stop()
	for {
		now, err := l.Entries()
		if cur, ok := now[running]; err == nil && ok && !cur.Counted {
			fmt.Fprintf(out, "slot %s committed\n", running)
			return nil
		}
		seen := observe(ctx)
		if clk.Now().Sub(start) >= deadline {
			note(fmt.Sprintf("the appliance was not healthy within %v of the trial boot (%s)", deadline, seen))
			return fmt.Errorf("trial of slot %s failed: rebooting into the old slot", running)
		}
		note(seen)
		select {
		case <-ctx.Done():
			note(fmt.Sprintf("the unit shut down during the trial boot before the appliance was healthy (%s)", seen))
			return ctx.Err()
		case <-t.C():
		}
	}
}

// serviceState is what systemd says of appliance.service, in a line.
func serviceState(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "systemctl", "show", "appliance.service",
		"-p", "ActiveState", "-p", "SubState", "-p", "Result", "-p", "ExecMainStatus", "-p", "NRestarts").Output()
	if err != nil {
		return "appliance.service: systemctl show failed: " + err.Error()
	}
	return describeService(out)
}

// describeService turns systemctl show's KEY=VALUE lines into a sentence.
func describeService(out []byte) string {
	v := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, val, ok := strings.Cut(sc.Text(), "="); ok {
			v[k] = val
		}
	}
	s := fmt.Sprintf("appliance.service %s (%s)", v["ActiveState"], v["SubState"])
	if r := v["Result"]; r != "" && r != "success" {
		s += ", result " + r
	}
	if st := v["ExecMainStatus"]; st != "" && st != "0" {
		s += ", exit status " + st
	}
	if n := v["NRestarts"]; n != "" && n != "0" {
		s += ", restarted " + n + " times"
	}
	return s
}
