package failover

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Env is how the machine acts. The driver implements it; calls must return at
// once (the driver queues media work) and must not call back into the Machine.
type Env interface {
	// Send sends m on a path; path -1 means every path. The machine sends
	// on each path by its index, with m.Path set.
	Send(path int, m Message)
	// Forward starts forwarding the stream from input sequence *from (nil:
	// from the live point) out of the standby ring; if the ring does not
	// reach back to *from, from the ring's oldest packet. cont.Valid false:
	// keep the worker's own output numbering.
	Forward(stream int, from *uint16, cont Continuity)
	// Standby stops forwarding; the driver later calls Machine.Stopped.
	Standby(stream int)
	// HoldVIP adds and announces (true) or removes the stream's virtual IP.
	HoldVIP(stream int, hold bool)
	// AskWitness sends a witness request now, stamped with the time it is
	// sent. HearsPeer in it says the peer hears this unit: a live message
	// from the peer echoed a send time of this unit's less than D +
	// heartbeat ago (the echo pairnet passes to PeerHeard).
	AskWitness(takeover bool)
	// Alarm raises or clears a condition.
	Alarm(a Alarm)
}

// Local is this unit's media view of a stream.
type Local struct {
	Carried     bool // a live worker carries the stream
	LinkUp      bool // the stream's media link is up: its input can arrive
	HasProgress bool
	Progress    uint16 // the input sequence of the newest packet forwarded
	HasRing     bool
	RingFirst   uint16 // the oldest input sequence of the contiguous run in the standby ring
	BitrateKbps uint32
	Cont        Continuity
}

func (l Local) ready() bool { return l.Carried && l.LinkUp }

// Phase is where a stream stands on this unit.
type Phase string

// Phases (docs/pair-protocol.md, States).
const (
	PhaseStandby     Phase = "standby"
	PhaseForwarding  Phase = "forwarding"
	PhaseHandingOver Phase = "handing-over" // vip: waiting for the peer to hold the address
	PhaseStopping    Phase = "stopping"     // media told to stop, waiting for the last forwarded sequence
	PhaseFenced      Phase = "fenced"       // owner without the right to forward
)

// Errors Handover returns.
var (
	ErrNoSuchStream     = errors.New("no such stream")
	ErrNotOwner         = errors.New("this unit does not forward the stream: ask the unit that does")
	ErrHandoverPending  = errors.New("a handover of the stream is already under way")
	ErrStartingUp       = errors.New("the unit is still starting: try again in a moment")
	ErrPeerUnavailable  = errors.New("the peer is not live and up")
	ErrDisagreement     = errors.New("the peer's pair config or protocol version differs: make the configs identical and reload")
	ErrPeerNotReady     = errors.New("the peer cannot receive the stream now (its worker or media link is down)")
	ErrPeerOverCapacity = errors.New("the peer has no free capacity for the stream")
)

// vipPrepareTimeout is how many heartbeats an owner waits for the peer's
// ring during a vip handover, and for its media to confirm a stop.
// vipPrepareMin is the least it waits for the ring: a sender ignores an
// announcement that comes within its ARP locktime (1 s on Linux) of the
// last change of its entry, so the peer's second announcement, more than
// a locktime after the first, must fit in the wait.
const (
	vipPrepareTimeout = 20
	vipPrepareMin     = 3 * time.Second
)

// minStartupWait is the least a starting unit listens before it claims or
// takes anything. Two units started together (a rack powering up) start
// their processes tens of milliseconds apart; each must hear the other
// before taking the other's preferred streams, or every start would leave
// the streams wherever the faster unit put them.
const minStartupWait = time.Second

// linkRewind is how many packets before the agreed start a peer resends
// when a stream moves because its media link went down here.
const linkRewind uint16 = 16

// carriedGrace is how long a stream may be without a worker before its
// owner hands it to the peer. A worker restart costs the stream a few tens
// of milliseconds and is the media supervisor's to handle; a worker that
// keeps failing makes the whole unit failed, which hands everything over.
const carriedGrace = time.Second

// Machine is one unit's side of the pair protocol: a pure state machine.
// Time is the now argument of every call, a monotonic reading. It is not
// safe for concurrent use: the driver calls it from one goroutine.
type Machine struct {
	cfg    Config
	env    Env
	al     alarms
	digest uint64
	rank   int // 0: the name sorting first; owns odd epochs
	d, hb  time.Duration

	born        time.Duration
	starting    bool
	health      UnitState
	lastCall    time.Duration
	listenSince time.Duration // after a stall, silence counts from here

	pathHeard   []time.Duration
	heard       time.Duration // last live message on any path; 0 never
	agree       bool
	peerVersion uint8
	peerDigest  uint64
	peerState   UnitState
	peerFreeS   uint32
	peerFreeB   uint64
	peerUpSince time.Duration
	seen        []bool
	seenCount   int
	wholeTable  bool // the peer's whole table arrived since this unit started
	silentSince time.Duration
	heardBy     time.Duration // newest own send time the peer acknowledged

	leaseUntil time.Duration
	answered   time.Duration // when the newest witness answer arrived
	granted    bool

	streams []*stream
	byRank  []int // stream indices, highest priority first
	dirty   bool
	ticking bool // in Tick: once-a-heartbeat work may run
}

