package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"appliance/internal/spawn"
)

// Bounds the scenarios are judged by (the pair's targets).
const (
	GapMedianBound = 50 * time.Millisecond  // power loss and hang, median over runs
	GapEveryBound  = 100 * time.Millisecond // power loss and hang, every stream of a multi-stream run
	// MediaLinkBound is how long a vip stream may go dark when its owner's
	// media link drops: the link debounce (200 ms by default), the time
	// the unit takes to read its health for the pair (20 ms), the
	// detection time (30 ms), and two heartbeats to move the address.
	MediaLinkBound = 270 * time.Millisecond
	// LoneRestartBound is how long a lone unit's stream may be dark while
	// its killed worker is replaced.
	LoneRestartBound = time.Second
	hangFor          = 3 * time.Second
	cutFor           = 3 * time.Second
)

// Scenario is one fault and what the pair must do about it.
type Scenario struct {
	Name     string
	Pair     bool   // needs two units; false runs one unit alone (mode lone)
	Witness  bool   // starts the witness in the client namespace
	Criteria string // what passing means, as printed
	// setup, when set, runs after the pair is ready and before recording:
	// what the scenario starts from rather than what it measures.
	setup  func(ctx context.Context, r *rig) error
	inject func(ctx context.Context, t *trial) error
	checks []check
}

// check judges a scenario's runs in one mode: "" when they pass, else why not.
type check func(mode string, streams int, runs []*trial) string

// Scenarios lists every scenario in the order `--scenario all` runs them.
func Scenarios() []Scenario {
	return []Scenario{
		{Name: "lone-restart", Criteria: "one unit alone, its worker SIGKILLed: the stream comes back within 1s, 0 SSRC changes, 0 discontinuities",
			inject: injectWorkerKill, checks: []check{gapBelow(LoneRestartBound, false), zero("SSRC changes", ssrcOf), zero("discontinuities", discOf)}},
		{Name: "power-loss", Pair: true, Criteria: "gap < 50ms (median), every stream < 100ms, 0 SSRC changes, 0 discontinuities; dual: 0 lost",
			inject: injectPowerLoss, checks: unplanned()},
		{Name: "hang", Pair: true, Criteria: "gap < 50ms (median), every stream < 100ms, 0 SSRC changes, 0 discontinuities; dual: 0 lost",
			inject: injectHang, checks: unplanned()},
		{Name: "overheat", Pair: true, Criteria: "planned handover: 0 lost, 0 duplicates",
			inject: injectSensors(map[string]string{"hwmon/hwmon0/temp1_input": tempHot}), checks: planned()},
		{Name: "on-battery", Pair: true, Criteria: "planned handover: 0 lost, 0 duplicates",
			inject: injectSensors(map[string]string{"power_supply/AC/online": "0", "power_supply/BAT0/status": "Discharging"}), checks: planned()},
		{Name: "media-link-down", Pair: true, Criteria: "dual: 0 lost; vip: median gap < 270ms (link debounce + health read + detection + two heartbeats)",
			inject: injectMediaLinkDown, checks: []check{only(Dual, zero("lost", lostOf)), only(VIP, gapBelow(MediaLinkBound, true))}},
		{Name: "pair-link-cut", Pair: true, Criteria: "no witness: both units may forward until the cut heals; the row counts those seconds",
			inject: injectPairCut},
		{Name: "pair-link-cut-witness", Pair: true, Witness: true, Criteria: "with a witness: never two forwarders",
			inject: injectPairCut, checks: []check{zero("ms with two forwarders", twoOf)}},
		{Name: "return", Pair: true, Criteria: "A, powered off and its streams on B, starts again and rejoins: 0 lost",
			setup: setupReturn, inject: injectReturn, checks: []check{zero("lost", lostOf)}},
		{Name: "crash-loop", Pair: true, Criteria: "A's worker killed until the media supervisor gives up: the stream moves to B",
			inject: injectCrashLoop, checks: []check{expect("the stream moved to the peer", func(t *trial) *bool { return t.moved }, true)}},
		{Name: "planned", Pair: true, Criteria: "appliance handover of A's streams: 0 lost, 0 duplicates",
			inject: injectHandover, checks: planned()},
		{Name: "cpu-starvation", Pair: true, Criteria: "both cores busy for 60s: no takeover (epochs unchanged, nothing from the non-owner)",
			inject: injectStarvation, checks: []check{expect("no takeover", func(t *trial) *bool { return t.takeover }, false), noStranger}},
	}
}

