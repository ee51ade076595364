package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"appliance/config"
	"appliance/control"
	"appliance/failover"
	"appliance/health"
	"appliance/media"
	"appliance/pairnet"
	"appliance/status"
	"appliance/supervisor"
)

// pairUnit wires the pair. pairnet's loop, on a real-time thread, drives the
// failover state machine: every call into the machine happens there. What
// can be slow (telling workers, netlink, the health tracker's lock) goes to
// ordinary goroutines through channels, so neither a busy worker nor an API
// reader can delay a heartbeat.
type pairUnit struct {
	u       *unit
	pc      *config.Pair
	fc      failover.Config
	streams []config.Stream // in failover's order (by name)
	index   map[string]int
	nicOf   []string // the media link each stream's input arrives on ("" unknown)
	node    *pairnet.Node
	m       *failover.Machine
	detect  time.Duration

	ops     chan pairOp
	vips    []vipState       // by stream; the media goroutine's
	vipc    *pairnet.VIPs    // the virtual addresses' links and sockets; the media goroutine's
	vipProg []media.Progress // checkVIPs' reused buffer; the media goroutine's
	results chan stopResult
	alarms  chan failover.Alarm
	reqs    chan pairReq

	// Loop-side state (the loop's thread only).
	prog     []media.Progress
	lastUnit failover.UnitState
	lastWhy  string
	ticks    int
	echoed   time.Duration // the newest send time of ours the peer echoed
	pending  bool          // media operations were queued since the last flush

	local        atomic.Pointer[localView] // feeder -> loop
	view         atomic.Pointer[pairView]  // loop -> API
	muted        atomic.Bool               // a power-loss drill: nothing is sent
	drill        atomic.Pointer[string]    // an overheat drill's reason while it runs
	mediaFailed  atomic.Bool               // the media supervisor gave up recently
	fastView     atomic.Bool               // a drill measures: publish the view every tick
	drillRunning atomic.Bool

	stopMu sync.Mutex
	stops  map[int]stopResult // the last stop of each stream, for handovers and drills

	drillMu sync.Mutex
	drills  []status.Drill
}

type pairOpKind uint8

const (
	opForward pairOpKind = iota
	opStandby
	opHoldVIP
	opReleaseVIP
	opDrillStop // a power-loss drill stops a stream behind the machine's back
	opFlush     // the end of what one call into the machine asked for
)

type pairOp struct {
	kind   pairOpKind
	stream int
	from   *uint16
	cont   failover.Continuity
}

type stopResult struct {
	stream int
	last   uint16
	ok     bool
	at     time.Duration
}

type pairReq struct {
	stream int
	reply  chan error
}

// localView is what the feeder publishes for the loop.
type localView struct {
	unit   failover.UnitState
	why    string
	linkUp []bool // by stream
}

// pairView is what the loop publishes for the API.
type pairView struct {
	st    failover.Status
	owner map[string]streamPair
}

type streamPair struct {
	owner  string
	active bool
	epoch  uint32
}

// maxDrills is how many drills the API keeps.
const maxDrills = 20