type stream struct {
	cfg   Stream
	known bool // SetLocal was called: until then the media's view is unknown, not bad
	// uncarriedSince is when the media last stopped carrying the stream
	// (0 while it carries it).
	uncarriedSince time.Duration
	epoch          uint32
	hasStart       bool
	start          uint16
	phase          Phase
	local          Local

	peer   Entry
	peerAt time.Duration // when the peer's entry arrived; 0 never
	moved  time.Duration // when the epoch last changed

	operator    bool // the operator asked for a handover
	prepare     bool // owner, vip: the peer is asked to take the address
	prepareAt   time.Duration
	progAt      Local         // owner, vip: the media's view when it asked the peer to take the address
	ringAt      Local         // standby, vip: the ring when it took the address for the peer
	askedAt     time.Duration // standby, vip: the last peer entry that asked for the address
	asked       uint32        // the epoch it asked in
	stopAt      time.Duration
	timedOut    bool // the vip handover went ahead without the peer's ring
	vipHeld     bool
	fencedAt    time.Duration
	lastOK      bool
	unconfirmed bool   // Standby sent, Stopped not yet received
	last        uint16 // the last sequence forwarded before the media stopped
}

// New starts a machine in state starting at now.
func New(cfg Config, env Env, now time.Duration) (*Machine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Streams = append([]Stream(nil), cfg.Streams...)
	m := &Machine{
		cfg:       cfg,
		env:       env,
		al:        alarms{env: env, on: map[alarmKey]string{}},
		digest:    Digest(cfg),
		d:         cfg.Detect(),
		hb:        cfg.Heartbeat,
		born:      now,
		starting:  true,
		health:    Up,
		lastCall:  now,
		pathHeard: make([]time.Duration, cfg.Paths),
		seen:      make([]bool, len(cfg.Streams)),
	}
	if cfg.Peer < cfg.Self {
		m.rank = 1
	}
	for i, s := range cfg.Streams {
		if s.Prefer == "" {
			cfg.Streams[i].Prefer = m.unitOfRank(0)
		}
		m.streams = append(m.streams, &stream{cfg: cfg.Streams[i], phase: PhaseStandby})
		m.byRank = append(m.byRank, i)
	}
	sort.SliceStable(m.byRank, func(a, b int) bool {
		return m.streams[m.byRank[a]].cfg.Priority > m.streams[m.byRank[b]].cfg.Priority
	})
	return m, nil
}

func (m *Machine) unitOfRank(r int) string {
	if m.rank == r {
		return m.cfg.Self
	}
	return m.cfg.Peer
}

// mine says whether an epoch belongs to this unit: odd epochs are rank 0's.
func (m *Machine) mine(e uint32) bool   { return e != 0 && int(1-e%2) == m.rank }
func (m *Machine) theirs(e uint32) bool { return e != 0 && !m.mine(e) }

// nextEpoch is the smallest epoch above every one known for s with the
// parity of the unit of rank r.
func (m *Machine) nextEpoch(s *stream, toMe bool) uint32 {
	e := max(s.epoch, s.peer.Epoch) + 1
	if m.mine(e) != toMe {
		e++
	}
	return e
}

func (m *Machine) enter(now time.Duration) {
	if now-m.lastCall > 2*m.hb {
		// The machine was not run (a hang, a starved thread): messages that
		// came meanwhile are still queued, so the silence it measured is its
		// own. It listens for D again before it calls the peer silent.
		m.listenSince = now
	}
	m.lastCall = max(m.lastCall, now)
}

// Forwarding says whether this unit forwards stream i now (or hands it
// over and forwards until the peer takes it).
func (m *Machine) Forwarding(i int) bool {
	if i < 0 || i >= len(m.streams) {
		return false
	}
	p := m.streams[i].phase
	return p == PhaseForwarding || p == PhaseHandingOver
}

// SilentAt is when the peer becomes silent (rule 4's D) if nothing more
// is heard from it: a driver that calls Tick then, not at the next
// heartbeat, takes over up to a heartbeat sooner. In the past once the
// peer is silent.
func (m *Machine) SilentAt() time.Duration {
	return max(m.heard, m.listenSince, m.born) + m.d
}

