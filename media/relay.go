package media

import (
	"time"

	"github.com/pion/rtp"
)

// MaxDatagram is the largest datagram a stream accepts. Larger ones are
// counted as malformed: RTP is sized to the network MTU, and a jumbo datagram
// on a media input is an error upstream (or an attack), not video.
const MaxDatagram = 1500

// readBufSize leaves room to see that a datagram was larger than MaxDatagram.
const readBufSize = MaxDatagram + 1

// Why a datagram was dropped as malformed.
type malformedKind uint8

const (
	malformedShort    malformedKind = iota // shorter than an RTP header
	malformedVersion                       // not RTP version 2
	malformedHeader                        // CSRC list, extension or padding runs past the end
	malformedOversize                      // larger than MaxDatagram
	malformedKinds
)

// Counters is what one stream's relay has counted. In a worker it counts
// since the worker took the stream; the parent adds up every worker's.
type Counters struct {
	PacketsIn       uint64 `json:"packets_in"`
	BytesIn         uint64 `json:"bytes_in"`
	PacketsOut      uint64 `json:"packets_out"`
	BytesOut        uint64 `json:"bytes_out"`
	OutErrors       uint64 `json:"out_errors"`
	Lost            int64  `json:"lost"` // never negative
	Duplicates      uint64 `json:"duplicates"`
	Reordered       uint64 `json:"reordered"`
	Discontinuities uint64 `json:"seq_discontinuities"`
	SSRCChanges     uint64 `json:"ssrc_changes"`
	CCErrors        uint64 `json:"cc_errors"`
	TSSyncErrors    uint64 `json:"ts_sync_errors"`
	Malformed       uint64 `json:"malformed"`
	MalformedShort  uint64 `json:"malformed_short"`
	MalformedVer    uint64 `json:"malformed_version"`
	MalformedHeader uint64 `json:"malformed_header"`
	MalformedBig    uint64 `json:"malformed_oversize"`
	Replayed        uint64 `json:"replayed"` // sent from the standby ring by "forward from S"
	Skipped         uint64 `json:"skipped"`  // not forwarded: older than the S of "forward from S"
	// FromIgnored counts "forward from S" where S was too far from the
	// input's numbering to place (another source, or a stale number): the
	// stream forwarded from the next packet instead.
	FromIgnored uint64  `json:"from_ignored"`
	JitterMs    float64 `json:"jitter_ms"`
}

// Add accumulates c2's cumulative counters into c; the jitter gauge takes c2's value.
func (c *Counters) Add(c2 Counters) {
	c.PacketsIn += c2.PacketsIn
	c.BytesIn += c2.BytesIn
	c.PacketsOut += c2.PacketsOut
	c.BytesOut += c2.BytesOut
	c.OutErrors += c2.OutErrors
	c.Lost += c2.Lost
	c.Duplicates += c2.Duplicates
	c.Reordered += c2.Reordered
	c.Discontinuities += c2.Discontinuities
	c.SSRCChanges += c2.SSRCChanges
	c.CCErrors += c2.CCErrors
	c.TSSyncErrors += c2.TSSyncErrors
	c.Malformed += c2.Malformed
	c.MalformedShort += c2.MalformedShort
	c.MalformedVer += c2.MalformedVer
	c.MalformedHeader += c2.MalformedHeader
	c.MalformedBig += c2.MalformedBig
	c.Replayed += c2.Replayed
	c.Skipped += c2.Skipped
	c.FromIgnored += c2.FromIgnored
	if c2.PacketsIn != 0 {
		c.JitterMs = c2.JitterMs
	}
}

