package lab

import (
	"net/netip"
	"slices"
	"time"
)

// Arrival is one packet as a receiver saw it. Times are offsets on the
// lab's monotonic clock (Clock), never wall time.
type Arrival struct {
	At      time.Duration // when it was read
	From    netip.Addr    // the unit that sent it
	SSRC    uint32
	Seq     uint16 // RTP sequence number as sent by the unit
	TS      uint32 // RTP timestamp as sent by the unit
	Counter uint64 // the source's own count, from the payload
	SrcSeq  uint16 // the sequence number the source gave it
	SrcTS   uint32 // the timestamp the source gave it
}

// Window is the part of a stream's log a scenario judges: the packets the
// source sent between two of its counters, and the time around the fault.
type Window struct {
	FirstCounter, EndCounter uint64        // the source counters sent in the window: [First, End)
	From, To                 time.Duration // the window in time; a silence that runs to To counts as a gap
	Fault                    time.Duration // when the fault was injected
	// Owner is the unit that forwarded the stream before the fault; the
	// first packet from any other address after Fault ends detection. The
	// zero Addr means there is no other unit to detect (a lone unit).
	Owner netip.Addr
}

// StreamResult is what a decoder would have seen of one stream in a window.
type StreamResult struct {
	Received int
	// Detection is from the fault to the first packet from another unit;
	// -1 when no other unit sent anything after the fault.
	Detection time.Duration
	Gap       time.Duration // the longest time without any packet
	Lost      int           // source counters never received
	Dups      int           // receptions beyond the first of a counter
	// Discontinuities counts changes of the offsets between the unit's
	// numbering and the source's (sequence or timestamp): a renumbering the
	// decoder sees on top of lost packets.
	Discontinuities int
	SSRCChanges     int
	// TwoForwarderS counts the whole seconds (from Window.From) in which
	// packets came from more than one unit.
	TwoForwarderS int
	Senders       []netip.Addr // every unit that sent, in order of first packet
}

// Analyze judges one stream's arrivals over w. The log may hold packets
// outside the window; they are ignored. It is pure: tests feed it
// synthetic logs.
func Analyze(log []Arrival, w Window) StreamResult {
	in := make([]Arrival, 0, len(log))
	for _, a := range log {
		if a.Counter >= w.FirstCounter && a.Counter < w.EndCounter {
			in = append(in, a)
		}
	}
	slices.SortStableFunc(in, func(a, b Arrival) int { return cmpDur(a.At, b.At) })

	r := StreamResult{Received: len(in), Detection: -1}
	seen := make(map[uint64]int, len(in))
	last := w.From
	type offsets struct {
		seq uint16
		ts  uint32
	}
	var prevOff offsets
	var prevSSRC uint32
	buckets := map[int64]map[netip.Addr]bool{}
	for i, a := range in {
		seen[a.Counter]++
		if seen[a.Counter] > 1 {
			r.Dups++
		}
		if g := a.At - last; g > r.Gap {
			r.Gap = g
		}
		last = a.At
		off := offsets{a.Seq - a.SrcSeq, a.TS - a.SrcTS}
		if i > 0 {
			if off != prevOff {
				r.Discontinuities++
			}
			if a.SSRC != prevSSRC {
				r.SSRCChanges++
			}
		}
		prevOff, prevSSRC = off, a.SSRC
		if !slices.Contains(r.Senders, a.From) {
			r.Senders = append(r.Senders, a.From)
		}
		if w.Owner.IsValid() && r.Detection < 0 && a.At >= w.Fault && a.From != w.Owner {
			r.Detection = a.At - w.Fault
		}
		sec := int64((a.At - w.From) / time.Second)
		if buckets[sec] == nil {
			buckets[sec] = map[netip.Addr]bool{}
		}
		buckets[sec][a.From] = true
	}
	if g := w.To - last; w.To > last && g > r.Gap {
		r.Gap = g
	}
	if n := w.EndCounter - w.FirstCounter; w.EndCounter > w.FirstCounter {
		r.Lost = int(n) - len(seen)
	}
	for _, b := range buckets {
		if len(b) > 1 {
			r.TwoForwarderS++
		}
	}
	return r
}

func cmpDur(a, b time.Duration) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
