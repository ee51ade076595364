package lab

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

var (
	ua = netip.MustParseAddr("198.18.0.1")
	ub = netip.MustParseAddr("198.18.0.2")
)

// steady makes the arrivals of counters [from, to) one millisecond apart,
// as a unit that renumbers by fixed offsets would send them.
func steady(from, to uint64, unit netip.Addr, ssrc uint32, seqOff uint16, tsOff uint32) []Arrival {
	var out []Arrival
	for c := from; c < to; c++ {
		srcSeq, srcTS := uint16(c+100), uint32(c*90)
		out = append(out, Arrival{At: time.Duration(c) * time.Millisecond, From: unit, SSRC: ssrc,
			Seq: srcSeq + seqOff, TS: srcTS + tsOff, Counter: c, SrcSeq: srcSeq, SrcTS: srcTS})
	}
	return out
}

func TestAnalyze(t *testing.T) {
	t.Parallel()
	w := Window{FirstCounter: 0, EndCounter: 1000, From: 0, To: 999 * time.Millisecond, Fault: 500 * time.Millisecond, Owner: ua}
	// A takeover at 530 ms: A sent up to 499, B from 530 with the same
	// numbering (the pair shares continuity) and replays 500..529 late.
	takeover := append(steady(0, 500, ua, 7, 3, 9), steady(530, 1000, ub, 7, 3, 9)...)
	for _, a := range steady(500, 530, ub, 7, 3, 9) {
		a.At = 530 * time.Millisecond
		takeover = append(takeover, a)
	}
	cases := []struct {
		name string
		log  []Arrival
		w    Window
		want StreamResult
	}{
		{"clean", steady(0, 1000, ua, 7, 3, 9), w,
			StreamResult{Received: 1000, Detection: -1, Gap: time.Millisecond, Senders: []netip.Addr{ua}}},
		{"takeover with replay", takeover, w,
			StreamResult{Received: 1000, Detection: 30 * time.Millisecond, Gap: 31 * time.Millisecond, Senders: []netip.Addr{ua, ub}}},
		{"loss without renumbering", append(steady(0, 400, ua, 7, 3, 9), steady(450, 1000, ua, 7, 3, 9)...), w,
			StreamResult{Received: 950, Detection: -1, Gap: 51 * time.Millisecond, Lost: 50, Senders: []netip.Addr{ua}}},
		{"renumbered and new SSRC", append(steady(0, 500, ua, 7, 3, 9), steady(500, 1000, ub, 8, 1000, 9)...), w,
			StreamResult{Received: 1000, Detection: 0, Gap: time.Millisecond, Discontinuities: 1, SSRCChanges: 1, Senders: []netip.Addr{ua, ub}}},
		{"timestamp rebased only", append(steady(0, 500, ua, 7, 3, 9), steady(500, 1000, ua, 7, 3, 90000)...), w,
			StreamResult{Received: 1000, Detection: -1, Gap: time.Millisecond, Discontinuities: 1, Senders: []netip.Addr{ua}}},
		{"silence to the end", steady(0, 600, ua, 7, 3, 9), w,
			StreamResult{Received: 600, Detection: -1, Gap: 400 * time.Millisecond, Lost: 400, Senders: []netip.Addr{ua}}},
		{"out of the window is ignored", steady(0, 2000, ua, 7, 3, 9), Window{FirstCounter: 1000, EndCounter: 1500, From: time.Second, To: 1499 * time.Millisecond},
			StreamResult{Received: 500, Detection: -1, Gap: time.Millisecond, Senders: []netip.Addr{ua}}},
		{"lone unit: no detection", steady(0, 1000, ua, 7, 3, 9), Window{EndCounter: 1000, To: 999 * time.Millisecond, Fault: 500 * time.Millisecond},
			StreamResult{Received: 1000, Detection: -1, Gap: time.Millisecond, Senders: []netip.Addr{ua}}},
	}
	for _, c := range cases {
		got := Analyze(c.log, c.w)
		if !equalResult(got, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, c.want)
		}
	}
}

// TestAnalyzeSplitBrain: both units forwarding the same stream for two
// seconds show as duplicates and as seconds with two forwarders, and, as
// their packets are identical, as nothing else.
func TestAnalyzeSplitBrain(t *testing.T) {
	t.Parallel()
	log := steady(0, 4000, ua, 7, 3, 9)
	for _, a := range steady(1000, 3000, ub, 7, 3, 9) {
		a.At += 200 * time.Microsecond
		log = append(log, a)
	}
	got := Analyze(log, Window{EndCounter: 4000, To: 3999 * time.Millisecond, Fault: 1000 * time.Millisecond, Owner: ua})
	if got.Dups != 2000 || got.TwoForwarders != 1999*time.Millisecond || got.Lost != 0 || got.Discontinuities != 0 || got.SSRCChanges != 0 || got.Detection != 200*time.Microsecond {
		t.Errorf("split brain: %+v", got)
	}
}

func equalResult(a, b StreamResult) bool {
	return slices.Equal(a.Senders, b.Senders) && a.Received == b.Received && a.Detection == b.Detection && a.Gap == b.Gap &&
		a.Lost == b.Lost && a.Dups == b.Dups && a.Discontinuities == b.Discontinuities && a.SSRCChanges == b.SSRCChanges &&
		a.TwoForwarders == b.TwoForwarders
}