// Continuity is the state a relay needs to carry on a stream's output
// numbering where the previous worker (or, later, the paired unit) left off.
// The parent keeps the latest copy and hands it to the next worker, so a
// receiver behind a rewriting stream sees a gap after a crash, never a jump
// or a new SSRC.
type Continuity struct {
	Valid      bool   `json:"valid"`
	InSSRC     uint32 `json:"in_ssrc"`
	LastInSeq  uint16 `json:"last_in_seq"`
	SeqOffset  uint16 `json:"seq_offset"`
	TSOffset   uint32 `json:"ts_offset"`
	LastOutSeq uint16 `json:"last_out_seq"`
	LastOutTS  uint32 `json:"last_out_ts"`
	// At is the arrival of the last forwarded packet on the monotonic clock
	// (CLOCK_MONOTONIC, which every process on the machine shares), so the
	// next worker can step the timestamp by the real time that passed.
	At time.Duration `json:"at_mono_ns"`
	// Margin is how far to step the output sequence past LastOutSeq when the
	// input no longer lines up, because a worker that died may have sent a
	// few packets after it last reported. Set by the parent, used once.
	Margin uint16 `json:"margin,omitempty"`
}

// relay is one stream on the packet path: everything here runs per packet and
// must not allocate in steady state. It is not safe for concurrent use: the
// worker's stream lock guards it.
type relay struct {
	clockRate int
	rewrite   bool
	outSSRC   uint32

	pkt  rtp.Packet
	seq  SeqTracker
	jit  Jitter
	ts   TSChecker
	cont Continuity
	// handedOver is true until the first packet after a worker start has been
	// matched against the continuity state the parent handed over.
	handedOver bool
	ssrc       uint32 // input SSRC of the last packet, to count changes
	haveSSRC   bool
	c          Counters
	malformed  [malformedKinds]uint64
	scratch    []byte
	lastIn     time.Duration // arrival of the last valid packet, monotonic
	haveIn     bool

	standby bool
	ring    replayRing
	// startAt: while armed, packets numbered before it are not forwarded
	// (they were sent by whoever forwarded before, or replayed already).
	startAt    uint64
	startArmed bool
	// The highest input sequence number forwarded, for progress reports and
	// for the answer to a switch to standby.
	lastFwd    uint16
	lastFwdExt uint64
	haveFwd    bool
}

func newRelay(clockRate int, rewriteSSRC *uint32, cont Continuity) *relay {
	r := &relay{clockRate: clockRate, cont: cont, jit: NewJitter(clockRate), scratch: make([]byte, readBufSize)}
	if rewriteSSRC != nil {
		r.rewrite, r.outSSRC = true, *rewriteSSRC
	}
	r.handedOver = cont.Valid
	return r
}

// setRewrite changes the output SSRC (nil: pass through) in place.
func (r *relay) setRewrite(ssrc *uint32) {
	if ssrc == nil {
		r.rewrite = false
		return
	}
	r.rewrite, r.outSSRC = true, *ssrc
}

// setClockRate changes the RTP clock rate used for jitter and timestamp steps.
func (r *relay) setClockRate(rate int) {
	if rate == r.clockRate {
		return
	}
	r.clockRate = rate
	r.jit = NewJitter(rate)
}

// handle takes one received datagram (n is its real length, which may exceed
// len(buf) when it was truncated) that arrived at now on the monotonic clock,
// and returns the bytes to forward, or nil.
func (r *relay) handle(buf []byte, n int, now time.Duration) []byte {
	return r.handleArrived(buf, n, now, now)
}

// handleArrived is handle for a datagram read at now that the kernel
// received at arrived (earlier, when it was read in a batch). Only the
// jitter gauge takes arrived: everything else (the ring's ages, the input's
// liveness, continuity) takes the read's time, as the per-packet path does.
func (r *relay) handleArrived(buf []byte, n int, now, arrived time.Duration) []byte {
	if kind, ok := r.check(buf, n); !ok {
		r.malformed[kind]++
		r.c.Malformed++
		return nil
	}
	b := buf[:n]
	r.c.PacketsIn++
	r.c.BytesIn += uint64(n)
	r.lastIn, r.haveIn = now, true
	h := &r.pkt.Header

	if r.haveSSRC && h.SSRC != r.ssrc {
		r.c.SSRCChanges++
		r.seq.Resync()
		r.jit.Reset()
		r.ts.Reset()
		r.renumbered()
	}
	r.ssrc, r.haveSSRC = h.SSRC, true

	res := r.seq.Observe(h.SequenceNumber)
	ext := r.seq.Ext()
	if res == SeqDiscontinuity {
		r.jit.Reset()
		r.ts.Reset()
		r.renumbered()
	}
	if res == SeqInOrder || res == SeqDiscontinuity {
		r.jit.Observe(int64(arrived), h.Timestamp)
	}
	if h.PayloadType == PayloadTypeMP2T {
		r.ts.Check(r.pkt.Payload)
	}

	if r.standby {
		r.ring.push(b, ext, now)
		return nil
	}
	if r.startArmed {
		if ext < r.startAt {
			r.c.Skipped++
			return nil
		}
		r.startArmed = false
	}
	return r.forward(b, res, ext, now)
}