// newPair builds the pair of a unit whose config has a pair: section. It
// binds the heartbeat sockets, so a port in use fails the start.
func newPair(u *unit, cfg *config.Config) (*pairUnit, error) {
	pc := cfg.Pair
	p := &pairUnit{u: u, pc: pc, index: map[string]int{}, stops: map[int]stopResult{}}
	p.streams = slices.Clone(cfg.Streams)
	slices.SortFunc(p.streams, func(a, b config.Stream) int { return strings.Compare(a.Name, b.Name) })
	fc := failover.Config{
		Self: cfg.Unit.Name, Peer: pc.PeerName, Paths: len(pc.Paths),
		Heartbeat: time.Duration(pc.Heartbeat), DetectMultiplier: pc.DetectMultiplier,
		Witness: pc.Witness.IsValid(), Preempt: pc.Preempt, PreemptHold: time.Duration(pc.PreemptHold),
		Capacity: failover.Capacity{Streams: pc.Capacity.Streams, BitrateBPS: pc.Capacity.BitrateBPS},
	}
	for i, s := range p.streams {
		p.index[s.Name] = i
		fc.Streams = append(fc.Streams, failover.Stream{Name: s.Name, Prefer: s.Prefer, VIP: s.InputMode == "vip", Priority: s.Priority})
		p.nicOf = append(p.nicOf, mediaLinkOf(s))
	}
	p.fc = fc
	p.detect = fc.Detect()
	n := len(p.streams)
	p.ops = make(chan pairOp, 8*n+64)
	p.vips = make([]vipState, n)
	p.vipc = pairnet.NewVIPs()
	p.results = make(chan stopResult, 2*n+16)
	p.alarms = make(chan failover.Alarm, 4*n+64)
	p.reqs = make(chan pairReq, 16)
	p.local.Store(&localView{unit: failover.Starting, linkUp: allTrue(n)})

	paths := make([]pairnet.Path, 0, len(pc.Paths))
	for _, pp := range pc.Paths {
		paths = append(paths, pairnet.Path{Local: pp.Local, Remote: pp.Remote})
	}
	node, err := pairnet.Open(pairnet.Options{
		Paths: paths, Key: pc.Key, Witness: pc.Witness, Self: cfg.Unit.Name, Peer: pc.PeerName,
		Heartbeat: fc.Heartbeat, Detect: p.detect, Clock: u.clk, Logger: u.log,
		Beacon: func() *exec.Cmd {
			c := exec.Command(u.exe, "pair-beacon")
			c.Args[0] = u.argv0
			c.Stderr = os.Stderr
			return c
		},
	})
	if err != nil {
		return nil, fmt.Errorf("pair: %w", err)
	}
	p.node = node
	m, err := failover.New(fc, p, u.clk.Mono())
	if err != nil {
		node.Close()
		return nil, fmt.Errorf("pair: %w", err)
	}
	p.m = m
	p.view.Store(&pairView{st: m.Status(u.clk.Mono())})
	return p, nil
}

// mediaLinkOf names the interface a stream's input arrives on: the VIP's,
// or the one that holds the input address.
func mediaLinkOf(s config.Stream) string {
	if s.VIP != nil {
		return s.VIP.Interface
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return ""
	}
	for _, ifc := range ifs {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if pfx, err := netip.ParsePrefix(a.String()); err == nil && pfx.Addr().Unmap() == s.Input.Addr.Addr() {
				return ifc.Name
			}
		}
	}
	return ""
}

func allTrue(n int) []bool {
	b := make([]bool, n)
	for i := range b {
		b[i] = true
	}
	return b
}

// Serve runs the pair until ctx ends: the real-time loop, the media
// goroutine, the feeder and the alarm goroutine. It is a child of the root.
func (p *pairUnit) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){p.runMedia, p.feed, p.runAlarms} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
		}()
	}
	err := p.node.Run(ctx, p)
	cancel()
	wg.Wait()
	return err
}

// --- the loop's side: pairnet.Handler ---

// Tick implements pairnet.Handler.
func (p *pairUnit) Tick(now time.Duration) {
	p.drain(now)
	// Held streams are decided at a beat: the loop has just read every
	// message that waited, so after a stop the machine knows whether the
	// peer took them over.
	for more := true; more; {
		select {
		case h := <-p.u.held:
			p.reconfirm(h)
		default:
			more = false
		}
	}
	lv := p.local.Load()
	if lv.unit != p.lastUnit || lv.why != p.lastWhy {
		p.lastUnit, p.lastWhy = lv.unit, lv.why
		p.m.SetUnit(now, lv.unit, lv.why)
	}
	p.prog = p.u.media.ProgressOf(p.prog)
	for i := range p.prog {
		pr := &p.prog[i]
		idx, ok := p.index[pr.Name]
		if !ok {
			continue
		}
		l := failover.Local{
			Carried: pr.Carried, LinkUp: lv.linkUp[idx],
			HasProgress: pr.HaveForwarded, Progress: pr.LastForwarded,
			HasRing: pr.RingPackets > 0, RingFirst: pr.RingFirst,
			BitrateKbps: uint32(min(pr.BitrateBps/1000, float64(^uint32(0)))),
		}
		if c := pr.Cont; c.Valid {
			l.Cont = failover.Continuity{Valid: true, InSSRC: c.InSSRC, LastInSeq: c.LastInSeq, SeqOffset: c.SeqOffset,
				TSOffset: c.TSOffset, LastOutSeq: c.LastOutSeq, LastOutTS: c.LastOutTS, Age: c.Age}
		}
		p.m.SetLocal(now, idx, l)
	}
	p.m.Tick(now)
	p.flushOps()
	p.ticks++
	if p.ticks%10 == 0 || p.fastView.Load() {
		p.publish(now)
	}
}

