package failover

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSim runs seeded random schedules of faults against both units, the
// witness, the network and the media (simnet_test.go), and checks the
// invariants of docs/pair-protocol.md (Invariants) after every event.
//
//	go test ./failover -run TestSim                     # the default schedules
//	go test ./failover -run TestSim -sims=100000         # more (or FAILOVER_SIMS=100000)
//	go test ./failover -run TestSim -seed=N -v           # one schedule, with its trace

var (
	flagSeed = flag.Int64("seed", -1, "run only this simulation seed and print its schedule and trace")
	flagSims = flag.Int("sims", 0, "how many random schedules TestSim runs (default 750, or $FAILOVER_SIMS)")
)

const simEnd = 3 * time.Second // faults end by 2.4 s: the rest is a quiet tail

type fault struct {
	at, dur time.Duration
	kind    string
	unit    int
	path    int
	stream  int
}

func (f fault) String() string {
	return fmt.Sprintf("%7.1fms +%5.1fms %-10s unit %d path %d stream %d", float64(f.at)/1e6, float64(f.dur)/1e6, f.kind, f.unit, f.path, f.stream)
}

type invariants struct {
	bound      time.Duration // the liveness bound L
	noFwdSince []time.Duration
	eligSince  []time.Duration
	reported   []bool
	clean      bool
}

func TestSim(t *testing.T) {
	if *flagSeed >= 0 {
		w, sched := simulate(*flagSeed, true)
		t.Logf("schedule:\n%s", strings.Join(sched, "\n"))
		t.Logf("trace:\n%s", strings.Join(w.trace, "\n"))
		for _, f := range w.fail {
			t.Error(f)
		}
		return
	}
	n := 750
	if raceEnabled {
		n = 100
	}
	if v, err := strconv.Atoi(os.Getenv("FAILOVER_SIMS")); err == nil && v > 0 {
		n = v
	}
	if *flagSims > 0 {
		n = *flagSims
	}
	if testing.Short() {
		n = 200
	}
	start := time.Now()
	failed, ran := 0, 0
	for seed := int64(0); seed < int64(n); seed++ {
		ran++
		w, sched := simulate(seed, false)
		if len(w.fail) == 0 {
			continue
		}
		failed++
		t.Errorf("seed %d: %s\nschedule:\n%s\nreproduce: go test ./failover -run 'TestSim$' -seed=%d -v",
			seed, strings.Join(w.fail, "\n  "), strings.Join(sched, "\n"), seed)
		if failed >= 5 {
			break
		}
	}
	t.Logf("%d schedules of %v each in %v", ran, simEnd, time.Since(start).Round(time.Millisecond))
}