func (m *Machine) live(now time.Duration) bool { return m.heard != 0 && now-m.heard < m.d }

func (m *Machine) silent(now time.Duration) bool {
	return now-max(m.heard, m.listenSince, m.born) >= m.d
}

// mayForward: with a witness, a unit forwards only while it holds a lease
// (D − heartbeat from the request's sending) or its peer heard a message it
// sent in the last D + heartbeat (the peer's echo comes up to two
// heartbeats late; one more lets one echo be lost). Both end, checked each
// heartbeat and followed by the media's stop, before the peer can take
// over: the witness waits until the unit was unheard for D + heartbeat,
// and the peer until it has heard nothing for D + 3 heartbeats.
func (m *Machine) mayForward(now time.Duration) bool {
	if !m.cfg.Witness {
		return true
	}
	return now < m.leaseUntil || (m.heardBy != 0 && now < m.heardBy+m.d+m.hb)
}

// unheard: no message of this unit's sent in the last d has been echoed by
// the peer: the peer does not hear it.
func (m *Machine) unheard(now, d time.Duration) bool {
	return now-max(m.heardBy, m.listenSince, m.born) >= d
}

// lost: the peer is silent or, with a witness, does not hear this unit. A
// peer that does not hear this unit cannot learn its epochs, and once the
// witness no longer hears it either, it is fenced and stays so until this
// unit's messages reach it.
func (m *Machine) lost(now time.Duration) bool {
	return m.silent(now) || (m.cfg.Witness && m.unheard(now, m.d))
}

// mayTakeOver: rule 4's condition.
func (m *Machine) mayTakeOver(now time.Duration) bool {
	if !m.cfg.Witness {
		return m.silent(now)
	}
	wait := m.d + 3*m.hb
	return m.granted && (now-max(m.heard, m.listenSince, m.born) >= wait || m.unheard(now, wait))
}

func (m *Machine) state() UnitState {
	if m.starting {
		return Starting
	}
	return m.health
}

// Tick runs the timers and sends the whole table on every path. The driver
// calls it every heartbeat, after SetLocal for every stream.
func (m *Machine) Tick(now time.Duration) {
	m.enter(now)
	m.ticking = true
	m.update(now)
	m.ticking = false
	if m.cfg.Witness {
		m.env.AskWitness(m.wantsTakeover(now))
	}
	m.sendTable(now)
}

// SetUnit sets the unit's health: Up, Draining or Failed.
func (m *Machine) SetUnit(now time.Duration, s UnitState, reason string) {
	m.enter(now)
	if s == Up || s == Draining || s == Failed {
		if s != m.health {
			m.health = s
			m.dirty = true
		}
	}
	m.update(now)
	m.flush(now)
}

// SetLocal records this unit's media view of a stream; the machine acts on
// it at the next Tick.
func (m *Machine) SetLocal(now time.Duration, i int, l Local) {
	if i >= 0 && i < len(m.streams) {
		s := m.streams[i]
		switch {
		case l.Carried:
			s.uncarriedSince = 0
		case s.uncarriedSince == 0:
			s.uncarriedSince = now
		}
		s.local, s.known = l, true
	}
}

// PeerHeard tells the machine that a live message from the peer echoed
// sentAt, the send time of the newest message of this unit the peer had
// received on that path (pairnet reads it from the message's echo field).
// With a witness, it is what lets a unit that has no lease keep forwarding:
// hearing the peer is not enough when the peer does not hear it back.
func (m *Machine) PeerHeard(now, sentAt time.Duration) {
	m.enter(now)
	if sentAt <= now && sentAt > m.heardBy {
		m.heardBy = sentAt
	}
	m.update(now)
	m.flush(now)
}

// Receive handles a live, authenticated message from the peer.
func (m *Machine) Receive(now time.Duration, path int, msg Message) {
	m.enter(now)
	if path >= 0 && path < len(m.pathHeard) {
		m.pathHeard[path] = now
	}
	m.heard = now
	m.peerVersion, m.peerDigest = msg.Version, msg.Digest
	if msg.Version == Version && msg.State != m.peerState {
		// A peer in disagreement still says what state it is in (the
		// operator sees it); only another version's body is unreadable.
		m.peerState = msg.State
		m.peerUpSince = 0
	}
	if msg.Version != Version || msg.Digest != m.digest {
		m.agree = false
		m.update(now)
		m.flush(now)
		return
	}
	m.agree = true
	if m.peerState == Up && m.peerUpSince == 0 {
		m.peerUpSince = now
	}
	m.peerFreeS, m.peerFreeB = msg.FreeStreams, msg.FreeBitrate
	for _, e := range msg.Entries {
		i := int(e.Index)
		if i >= len(m.streams) {
			continue
		}
		s := m.streams[i]
		s.peer, s.peerAt = e, now
		if !m.seen[i] {
			m.seen[i] = true
			m.seenCount++
		}
		if e.Epoch > s.epoch {
			m.adopt(now, i, e)
		}
	}
	if m.seenCount == len(m.streams) {
		m.wholeTable = true
	}
	m.update(now)
	m.flush(now)
}