// renumbered forgets what was kept in terms of the old numbering: extended
// sequence numbers restart with a new source or after a jump.
func (r *relay) renumbered() {
	r.ring.reset()
	r.startArmed = false
	r.haveFwd = false
}

// forward turns a checked packet (parsed in r.pkt) into the bytes to send.
func (r *relay) forward(b []byte, res SeqResult, ext uint64, now time.Duration) []byte {
	h := &r.pkt.Header
	inSeq := h.SequenceNumber // rewriteHeader changes h
	out := b
	if !r.rewrite {
		if res == SeqInOrder || res == SeqDiscontinuity {
			r.cont = Continuity{Valid: true, InSSRC: h.SSRC, LastInSeq: h.SequenceNumber,
				LastOutSeq: h.SequenceNumber, LastOutTS: h.Timestamp, At: now}
		}
	} else if out = r.rewriteHeader(b, res, now); out == nil {
		return nil
	}
	if !r.haveFwd || ext > r.lastFwdExt {
		r.lastFwd, r.lastFwdExt, r.haveFwd = inSeq, ext, true
	}
	return out
}

// check classifies a datagram before it is trusted, and parses it into r.pkt.
func (r *relay) check(buf []byte, n int) (malformedKind, bool) {
	switch {
	case n > MaxDatagram || n > len(buf):
		return malformedOversize, false
	case n < 12:
		return malformedShort, false
	case buf[0]>>6 != 2:
		// pion/rtp does not check the version; without this a stray datagram
		// of any protocol would be relayed as video.
		return malformedVersion, false
	}
	if err := r.pkt.Unmarshal(buf[:n]); err != nil {
		return malformedHeader, false
	}
	return 0, true
}

// rewriteHeader applies the output SSRC and the sequence and timestamp offsets
// in place, moving the offsets when the input numbering no longer lines up.
func (r *relay) rewriteHeader(b []byte, res SeqResult, now time.Duration) []byte {
	h := &r.pkt.Header
	c := &r.cont
	switch {
	case !c.Valid:
		// The first packet ever: pass numbering through, only the SSRC changes.
		*c = Continuity{Valid: true, InSSRC: h.SSRC}
	case r.handedOver:
		if h.SSRC != c.InSSRC || !nearSeq(h.SequenceNumber, c.LastInSeq) {
			r.rebase(now, c.Margin)
		}
	case h.SSRC != c.InSSRC || res == SeqDiscontinuity:
		r.rebase(now, 0)
	}
	r.handedOver = false
	c.Margin = 0

	h.SSRC = r.outSSRC
	h.SequenceNumber += c.SeqOffset
	h.Timestamp += c.TSOffset
	if res == SeqInOrder || res == SeqDiscontinuity {
		c.LastInSeq = h.SequenceNumber - c.SeqOffset
		c.LastOutSeq, c.LastOutTS, c.At = h.SequenceNumber, h.Timestamp, now
	}

	hdrLen := len(b) - len(r.pkt.Payload) - int(r.pkt.PaddingSize)
	if h.MarshalSize() == hdrLen {
		if _, err := h.MarshalTo(b[:hdrLen]); err == nil {
			return b
		}
	}
	// pion re-encodes extensions with its own padding; when that changes the
	// header's length, write the whole packet again.
	n, err := r.pkt.MarshalTo(r.scratch)
	if err != nil {
		r.malformed[malformedHeader]++
		r.c.Malformed++
		return nil
	}
	return r.scratch[:n]
}