// Deadline implements pairnet.Deadliner: the loop beats when the peer's
// silence falls due, not at the next heartbeat after it.
func (p *pairUnit) Deadline() time.Duration { return p.m.SilentAt() }

// Receive implements pairnet.Handler.
func (p *pairUnit) Receive(now time.Duration, path int, msg failover.Message) {
	p.drain(now)
	p.m.Receive(now, path, msg)
	p.flushOps()
}

// PeerHeard implements pairnet.Handler.
func (p *pairUnit) PeerHeard(now, sentAt time.Duration) {
	p.echoed = max(p.echoed, sentAt)
	p.m.PeerHeard(now, sentAt)
	p.flushOps()
}

// WitnessAnswer implements pairnet.Handler.
func (p *pairUnit) WitnessAnswer(now, sentAt time.Duration, lease, takeover bool) {
	if p.muted.Load() {
		return
	}
	p.m.WitnessAnswer(now, sentAt, lease, takeover)
	p.flushOps()
}

// flushOps tells the media goroutine that what the machine asked for in
// this call is all queued: a takeover of hundreds of streams then goes to
// the workers as one batch, not as many small ones.
func (p *pairUnit) flushOps() {
	if p.pending {
		p.pending = false
		p.enqueue(pairOp{kind: opFlush})
	}
}

// onHeld returns, for a paired unit, how the media hands over the
// streams a resumed worker held: to the pair loop, which decides at its
// next beat (Tick), once it has read the peer's news. Alone: nil, the
// media forwards them again at once.
func (u *unit) onHeld(cfg *config.Config) func([]media.Held) {
	if cfg.Pair == nil {
		return nil
	}
	u.held = make(chan []media.Held, 64)
	return func(h []media.Held) {
		select {
		case u.held <- h:
		default:
			// The loop is far behind: forwarding again is what a unit
			// alone does, and the machine corrects it if it must.
			go u.media.Reforward(h)
		}
	}
}

// reconfirm forwards again the held streams the machine still forwards;
// the others stay in standby, as the machine wants them.
func (p *pairUnit) reconfirm(held []media.Held) {
	for _, h := range held {
		idx, ok := p.index[h.Name]
		if !ok || !p.m.Forwarding(idx) {
			continue
		}
		op := pairOp{kind: opForward, stream: idx}
		if h.HasLast {
			next := h.LastForwarded + 1
			op.from = &next
		}
		p.enqueue(op)
	}
}

// drain hands the machine what arrived from the other goroutines.
func (p *pairUnit) drain(now time.Duration) {
	for {
		select {
		case r := <-p.results:
			p.m.Stopped(now, r.stream, r.last, r.ok)
		case q := <-p.reqs:
			err := p.m.Handover(now, q.stream)
			q.reply <- err
			if err == nil {
				p.publish(now)
			}
		default:
			return
		}
	}
}

func (p *pairUnit) publish(now time.Duration) {
	st := p.m.Status(now)
	v := &pairView{st: st, owner: make(map[string]streamPair, len(st.Streams))}
	for _, s := range st.Streams {
		v.owner[s.Name] = streamPair{owner: s.Owner, active: s.Role == "active", epoch: s.Epoch}
	}
	p.view.Store(v)
}

// --- failover.Env: called on the loop's thread; nothing here may block ---

// Send implements failover.Env.
func (p *pairUnit) Send(path int, msg failover.Message) {
	if p.muted.Load() {
		return
	}
	p.node.Send(path, msg)
}

// Forward implements failover.Env.
func (p *pairUnit) Forward(stream int, from *uint16, cont failover.Continuity) {
	p.enqueue(pairOp{kind: opForward, stream: stream, from: from, cont: cont})
}

// Standby implements failover.Env.
func (p *pairUnit) Standby(stream int) { p.enqueue(pairOp{kind: opStandby, stream: stream}) }

// HoldVIP implements failover.Env.
func (p *pairUnit) HoldVIP(stream int, hold bool) {
	if p.streams[stream].VIP == nil {
		return
	}
	k := opReleaseVIP
	if hold {
		k = opHoldVIP
	}
	p.enqueue(pairOp{kind: k, stream: stream})
}