// ScenarioNames lists the scenario names.
func ScenarioNames() []string {
	var out []string
	for _, s := range Scenarios() {
		out = append(out, s.Name)
	}
	return out
}

func unplanned() []check {
	return []check{gapBelow(GapMedianBound, true), gapEvery(GapEveryBound), zero("SSRC changes", ssrcOf), zero("discontinuities", discOf), only(Dual, zero("lost", lostOf))}
}

func planned() []check { return []check{zero("lost", lostOf), zero("duplicates", dupsOf)} }

func lostOf(r StreamResult) int { return r.Lost }
func dupsOf(r StreamResult) int { return r.Dups }
func ssrcOf(r StreamResult) int { return r.SSRCChanges }
func discOf(r StreamResult) int { return r.Discontinuities }
func twoOf(r StreamResult) int  { return int(r.TwoForwarders / time.Millisecond) }

// failed says why a run did not complete as the scenario expects.
func failed(runs []*trial) string {
	for i, t := range runs {
		if t.failure != "" {
			return fmt.Sprintf("run %d: %s", i+1, t.failure)
		}
	}
	return ""
}

// zero wants a count to be 0 on every stream of every run.
func zero(what string, f func(StreamResult) int) check {
	return func(_ string, _ int, runs []*trial) string {
		for i, t := range runs {
			for s, r := range t.results {
				if n := f(r); n != 0 {
					return fmt.Sprintf("run %d, %s: %d %s", i+1, streamName(s), n, what)
				}
			}
		}
		return ""
	}
}

// gapBelow wants the gap below d: byMedian, the median over every moved
// stream of every run (streamGaps; with one stream, over the runs; with
// many, the tail is gapEvery's to bound, over every stream); else the
// worst stream's in every run.
func gapBelow(d time.Duration, byMedian bool) check {
	return func(_ string, _ int, runs []*trial) string {
		var gaps []time.Duration
		for i, t := range runs {
			if g := worst(t).Gap; !byMedian && g >= d {
				return fmt.Sprintf("run %d: a gap of %v, want below %v", i+1, g.Round(time.Millisecond), d)
			}
			gaps = append(gaps, streamGaps(t)...)
		}
		if m := median(gaps); byMedian && m >= d {
			return fmt.Sprintf("median gap %v, want below %v", m.Round(time.Millisecond), d)
		}
		return ""
	}
}

// gapEvery wants every stream's gap below d in a multi-stream run.
func gapEvery(d time.Duration) check {
	return func(_ string, streams int, runs []*trial) string {
		if streams < 2 {
			return ""
		}
		for i, t := range runs {
			for s, r := range t.results {
				if r.Gap >= d {
					return fmt.Sprintf("run %d, %s: a gap of %v, want below %v", i+1, streamName(s), r.Gap.Round(time.Millisecond), d)
				}
			}
		}
		return ""
	}
}

// only applies a check in one mode.
func only(mode string, c check) check {
	return func(m string, streams int, runs []*trial) string {
		if m != mode {
			return ""
		}
		return c(m, streams, runs)
	}
}

// expect wants a fact the scenario found to be as expected in every run.
func expect(what string, get func(*trial) *bool, want bool) check {
	return func(_ string, _ int, runs []*trial) string {
		for i, t := range runs {
			if v := get(t); v == nil || *v != want {
				return fmt.Sprintf("run %d: not %s", i+1, what)
			}
		}
		return ""
	}
}