// rebase moves the offsets so that this packet continues the output numbering.
func (r *relay) rebase(now time.Duration, margin uint16) {
	h := &r.pkt.Header
	c := &r.cont
	step := uint32(1)
	if c.At != 0 && now > c.At {
		step = uint32(float64(now-c.At) * float64(r.clockRate) / 1e9)
		step = max(step, 1)
	}
	outSeq := c.LastOutSeq + 1 + margin
	outTS := c.LastOutTS + step
	c.InSSRC = h.SSRC
	c.SeqOffset = outSeq - h.SequenceNumber
	c.TSOffset = outTS - h.Timestamp
}

// setStandby stops forwarding: from now on packets are counted and kept in
// the ring. It returns the input sequence number of the last packet
// forwarded, if there was one.
func (r *relay) setStandby(keep time.Duration) (uint16, bool) {
	if !r.standby {
		r.standby = true
		r.ring.reset()
		r.ring.keep = keep
		r.startArmed = false
	}
	return r.lastFwd, r.haveFwd
}

// adopt takes over the output numbering of whoever forwarded the stream
// before: the paired unit. Like a worker start it is a hand-over: if the
// first packet forwarded lines up with c (same input SSRC, a sequence number
// near c's last), the offsets are kept as they are, so that two units fed
// the same input send the same bytes; otherwise the output is rebased onto
// c's last numbers. There is no margin: what the peer sent after c is not
// known here, and stepping blindly would make a gap of its own.
func (r *relay) adopt(c Continuity) {
	c.Valid, c.Margin = true, 0
	r.cont = c
	r.handedOver = true
}

// startForward leaves standby. With from set, it forwards from that input
// sequence number on: what the ring holds from it is sent now, through send,
// in arrival order; later packets numbered before it are skipped. A from too
// far from the input's numbering to place (further back than seqWindow or
// further ahead than maxDropout, the limits a hand-over also uses) is
// ignored and counted: forwarding starts with the next packet. With adopted
// set, adopt was called first and the first packet out is checked against
// the adopted numbering. It returns the number of packets replayed and
// whether from was ignored.
func (r *relay) startForward(from *uint16, adopted bool, send func([]byte)) (int, bool) {
	wasStandby := r.standby
	r.standby = false
	// Resuming without adopting is not a worker start: the offsets stay as
	// they are, so the output continues from whatever was sent last, by us
	// or by the peer.
	r.handedOver = adopted
	if from == nil {
		r.ring.reset()
		r.startArmed = false
		return 0, false
	}
	start, ok := r.seq.ExtOf(*from)
	if !ok {
		// Nothing received yet: nothing to compare with, forward all.
		r.startArmed = false
		return 0, false
	}
	if hi, _ := r.seq.Highest(); !nearSeq(*from, hi) {
		r.c.FromIgnored++
		r.ring.reset()
		r.startArmed = false
		return 0, true
	}
	replayed := 0
	next := start
	if wasStandby {
		r.ring.each(func(b []byte, ext uint64, at time.Duration) {
			if ext < start {
				return
			}
			if r.pkt.Unmarshal(b) != nil {
				return
			}
			res := SeqInOrder
			if r.haveFwd && ext <= r.lastFwdExt {
				res = SeqLate
			}
			if out := r.forward(b, res, ext, at); out != nil {
				send(out)
				replayed++
				r.c.Replayed++
			}
			next = max(next, ext+1)
		})
		r.ring.reset()
	}
	r.startAt, r.startArmed = next, true
	return replayed, false
}

// nearSeq reports whether seq belongs to the numbering whose latest number
// is ref: no further back than a late packet is recognised, no further ahead
// than loss is told from a new numbering.
func nearSeq(seq, ref uint16) bool {
	d := int(int16(seq - ref))
	return d > -seqWindow && d <= maxDropout
}

// relayState is a snapshot of a relay for a report.
type relayState struct {
	c       Counters
	cont    Continuity
	standby bool
	lastFwd uint16
	haveFwd bool
	ring    int
	lastIn  time.Duration
	haveIn  bool
}

