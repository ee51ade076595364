package failover

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"time"
)

// The simulated world of the deterministic simulation: two units, each a
// Machine driven like pairnet and cmd/appliance drive it, a witness, the
// heartbeat paths, the input sources, the units' media and the decoder
// downstream. Time is virtual and everything happens as events in one
// queue, so a seed replays exactly.

type event struct {
	at  time.Duration
	seq uint64
	fn  func()
}

type events []*event

func (q events) Len() int { return len(q) }
func (q events) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q events) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *events) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *events) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// Fixed media timings; the network's are drawn per schedule.
const (
	pktEvery   = 2 * time.Millisecond // the input sources' packet interval
	mediaDelay = time.Millisecond     // a Forward takes effect
	stopDelay  = 2 * time.Millisecond // a Standby takes effect; Stopped follows
	arpDelay   = 2 * time.Millisecond // the sender follows a gratuitous ARP
	ringSize   = 100                  // packets in a standby ring (200 ms)
)

// link is one direction of a path, or a unit's link to the witness.
type link struct {
	delay, jitter time.Duration
	loss, dup     float64
	cut           bool
}

func (l *link) transit(rng *rand.Rand) (time.Duration, bool) {
	if l.cut || rng.Float64() < l.loss {
		return 0, false
	}
	d := l.delay
	if l.jitter > 0 {
		d += time.Duration(rng.Int64N(int64(l.jitter)))
	}
	return d, true
}

type world struct {
	rng     *rand.Rand
	now     time.Duration
	q       events
	seq     uint64
	cfg     Config // alpha's
	units   [2]*unit
	wit     *Witness
	witUp   bool
	paths   [2][]*link // [from unit][path]
	wlink   [2]*link
	arp     []int // per stream: the unit the sender's packets go to, -1 none
	seq0    []uint16
	decoder [][]output
	verbose bool
	trace   []string
	fail    []string
	inv     invariants
}

type output struct {
	seq  uint16
	unit int
	at   time.Duration
}

func (w *world) at(t time.Duration, fn func()) {
	w.seq++
	heap.Push(&w.q, &event{at: t, seq: w.seq, fn: fn})
}

func (w *world) after(d time.Duration, fn func()) { w.at(w.now+d, fn) }

func (w *world) logf(format string, args ...any) {
	if w.verbose {
		w.trace = append(w.trace, fmt.Sprintf("%9.3fms ", float64(w.now)/1e6)+fmt.Sprintf(format, args...))
	}
}

func (w *world) failf(format string, args ...any) {
	if len(w.fail) < 5 {
		msg := fmt.Sprintf("at %.3fms: ", float64(w.now)/1e6) + fmt.Sprintf(format, args...)
		w.fail = append(w.fail, msg)
		w.logf("VIOLATION %s", msg)
	}
}

// run processes events until the end time.
func (w *world) run(end time.Duration) {
	for len(w.q) > 0 {
		e := heap.Pop(&w.q).(*event)
		if e.at > end {
			return
		}
		w.now = e.at
		e.fn()
		w.check()
	}
}

// envelope is a pair message on the wire, with what pairnet adds to it.
type envelope struct {
	from       int
	inc, echo  uint64 // sender's incarnation; the receiver's as the sender knows it
	counter    uint64
	sentAt     time.Duration // sender's clock
	sentGlobal time.Duration
	echoSent   time.Duration // receiver's send time of the newest message the sender had on this path
	path       int
	msg        Message
}

// unit is one appliance: its Machine, its pairnet-like driver and its media.
type unit struct {
	w          *world
	idx        int
	name       string
	cfg        Config
	m          *Machine
	inc        uint64
	off        time.Duration // its monotonic clock's origin
	alive      bool
	bootAt     time.Duration
	hung       bool
	resumedAt  time.Duration
	backlog    []func()
	health     UnitState
	notCarried []bool
	// notCarriedAt is when each stream's worker last stopped carrying it:
	// its owner waits carriedGrace before it hands the stream over.
	notCarriedAt []time.Duration
	linkDown     []bool
	media        []*mstream
	gen          int

	peerInc  uint64
	echoSent []time.Duration
	counter  uint64
	seen     map[uint64]bool
	lastLive time.Duration // global time of the last live message; 0 never
	heardBy  time.Duration // its own newest send time the peer echoed (its clock)

	alarms  map[alarmKey]string
	alarmAt map[alarmKey]time.Duration
	epochs  []uint32

	decidedAt []time.Duration // global time of the machine's last Forward per stream
	gapOK     []bool          // that Forward came after D without a live message
	watch     []time.Duration // when a live message sent after the peer's last Forward arrived; -1 not yet
	selfWatch []time.Duration // when a live message sent after its own last Forward arrived; -1 not yet
}

