package media

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync/atomic"
	"time"
)

// Progress is what the pair needs of one stream, a few milliseconds old at
// most: where forwarding is, the output numbering to hand to the peer, and
// what the standby ring could replay. Workers send it every
// Options.ProgressInterval, apart from the reports.
type Progress struct {
	Name    string
	Carried bool   // a live worker relays it and it is not failed
	Role    string // the role its worker has; the one asked for while none has said
	// LastForwarded is the input sequence number of the newest packet
	// forwarded since the stream's worker took it.
	LastForwarded uint16
	HaveForwarded bool
	// The replay ring, in standby: the input sequence numbers of the oldest
	// and newest packets held (by arrival), and how many are held.
	RingFirst, RingLast uint16
	RingPackets         int
	InputAge            time.Duration  // since the last valid input packet; -1 if none yet
	Cont                PeerContinuity // this unit's output numbering, aged at the time of reading
	BitrateBps          float64
}

// ProgressOf fills dst (reusing its storage) with every stream's progress,
// in stream-table order, and returns it. It takes no lock: it reads what the
// report path published, and with enough capacity in dst it allocates
// nothing, so a real-time loop may call it every few milliseconds.
func (m *Manager) ProgressOf(dst []Progress) []Progress {
	t := *m.table.Load()
	now := m.mono()
	stopped := m.stopped.Load()
	dst = dst[:0]
	for _, st := range t {
		p := Progress{Name: st.name, InputAge: -1, Role: RoleForward}
		v := st.view.Load()
		p.Carried = v.up && !stopped && st.failure.Load() == nil
		p.BitrateBps = v.bitrate
		if !st.prog.load(&p, now) || !p.Carried {
			p.Role = RoleForward
			if st.standby.Load() {
				p.Role = RoleStandby
			}
		}
		dst = append(dst, p)
	}
	return dst
}

// --- the wire ---

// progressEntry is one stream in a progress frame. Ages are taken when the
// frame is written; -1 means unknown.
type progressEntry struct {
	SID         uint32
	Flags       uint8
	LastFwd     uint16
	InSSRC      uint32
	LastInSeq   uint16
	SeqOffset   uint16
	TSOffset    uint32
	LastOutSeq  uint16
	LastOutTS   uint32
	ContAge     time.Duration // since the last packet forwarded
	RingFirst   uint16
	RingLast    uint16
	RingPackets uint32
	InAge       time.Duration // since the last valid input packet
}

// Progress entry flags.
const (
	progStandby   uint8 = 1 << iota // role standby
	progHaveFwd                     // LastFwd is set
	progContValid                   // the continuity fields are set
	progFlags     = progStandby | progHaveFwd | progContValid
)

// progressEntrySize is one entry on the wire; the frame is a count and
// that many entries, nothing else, so its length is checked exactly.
const progressEntrySize = 49

// progressEncoder appends a progress frame to a reused buffer.
type progressEncoder struct {
	reportEncoder
	n uint32
}

func (e *progressEncoder) begin() {
	e.b = append(e.b[:0], 0, 0, 0, 0, msgProgress, 0, 0, 0, 0)
	e.n = 0
}

func (e *progressEncoder) entry(p *progressEntry) {
	e.n++
	e.u32(p.SID)
	e.u8(p.Flags)
	e.u16(p.LastFwd)
	e.u32(p.InSSRC)
	e.u16(p.LastInSeq)
	e.u16(p.SeqOffset)
	e.u32(p.TSOffset)
	e.u16(p.LastOutSeq)
	e.u32(p.LastOutTS)
	e.i64(int64(p.ContAge))
	e.u16(p.RingFirst)
	e.u16(p.RingLast)
	e.u32(p.RingPackets)
	e.i64(int64(p.InAge))
}

// end fills in the count and the frame length and returns the frame.
func (e *progressEncoder) end() []byte {
	binary.BigEndian.PutUint32(e.b, uint32(len(e.b)-4))
	binary.LittleEndian.PutUint32(e.b[5:], e.n)
	return e.b
}