// noStranger wants every stream's packets to come only from its owner.
func noStranger(_ string, _ int, runs []*trial) string {
	for i, t := range runs {
		for s, r := range t.results {
			owner := t.owners[streamName(s)]
			for _, a := range r.Senders {
				if a != owner {
					return fmt.Sprintf("run %d, %s: packets from %v, which did not own it", i+1, streamName(s), a)
				}
			}
		}
	}
	return ""
}

// The faults.

func injectWorkerKill(ctx context.Context, t *trial) error {
	u := t.rig.a
	st, err := u.status(ctx)
	if err != nil {
		return err
	}
	s, _ := st.stream(streamName(0))
	if s.WorkerPID == 0 {
		return fmt.Errorf("%s shows no worker for %s", u.spec.Name, streamName(0))
	}
	if err := syscall.Kill(s.WorkerPID, syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing worker %d: %w", s.WorkerPID, err)
	}
	return poll(ctx, 10*time.Second, "a new worker for "+streamName(0), func(ctx context.Context) bool {
		st, err := u.status(ctx)
		if err != nil {
			return false
		}
		n, _ := st.stream(streamName(0))
		return n.WorkerPID != 0 && n.WorkerPID != s.WorkerPID && n.State == "running"
	})
}

// powerOff is a power loss of A: every process at once, then its links.
func powerOff(t *trial) error {
	t.rig.a.kill()
	for _, l := range []string{"eth0", "pair0", "pair1"} {
		if err := t.rig.topo.SetLink(UnitA, l, false); err != nil {
			return err
		}
	}
	return nil
}

func injectPowerLoss(ctx context.Context, t *trial) error {
	names := t.ownedBy(t.rig.a)
	if err := powerOff(t); err != nil {
		return err
	}
	return t.waitMoved(ctx, names, t.rig.b, 10*time.Second)
}

func injectHang(ctx context.Context, t *trial) error {
	t.rig.a.signal(syscall.SIGSTOP)
	err := pause(ctx, hangFor)
	t.rig.a.signal(syscall.SIGCONT)
	if err != nil {
		return err
	}
	return t.waitSettled(ctx, 10*time.Second)
}

func injectSensors(files map[string]string) func(context.Context, *trial) error {
	return func(ctx context.Context, t *trial) error {
		names := t.ownedBy(t.rig.a)
		for f, v := range files {
			if err := writeSensor(filepath.Join(t.rig.a.spec.Dir, "sys", "class", f), v); err != nil {
				return err
			}
		}
		return t.waitMoved(ctx, names, t.rig.b, 15*time.Second)
	}
}

func injectMediaLinkDown(ctx context.Context, t *trial) error {
	names := t.ownedBy(t.rig.a)
	if err := t.rig.topo.SetLink(UnitA, "eth0", false); err != nil {
		return err
	}
	return t.waitMoved(ctx, names, t.rig.b, 15*time.Second)
}

func injectPairCut(ctx context.Context, t *trial) error {
	for _, l := range []string{"pair0", "pair1"} {
		if err := t.rig.topo.SetLink(UnitA, l, false); err != nil {
			return err
		}
	}
	err := pause(ctx, cutFor)
	for _, l := range []string{"pair0", "pair1"} {
		if e := t.rig.topo.SetLink(UnitA, l, true); e != nil && err == nil {
			err = e
		}
	}
	if err != nil {
		return err
	}
	return t.waitSettled(ctx, 10*time.Second)
}