// adopt is rule 1: a newer epoch wins at once.
func (m *Machine) adopt(now time.Duration, i int, e Entry) {
	s := m.streams[i]
	s.epoch, s.hasStart, s.start, s.moved = e.Epoch, e.HasStart, e.Start, now
	s.prepare, s.operator, s.timedOut = false, false, false
	m.dirty = true
	if m.mine(e.Epoch) {
		if s.phase == PhaseForwarding || s.phase == PhaseHandingOver {
			s.phase = PhaseForwarding
			return
		}
		var from *uint16
		// A unit that has not had its peer's whole table since it started
		// is learning what it owned before a restart, not receiving a
		// handover: that start is old, and the ring it built since holds
		// nothing before it, so it forwards from the live point.
		if e.HasStart && m.wholeTable && !m.starting {
			from = &s.start
		}
		m.forward(now, i, from, e.Cont)
		return
	}
	switch s.phase {
	case PhaseForwarding, PhaseHandingOver:
		m.standby(i)
	}
	m.release(i)
	s.phase = PhaseStandby
}

// standby tells the media to stop; until it confirms, the stream's entry
// still says forwarding, so that a peer waiting to resume does not start
// while this unit's packets still go out.
func (m *Machine) standby(i int) {
	m.streams[i].unconfirmed = true
	m.env.Standby(i)
}

func (m *Machine) release(i int) {
	s := m.streams[i]
	if s.vipHeld {
		s.vipHeld = false
		m.env.HoldVIP(i, false)
	}
}

func (m *Machine) hold(i int) {
	s := m.streams[i]
	if s.cfg.VIP && !s.vipHeld {
		s.vipHeld = true
		m.env.HoldVIP(i, true)
	}
}

// forward starts forwarding a stream this unit owns, or fences it when the
// unit may not forward now.
func (m *Machine) forward(now time.Duration, i int, from *uint16, cont Continuity) {
	s := m.streams[i]
	s.prepare = false
	if !m.mayForward(now) {
		m.release(i)
		s.phase, s.fencedAt = PhaseFenced, now
		return
	}
	m.env.Forward(i, from, cont)
	m.hold(i)
	s.phase = PhaseForwarding
	m.dirty = true
}

// Stopped is the media's answer to Standby: the last input sequence it
// forwarded (ok false: it had forwarded nothing).
func (m *Machine) Stopped(now time.Duration, i int, last uint16, ok bool) {
	m.enter(now)
	if i < 0 || i >= len(m.streams) {
		return
	}
	s := m.streams[i]
	s.unconfirmed = false
	m.dirty = true
	if ok {
		s.last, s.lastOK = last, true
	}
	if s.phase == PhaseStopping {
		m.finishHandover(now, i, last, ok)
	}
	m.update(now)
	m.flush(now)
}

func (m *Machine) finishHandover(now time.Duration, i int, last uint16, ok bool) {
	s := m.streams[i]
	if why := m.peerCannotContinue(now, s); why != nil {
		// The peer went away while the media stopped: keep the stream,
		// from the packet after the last one sent.
		var from *uint16
		if ok {
			next := last + 1
			from = &next
		}
		m.forward(now, i, from, Continuity{})
		return
	}
	e := m.nextEpoch(s, false)
	if ok {
		s.hasStart, s.start = true, last+1
		if !s.local.LinkUp && !s.cfg.VIP {
			// The media link went down under the last packets this unit
			// sent: the peer sends them again from its ring. A decoder
			// drops what it already has; it cannot recover what was lost.
			s.start -= linkRewind
		}
	}
	s.epoch, s.moved = e, now
	s.phase, s.prepare, s.operator, s.timedOut = PhaseStandby, false, false, false
	m.release(i)
	m.dirty = true
}

// WitnessAnswer handles the witness's answer to the request sent at sentAt.
func (m *Machine) WitnessAnswer(now, sentAt time.Duration, lease, takeover bool) {
	m.enter(now)
	m.answered = now
	if lease {
		m.leaseUntil = max(m.leaseUntil, sentAt+m.d-m.hb)
	}
	if takeover && m.silentSince != 0 && sentAt >= m.silentSince && m.lost(now) {
		m.granted = true
	}
	m.update(now)
	m.flush(now)
}

