package media

import (
	"sync"

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

// Counters is what one stream's relay has seen since its worker started.
type Counters struct {
	PacketsIn       uint64  `json:"packets_in"`
	BytesIn         uint64  `json:"bytes_in"`
	PacketsOut      uint64  `json:"packets_out"`
	BytesOut        uint64  `json:"bytes_out"`
	OutErrors       uint64  `json:"out_errors"`
	Lost            int64   `json:"lost"`
	Duplicates      uint64  `json:"duplicates"`
	Reordered       uint64  `json:"reordered"`
	Discontinuities uint64  `json:"seq_discontinuities"`
	SSRCChanges     uint64  `json:"ssrc_changes"`
	CCErrors        uint64  `json:"cc_errors"`
	TSSyncErrors    uint64  `json:"ts_sync_errors"`
	Malformed       uint64  `json:"malformed"`
	MalformedShort  uint64  `json:"malformed_short"`
	MalformedVer    uint64  `json:"malformed_version"`
	MalformedHeader uint64  `json:"malformed_header"`
	MalformedBig    uint64  `json:"malformed_oversize"`
	JitterMs        float64 `json:"jitter_ms"`
	LastInUnixNano  int64   `json:"last_in_unix_nano"`
}

// Add accumulates c2's cumulative counters into c; gauges take c2's value.
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
	if c2.LastInUnixNano != 0 {
		c.JitterMs = c2.JitterMs
		c.LastInUnixNano = c2.LastInUnixNano
	}
}

// Continuity is the state a relay needs to carry on a stream's output
// numbering where the previous worker left off. The parent keeps the latest
// copy and hands it to the next worker, so a receiver behind a rewriting
// stream sees a gap after a crash, never a jump or a new SSRC.
type Continuity struct {
	Valid      bool   `json:"valid"`
	InSSRC     uint32 `json:"in_ssrc"`
	LastInSeq  uint16 `json:"last_in_seq"`
	SeqOffset  uint16 `json:"seq_offset"`
	TSOffset   uint32 `json:"ts_offset"`
	LastOutSeq uint16 `json:"last_out_seq"`
	LastOutTS  uint32 `json:"last_out_ts"`
	AtUnixNano int64  `json:"at_unix_nano"` // arrival of the last forwarded packet
	// Margin is how far to step the output sequence past LastOutSeq when the
	// input no longer lines up, because a worker that died may have sent a
	// few packets after it last reported. Set by the parent, used once.
	Margin uint16 `json:"margin,omitempty"`
}

// relay is one stream on the packet path: everything here runs per packet and
// must not allocate in steady state.
type relay struct {
	mu sync.Mutex // between the packet path and the reporter; never contended for long

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
}

func newRelay(clockRate int, rewriteSSRC *uint32, cont Continuity) *relay {
	r := &relay{clockRate: clockRate, cont: cont, jit: NewJitter(clockRate), scratch: make([]byte, readBufSize)}
	if rewriteSSRC != nil {
		r.rewrite, r.outSSRC = true, *rewriteSSRC
	}
	r.handedOver = cont.Valid
	return r
}

// handle takes one received datagram (n is its real length, which may exceed
// len(buf) when it was truncated) and returns the bytes to forward, or nil.
func (r *relay) handle(buf []byte, n int, nowNs int64) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if kind, ok := r.check(buf, n); !ok {
		r.malformed[kind]++
		r.c.Malformed++
		return nil
	}
	b := buf[:n]
	r.c.PacketsIn++
	r.c.BytesIn += uint64(n)
	r.c.LastInUnixNano = nowNs
	h := &r.pkt.Header

	if r.haveSSRC && h.SSRC != r.ssrc {
		r.c.SSRCChanges++
		r.seq.Resync()
		r.jit.Reset()
		r.ts.Reset()
	}
	r.ssrc, r.haveSSRC = h.SSRC, true

	res := r.seq.Observe(h.SequenceNumber)
	if res == SeqDiscontinuity {
		r.jit.Reset()
		r.ts.Reset()
	}
	if res == SeqInOrder || res == SeqDiscontinuity {
		r.jit.Observe(nowNs, h.Timestamp)
	}
	if h.PayloadType == PayloadTypeMP2T {
		r.ts.Check(r.pkt.Payload)
	}

	inOrder := res == SeqInOrder || res == SeqDiscontinuity
	if !r.rewrite {
		if inOrder {
			r.cont = Continuity{Valid: true, InSSRC: h.SSRC, LastInSeq: h.SequenceNumber,
				LastOutSeq: h.SequenceNumber, LastOutTS: h.Timestamp, AtUnixNano: nowNs}
		}
		return b
	}
	return r.rewriteHeader(b, res, nowNs)
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
func (r *relay) rewriteHeader(b []byte, res SeqResult, nowNs int64) []byte {
	h := &r.pkt.Header
	c := &r.cont
	switch {
	case !c.Valid:
		// The first packet ever: pass numbering through, only the SSRC changes.
		*c = Continuity{Valid: true, InSSRC: h.SSRC}
	case r.handedOver:
		d := int(int16(h.SequenceNumber - c.LastInSeq))
		if h.SSRC != c.InSSRC || d <= -seqWindow || d > maxDropout {
			r.rebase(nowNs, c.Margin)
		}
	case h.SSRC != c.InSSRC || res == SeqDiscontinuity:
		r.rebase(nowNs, 0)
	}
	r.handedOver = false
	c.Margin = 0

	h.SSRC = r.outSSRC
	h.SequenceNumber += c.SeqOffset
	h.Timestamp += c.TSOffset
	if res == SeqInOrder || res == SeqDiscontinuity {
		c.LastInSeq = h.SequenceNumber - c.SeqOffset
		c.LastOutSeq, c.LastOutTS, c.AtUnixNano = h.SequenceNumber, h.Timestamp, nowNs
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
func (r *relay) rebase(nowNs int64, margin uint16) {
	h := &r.pkt.Header
	c := &r.cont
	step := uint32(1)
	if c.AtUnixNano != 0 && nowNs > c.AtUnixNano {
		step = uint32(float64(nowNs-c.AtUnixNano) * float64(r.clockRate) / 1e9)
		step = max(step, 1)
	}
	outSeq := c.LastOutSeq + 1 + margin
	outTS := c.LastOutTS + step
	c.InSSRC = h.SSRC
	c.SeqOffset = outSeq - h.SequenceNumber
	c.TSOffset = outTS - h.Timestamp
}

// snapshot returns the counters and continuity state, for a report.
func (r *relay) snapshot() (Counters, Continuity) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.c
	c.Lost = r.seq.Lost
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
	return c, r.cont
}

// wroteOut records the result of forwarding one packet to its outputs: it
// counts as out when at least one output took it.
func (r *relay) wroteOut(n, outputs, failures int) {
	r.mu.Lock()
	r.c.OutErrors += uint64(failures)
	if failures < outputs {
		r.c.PacketsOut++
		r.c.BytesOut += uint64(n)
	}
	r.mu.Unlock()
}