// AskWitness implements failover.Env.
func (p *pairUnit) AskWitness(takeover bool) {
	if p.muted.Load() {
		return
	}
	// The peer hears this unit when it recently echoed one of its
	// messages: hearing the peer alone proves nothing to the witness.
	hears := p.echoed > 0 && p.u.clk.Mono()-p.echoed < p.detect+p.fc.Heartbeat
	p.node.AskWitness(takeover, hears)
}

// Alarm implements failover.Env.
func (p *pairUnit) Alarm(a failover.Alarm) {
	select {
	case p.alarms <- a:
	default:
		p.u.log.Error("pair: alarm queue full; an alarm was not raised", "kind", a.Kind, "subject", a.Subject)
	}
}

func (p *pairUnit) enqueue(op pairOp) {
	if op.kind != opFlush && op.kind != opDrillStop {
		p.pending = true
	}
	select {
	case p.ops <- op:
	default:
		// Sized for several operations per stream; full means the media
		// goroutine is stuck, and the machine will see the streams as not
		// carried.
		p.u.log.Error("pair: media queue full; a role change was dropped", "stream", p.streams[op.stream].Name)
	}
}

// --- the media goroutine ---

// runMedia carries out the machine's media operations in order, batching
// role changes so that many streams switch in the time of one.
func (p *pairUnit) runMedia(ctx context.Context) {
	defer p.vipc.Close()
	batch := make([]pairOp, 0, cap(p.ops))
	check := p.u.clk.NewTicker(vipCheck)
	defer check.Stop()
	last := p.u.clk.Mono()
	for {
		select {
		case <-ctx.Done():
			return
		case <-check.C():
			now := p.u.clk.Mono()
			p.checkVIPs(now-last > 5*vipCheck)
			last = now
		case op := <-p.ops:
			batch = batch[:0]
			whole := false
			add := func(op pairOp) {
				if op.kind == opFlush || op.kind == opDrillStop {
					whole = true
				}
				if op.kind != opFlush {
					batch = append(batch, op)
				}
			}
			add(op)
			// Wait for the rest of what the machine asked for in the same
			// call (it is queued within microseconds), so that it goes to
			// the workers as one batch.
			if !whole {
				wait := time.NewTimer(batchWait)
			rest:
				for !whole {
					select {
					case op := <-p.ops:
						add(op)
					case <-wait.C:
						break rest
					}
				}
				wait.Stop()
			}
		more:
			for {
				select {
				case op := <-p.ops:
					add(op)
				default:
					break more
				}
			}
			if len(batch) > 0 {
				p.apply(ctx, batch)
			}
		}
	}
}