// decodeProgress reads a progress body into dst (reused) and returns it. It
// checks structure and bounds only; which streams a frame may name is the
// caller's business.
func decodeProgress(body []byte, dst []progressEntry) ([]progressEntry, error) {
	if len(body) < 4 {
		return dst, fmt.Errorf("bad progress from worker: %d bytes", len(body))
	}
	n, b := binary.LittleEndian.Uint32(body), body[4:]
	switch {
	case n > maxReportStreams:
		return dst, fmt.Errorf("bad progress from worker: %d streams, at most %d", n, maxReportStreams)
	case uint64(len(b)) != uint64(n)*progressEntrySize:
		return dst, fmt.Errorf("bad progress from worker: %d streams in %d bytes, want %d each", n, len(b), progressEntrySize)
	}
	le := binary.LittleEndian
	// Fixed offsets in an entry whose length is already checked: this runs
	// for every busy stream every few milliseconds.
	for ; len(b) > 0; b = b[progressEntrySize:] {
		e := b[:progressEntrySize]
		p := progressEntry{
			SID: le.Uint32(e[0:]), Flags: e[4], LastFwd: le.Uint16(e[5:]),
			InSSRC: le.Uint32(e[7:]), LastInSeq: le.Uint16(e[11:]), SeqOffset: le.Uint16(e[13:]), TSOffset: le.Uint32(e[15:]),
			LastOutSeq: le.Uint16(e[19:]), LastOutTS: le.Uint32(e[21:]), ContAge: time.Duration(le.Uint64(e[25:])),
			RingFirst: le.Uint16(e[33:]), RingLast: le.Uint16(e[35:]), RingPackets: le.Uint32(e[37:]), InAge: time.Duration(le.Uint64(e[41:])),
		}
		if p.Flags&^progFlags != 0 || p.ContAge < -1 || p.InAge < -1 || p.RingPackets > maxRingPackets {
			return dst, fmt.Errorf("bad progress from worker: stream %d: flags %#x, ages %d and %d, ring %d",
				p.SID, p.Flags, p.ContAge, p.InAge, p.RingPackets)
		}
		dst = append(dst, p)
	}
	return dst, nil
}

// --- the parent's copy ---

// progressCell is one stream's latest progress, written by its worker's
// report path and read by ProgressOf without a lock: a sequence count that
// is odd while a write is under way, and the values packed in words, so a
// reader retries a torn read instead of waiting. Instants are on the
// manager's monotonic clock; unknown ones are noInstant.
type progressCell struct {
	seq atomic.Uint64
	w   [6]atomic.Uint64
}

const (
	noInstant   = math.MinInt64
	cellPresent = 1 << 63 // in w[0]: something was stored
)

func (c *progressCell) store(p *progressEntry, now time.Duration) {
	s := c.seq.Load()
	for s&1 != 0 || !c.seq.CompareAndSwap(s, s+1) {
		runtime.Gosched() // another writer: only across a worker's exit and its successor's start
		s = c.seq.Load()
	}
	contAt, inAt := int64(noInstant), int64(noInstant)
	if p.ContAge >= 0 {
		contAt = int64(now - p.ContAge)
	}
	if p.InAge >= 0 {
		inAt = int64(now - p.InAge)
	}
	c.w[0].Store(cellPresent | uint64(p.Flags) | uint64(p.LastFwd)<<8 | uint64(p.RingFirst)<<24 | uint64(p.RingLast)<<40)
	c.w[1].Store(uint64(p.InSSRC) | uint64(p.TSOffset)<<32)
	c.w[2].Store(uint64(p.LastInSeq) | uint64(p.SeqOffset)<<16 | uint64(p.LastOutSeq)<<32)
	c.w[3].Store(uint64(p.LastOutTS) | uint64(p.RingPackets)<<32)
	c.w[4].Store(uint64(contAt))
	c.w[5].Store(uint64(inAt))
	c.seq.Store(s + 2)
}