func (r *relay) state() relayState {
	c := r.c
	c.Lost = max(r.seq.Lost, 0)
	c.Duplicates = r.seq.Duplicates
	c.Reordered = r.seq.Reordered
	c.Discontinuities = r.seq.Discontinuity
	c.CCErrors = r.ts.CCErrors
	c.TSSyncErrors = r.ts.SyncErrors
	c.MalformedShort = r.malformed[malformedShort]
	c.MalformedVer = r.malformed[malformedVersion]
	c.MalformedHeader = r.malformed[malformedHeader]
	c.MalformedBig = r.malformed[malformedOversize]
	c.JitterMs = r.jit.Millis()
	return relayState{c: c, cont: r.cont, standby: r.standby, lastFwd: r.lastFwd, haveFwd: r.haveFwd,
		ring: r.ring.n, lastIn: r.lastIn, haveIn: r.haveIn}
}

// snapshot returns the counters and continuity state.
func (r *relay) snapshot() (Counters, Continuity) {
	s := r.state()
	return s.c, s.cont
}

// wroteOut records the result of forwarding one packet to its outputs: it
// counts as out when at least one output took it.
func (r *relay) wroteOut(n, outputs, failures int) {
	r.c.OutErrors += uint64(failures)
	if failures < outputs {
		r.c.PacketsOut++
		r.c.BytesOut += uint64(n)
	}
}

// replayRing keeps the most recent packets of a standby stream, so that a
// "forward from S" can send what arrived since S. It keeps packets for a
// time, not a count: a slot is reused once its packet is older than keep.
// Slots are allocated as the stream's rate needs them, up to maxRingPackets,
// and reused after: no allocation per packet in steady state.
type replayRing struct {
	keep    time.Duration
	slots   []replaySlot
	head, n int
}

type replaySlot struct {
	b   []byte
	ext uint64
	at  time.Duration
}

// maxRingPackets bounds one stream's ring: 500 ms of a 25,000-packet/s
// stream, about 13 MB at most.
const maxRingPackets = 12500

func (q *replayRing) reset() { q.head, q.n = 0, 0 }

// bounds returns the input sequence numbers of the oldest and newest packets
// held, by arrival, and how many are held.
func (q *replayRing) bounds() (first, last uint16, n int) {
	if q.n == 0 {
		return 0, 0, 0
	}
	return uint16(q.slots[q.head].ext), uint16(q.slots[(q.head+q.n-1)%len(q.slots)].ext), q.n
}

func (q *replayRing) push(b []byte, ext uint64, now time.Duration) {
	if q.keep <= 0 {
		return
	}
	for q.n > 0 && now-q.slots[q.head].at > q.keep {
		q.head = (q.head + 1) % len(q.slots)
		q.n--
	}
	if q.n == len(q.slots) {
		if len(q.slots) < maxRingPackets {
			q.grow()
		} else {
			q.head = (q.head + 1) % len(q.slots) // full: the oldest goes
			q.n--
		}
	}
	s := &q.slots[(q.head+q.n)%len(q.slots)]
	if s.b == nil {
		s.b = make([]byte, 0, readBufSize)
	}
	s.b = append(s.b[:0], b...)
	s.ext, s.at = ext, now
	q.n++
}

// grow doubles the ring, keeping its packets in order.
func (q *replayRing) grow() {
	size := min(max(2*len(q.slots), 64), maxRingPackets)
	ns := make([]replaySlot, size)
	for i := 0; i < q.n; i++ {
		ns[i] = q.slots[(q.head+i)%len(q.slots)]
	}
	// Keep the buffers of the slots that were free, too.
	for i := q.n; i < len(q.slots); i++ {
		ns[i] = q.slots[(q.head+i)%len(q.slots)]
	}
	q.slots, q.head = ns, 0
}

// each calls fn for every packet held, oldest first.
func (q *replayRing) each(fn func(b []byte, ext uint64, at time.Duration)) {
	for i := 0; i < q.n; i++ {
		s := &q.slots[(q.head+i)%len(q.slots)]
		fn(s.b, s.ext, s.at)
	}
}