func (m *Machine) wantsTakeover(now time.Duration) bool {
	if m.starting || !m.lost(now) {
		return false
	}
	// A unit with no room asks for nothing: a grant fences the peer. A
	// fenced owner asks too: the witness may have fenced it for a grant
	// the peer never used, and only a grant of its own lifts that when
	// the peer is gone.
	take, _ := m.pick()
	owned, _ := m.load()
	return len(take) > 0 || (owned > 0 && !m.mayForward(now))
}

// Handover is the operator's planned handover of a stream to the peer.
func (m *Machine) Handover(now time.Duration, i int) error {
	m.enter(now)
	if i < 0 || i >= len(m.streams) {
		return fmt.Errorf("stream %d: %w", i, ErrNoSuchStream)
	}
	s := m.streams[i]
	name := s.cfg.Name
	switch {
	case m.starting:
		return fmt.Errorf("handover of %s: %w", name, ErrStartingUp)
	case !m.mine(s.epoch) || s.phase == PhaseStandby || s.phase == PhaseFenced:
		return fmt.Errorf("handover of %s: %w", name, ErrNotOwner)
	case s.phase != PhaseForwarding || s.operator:
		return fmt.Errorf("handover of %s: %w", name, ErrHandoverPending)
	}
	if err := m.peerCannotTake(now, s); err != nil {
		return fmt.Errorf("handover of %s to %s: %w", name, m.cfg.Peer, err)
	}
	s.operator = true
	m.update(now)
	m.flush(now)
	return nil
}

// peerCannotTake says why the peer cannot take a stream by handover now.
func (m *Machine) peerCannotTake(now time.Duration, s *stream) error {
	switch {
	case !m.live(now) || m.peerState != Up || (m.heardBy != 0 && m.unheard(now, m.d)):
		return ErrPeerUnavailable
	case !m.agree:
		return ErrDisagreement
	case s.peerAt == 0 || !s.peer.Ready:
		return ErrPeerNotReady
	case m.peerFreeS != NoLimitStreams && m.peerFreeS < 1:
		return ErrPeerOverCapacity
	case m.peerFreeB != NoLimitBitrate && m.peerFreeB < m.bitrate(s):
		return ErrPeerOverCapacity
	}
	return nil
}

// peerCannotContinue says why a handover under way must be called off.
// A peer that started draining meanwhile still takes it: it holds the
// address already, and calling off would lose what the sender sent it.
func (m *Machine) peerCannotContinue(now time.Duration, s *stream) error {
	switch {
	case !m.live(now) || (m.peerState != Up && m.peerState != Draining):
		return ErrPeerUnavailable
	case !m.agree:
		return ErrDisagreement
	case !s.peer.Ready:
		return ErrPeerNotReady
	}
	return nil
}

func (m *Machine) bitrate(s *stream) uint64 {
	return uint64(max(s.local.BitrateKbps, s.peer.BitrateKbps)) * 1000
}

// update applies every rule that depends on time or on what changed.
func (m *Machine) update(now time.Duration) {
	if m.starting && (now-m.born >= max(m.d+m.hb, minStartupWait) || m.wholeTable) {
		m.starting = false
		m.dirty = true
	}
	live, silent := m.live(now), m.silent(now)
	if !live {
		m.peerUpSince = 0
	}
	if m.lost(now) {
		if m.silentSince == 0 {
			m.silentSince = now
			if m.cfg.Witness && !m.starting {
				m.env.AskWitness(m.wantsTakeover(now))
			}
		}
	} else {
		m.silentSince, m.granted = 0, false
	}
	m.fence(now)
	m.peerAlarms(now, live, silent)
	if m.starting {
		return
	}
	if live && !m.agree {
		// In disagreement nothing moves: the peer's entries mean nothing here.
		for i, s := range m.streams {
			if s.phase == PhaseHandingOver {
				m.abortHandover(i)
			}
			if !m.mine(s.epoch) && s.vipHeld {
				m.release(i)
			}
		}
		return
	}
	m.claim(now)
	m.takeover(now)
	for i := range m.streams {
		m.step(now, i, live)
	}
}