func (p *pairUnit) apply(ctx context.Context, batch []pairOp) {
	var changes []media.RoleChange
	var which, after []pairOp
	seen := map[int]bool{}
	flush := func() {
		if len(changes) == 0 {
			return
		}
		t0 := p.u.clk.Mono()
		outs := p.u.media.SetRoles(ctx, changes)
		now := p.u.clk.Mono()
		if len(changes) > 1 {
			p.u.log.Info("pair: role changes", "streams", len(changes), "took", now-t0)
		}
		starting := 0
		for i, o := range outs {
			op := which[i]
			switch {
			case errors.Is(o.Err, media.ErrWorkerStarting):
				starting++ // kept: the stream starts in it
			case o.Err != nil:
				p.u.log.Warn("pair: role change", "stream", changes[i].Name, "role", changes[i].Role, "err", o.Err)
			}
			if op.kind == opStandby || op.kind == opDrillStop {
				r := stopResult{stream: op.stream, at: now}
				if o.Err == nil && o.Result.LastForwarded != nil {
					r.last, r.ok = *o.Result.LastForwarded, true
				}
				p.stopMu.Lock()
				p.stops[op.stream] = r
				p.stopMu.Unlock()
				if op.kind == opStandby {
					p.results <- r
				}
			}
		}
		if starting > 0 {
			p.u.log.Info("pair: role changes kept for streams whose worker is starting", "streams", starting)
		}
		changes, which = changes[:0], which[:0]
		clear(seen)
		for _, op := range after {
			p.vip(op.stream, op.kind == opHoldVIP)
		}
		after = after[:0]
	}
	// Addresses a batch only takes are added while the workers change
	// roles, not after: a packet that reaches a stream still in standby
	// goes to its ring, and the forward replays it. Hundreds of addresses
	// take tens of milliseconds; in series they came after every role
	// change of the batch.
	var holding chan struct{}
	if holds := onlyHolds(batch); len(holds) > 0 {
		holding = make(chan struct{})
		go func() {
			defer close(holding)
			// In vip mode the addresses are the takeover: taken above
			// every ordinary thread (a busy unit's scheduler held them up
			// for tens of milliseconds), below the heartbeats.
			pairnet.TakeRealtime(pairnet.DefaultRTPriority - 1)
			t0 := p.u.clk.Mono()
			p.holdVIPs(holds)
			if len(holds) > 1 {
				p.u.log.Info("pair: virtual IPs taken", "streams", len(holds), "took", p.u.clk.Mono()-t0)
			}
		}()
		defer func() { <-holding }()
	}
	for _, op := range batch {
		switch op.kind {
		case opHoldVIP, opReleaseVIP:
			if holding != nil {
				continue // taken above
			}
			// Order matters within a stream only: an address change
			// waits for its own stream's role change in the batch (a
			// takeover is Forward, then HoldVIP, for each of hundreds of
			// streams) and no other.
			if seen[op.stream] {
				after = append(after, op)
			} else {
				p.vip(op.stream, op.kind == opHoldVIP)
			}
			continue
		}
		if seen[op.stream] {
			flush()
		}
		seen[op.stream] = true
		c := media.RoleChange{Name: p.streams[op.stream].Name, Role: media.RoleStandby}
		if op.kind == opForward {
			c.Role, c.From = media.RoleForward, op.from
			if op.cont.Valid {
				c.Cont = &media.PeerContinuity{Valid: true, InSSRC: op.cont.InSSRC, LastInSeq: op.cont.LastInSeq,
					SeqOffset: op.cont.SeqOffset, TSOffset: op.cont.TSOffset, LastOutSeq: op.cont.LastOutSeq,
					LastOutTS: op.cont.LastOutTS, Age: op.cont.Age}
			}
		}
		changes = append(changes, c)
		which = append(which, op)
	}
	flush()
}

// onlyHolds lists the streams whose addresses a batch takes, when taking
// is all it does with addresses (a batch that also releases some keeps
// its order).
func onlyHolds(batch []pairOp) []int {
	var holds []int
	for _, op := range batch {
		switch op.kind {
		case opReleaseVIP:
			return nil
		case opHoldVIP:
			holds = append(holds, op.stream)
		}
	}
	return holds
}

// The sender's neighbour table ignores a gratuitous ARP that comes within
// its locktime (1 s on Linux) of the entry's last change, and an ignored
// one counts as a change. So a VIP is announced once when taken, and again
// only after more than the locktime, and only while nothing has come in
// through it: announcing faster would keep the sender on the old unit.
const (
	vipAnnounceGap = 1100 * time.Millisecond
	vipAnnounceFor = 10 * time.Second // give up announcing after this; the operator sees the stream idle
	vipCheck       = 100 * time.Millisecond
)

// batchWait bounds the wait for the end of one call's operations.
const batchWait = 5 * time.Millisecond

// vipState is one stream's virtual IP on this unit (the media goroutine's).
type vipState struct {
	held      bool
	heldAt    time.Duration
	announced time.Duration
}

func (p *pairUnit) vip(stream int, hold bool) {
	v := p.streams[stream].VIP
	name := p.streams[stream].Name
	vs := &p.vips[stream]
	now := p.u.clk.Mono()
	if !hold {
		vs.held = false
		if err := p.vipc.Del(v.Interface, v.Address); err != nil {
			p.u.log.Error("pair: removing the stream's virtual IP", "stream", name, "err", err)
		}
		return
	}
	if !vs.held {
		if err := p.vipc.Add(v.Interface, v.Address); err != nil {
			p.u.log.Error("pair: adding the stream's virtual IP", "stream", name, "err", err)
			return
		}
		vs.held, vs.heldAt = true, now
		p.announce(stream, now)
		return
	}
	if now-vs.announced >= vipAnnounceGap {
		p.announce(stream, now)
	}
}