// simulate builds and runs schedule seed.
func simulate(seed int64, verbose bool) (*world, []string) {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	w := &world{rng: rng, verbose: verbose, wit: NewWitness(), witUp: true}
	clean := rng.IntN(4) == 0
	var sched []string
	note := func(f string, a ...any) { sched = append(sched, fmt.Sprintf(f, a...)) }

	nStreams := 1 + rng.IntN(3)
	cfg := Config{Self: "alpha", Peer: "bravo", Paths: 1 + rng.IntN(2), Heartbeat: 10 * time.Millisecond,
		DetectMultiplier: 3, Witness: rng.IntN(2) == 0, Preempt: rng.IntN(3) == 0,
		PreemptHold: time.Duration(150+rng.IntN(250)) * time.Millisecond}
	for i := range nStreams {
		cfg.Streams = append(cfg.Streams, Stream{Name: fmt.Sprintf("s%d", i), VIP: rng.IntN(2) == 0,
			Prefer: []string{"alpha", "bravo"}[rng.IntN(2)], Priority: rng.IntN(3)})
	}
	if !clean && rng.IntN(5) == 0 {
		cfg.Capacity.Streams = 1 + rng.IntN(nStreams)
	}
	w.cfg = cfg
	note("clean=%v paths=%d witness=%v preempt=%v hold=%v capacity=%d", clean, cfg.Paths, cfg.Witness, cfg.Preempt, cfg.PreemptHold, cfg.Capacity.Streams)
	for _, s := range cfg.Streams {
		note("stream %s vip=%v prefer=%s priority=%d", s.Name, s.VIP, s.Prefer, s.Priority)
	}

	ms := func(lo, hi float64) time.Duration {
		return time.Duration((lo + rng.Float64()*(hi-lo)) * float64(time.Millisecond))
	}
	var maxPath, maxWit time.Duration
	for from := range 2 {
		for p := range cfg.Paths {
			l := &link{delay: ms(0.2, 2), jitter: ms(0, 1), dup: rng.Float64() * 0.05}
			if !clean {
				l.loss = rng.Float64() * 0.08
			}
			w.paths[from] = append(w.paths[from], l)
			maxPath = max(maxPath, l.delay+l.jitter)
			note("path %d from unit %d: delay %v jitter %v loss %.3f dup %.3f", p, from, l.delay, l.jitter, l.loss, l.dup)
		}
		w.wlink[from] = &link{delay: ms(0.2, 2), jitter: ms(0, 0.5)}
		maxWit = max(maxWit, w.wlink[from].delay+w.wlink[from].jitter)
	}
	d, hb := cfg.Detect(), cfg.Heartbeat
	// The liveness bound (docs/pair-protocol.md, Invariants).
	w.inv = invariants{
		bound: d + 4*hb + 2*maxPath + 3*maxWit + mediaDelay + 2*stopDelay + arpDelay,
		clean: clean,
	}
	for range nStreams {
		w.inv.noFwdSince = append(w.inv.noFwdSince, -1)
		w.inv.eligSince = append(w.inv.eligSince, -1)
		w.inv.reported = append(w.inv.reported, false)
		w.arp = append(w.arp, -1)
		w.decoder = append(w.decoder, nil)
	}

	for k, name := range []string{"alpha", "bravo"} {
		c := cfg
		c.Self, c.Peer = name, []string{"alpha", "bravo"}[1-k]
		u := &unit{w: w, idx: k, name: name, cfg: c, off: time.Duration(rng.Int64N(int64(time.Hour)))}
		w.units[k] = u
	}
	for k, u := range w.units {
		boot := ms(0, 50)
		w.at(boot, u.boot)
		note("unit %d boots at %v", k, boot)
	}
	for i := range nStreams {
		delays := [2]time.Duration{ms(0.1, 1), ms(0.1, 1)}
		n := uint16(rng.IntN(1 << 16)) // sequence numbers wrap in some schedules
		w.at(ms(0, 2), func() { w.source(i, n, delays) })
	}

	// The faults.
	kinds := []string{"cut", "cut1", "cutall", "crash", "hang", "drain", "fail", "notcarried", "linkdown", "handover", "wcut", "wrestart"}
	nFaults := 1 + rng.IntN(6)
	if clean {
		kinds = []string{"handover", "handover", "drain"}
		nFaults = 2 + rng.IntN(6)
	}
	for range nFaults {
		f := fault{at: ms(100, 2000), dur: ms(15, 400), kind: kinds[rng.IntN(len(kinds))],
			unit: rng.IntN(2), path: rng.IntN(cfg.Paths), stream: rng.IntN(nStreams)}
		note("%v", f)
		w.at(f.at, func() { w.inject(f) })
	}
	w.run(simEnd)
	w.final()
	return w, sched
}