// setupReturn powers A off and waits for B to carry everything: the
// return is measured from there.
func setupReturn(ctx context.Context, r *rig) error {
	t := &trial{rig: r, owners: map[string]netip.Addr{}}
	o := r.ownership(ctx)
	for name, us := range o.owner {
		t.owners[name] = us[0].spec.Addr
	}
	names := t.ownedBy(r.a)
	if err := powerOff(t); err != nil {
		return err
	}
	if err := t.waitMoved(ctx, names, r.b, 10*time.Second); err != nil {
		return err
	}
	for _, l := range []string{"eth0", "pair0", "pair1"} {
		if err := r.topo.SetLink(UnitA, l, true); err != nil {
			return err
		}
	}
	return nil
}

func injectReturn(ctx context.Context, t *trial) error {
	if err := t.rig.a.start(); err != nil {
		return err
	}
	return poll(ctx, 20*time.Second, "A back, and every stream owned once", func(ctx context.Context) bool {
		o := t.rig.ownership(ctx)
		return o.seen[t.rig.a] && t.rig.settled(o)
	})
}

func injectCrashLoop(ctx context.Context, t *trial) error {
	name := streamName(0)
	a, b := t.rig.a, t.rig.b
	killed := 0
	moved := false
	t.moved = &moved
	return poll(ctx, 30*time.Second, name+" to move to "+b.spec.Name+" while its worker on "+a.spec.Name+" keeps crashing", func(ctx context.Context) bool {
		if st, err := b.status(ctx); err == nil {
			if s, ok := st.stream(name); ok && s.forwarding() {
				moved = true
				return true
			}
		}
		st, err := a.status(ctx)
		if err != nil {
			return false
		}
		if s, ok := st.stream(name); ok && s.WorkerPID != 0 && s.WorkerPID != killed {
			killed = s.WorkerPID
			_ = syscall.Kill(killed, syscall.SIGKILL)
		}
		return false
	})
}

func injectHandover(ctx context.Context, t *trial) error {
	names := t.ownedBy(t.rig.a)
	for _, n := range names {
		if err := t.rig.appliance(ctx, "handover", "--socket", t.rig.a.socket(), n); err != nil {
			return err
		}
	}
	return t.waitMoved(ctx, names, t.rig.b, 15*time.Second)
}

func injectStarvation(ctx context.Context, t *trial) error {
	var busy []*exec.Cmd
	stop := func() {
		for _, c := range busy {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
		busy = nil
	}
	defer stop()
	for i := 0; i < runtime.NumCPU(); i++ {
		c := exec.Command("sh", "-c", "while :; do :; done")
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := spawn.Start(c); err != nil {
			return fmt.Errorf("starting a busy loop: %w", err)
		}
		busy = append(busy, c)
	}
	if err := pause(ctx, t.rig.opts.StarveFor); err != nil {
		return err
	}
	// Judged once the cores are free and every unit answers with one
	// owner per stream, so a slow answer is not taken for a missing
	// owner. Epochs only grow, so a takeover during the load shows as a
	// newer epoch than any unit knew before it, or another owner. (A
	// standby's view of the epoch may catch up meanwhile: that is no move.)
	stop()
	if err := t.waitSettled(ctx, 10*time.Second); err != nil {
		return fmt.Errorf("after the load: %w", err)
	}
	after := t.rig.ownership(ctx)
	took := false
	for name, us := range t.before.owner {
		was, now := slices.Max(append([]uint64{0}, t.before.epochs[name]...)), slices.Max(append([]uint64{0}, after.epochs[name]...))
		// An epoch no unit reported before the load (the pair view not yet
		// published) is no evidence: the owner, and noStranger's check of
		// who sent, still are.
		if !slices.Equal(us, after.owner[name]) || (was != 0 && now != was) {
			took = true
			if w := t.rig.opts.Progress; w != nil {
				fmt.Fprintf(w, "    %s: owner %s, epoch %d before the load; owner %s, epoch %d after\n", name, unitNames(us), was, unitNames(after.owner[name]), now)
			}
		}
	}
	t.takeover = &took
	return nil
}

func unitNames(us []*unit) string {
	var names []string
	for _, u := range us {
		names = append(names, u.spec.Name)
	}
	return strings.Join(names, ",")
}
