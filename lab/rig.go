package lab

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"appliance/control"
	"appliance/internal/spawn"
)

// rig is a built topology with its units, traffic and witness: the lab
// between scenarios.
type rig struct {
	opts Options
	topo *Topology
	dir  string
	key  []byte
	a, b *unit

	mode    string // the mode the units run now
	witness *exec.Cmd
	wdone   chan struct{}

	sources     []*Source
	receivers   []*Receiver
	stopTraffic func()
}

func newRig(topo *Topology, opts Options) (*rig, error) {
	dir := filepath.Join(os.TempDir(), topo.ID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	r := &rig{opts: opts, topo: topo, dir: dir, key: key}
	r.a = newUnit(unitSpec{Name: "unit-a", Peer: "unit-b", Addr: AddrA, Dir: filepath.Join(dir, "a"), Side: 0}, topo.NS(UnitA), opts.Binary)
	r.b = newUnit(unitSpec{Name: "unit-b", Peer: "unit-a", Addr: AddrB, Dir: filepath.Join(dir, "b"), Side: 1}, topo.NS(UnitB), opts.Binary)
	if err := r.startTraffic(); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// startTraffic opens a source and a receiver per stream in the client
// namespace. The sources' destinations are set per mode by configure.
func (r *rig) startTraffic() error {
	ns := r.topo.NS(Client)
	for i := 0; i < r.opts.Streams; i++ {
		sc, err := listenUDP(ns, netip.AddrPortFrom(AddrClient, 0))
		if err != nil {
			return fmt.Errorf("source socket in %s: %w", ns, err)
		}
		r.sources = append(r.sources, &Source{SSRC: sourceSSRC(i), Conn: sc})
		rc, err := listenUDP(ns, netip.AddrPortFrom(AddrClient, uint16(OutputPort+i)))
		if err != nil {
			return fmt.Errorf("receiver socket in %s: %w", ns, err)
		}
		_ = rc.SetReadBuffer(4 << 20)
		r.receivers = append(r.receivers, &Receiver{Conn: rc})
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, rc := range r.receivers {
		wg.Add(1)
		go func() { defer wg.Done(); rc.Run() }()
	}
	snd := &Sender{Sources: r.sources, PPS: r.opts.PPS, Size: r.opts.Size}
	wg.Add(1)
	go func() { defer wg.Done(); _ = snd.Run(ctx) }()
	r.stopTraffic = func() {
		cancel()
		for _, s := range r.sources {
			s.Conn.Close()
		}
		for _, rc := range r.receivers {
			rc.Conn.Close()
		}
		wg.Wait()
	}
	return nil
}

// aim points every source at the units of a mode. It is called while the
// units are down, so no measured packet goes out half re-aimed.
func (r *rig) aim(mode string) {
	for i, s := range r.sources {
		switch mode {
		case Dual:
			s.SetTo(r.a.spec.inputOf(i), r.b.spec.inputOf(i))
		default:
			s.SetTo(r.a.spec.inputOf(i))
		}
	}
}

// units lists the units a mode runs.
func (r *rig) units() []*unit {
	if r.mode == Lone {
		return []*unit{r.a}
	}
	return []*unit{r.a, r.b}
}

// reset brings the lab to a clean state for one run: units stopped, links
// up, sensors healthy, the witness running only if wanted, both units
// started with the mode's config, and every stream owned by exactly one
// forwarding unit.
func (r *rig) reset(ctx context.Context, mode string, witness bool) error {
	r.a.stop(5 * time.Second)
	r.b.stop(5 * time.Second)
	for _, role := range []Role{UnitA, UnitB} {
		for _, l := range []string{"eth0", "pair0", "pair1"} {
			if err := r.topo.SetLink(role, l, true); err != nil {
				return err
			}
		}
	}
	r.stopWitness()
	r.mode = mode
	for _, u := range []*unit{r.a, r.b} {
		u.spec.Mode, u.spec.Streams, u.spec.Witness = mode, r.opts.Streams, witness
		// A unit's address can be left on the other from a vip takeover
		// killed midway; a fresh start owns none.
		if err := r.dropVIPs(u); err != nil {
			return err
		}
		if err := u.prepare(r.key); err != nil {
			return err
		}
	}
	r.aim(mode)
	if witness {
		if err := r.startWitness(); err != nil {
			return err
		}
	}
	for _, u := range r.units() {
		if err := u.start(); err != nil {
			return err
		}
	}
	return r.waitReady(ctx)
}

// dropVIPs removes every stream address from a unit's eth0.
func (r *rig) dropVIPs(u *unit) error {
	return ip("-n", u.ns, "addr", "flush", "dev", "eth0", "to", vipRange.String())
}

// ownership is who forwards each stream, as the units' APIs say.
type ownership struct {
	owner   map[string][]*unit // units forwarding each stream
	epochs  map[string][]uint64
	seen    map[*unit]bool   // the units that answered
	silence map[*unit]string // why a running unit did not count
}

func (r *rig) ownership(ctx context.Context) ownership {
	o := ownership{owner: map[string][]*unit{}, epochs: map[string][]uint64{}, seen: map[*unit]bool{}, silence: map[*unit]string{}}
	for _, u := range r.units() {
		if !u.running() {
			continue
		}
		st, err := u.status(ctx)
		if err != nil {
			o.silence[u] = err.Error()
			continue
		}
		if st.Unit.State != "running" {
			o.silence[u] = "its state is " + st.Unit.State
			continue
		}
		o.seen[u] = true
		for _, s := range st.Streams {
			if s.forwarding() {
				o.owner[s.Name] = append(o.owner[s.Name], u)
			}
			if e, ok := st.epoch(s.Name); ok {
				o.epochs[s.Name] = append(o.epochs[s.Name], e)
			}
		}
	}
	return o
}

// settled says every unit that should answer did (all but one the
// scenario stopped) and every stream has one owner.
func (r *rig) settled(o ownership) bool { return r.unsettled(o) == "" }

// unsettled says what keeps a pair from being settled, or "" when it is.
func (r *rig) unsettled(o ownership) string {
	var why []string
	expected := 0
	for _, u := range r.units() {
		if u.cmd != nil && !u.running() {
			continue // powered off by the scenario
		}
		expected++
		if !o.seen[u] {
			msg := "did not answer"
			if s := o.silence[u]; s != "" {
				msg += " (" + s + ")"
			}
			why = append(why, u.spec.Name+" "+msg)
		}
	}
	if expected == 0 {
		return "no unit is running"
	}
	odd := 0
	for i := 0; i < r.opts.Streams; i++ {
		name := streamName(i)
		if n := len(o.owner[name]); n != 1 {
			if odd++; odd <= 3 {
				why = append(why, fmt.Sprintf("%s has %d forwarding units", name, n))
			}
		}
	}
	if odd > 3 {
		why = append(why, fmt.Sprintf("%d streams in all without exactly one", odd))
	}
	return strings.Join(why, "; ")
}

// settleWithin is how long a pair that was ready may take to show one
// owner per stream again before a fault: a status read can be slow on a
// loaded machine.
const settleWithin = 5 * time.Second

// awaitSettled returns the ownership once settled. A pair that was not
// settled at first is worth a line in the progress, with what was seen.
func (r *rig) awaitSettled(ctx context.Context) (ownership, error) {
	start := time.Now()
	o := r.ownership(ctx)
	first := r.unsettled(o)
	if first == "" {
		return o, nil
	}
	err := poll(ctx, settleWithin, "one owner per stream", func(ctx context.Context) bool {
		o = r.ownership(ctx)
		return r.settled(o)
	})
	if err != nil {
		return o, r.withLogs(fmt.Errorf("the pair is not settled before the fault: first %s; %v later %s", first, settleWithin, r.unsettled(o)))
	}
	if r.opts.Progress != nil {
		fmt.Fprintf(r.opts.Progress, "    before the fault: %s; settled %v later\n", first, time.Since(start).Round(time.Millisecond))
	}
	return o, nil
}

// placed says every stream is forwarded by the unit it prefers, as a pair
// that started together has it: each scenario then has streams on A.
func (r *rig) placed(o ownership) bool {
	if !r.settled(o) {
		return false
	}
	if r.mode == Lone {
		return true
	}
	for i := 0; i < r.opts.Streams; i++ {
		if o.owner[streamName(i)][0].spec.Name != preferOf(i) {
			return false
		}
	}
	return true
}

func (r *rig) waitReady(ctx context.Context) error {
	var exited *unit
	var settledAt time.Time
	moved := map[string]bool{}
	err := poll(ctx, r.opts.ReadyTimeout, "both units up and every stream forwarded by the unit it prefers", func(ctx context.Context) bool {
		for _, u := range r.units() {
			if !u.running() {
				exited = u // a unit that refused its config: no use waiting
				return true
			}
		}
		o := r.ownership(ctx)
		if r.placed(o) {
			return true
		}
		r.place(ctx, o, &settledAt, moved)
		return false
	})
	if err == nil && exited != nil {
		err = fmt.Errorf("%s exited while starting", exited.spec.Name)
	}
	if err != nil {
		return r.withLogs(err)
	}
	return nil
}

// placeAfter is how long a settled pair may keep a stream off its
// preferred unit before the lab moves it there.
const placeAfter = 2 * time.Second

// place moves, with a planned handover, a stream that a unit took while its
// peer was still starting (a unit that hears nobody for a second takes every
// stream, and without preemption they stay): each scenario starts from every
// stream on the unit it prefers.
func (r *rig) place(ctx context.Context, o ownership, settledAt *time.Time, moved map[string]bool) {
	if r.mode == Lone || !r.settled(o) {
		*settledAt = time.Time{}
		return
	}
	if settledAt.IsZero() {
		*settledAt = time.Now()
	}
	if time.Since(*settledAt) < placeAfter {
		return
	}
	// Through the control socket from here, several at once: a process
	// per stream took over 30 s for 100 streams on a loaded machine.
	var wg sync.WaitGroup
	var mu sync.Mutex
	sem := make(chan struct{}, placeAtOnce)
	for i := 0; i < r.opts.Streams; i++ {
		name := streamName(i)
		owner := o.owner[name][0]
		if owner.spec.Name == preferOf(i) || moved[name] {
			continue
		}
		moved[name] = true
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			resp, err := control.Call(ctx, owner.socket(), control.Request{Op: control.OpHandover, Stream: name})
			if err == nil && !resp.OK {
				err = errors.New(resp.Error)
			}
			if err != nil && r.opts.Progress != nil {
				mu.Lock()
				fmt.Fprintf(r.opts.Progress, "  placing %s on %s: %v\n", name, preferOf(i), err)
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
}

// placeAtOnce bounds the handovers place asks for at once.
const placeAtOnce = 8

// withLogs adds the units' last log lines to an error, so a unit that
// refused its config says why.
func (r *rig) withLogs(err error) error {
	for _, u := range r.units() {
		state := "running"
		if !u.running() {
			state = "exited"
		}
		err = fmt.Errorf("%w\n--- %s (%s), %s:\n%s", err, u.spec.Name, state, u.logPath(), u.logTail())
	}
	return err
}

func (r *rig) startWitness() error {
	cmd := exec.Command(r.opts.Binary, "witness", "--listen", WitnessAddr.String(), "--key-file", filepath.Join(r.a.spec.Dir, "pair.key"),
		"--state", filepath.Join(r.dir, "witness.json"))
	lf, err := os.Create(filepath.Join(r.dir, "witness.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := spawn.Do(func() error { return inNS(r.topo.NS(Client), cmd.Start) }); err != nil {
		lf.Close()
		return fmt.Errorf("starting the witness: %w", err)
	}
	r.witness, r.wdone = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); lf.Close(); close(done) }(r.wdone)
	return nil
}

func (r *rig) stopWitness() {
	if r.witness == nil {
		return
	}
	signalTree(r.witness.Process.Pid, syscall.SIGKILL)
	<-r.wdone
	r.witness = nil
}

func (r *rig) close() {
	r.a.stop(5 * time.Second)
	r.b.stop(5 * time.Second)
	r.stopWitness()
	if r.stopTraffic != nil {
		r.stopTraffic()
	}
	if r.opts.Keep {
		if r.opts.Progress != nil {
			fmt.Fprintf(r.opts.Progress, "kept the units' configs and logs in %s\n", r.dir)
		}
		return
	}
	_ = os.RemoveAll(r.dir)
}

// measure runs one fault: records every stream for a while before the
// fault, injects it, lets inject wait for its outcome, records a while
// longer and judges each stream.
func (r *rig) measure(ctx context.Context, inject func(ctx context.Context, t *trial) error) (*trial, error) {
	o, err := r.awaitSettled(ctx)
	if err != nil {
		return nil, err
	}
	t := &trial{rig: r, before: o, owners: map[string]netip.Addr{}}
	for i := range r.sources {
		t.owners[streamName(i)] = o.owner[streamName(i)][0].spec.Addr
	}
	// Record first, then read the counters: every packet numbered from
	// there on is sent after recording started.
	for _, rc := range r.receivers {
		rc.Record()
	}
	t.from = Clock()
	first := make([]uint64, len(r.sources))
	for i, s := range r.sources {
		first[i] = s.Sent()
	}
	if err := pause(ctx, r.opts.Before); err != nil {
		return nil, err
	}
	t.fault = Clock()
	if r.opts.Keep && r.opts.Progress != nil {
		// For reading the kept logs against: the wall clock they use.
		fmt.Fprintf(r.opts.Progress, "    fault at %s\n", time.Now().UTC().Format("15:04:05.000"))
	}
	if err := inject(ctx, t); err != nil {
		// The pair not doing what the scenario expects in time is a
		// result, judged with the traffic; anything else ends the run.
		if !errors.Is(err, errDeadline) {
			for _, rc := range r.receivers {
				rc.Stop()
			}
			return nil, r.withLogs(err)
		}
		t.failure = err.Error()
	}
	if err := pause(ctx, r.opts.After); err != nil {
		return nil, err
	}
	end := make([]uint64, len(r.sources))
	for i, s := range r.sources {
		end[i] = s.Sent()
	}
	t.to = Clock()
	// Packets still in flight at the end belong to the window.
	if err := pause(ctx, 200*time.Millisecond); err != nil {
		return nil, err
	}
	// A lab that cannot keep its sources' pace measures itself, not the
	// pair: say so rather than print numbers.
	if span := (t.to - t.from).Seconds(); span > 0 && t.failure == "" {
		for i := range r.sources {
			if rate := float64(end[i]-first[i]) / span; rate < 0.9*float64(r.opts.PPS) {
				t.failure = fmt.Sprintf("%s's source sent %.0f packets/s of the %d asked: this machine is overloaded; lower --streams or --pps", streamName(i), rate, r.opts.PPS)
				break
			}
		}
	}
	for i, rc := range r.receivers {
		w := Window{FirstCounter: first[i], EndCounter: end[i], From: t.from, To: t.to, Fault: t.fault}
		if r.mode != Lone {
			w.Owner = t.owners[streamName(i)]
		}
		t.results = append(t.results, Analyze(rc.Stop(), w))
	}
	return t, nil
}

// trial is one run of one scenario.
type trial struct {
	rig             *rig
	before          ownership
	owners          map[string]netip.Addr // who forwarded each stream before the fault
	from, fault, to time.Duration
	results         []StreamResult
	// Set by the scenario.
	moved    *bool  // crash-loop: the stream ended on the peer
	takeover *bool  // cpu-starvation: an epoch changed or a non-owner sent
	failure  string // what the pair did not do in time
}

// ownedBy lists the streams a unit forwarded before the fault.
func (t *trial) ownedBy(u *unit) []string {
	var out []string
	for i := range t.rig.sources {
		if t.owners[streamName(i)] == u.spec.Addr {
			out = append(out, streamName(i))
		}
	}
	return out
}

// waitMoved waits until every stream in names is forwarded by to alone.
func (t *trial) waitMoved(ctx context.Context, names []string, to *unit, within time.Duration) error {
	return poll(ctx, within, fmt.Sprintf("%s to forward %d streams", to.spec.Name, len(names)), func(ctx context.Context) bool {
		st, err := to.status(ctx)
		if err != nil {
			return false
		}
		for _, n := range names {
			if s, ok := st.stream(n); !ok || !s.forwarding() {
				return false
			}
		}
		return true
	})
}

// waitSettled waits until every stream has exactly one owner again.
func (t *trial) waitSettled(ctx context.Context, within time.Duration) error {
	return poll(ctx, within, "every stream to have exactly one owner", func(ctx context.Context) bool {
		return t.rig.settled(t.rig.ownership(ctx))
	})
}

// pause waits for a measured period (not for an event: the lab records
// traffic for this long).
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// appliance runs a short command of the binary (handover) and returns its
// output with the error.
func (r *rig) appliance(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, r.opts.Binary, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("appliance %v: %w: %s", args, err, out)
	}
	return nil
}