func (w *world) inject(f fault) {
	u := w.units[f.unit]
	w.logf("fault %v", f)
	end := func(fn func()) { w.after(f.dur, fn) }
	switch f.kind {
	case "cut", "cut1", "cutall":
		var ls []*link
		for p := range w.cfg.Paths {
			if f.kind == "cutall" || p == f.path {
				ls = append(ls, w.paths[f.unit][p])
				if f.kind != "cut1" {
					ls = append(ls, w.paths[1-f.unit][p])
				}
			}
		}
		for _, l := range ls {
			l.cut = true
		}
		end(func() {
			for _, l := range ls {
				l.cut = false
			}
		})
	case "crash":
		if !u.alive {
			return
		}
		u.crash()
		end(u.boot)
	case "hang":
		if !u.alive || u.hung {
			return
		}
		u.hang()
		end(u.resume)
	case "drain", "fail":
		if !u.alive || u.health != Up {
			return
		}
		state := map[string]UnitState{"drain": Draining, "fail": Failed}[f.kind]
		inc := u.inc
		u.health = state
		u.call(inc, func() { u.m.SetUnit(u.mono(), state, f.kind) })
		end(func() {
			if u.inc == inc {
				u.health = Up
				u.call(inc, func() { u.m.SetUnit(u.mono(), Up, "") })
			}
		})
	case "notcarried", "linkdown":
		if !u.alive {
			return
		}
		flags := map[string][]bool{"notcarried": u.notCarried, "linkdown": u.linkDown}[f.kind]
		if f.kind == "notcarried" && !flags[f.stream] {
			u.notCarriedAt[f.stream] = w.now
		}
		flags[f.stream] = true
		inc := u.inc
		end(func() {
			if u.inc == inc {
				flags[f.stream] = false
			}
		})
	case "handover":
		for _, u := range w.units {
			if u.alive && !u.hung && u.m.mine(u.m.streams[f.stream].epoch) {
				err := u.m.Handover(u.mono(), f.stream)
				w.logf("%s: operator handover of s%d: %v", u.name, f.stream, err)
			}
		}
	case "wcut":
		w.wlink[f.unit].cut = true
		end(func() { w.wlink[f.unit].cut = false })
	case "wrestart":
		w.witUp = false
		fenced := w.wit.Fenced() // kept on disk
		end(func() { w.wit, w.witUp = RestoreWitness(fenced), true })
	}
}

// forwarding says whether unit u really forwards stream i now.
func (w *world) forwarding(u *unit, i int) bool {
	return u.alive && u.media[i].fwd && u.streamOK(i)
}

// exempt: a hung unit's media goes on forwarding without its control
// plane, which the protocol cannot stop (docs/pair-protocol.md, Invariants).
func (w *world) exempt(u *unit) bool {
	return u.hung || (u.resumedAt != 0 && w.now-u.resumedAt <= stopDelay+mediaDelay)
}

func (w *world) connected() bool {
	for p := range w.cfg.Paths {
		if !w.paths[0][p].cut && !w.paths[1][p].cut {
			return true
		}
	}
	return false
}

// eligible: unit u could carry stream i and nothing in the protocol
// excuses it for not doing so (docs/pair-protocol.md, Invariants).
func (w *world) eligible(u *unit, i int) bool {
	d, hb := w.cfg.Detect(), w.cfg.Heartbeat
	if !u.alive || u.hung || u.health != Up || !u.streamOK(i) ||
		w.now-u.bootAt < max(d+hb, minStartupWait) || (u.resumedAt != 0 && w.now-u.resumedAt < d+hb) {
		return false
	}
	o := u.peer()
	if o.alive && !o.hung && o.notCarried[i] && w.now-o.notCarriedAt[i] < carriedGrace && o.m.mine(o.m.streams[i].epoch) {
		// The owner's worker is restarting: the media supervisor's to
		// handle, for carriedGrace, before the stream moves.
		return false
	}
	if !w.connected() && o.alive && !o.hung && !o.streamOK(i) && o.m.mine(o.m.streams[i].epoch) && !u.m.silent(u.m.lastCall) {
		// A cut one way: the owner cannot carry the stream nor hear its
		// peer to hand it over, and the peer hears it, so takes nothing.
		return false
	}
	if w.cfg.Witness {
		if w.wlink[u.idx].cut || !w.witUp {
			return false
		}
		if !w.connected() && o.alive && !o.hung && !w.wlink[o.idx].cut {
			// Cut, and both reach the witness: nothing moves. A stream
			// the other owns but cannot carry, a handover's epoch lost in
			// the cut, the streams of a unit that restarted in the cut,
			// those of a unit the witness fenced before it could reach
			// it again: they wait for a path.
			return false
		}
	}
	if c := w.cfg.Capacity.Streams; c > 0 && !u.m.mine(u.m.streams[i].epoch) {
		n, _ := u.m.load()
		if n >= c {
			return false
		}
	}
	return true
}