// fence stops owned streams when the unit lost the right to forward, and
// resumes them when it has it again and no newer epoch appeared.
func (m *Machine) fence(now time.Duration) {
	if !m.cfg.Witness {
		return
	}
	may := m.mayForward(now)
	owned := false
	for i, s := range m.streams {
		switch {
		case !may && (s.phase == PhaseForwarding || s.phase == PhaseHandingOver):
			m.standby(i)
			m.release(i)
			s.phase, s.prepare, s.fencedAt = PhaseFenced, false, now
			m.dirty = true
		case may && s.phase == PhaseFenced && m.mine(s.epoch):
			// Resuming on the peer's word alone needs the peer's entry for
			// this stream since the fence, or a newer epoch could be missed.
			if s.peerAt > s.fencedAt && s.peer.Forwarding && m.theirs(s.peer.Epoch) {
				// The peer took the stream while this unit could not
				// forward: it restarted and forgot the epochs, so its
				// epoch is lower. It keeps the stream; this unit gives
				// it an epoch of the peer's.
				s.epoch, s.hasStart, s.moved, s.phase = m.nextEpoch(s, false), false, now, PhaseStandby
				m.dirty = true
				continue
			}
			if s.peerAt > s.fencedAt && s.peer.Forwarding {
				continue // the peer's media is still stopping
			}
			if now < m.leaseUntil || s.peerAt > s.fencedAt {
				var from *uint16
				if s.lastOK {
					next := s.last + 1
					from = &next
				}
				m.forward(now, i, from, Continuity{})
			}
		}
		if m.mine(s.epoch) {
			owned = true
		}
	}
	msg := fmt.Sprintf("%s has neither a witness lease nor a peer that hears it: its streams are stopped until one returns; check the network to %s and to the witness", m.cfg.Self, m.cfg.Peer)
	fenced := false
	for _, s := range m.streams {
		fenced = fenced || s.phase == PhaseFenced
	}
	m.al.set(Fenced, "", !m.starting && (fenced || (!may && owned)), msg)
	if m.starting {
		return
	}
	unreachable := now-max(m.answered, m.born) >= m.d
	m.al.set(WitnessUnreachable, "", unreachable, "no answer from the witness for the detection time: check the witness and the network to it; a unit that also loses its peer stops its streams")
}

func (m *Machine) peerAlarms(now time.Duration, live, silent bool) {
	if m.starting {
		return
	}
	m.al.set(PeerLost, m.cfg.Peer, silent, fmt.Sprintf("no message from %s on any path for %v: check the peer and every heartbeat path", m.cfg.Peer, m.d))
	for p, t := range m.pathHeard {
		down := now-max(t, m.listenSince, m.born) >= m.d
		m.al.set(PathDown, strconv.Itoa(p), down, fmt.Sprintf("no message from %s on heartbeat path %d for %v: check that path's cable and switch", m.cfg.Peer, p, m.d))
	}
	msg := fmt.Sprintf("%s has another pair config (digest %016x, here %016x): nothing moves until both units have the same config; fix it and reload", m.cfg.Peer, m.peerDigest, m.digest)
	if m.peerVersion != Version {
		msg = fmt.Sprintf("%s speaks pair protocol version %d, this unit %d: nothing moves until both run the same release", m.cfg.Peer, m.peerVersion, Version)
	}
	m.al.set(Mismatch, "", live && !m.agree, msg)
}

// claim is rule 2: a stream nobody owns yet goes to its preferred unit, or
// to the other when the preferred one is silent.
//
// Only with the peer live: its table says the stream is unclaimed. With
// the peer silent, a claim is a takeover (rule 4), with its conditions.
func (m *Machine) claim(now time.Duration) {
	if !m.live(now) {
		return
	}
	for i, s := range m.streams {
		if s.epoch != 0 || s.peer.Epoch != 0 || s.cfg.Prefer != m.cfg.Self {
			continue
		}
		e := m.nextEpoch(s, true)
		s.epoch, s.hasStart, s.moved = e, false, now
		m.dirty = true
		m.forward(now, i, nil, Continuity{})
	}
}

// takeover is rule 4: a silent peer's streams, by priority, within capacity.
func (m *Machine) takeover(now time.Duration) {
	take, over := m.pick()
	if m.mayTakeOver(now) {
		for _, i := range take {
			s := m.streams[i]
			var from *uint16
			if m.theirs(s.epoch) && s.peerAt != 0 && s.peer.HasProgress {
				next := s.peer.Progress + 1
				from = &next
			}
			cont := s.peer.Cont
			if !cont.Valid {
				cont = s.local.Cont
			}
			s.epoch, s.hasStart, s.moved = m.nextEpoch(s, true), from != nil, now
			if from != nil {
				s.start = *from
			}
			m.dirty = true
			m.forward(now, i, from, cont)
		}
	}
	m.al.set(OverCapacity, "", m.lost(now) && len(over) > 0, fmt.Sprintf("%s has no capacity for %s: these streams are not carried until %s returns or capacity is added",
		m.cfg.Self, strings.Join(over, ", "), m.cfg.Peer))
}

