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
	Seq     uint16        // RTP sequence number as sent by the unit
	TS      uint32        // RTP timestamp as sent by the unit
	Counter uint64        // the source's own count, from the payload
	SrcSeq  uint16        // the sequence number the source gave it
	SrcTS   uint32        // the timestamp the source gave it
	Sent    time.Duration // when the source sent it, on the lab's clock
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
	GapAt     time.Duration // when that silence began, from the fault
	// GapSent is how far apart the source sent the two packets around the
	// longest silence: near one packet interval when the pair made the
	// silence, near the silence itself when the lab's own source stalled.
	GapSent time.Duration
	Lost    int // source counters never received
	Dups    int // receptions beyond the first of a counter
	// Discontinuities counts changes of the offsets between the unit's
	// numbering and the source's (sequence or timestamp): a renumbering the
	// decoder sees on top of lost packets.
	Discontinuities int
	SSRCChanges     int
	// TwoForwarders is how long two units forwarded at once: the overlap
	// of the spans in which each sent steadily.
	TwoForwarders time.Duration
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
	var lastSent time.Duration
	type offsets struct {
		seq uint16
		ts  uint32
	}
	var prevOff offsets
	var prevSSRC uint32
	spans := map[netip.Addr][]span{}
	steadyGap := max(100*time.Millisecond, 5*packetInterval(w))
	for i, a := range in {
		seen[a.Counter]++
		if seen[a.Counter] > 1 {
			r.Dups++
		}
		if g := a.At - last; g > r.Gap {
			r.Gap, r.GapAt, r.GapSent = g, last-w.Fault, 0
			if i > 0 {
				r.GapSent = a.Sent - lastSent
			}
		}
		last, lastSent = a.At, a.Sent
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
		ss := spans[a.From]
		if n := len(ss); n > 0 && a.At-ss[n-1].to <= steadyGap {
			ss[n-1].to = a.At
		} else {
			spans[a.From] = append(ss, span{a.At, a.At})
		}
	}
	if g := w.To - last; w.To > last && g > r.Gap {
		r.Gap, r.GapAt, r.GapSent = g, last-w.Fault, 0
	}
	if n := w.EndCounter - w.FirstCounter; w.EndCounter > w.FirstCounter {
		r.Lost = int(n) - len(seen)
	}
	for i, x := range r.Senders {
		for _, y := range r.Senders[i+1:] {
			r.TwoForwarders += overlap(spans[x], spans[y])
		}
	}
	return r
}

// span is a time in which one unit sent without a pause.
type span struct{ from, to time.Duration }

func overlap(xs, ys []span) time.Duration {
	var d time.Duration
	for _, x := range xs {
		for _, y := range ys {
			if o := min(x.to, y.to) - max(x.from, y.from); o > 0 {
				d += o
			}
		}
	}
	return d
}

// packetInterval is the time between the source's packets in w.
func packetInterval(w Window) time.Duration {
	if w.EndCounter <= w.FirstCounter || w.To <= w.From {
		return 0
	}
	return (w.To - w.From) / time.Duration(w.EndCounter-w.FirstCounter)
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