func (u *unit) peer() *unit             { return u.w.units[1-u.idx] }
func (u *unit) mono() time.Duration     { return u.w.now + u.off }
func (u *unit) streamOK(i int) bool     { return !u.notCarried[i] && !u.linkDown[i] && u.health != Failed }
func (u *unit) logf(f string, a ...any) { u.w.logf(u.name+": "+f, a...) }

// call runs a machine call now, or queues it while the unit hangs.
func (u *unit) call(inc uint64, fn func()) {
	if !u.alive || u.inc != inc {
		return
	}
	if u.hung {
		u.backlog = append(u.backlog, fn)
		return
	}
	fn()
}

func (u *unit) boot() {
	w := u.w
	u.inc++
	u.alive, u.hung, u.bootAt, u.health = true, false, w.now, Up
	u.backlog = nil
	n := len(u.cfg.Streams)
	u.notCarried, u.linkDown, u.notCarriedAt = make([]bool, n), make([]bool, n), make([]time.Duration, n)
	u.media = make([]*mstream, n)
	for i := range u.media {
		u.media[i] = &mstream{}
	}
	u.peerInc, u.echoSent, u.seen, u.lastLive, u.heardBy = 0, make([]time.Duration, u.cfg.Paths), map[uint64]bool{}, 0, 0
	u.alarms, u.alarmAt, u.epochs = map[alarmKey]string{}, map[alarmKey]time.Duration{}, make([]uint32, n)
	u.decidedAt, u.gapOK, u.watch, u.selfWatch = make([]time.Duration, n), make([]bool, n), make([]time.Duration, n), make([]time.Duration, n)
	for i := range u.watch {
		u.watch[i], u.selfWatch[i] = -1, -1
	}
	m, err := New(u.cfg, u, u.mono())
	if err != nil {
		panic(err)
	}
	u.m = m
	u.logf("boot, incarnation %d", u.inc)
	inc := u.inc
	var tick func()
	tick = func() {
		if !u.alive || u.inc != inc {
			return
		}
		w.after(u.cfg.Heartbeat, tick)
		if u.hung {
			return
		}
		u.tick()
	}
	w.after(time.Duration(w.rng.Int64N(int64(u.cfg.Heartbeat))), tick)
}

func (u *unit) tick() {
	for i, ms := range u.media {
		u.m.SetLocal(u.mono(), i, ms.local(u, i))
	}
	u.m.Tick(u.mono())
}

func (u *unit) crash() {
	u.logf("crash")
	u.alive, u.m, u.backlog = false, nil, nil
	u.gen++
	for _, ms := range u.media {
		ms.fwd, ms.vip = false, false
	}
}

func (u *unit) hang() { u.logf("hang"); u.hung = true }

func (u *unit) resume() {
	if !u.alive || !u.hung {
		return
	}
	u.logf("resume with %d queued calls", len(u.backlog))
	u.hung, u.resumedAt = false, u.w.now
	calls := u.backlog
	u.backlog = nil
	// The loop wakes with its ticker and its sockets both ready, in no
	// particular order.
	k := u.w.rng.IntN(len(calls) + 1)
	calls = append(calls[:k], append([]func(){u.tick}, calls[k:]...)...)
	for _, fn := range calls {
		if !u.alive || u.hung {
			return
		}
		fn()
	}
}

// Send is the Env side of pairnet: authenticated, counted, echoing.
func (u *unit) Send(path int, m Message) {
	w := u.w
	u.counter++
	env := envelope{from: u.idx, inc: u.inc, echo: u.peerInc, counter: u.counter, sentAt: u.mono(), sentGlobal: w.now, path: path, msg: m}
	if u.peerInc != 0 {
		env.echoSent = u.echoSent[path]
	}
	l := w.paths[u.idx][path]
	copies := 1
	if w.rng.Float64() < l.dup {
		copies = 2
	}
	for range copies {
		if d, ok := l.transit(w.rng); ok {
			w.after(d, func() { u.peer().deliver(env) })
		}
	}
}