// pick is rule 4's choice: the peer's and unclaimed streams this unit
// would take, by priority, within its capacity, and those that do not fit.
func (m *Machine) pick() (take []int, over []string) {
	nStreams, bits := m.load()
	for _, i := range m.byRank {
		s := m.streams[i]
		if s.epoch != 0 && !m.theirs(s.epoch) {
			continue
		}
		b := m.bitrate(s)
		if (m.cfg.Capacity.Streams > 0 && nStreams+1 > m.cfg.Capacity.Streams) ||
			(m.cfg.Capacity.BitrateBPS > 0 && bits+b > m.cfg.Capacity.BitrateBPS) {
			over = append(over, s.cfg.Name)
			continue
		}
		nStreams, bits = nStreams+1, bits+b
		take = append(take, i)
	}
	return take, over
}

// load is what this unit owns: streams and bits/s.
func (m *Machine) load() (int, uint64) {
	n, bits := 0, uint64(0)
	for _, s := range m.streams {
		if m.mine(s.epoch) {
			n++
			bits += m.bitrate(s)
		}
	}
	return n, bits
}

// trigger says why an owned stream should be handed over, or "".
func (m *Machine) trigger(now time.Duration, s *stream) (reason string, alarm bool) {
	switch {
	case !s.known:
		return "", false
	case m.health == Draining:
		return m.cfg.Self + " is draining", true
	case m.health == Failed:
		return m.cfg.Self + " cannot carry streams", true
	case !s.local.Carried && now-s.uncarriedSince >= carriedGrace:
		return "no worker carries it on " + m.cfg.Self, true
	case !s.local.LinkUp:
		return "its media link is down on " + m.cfg.Self, true
	case s.operator:
		return "the operator asked", false
	case m.cfg.Preempt && s.cfg.Prefer == m.cfg.Peer && m.peerUpSince != 0 &&
		now-m.peerUpSince >= m.cfg.PreemptHold && now-s.moved >= m.cfg.PreemptHold:
		return "it prefers " + m.cfg.Peer, false
	}
	return "", false
}

// step moves one stream along: handovers it owns, and the vip address it
// holds for the peer's handover.
func (m *Machine) step(now time.Duration, i int, live bool) {
	s := m.streams[i]
	if !m.mine(s.epoch) {
		m.al.set(CannotHandOver, s.cfg.Name, false, "")
		m.standbyVIP(now, i, live)
		return
	}
	switch s.phase {
	case PhaseStandby:
		// An owner always forwards: this is an epoch learned in a way that
		// started nothing.
		m.forward(now, i, nil, s.peer.Cont)
	case PhaseForwarding:
		reannounce := s.cfg.VIP && s.peerAt == now && s.peer.Prepare && s.peer.Epoch == s.epoch
		if reannounce {
			// Unless it hands the stream over now, the peer still holds
			// the address from a handover this unit called off: announce
			// it again, so the sender comes back here.
			defer func() {
				if s.phase == PhaseForwarding {
					m.env.HoldVIP(i, true)
				}
			}()
		}
		reason, alarm := m.trigger(now, s)
		if reason == "" {
			m.al.set(CannotHandOver, s.cfg.Name, false, "")
			return
		}
		if err := m.peerCannotTake(now, s); err != nil {
			if s.operator {
				s.operator = false
			}
			m.al.set(CannotHandOver, s.cfg.Name, alarm, fmt.Sprintf("%s should move to %s (%s) but cannot: %v", s.cfg.Name, m.cfg.Peer, reason, err))
			return
		}
		if !s.timedOut {
			m.al.set(CannotHandOver, s.cfg.Name, false, "")
		}
		if s.cfg.VIP {
			s.phase, s.prepare, s.prepareAt, s.progAt = PhaseHandingOver, true, now, s.local
			m.dirty = true
			return
		}
		m.stop(now, i)
	case PhaseHandingOver:
		// Once asked, the handover goes on even if its reason went away:
		// the sender may be switching already.
		if m.peerCannotContinue(now, s) != nil {
			m.abortHandover(i)
			return
		}
		p := s.peer
		// Every packet sent before the prepare came here, so a ring that
		// starts at or before the progress of that moment is not the one
		// the address brought: it is left from an earlier time.
		fresh := !s.progAt.HasProgress || int16(p.RingFirst-s.progAt.Progress) > 0
		if s.peerAt > s.prepareAt && p.Prepare && p.HasRing && p.Epoch == s.epoch && fresh {
			receiving := s.local.ready() && m.health != Failed
			if !receiving || (s.local.HasProgress && seqGE(s.local.Progress, p.RingFirst-1)) {
				m.stop(now, i)
				return
			}
		}
		if now-s.prepareAt >= max(vipPrepareTimeout*m.hb, vipPrepareMin) {
			s.timedOut = true
			m.al.set(CannotHandOver, s.cfg.Name, true, fmt.Sprintf("%s: %s did not report its ring within %v; handed over anyway, packets sent while the address moved may be lost", s.cfg.Name, m.cfg.Peer, max(vipPrepareTimeout*m.hb, vipPrepareMin)))
			m.stop(now, i)
		}
	case PhaseStopping:
		if now-s.stopAt >= vipPrepareTimeout*m.hb {
			// The media never confirmed: hand over without a start.
			m.finishHandover(now, i, 0, false)
		}
	}
}