// just: y started forwarding i after D without hearing x, and the two
// have not yet both had, for longer than a media takes to stop, a message
// the other sent since: the one with the lower epoch stops when it has.
func (w *world) just(y, x *unit, i int) bool {
	g := stopDelay + mediaDelay
	return y.gapOK[i] && (x.watch[i] < 0 || w.now <= x.watch[i]+g || y.selfWatch[i] < 0 || w.now <= y.selfWatch[i]+g)
}

func (w *world) check() {
	for i := range w.cfg.Streams {
		var fw []*unit
		for _, u := range w.units {
			if w.forwarding(u, i) {
				fw = append(fw, u)
			}
		}
		if len(fw) == 2 {
			a, b := fw[0], fw[1]
			switch {
			case w.exempt(a) || w.exempt(b):
			case w.cfg.Witness:
				w.failf("both units forward s%d with a witness configured", i)
			case w.just(a, b, i) || w.just(b, a, i):
			default:
				w.failf("both units forward s%d and neither took it after D of silence, or the stale one heard the other and went on", i)
			}
		}
		inv := &w.inv
		if len(fw) == 0 {
			if inv.noFwdSince[i] < 0 {
				inv.noFwdSince[i] = w.now
			}
		} else {
			inv.noFwdSince[i], inv.reported[i] = -1, false
		}
		if w.eligible(w.units[0], i) || w.eligible(w.units[1], i) {
			if inv.eligSince[i] < 0 {
				inv.eligSince[i] = w.now
			}
		} else {
			inv.eligSince[i] = -1
		}
		if len(fw) == 0 && inv.eligSince[i] >= 0 && !inv.reported[i] &&
			w.now-max(inv.noFwdSince[i], inv.eligSince[i]) > inv.bound {
			inv.reported[i] = true
			w.failf("s%d has had no forwarder for %v while a unit could carry it (bound %v)", i, w.now-max(inv.noFwdSince[i], inv.eligSince[i]), inv.bound)
		}
	}
	for _, u := range w.units {
		if !u.alive {
			continue
		}
		for i, s := range u.m.streams {
			if s.epoch < u.epochs[i] {
				w.failf("%s: epoch of s%d went back from %d to %d", u.name, i, u.epochs[i], s.epoch)
			}
			u.epochs[i] = s.epoch
		}
	}
}

// final checks the end of the quiet tail, and a clean schedule's decoder log.
func (w *world) final() {
	for i := range w.cfg.Streams {
		n := 0
		for _, u := range w.units {
			if w.forwarding(u, i) {
				n++
			}
		}
		if n > 1 {
			w.failf("s%d has %d forwarders at the end", i, n)
		}
	}
	// Random loss may raise an alarm at any time; one raised before the
	// last half second of the quiet tail must have cleared.
	for _, u := range w.units {
		for k := range u.alarms {
			if u.alarmAt[k] < simEnd-500*time.Millisecond {
				w.failf("%s: alarm %v %q raised at %v and still raised at the end", u.name, k.kind, k.subject, u.alarmAt[k])
			}
		}
	}
	if !w.inv.clean {
		return
	}
	// Planned handovers only: the decoder sees every packet from the first
	// it got to the last exactly once.
	for i, log := range w.decoder {
		if len(log) == 0 {
			w.failf("s%d: nothing forwarded", i)
			continue
		}
		count := map[uint16]int{}
		for _, o := range log {
			count[o.seq]++
		}
		first, last := log[0].seq, log[len(log)-1].seq
		for n := first; ; n++ {
			if count[n] != 1 {
				w.failf("s%d: the decoder got packet %d %d times (first %d, last %d)", i, n, count[n], first, last)
				break
			}
			if n == last {
				break
			}
		}
	}
}