// holdVIPs is vip(s, true) for many streams, adding the addresses each
// interface lacks in one write.
func (p *pairUnit) holdVIPs(streams []int) {
	var ifaces []string
	adds := map[string][]int{}
	for _, s := range streams {
		if p.vips[s].held {
			p.vip(s, true)
			continue
		}
		ifname := p.streams[s].VIP.Interface
		if adds[ifname] == nil {
			ifaces = append(ifaces, ifname)
		}
		adds[ifname] = append(adds[ifname], s)
	}
	for _, ifname := range ifaces {
		ss := adds[ifname]
		ps := make([]netip.Prefix, len(ss))
		for i, s := range ss {
			ps[i] = p.streams[s].VIP.Address
		}
		errs := p.vipc.AddAll(ifname, ps)
		now := p.u.clk.Mono()
		for i, s := range ss {
			if errs[i] != nil {
				p.u.log.Error("pair: adding the stream's virtual IP", "stream", p.streams[s].Name, "err", errs[i])
				continue
			}
			p.vips[s].held, p.vips[s].heldAt = true, now
			p.announce(s, now)
		}
	}
}

func (p *pairUnit) announce(stream int, now time.Duration) {
	v := p.streams[stream].VIP
	p.vips[stream].announced = now
	if err := p.vipc.Announce(v.Interface, v.Address.Addr()); err != nil {
		p.u.log.Warn("pair: announcing the stream's virtual IP", "stream", p.streams[stream].Name, "err", err)
	}
}

// checkVIPs announces again a held VIP that nothing has come through since
// it was last announced. late says this goroutine itself was held up (the
// process was stopped): then the unit must first learn what changed while
// it was away, and announces nothing this round.
func (p *pairUnit) checkVIPs(late bool) {
	if late {
		return
	}
	now := p.u.clk.Mono()
	read := false
	for i := range p.vips {
		vs := &p.vips[i]
		if !vs.held || now-vs.announced < vipAnnounceGap || now-vs.heldAt > vipAnnounceFor {
			continue
		}
		if !read {
			p.vipProg, read = p.u.media.ProgressOf(p.vipProg), true
		}
		for _, pr := range p.vipProg {
			if pr.Name == p.streams[i].Name && (pr.InputAge < 0 || pr.InputAge > now-vs.announced) {
				p.announce(i, now)
			}
		}
	}
}

// --- the feeder: health and links, for the loop ---

// feedInterval is how often the unit's health is read for the pair. The
// conditions themselves come at hw.poll_interval; this only bounds the delay.
const feedInterval = 20 * time.Millisecond

// lateLogEvery spaces the warnings about late heartbeats.
const lateLogEvery = 10 * time.Second

// authQuiet is how long without a refused message before pair.auth clears.
const authQuiet = time.Minute

func (p *pairUnit) feed(ctx context.Context) {
	t := p.u.clk.NewTicker(feedInterval)
	defer t.Stop()
	var lastRefused uint64
	var refusedAt time.Duration
	authUp := false
	started := p.u.clk.Mono()
	var lastLate uint64
	var lateLogged time.Duration
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		p.local.Store(p.localView())
		now := p.u.clk.Mono()
		st := p.node.Stats()
		var refused, garbage, forged, replayed uint64
		for _, ps := range st.Paths {
			garbage += ps.Garbage
			forged += ps.Forged
			replayed += ps.Replayed
		}
		refused = garbage + forged + replayed
		if refused > lastRefused {
			lastRefused, refusedAt, authUp = refused, now, true
			p.u.health.Set(health.PairAuth.Name, health.Warning, fmt.Sprintf(
				"refused on the pair ports: %d garbage, %d forged (wrong key), %d replayed; check that both units use the same pair.key_file and that nothing else sends to them",
				garbage, forged, replayed))
		} else if authUp && now-refusedAt > authQuiet {
			authUp = false
			p.u.health.Clear(health.PairAuth.Name)
		}
		if st.Late > lastLate && (lateLogged == 0 || now-lateLogged > lateLogEvery) {
			p.u.log.Warn("pair: the heartbeat loop was held off; the peer may have seen this unit as silent",
				"late_beats", st.Late-lastLate, "max_late", st.MaxLate, "detect", p.detect)
			lastLate, lateLogged = st.Late, now
		}
		// From a second after the start (the loop and the beacon start
		// meanwhile), and on every tick after: a beacon that exits later
		// is seen as well.
		if now-started > time.Second {
			switch {
			case !st.Realtime:
				p.u.health.Set(health.PairNoRealtime.Name, health.Warning,
					"the heartbeat thread runs without real-time priority: give the service LimitRTPRIO=10 (as image/appliance.service does) or run it as root")
			case !st.Beacon.Running:
				p.u.health.Set(health.PairNoRealtime.Name, health.Warning,
					"the heartbeat beacon is not running (see the log for why), so a busy CPU can delay heartbeats and make the peer take over: restart the unit when convenient")
			default:
				p.u.health.Clear(health.PairNoRealtime.Name)
			}
		}
	}
}