// deliver is pairnet's receive side: incarnation, nonce echo, replay.
func (u *unit) deliver(env envelope) {
	if !u.alive {
		return
	}
	inc := u.inc
	u.call(inc, func() {
		w := u.w
		if env.inc != u.peerInc {
			u.peerInc, u.seen = env.inc, map[uint64]bool{}
			for p := range u.echoSent {
				u.echoSent[p] = 0
			}
		}
		u.echoSent[env.path] = max(u.echoSent[env.path], env.sentAt)
		if env.echo != u.inc || u.seen[env.counter] {
			return
		}
		u.seen[env.counter] = true
		if u.lastLive == 0 || w.now-u.lastLive > u.cfg.Heartbeat*2 {
			u.logf("live message after %v", w.now-u.lastLive)
		}
		u.lastLive = w.now
		for i := range u.watch {
			if u.watch[i] < 0 && u.peer().decidedAt[i] != 0 && env.sentGlobal >= u.peer().decidedAt[i] {
				u.watch[i] = w.now
			}
			if u.selfWatch[i] < 0 && u.decidedAt[i] != 0 && env.sentGlobal >= u.decidedAt[i] {
				u.selfWatch[i] = w.now
			}
		}
		u.m.Receive(u.mono(), env.path, env.msg)
		if env.echoSent != 0 {
			u.heardBy = max(u.heardBy, env.echoSent)
			u.m.PeerHeard(u.mono(), env.echoSent)
		}
	})
}

func (u *unit) Forward(i int, from *uint16, c Continuity) {
	w := u.w
	f := "live"
	if from != nil {
		f = fmt.Sprint(*from)
	}
	u.logf("forward %s from %s", u.cfg.Streams[i].Name, f)
	u.decidedAt[i], u.selfWatch[i] = w.now, -1
	u.gapOK[i] = u.lastLive == 0 || w.now-u.lastLive >= u.cfg.Detect()
	if o := u.peer(); len(o.watch) > i {
		o.watch[i] = -1
	}
	var start *uint16
	if from != nil {
		v := *from
		start = &v
	}
	gen := u.gen
	u.media[i].later(w, mediaDelay, func() {
		if u.gen == gen {
			u.media[i].forward(u, i, start)
		}
	})
}

func (u *unit) Standby(i int) {
	w := u.w
	u.logf("standby %s", u.cfg.Streams[i].Name)
	gen, inc := u.gen, u.inc
	u.media[i].later(w, stopDelay, func() {
		if u.gen != gen {
			return
		}
		ms := u.media[i]
		ms.fwd = false
		last, ok := ms.prog, ms.sinceStart
		w.after(stopDelay/4, func() {
			u.call(inc, func() { u.m.Stopped(u.mono(), i, last, ok) })
		})
	})
}

func (u *unit) HoldVIP(i int, hold bool) {
	u.logf("vip %s %v", u.cfg.Streams[i].Name, hold)
	u.media[i].vip = hold
	if hold {
		gen := u.gen
		u.w.after(arpDelay, func() {
			if u.gen == gen {
				u.w.arp[i] = u.idx
			}
		})
	}
}

func (u *unit) AskWitness(takeover bool) {
	w := u.w
	sentAt, inc := u.mono(), u.inc
	req := WitnessRequest{Unit: u.name, Peer: u.cfg.Peer, Takeover: takeover,
		HearsPeer: u.heardBy != 0 && u.mono()-u.heardBy < u.cfg.Detect()+u.cfg.Heartbeat,
		Detect:    u.cfg.Detect(), Heartbeat: u.cfg.Heartbeat}
	d, ok := w.wlink[u.idx].transit(w.rng)
	if !ok {
		return
	}
	w.after(d, func() {
		if !w.witUp {
			return
		}
		a := w.wit.Ask(w.now, req)
		if takeover {
			w.logf("witness: %s asks takeover: %+v", u.name, a)
		}
		d, ok := w.wlink[u.idx].transit(w.rng)
		if !ok {
			return
		}
		w.after(d, func() {
			u.call(inc, func() { u.m.WitnessAnswer(u.mono(), sentAt, a.Lease, a.Takeover) })
		})
	})
}

