package media

// Sequence tracking after RFC 3550 appendix A.1, kept incremental so that the
// counters are right at every moment rather than only at report time.

const (
	// maxDropout is the largest forward jump still read as loss rather than
	// as a new numbering (RFC 3550 uses 3000).
	maxDropout = 3000
	// seqWindow is how far back a late packet is still recognised, as a
	// reordered packet or a duplicate. It is also the largest backward step
	// that is not a discontinuity.
	seqWindow = 1024
)

// SeqStats counts what the sequence numbers of one RTP stream say.
type SeqStats struct {
	Received uint64
	// Lost counts gaps not (yet) filled by late packets; it goes down when
	// one arrives, but never below zero: a late packet from before the first
	// number seen fills no gap that was counted.
	Lost          int64
	Duplicates    uint64 // a sequence number seen again inside the window
	Reordered     uint64 // a late packet: one that filled a gap, or arrived from before the first number seen
	Discontinuity uint64 // a jump too large to be loss or reordering: the numbering restarted
}

// SeqTracker follows the sequence numbers of one stream.
type SeqTracker struct {
	SeqStats
	started bool
	max     uint64 // highest extended sequence number seen
	first   uint64 // extended number of the first packet since the numbering (re)started
	last    uint64 // extended number of the packet Observe saw last
	seen    [seqWindow / 64]uint64
}

// Result of one Observe call.
type SeqResult uint8

const (
	SeqInOrder SeqResult = iota // the next packet, or the next after a gap
	SeqLate                     // a packet that filled a gap, or came from before the first one seen
	SeqDuplicate
	SeqDiscontinuity // the numbering jumped; tracking restarted from this packet
)

// Observe records one arriving sequence number.
func (t *SeqTracker) Observe(seq uint16) SeqResult {
	t.Received++
	if !t.started {
		t.restart(seq)
		return SeqInOrder
	}
	delta := int64(int16(seq - uint16(t.max)))
	switch {
	case delta > 0 && delta <= maxDropout:
		for i := int64(1); i < delta; i++ {
			t.clear(t.max + uint64(i))
		}
		t.max += uint64(delta)
		t.mark(t.max)
		t.last = t.max
		t.Lost += delta - 1
		return SeqInOrder
	case delta == 0:
		t.last = t.max
		t.Duplicates++
		return SeqDuplicate
	case delta < 0 && -delta < seqWindow:
		ext := t.max - uint64(-delta)
		t.last = ext
		if t.marked(ext) {
			t.Duplicates++
			return SeqDuplicate
		}
		t.mark(ext)
		t.Reordered++
		// Only a number after the first one seen can have been counted as
		// lost; one from before it (the stream was joined mid-flight, or a
		// worker restarted) is late, not a filled gap.
		if ext > t.first && t.Lost > 0 {
			t.Lost--
		}
		return SeqLate
	default:
		t.Discontinuity++
		t.restart(seq)
		return SeqDiscontinuity
	}
}

// Highest returns the highest sequence number seen, and whether any was.
func (t *SeqTracker) Highest() (uint16, bool) { return uint16(t.max), t.started }

// Ext returns the extended sequence number of the packet Observe saw last:
// it orders packets within one numbering (until the next discontinuity or
// Resync), across wraps of the 16-bit number.
func (t *SeqTracker) Ext() uint64 { return t.last }

// ExtOf returns the extended number nearest the highest seen for seq, and
// whether the tracker has a numbering to place it in.
func (t *SeqTracker) ExtOf(seq uint16) (uint64, bool) {
	if !t.started {
		return 0, false
	}
	return uint64(int64(t.max) + int64(int16(seq-uint16(t.max)))), true
}

// Resync makes the next packet start a new numbering without counting a
// discontinuity, for a new source (SSRC) whose numbers are unrelated.
func (t *SeqTracker) Resync() { t.started = false }

func (t *SeqTracker) restart(seq uint16) {
	t.started = true
	t.seen = [seqWindow / 64]uint64{}
	// Start the extended counter high enough that late packets never wrap below zero.
	t.max = 1<<32 + uint64(seq)
	t.first, t.last = t.max, t.max
	t.mark(t.max)
}

func (t *SeqTracker) mark(ext uint64)  { t.seen[(ext/64)%uint64(len(t.seen))] |= 1 << (ext % 64) }
func (t *SeqTracker) clear(ext uint64) { t.seen[(ext/64)%uint64(len(t.seen))] &^= 1 << (ext % 64) }
func (t *SeqTracker) marked(ext uint64) bool {
	return t.seen[(ext/64)%uint64(len(t.seen))]&(1<<(ext%64)) != 0
}