// localView reads the unit's health: which conditions make it drain, and
// which media links are down.
func (p *pairUnit) localView() *localView {
	lv := &localView{unit: failover.Up, linkUp: allTrue(len(p.streams))}
	down := map[string]bool{}
	anyMediaDown := false
	mediaLinks := map[string]bool{}
	for _, l := range p.u.cfg.HW.Links {
		if l.Role == "media" {
			mediaLinks[l.Name] = true
		}
	}
	for _, c := range p.u.health.Active() {
		switch {
		case c.Severity == health.Critical && (health.Temp.Is(c.Name) || health.PowerMainsLost.Is(c.Name) ||
			health.PowerOnBattery.Is(c.Name) || health.PowerBatteryLow.Is(c.Name)):
			if lv.unit == failover.Up {
				lv.unit, lv.why = failover.Draining, c.Name+": "+c.Message
			}
		case health.LinkDown.Is(c.Name) || health.LinkMissing.Is(c.Name):
			nic, _ := health.LinkDown.SubjectOf(c.Name)
			if nic == "" {
				nic, _ = health.LinkMissing.SubjectOf(c.Name)
			}
			down[nic] = true
			if mediaLinks[nic] {
				anyMediaDown = true
			}
		}
	}
	if why := p.drill.Load(); why != nil && lv.unit == failover.Up {
		lv.unit, lv.why = failover.Draining, *why
	}
	if p.mediaFailed.Load() || p.u.gaveUp.Load() {
		lv.unit, lv.why = failover.Failed, "the media supervisor gave up"
	}
	for i, nic := range p.nicOf {
		switch {
		case nic != "":
			lv.linkUp[i] = !down[nic]
		default:
			lv.linkUp[i] = !anyMediaDown
		}
	}
	return lv
}

// runAlarms raises and clears the machine's conditions.
func (p *pairUnit) runAlarms(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-p.alarms:
			name, sev := alarmName(a)
			if name == "" {
				continue
			}
			if a.On {
				p.u.health.Set(name, sev, a.Msg)
			} else {
				p.u.health.Clear(name)
			}
		}
	}
}

func alarmName(a failover.Alarm) (string, health.Severity) {
	switch a.Kind {
	case failover.PeerLost:
		return health.PairPeerLost.Name, health.Critical
	case failover.PathDown:
		return health.PairPathDown.For(a.Subject), health.Warning
	case failover.Mismatch:
		return health.PairMismatch.Name, health.Critical
	case failover.CannotHandOver:
		return health.PairCannotHandOver.For(a.Subject), health.Critical
	case failover.OverCapacity:
		return health.PairOverCapacity.Name, health.Critical
	case failover.Fenced:
		return health.PairFenced.Name, health.Critical
	case failover.WitnessUnreachable:
		return health.PairWitnessUnreachable.Name, health.Warning
	}
	return "", 0
}

// onEvent watches the supervision tree for the media supervisor giving up:
// its streams then belong on the peer.
func (p *pairUnit) onEvent(e supervisor.Event) {
	if e.Kind == supervisor.EventGiveUp && strings.HasSuffix(e.Supervisor, "media") {
		p.mediaFailed.Store(true)
	}
}

// --- actions ---

// ErrNotPaired is the answer to pair actions on a unit that runs alone.
var ErrNotPaired = errors.New("this unit is not paired: its config has no pair: section")

// handover asks the loop for a planned handover and waits until the peer
// forwards the stream.
func (p *pairUnit) handover(ctx context.Context, name string) (control.HandoverResult, error) {
	idx, ok := p.index[name]
	if !ok {
		return control.HandoverResult{}, fmt.Errorf("%w: %s", media.ErrNoStream, name)
	}
	reply := make(chan error, 1)
	select {
	case p.reqs <- pairReq{stream: idx, reply: reply}:
	case <-ctx.Done():
		return control.HandoverResult{}, ctx.Err()
	}
	select {
	case err := <-reply:
		if err != nil {
			return control.HandoverResult{}, fmt.Errorf("stream %s: %w", name, err)
		}
	case <-ctx.Done():
		return control.HandoverResult{}, ctx.Err()
	}
	return p.awaitOwner(ctx, name, p.pc.PeerName, 5*time.Second)
}