func (u *unit) Alarm(a Alarm) {
	k := alarmKey{a.Kind, a.Subject}
	old, on := u.alarms[k]
	switch {
	case a.On && on && old == a.Msg:
		u.w.failf("%s raised %v %q twice", u.name, a.Kind, a.Subject)
	case !a.On && !on:
		u.w.failf("%s cleared %v %q, not raised", u.name, a.Kind, a.Subject)
	}
	if a.On {
		u.alarms[k] = a.Msg
		if !on {
			u.alarmAt[k] = u.w.now
		}
	} else {
		delete(u.alarms, k)
	}
	u.logf("alarm %v %q on=%v %s", a.Kind, a.Subject, a.On, a.Msg)
}

// mstream is one stream in a unit's media: the standby ring, forwarding.
type mstream struct {
	ringHas     bool
	first, last uint16
	fwd         bool
	anyNext     bool // forward whatever comes next
	next        uint16
	progHas     bool
	prog        uint16
	sinceStart  bool
	vip         bool
	busy        time.Duration // commands take effect in order: not before this
}

// later runs a media command after its delay, in the order given.
func (ms *mstream) later(w *world, d time.Duration, fn func()) {
	ms.busy = max(ms.busy, w.now+d)
	w.at(ms.busy, fn)
}

func (ms *mstream) local(u *unit, i int) Local {
	return Local{
		Carried: !u.notCarried[i] && u.health != Failed, LinkUp: !u.linkDown[i],
		HasProgress: ms.progHas, Progress: ms.prog,
		HasRing: ms.ringHas, RingFirst: ms.first,
		BitrateKbps: 2000,
		Cont:        Continuity{Valid: true, InSSRC: 7, LastInSeq: ms.last},
	}
}

func (ms *mstream) receive(u *unit, i int, n uint16) {
	switch {
	case ms.ringHas && n == ms.last+1:
		ms.last = n
		if ms.last-ms.first >= ringSize {
			ms.first = ms.last - ringSize + 1
		}
	case ms.ringHas && seqGE(ms.last, n):
		return // late or duplicate
	default:
		ms.ringHas, ms.first, ms.last = true, n, n
	}
	if ms.fwd && (ms.anyNext || seqGE(n, ms.next)) {
		ms.out(u, i, n)
		ms.anyNext, ms.next = false, n+1
	}
}

func (ms *mstream) forward(u *unit, i int, from *uint16) {
	ms.fwd, ms.sinceStart = true, false
	switch {
	case !ms.ringHas:
		ms.anyNext = from == nil
		if from != nil {
			ms.next = *from
		}
	case from == nil || int16(*from-ms.last) > ringSize:
		ms.anyNext, ms.next = false, ms.last+1
	default:
		f := *from
		if !seqGE(f, ms.first) {
			f = ms.first // the ring does not reach back so far
		}
		ms.anyNext, ms.next = false, f
		for seqGE(ms.last, ms.next) {
			ms.out(u, i, ms.next)
			ms.next++
		}
	}
}

func (ms *mstream) out(u *unit, i int, n uint16) {
	ms.progHas, ms.prog, ms.sinceStart = true, n, true
	u.w.decoder[i] = append(u.w.decoder[i], output{seq: n, unit: u.idx, at: u.w.now})
}

// source emits stream i's input: to both units (dual) or to the address's
// holder as the sender's ARP says (vip).
func (w *world) source(i int, n uint16, inputDelay [2]time.Duration) {
	w.after(pktEvery, func() { w.source(i, n+1, inputDelay) })
	targets := []int{0, 1}
	if w.cfg.Streams[i].VIP {
		if w.arp[i] < 0 {
			return
		}
		targets = []int{w.arp[i]}
	}
	for _, t := range targets {
		u := w.units[t]
		gen := u.gen
		w.after(inputDelay[t], func() {
			if !u.alive || u.gen != gen || !u.streamOK(i) {
				return
			}
			if w.cfg.Streams[i].VIP && !u.media[i].vip {
				return // the address is not on this unit
			}
			u.media[i].receive(u, i, n)
		})
	}
}
