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
	Received      uint64
	Lost          int64  // gaps not (yet) filled by late packets; goes down when one arrives
	Duplicates    uint64 // a sequence number seen again inside the window
	Reordered     uint64 // a late packet that filled a gap
	Discontinuity uint64 // a jump too large to be loss or reordering: the numbering restarted
}

// SeqTracker follows the sequence numbers of one stream.
type SeqTracker struct {
	SeqStats
	started bool
	max     uint64 // highest extended sequence number seen
	seen    [seqWindow / 64]uint64
}

// Result of one Observe call.
type SeqResult uint8

const (
	SeqInOrder SeqResult = iota // the next packet, or the next after a gap
	SeqLate                     // a packet that filled a gap
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
		t.Lost += delta - 1
		return SeqInOrder
	case delta == 0:
		t.Duplicates++
		return SeqDuplicate
	case delta < 0 && -delta < seqWindow:
		ext := t.max - uint64(-delta)
		if t.marked(ext) {
			t.Duplicates++
			return SeqDuplicate
		}
		t.mark(ext)
		t.Reordered++
		t.Lost--
		return SeqLate
	default:
		t.Discontinuity++
		t.restart(seq)
		return SeqDiscontinuity
	}
}

// Highest returns the highest sequence number seen, and whether any was.
func (t *SeqTracker) Highest() (uint16, bool) { return uint16(t.max), t.started }

// Resync makes the next packet start a new numbering without counting a
// discontinuity, for a new source (SSRC) whose numbers are unrelated.
func (t *SeqTracker) Resync() { t.started = false }

func (t *SeqTracker) restart(seq uint16) {
	t.started = true
	t.seen = [seqWindow / 64]uint64{}
	// Start the extended counter high enough that late packets never wrap below zero.
	t.max = 1<<32 + uint64(seq)
	t.mark(t.max)
}

func (t *SeqTracker) mark(ext uint64)  { t.seen[(ext/64)%uint64(len(t.seen))] |= 1 << (ext % 64) }
func (t *SeqTracker) clear(ext uint64) { t.seen[(ext/64)%uint64(len(t.seen))] &^= 1 << (ext % 64) }
func (t *SeqTracker) marked(ext uint64) bool {
	return t.seen[(ext/64)%uint64(len(t.seen))]&(1<<(ext%64)) != 0
}