// abortHandover keeps a vip stream whose handover cannot go on. The peer
// may have announced the address meanwhile: the owner announces it again,
// so the sender comes back.
func (m *Machine) abortHandover(i int) {
	s := m.streams[i]
	s.phase, s.prepare = PhaseForwarding, false
	m.env.HoldVIP(i, true)
	m.dirty = true
}

func (m *Machine) stop(now time.Duration, i int) {
	s := m.streams[i]
	m.standby(i)
	m.release(i)
	s.phase, s.stopAt = PhaseStopping, now
	m.dirty = true
}

// standbyVIP holds a vip stream's address while its owner asks for it
// (the prepare flag), and lets it go when the owner stops asking.
func (m *Machine) standbyVIP(now time.Duration, i int, live bool) {
	s := m.streams[i]
	if !s.cfg.VIP {
		return
	}
	if s.peer.Prepare && s.peer.Epoch == s.epoch && s.peerAt == now {
		s.askedAt, s.asked = now, s.epoch
	}
	// Messages may arrive out of order: an older one without the prepare
	// flag does not take the address away at once.
	want := live && m.agree && m.theirs(s.epoch) && s.asked == s.epoch && now-s.askedAt < 2*m.hb &&
		(m.state() == Up || m.state() == Draining) && s.local.ready()
	switch {
	case want && !s.vipHeld:
		m.hold(i)
		s.ringAt = s.local
		m.dirty = true
	case want && m.ticking && (!s.local.HasRing || (s.ringAt.HasRing && s.local.RingFirst == s.ringAt.RingFirst)):
		// Nothing came through the address yet: the sender may have
		// followed a later announcement of the owner's. Announce again.
		m.env.HoldVIP(i, true)
	case !want && s.vipHeld:
		m.release(i)
		m.dirty = true
	}
}

func seqGE(a, b uint16) bool { return int16(a-b) >= 0 }

func (m *Machine) flush(now time.Duration) {
	if m.dirty {
		m.sendTable(now)
	}
}

func (m *Machine) entry(i int) Entry {
	s := m.streams[i]
	l := s.local
	fwd := s.phase == PhaseForwarding || s.phase == PhaseHandingOver || s.unconfirmed
	standbyVIP := !m.mine(s.epoch) && s.vipHeld
	if standbyVIP && s.ringAt.HasRing && l.RingFirst == s.ringAt.RingFirst {
		// The ring still starts where it did before the address came: no
		// packet has come through it yet.
		l.HasRing = false
	}
	return Entry{
		Index:       uint16(i),
		Epoch:       s.epoch,
		Forwarding:  fwd,
		Ready:       l.ready() && m.health != Failed,
		HasStart:    s.hasStart,
		Start:       s.start,
		HasProgress: l.HasProgress,
		Progress:    l.Progress,
		HasRing:     l.HasRing,
		RingFirst:   l.RingFirst,
		// The owner's prepare asks for the address; the standby's says it holds it.
		Prepare:     s.prepare || standbyVIP,
		BitrateKbps: l.BitrateKbps,
		Cont:        l.Cont,
	}
}

// sendTable sends the whole table on every path, MaxEntries per message.
func (m *Machine) sendTable(now time.Duration) {
	m.dirty = false
	nStreams, bits := m.load()
	freeS, freeB := NoLimitStreams, NoLimitBitrate
	if c := m.cfg.Capacity.Streams; c > 0 {
		freeS = uint32(max(c-nStreams, 0))
	}
	if c := m.cfg.Capacity.BitrateBPS; c > 0 {
		freeB = 0
		if bits < c {
			freeB = c - bits
		}
	}
	if m.starting || m.health != Up {
		freeS, freeB = 0, 0
	}
	for p := 0; p < m.cfg.Paths; p++ {
		for first := 0; first == 0 || first < len(m.streams); first += MaxEntries {
			n := min(len(m.streams)-first, MaxEntries)
			entries := make([]Entry, n)
			for k := range entries {
				entries[k] = m.entry(first + k)
			}
			m.env.Send(p, Message{
				Version:      Version,
				Digest:       m.digest,
				State:        m.state(),
				Path:         uint8(p),
				WitnessLease: now < m.leaseUntil,
				FreeStreams:  freeS,
				FreeBitrate:  freeB,
				Entries:      entries,
			})
		}
	}
}