// awaitOwner polls the published view until the stream is owned by want.
func (p *pairUnit) awaitOwner(ctx context.Context, name, want string, limit time.Duration) (control.HandoverResult, error) {
	deadline := p.u.clk.Mono() + limit
	t := p.u.clk.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		v := p.view.Load()
		if sp, ok := v.owner[name]; ok && sp.owner == want {
			r := control.HandoverResult{Stream: name, To: want, Epoch: sp.epoch}
			for _, s := range v.st.Streams {
				if s.Name == name && s.HasStart {
					st := s.Start
					r.Start = &st
				}
			}
			return r, nil
		}
		if p.u.clk.Mono() > deadline {
			return control.HandoverResult{}, fmt.Errorf("stream %s: %s has not taken it within %v; see pair.cannot-hand-over and the peer's state in the API", name, want, limit)
		}
		select {
		case <-ctx.Done():
			return control.HandoverResult{}, ctx.Err()
		case <-t.C():
		}
	}
}

// Handover implements control.Actions.
func (u *unit) Handover(ctx context.Context, stream string) (control.HandoverResult, error) {
	if u.pair == nil {
		return control.HandoverResult{}, ErrNotPaired
	}
	return u.pair.handover(ctx, stream)
}

// report adds the pair to a report: the pair section, and each stream's
// owner, pair role and epoch.
func (p *pairUnit) report(rep *status.Report) {
	v := p.view.Load()
	st := v.st
	sp := &status.Pair{Peer: st.Peer, PeerState: peerStateName(st), Agreement: st.Agreement, State: stateName(st.State),
		DetectMs: ms(p.detect), Paths: []status.PairPath{}}
	ns := p.node.Stats()
	sp.Realtime = ns.Realtime
	sp.LateBeats, sp.MaxLateMs = ns.Late, ms(ns.MaxLate)
	sp.Beacon, sp.CoveredBeats = ns.Beacon.Running, ns.Beacon.Beats
	for _, ps := range ns.Paths {
		pp := status.PairPath{Local: ps.Local.String(), Remote: ps.Remote.String(), Sent: ps.Sent, Received: ps.Received,
			Missed: ps.Missed, Garbage: ps.Garbage, Forged: ps.Forged, Replayed: ps.Replayed, Version: ps.Version}
		if ps.Heard {
			pp.LastHeardMs = ptr(ms(ps.LastHeard))
			pp.Up = ps.LastHeard < p.detect
		}
		if ps.RTT > 0 {
			pp.RTTMs = ptr(ms(ps.RTT))
		}
		sp.Paths = append(sp.Paths, pp)
	}
	if p.pc.Witness.IsValid() {
		w := &status.Witness{Address: p.pc.Witness.String(), Lease: st.WitnessLease > 0}
		if ns.Witness.Answered {
			w.LastAnswerMs = ptr(ms(ns.Witness.LastAnswer))
		}
		if ns.Witness.RTT > 0 {
			w.RTTMs = ptr(ms(ns.Witness.RTT))
		}
		sp.Witness = w
	}
	p.drillMu.Lock()
	sp.Drills = slices.Clone(p.drills)
	p.drillMu.Unlock()
	if sp.Drills == nil {
		sp.Drills = []status.Drill{}
	}
	rep.Pair = sp
	for i := range rep.Streams {
		s := &rep.Streams[i]
		if o, ok := v.owner[s.Name]; ok {
			s.Owner, s.Epoch = o.owner, o.epoch
		}
	}
}

// stateName is a unit state as the API writes it.
func stateName(s failover.UnitState) string {
	switch s {
	case failover.Starting:
		return "starting"
	case failover.Up:
		return "up"
	case failover.Draining:
		return "draining"
	case failover.Failed:
		return "failed"
	}
	return "unknown"
}

// peerStateName is the peer's state as the API shows it: what it last said
// of itself while it is heard, "silent" after that, "unknown" before.
func peerStateName(st failover.Status) string {
	switch {
	case st.Live:
		return stateName(st.PeerState)
	case st.PeerState != 0:
		return "silent"
	}
	return "unknown"
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func ptr[T any](v T) *T { return &v }