// load fills p from the cell at now, and reports whether anything was ever
// stored.
func (c *progressCell) load(p *Progress, now time.Duration) bool {
	var w [6]uint64
	for i := 0; ; i++ {
		s := c.seq.Load()
		if s&1 == 0 {
			for j := range w {
				w[j] = c.w[j].Load()
			}
			if c.seq.Load() == s {
				break
			}
		}
		if i >= 100 {
			runtime.Gosched() // the writer was descheduled mid-write
		}
	}
	if w[0]&cellPresent == 0 {
		return false
	}
	flags := uint8(w[0])
	p.Role = RoleForward
	if flags&progStandby != 0 {
		p.Role = RoleStandby
	}
	p.LastForwarded, p.HaveForwarded = uint16(w[0]>>8), flags&progHaveFwd != 0
	p.RingFirst, p.RingLast, p.RingPackets = uint16(w[0]>>24), uint16(w[0]>>40), int(uint32(w[3]>>32))
	p.Cont = PeerContinuity{Valid: flags&progContValid != 0, InSSRC: uint32(w[1]), TSOffset: uint32(w[1] >> 32),
		LastInSeq: uint16(w[2]), SeqOffset: uint16(w[2] >> 16), LastOutSeq: uint16(w[2] >> 32), LastOutTS: uint32(w[3])}
	if at := int64(w[4]); at != noInstant {
		p.Cont.Age = max(now-time.Duration(at), 0)
	}
	p.InputAge = -1
	if at := int64(w[5]); at != noInstant {
		p.InputAge = max(now-time.Duration(at), 0)
	}
	return true
}

// --- the worker's side ---

// progState is what a progress entry says of a stream, with instants
// rather than ages, so that a stream nothing happened to is left out.
type progState struct {
	flags               uint8
	lastFwd             uint16
	cont                Continuity
	ringFirst, ringLast uint16
	ringN               int
	lastIn              time.Duration // 0: no input yet
}

func (r *relay) progress() progState {
	ps := progState{lastFwd: r.lastFwd, cont: r.cont}
	ps.cont.Margin = 0
	if r.standby {
		ps.flags |= progStandby
	}
	if r.haveFwd {
		ps.flags |= progHaveFwd
	}
	if r.cont.Valid {
		ps.flags |= progContValid
	} else {
		ps.cont = Continuity{}
	}
	ps.ringFirst, ps.ringLast, ps.ringN = r.ring.bounds()
	if r.haveIn {
		ps.lastIn = max(r.lastIn, 1)
	}
	return ps
}

func (ps *progState) entry(sid uint32, now time.Duration) progressEntry {
	k := &ps.cont
	p := progressEntry{SID: sid, Flags: ps.flags, LastFwd: ps.lastFwd,
		InSSRC: k.InSSRC, LastInSeq: k.LastInSeq, SeqOffset: k.SeqOffset, TSOffset: k.TSOffset, LastOutSeq: k.LastOutSeq, LastOutTS: k.LastOutTS,
		ContAge: -1, RingFirst: ps.ringFirst, RingLast: ps.ringLast, RingPackets: uint32(ps.ringN), InAge: -1}
	if k.Valid && k.At != 0 {
		p.ContAge = max(now-k.At, 0)
	}
	if ps.lastIn != 0 {
		p.InAge = max(now-ps.lastIn, 0)
	}
	return p
}

// progressFrame builds the progress frame of the streams whose progress
// changed since the last frame, or returns nil if none did. Called with
// passMu held; it allocates nothing once its buffers have grown.
func (w *workerProc) progressFrame(now time.Duration) []byte {
	w.mu.Lock()
	w.progList = append(w.progList[:0], w.list...)
	w.mu.Unlock()
	e := &w.prog
	e.begin()
	for _, s := range w.progList {
		s.mu.Lock()
		// Only a packet or a role change moves a stream's progress: the
		// rest are left alone without looking further.
		if s.progSent && !s.progDirty && s.r.c.PacketsIn == s.progIn {
			s.mu.Unlock()
			continue
		}
		ps := s.r.progress()
		s.progIn, s.progDirty = s.r.c.PacketsIn, false
		if s.progSent && ps == s.progLast {
			s.mu.Unlock()
			continue
		}
		s.progLast, s.progSent = ps, true
		s.mu.Unlock()
		pe := ps.entry(s.sid, now)
		e.entry(&pe)
	}
	clear(w.progList)
	if e.n == 0 {
		return nil
	}
	return e.end()
}
