package status

import (
	"strconv"
	"strings"
	"testing"

	"appliance/media"
)

func historyReport(streams ...media.StreamStatus) *Report { return &Report{Streams: streams} }

// Each sample holds the counters' growth since the one before; the ring
// keeps the newest historyLen, oldest first.
func TestHistoryRing(t *testing.T) {
	h := newHistory()
	s := media.StreamStatus{Name: "cam1"}
	h.add(historyReport(s)) // the base
	if ss, _ := h.series("cam1"); len(ss) != 0 {
		t.Fatalf("%d samples after the first report, want 0 (it is the base)", len(ss))
	}
	for i := 1; i <= historyLen+10; i++ {
		s.PacketsIn += uint64(i)
		s.CCErrors++
		s.BitrateBps = float64(i)
		h.add(historyReport(s))
	}
	ss, tick := h.series("cam1")
	if len(ss) != historyLen || tick != historyLen+11 {
		t.Fatalf("%d samples, tick %d", len(ss), tick)
	}
	if ss[0].pktIn != 11 || ss[len(ss)-1].pktIn != historyLen+10 || ss[len(ss)-1].bitrate != historyLen+10 {
		t.Errorf("oldest %+v newest %+v", ss[0], ss[len(ss)-1])
	}
	for i := 1; i < len(ss); i++ {
		if ss[i].tick != ss[i-1].tick+1 {
			t.Fatalf("samples out of order at %d: %d after %d", i, ss[i].tick, ss[i-1].tick)
		}
	}
	if rc := h.recentAll()["cam1"]; rc.CC != recentLen {
		t.Errorf("recent CC errors %d, want one per sample of the last minute (%d)", rc.CC, recentLen)
	}
}

// A counter that goes back (the stream was replaced) grew by nothing; loss
// can go down (a late packet fills a gap); a stream that leaves the report
// leaves the history, and trouble older than a minute is forgotten.
func TestHistoryEdges(t *testing.T) {
	h := newHistory()
	a := media.StreamStatus{Name: "a", Counters: media.Counters{PacketsIn: 100, Lost: 5}}
	b := media.StreamStatus{Name: "b"}
	h.add(historyReport(a, b))
	a.PacketsIn, a.Lost = 10, 3
	h.add(historyReport(a, b))
	ss, _ := h.series("a")
	if len(ss) != 1 || ss[0].pktIn != 0 || ss[0].lost != -2 {
		t.Errorf("after a counter went back: %+v", ss)
	}
	if _, ok := h.recentAll()["a"]; ok {
		t.Error("a stream whose loss went down counts as losing")
	}
	a.Lost = 10
	h.add(historyReport(a, b))
	if rc := h.recentAll()["a"]; rc.Lost != 5 {
		t.Errorf("recent loss %d, want 5", rc.Lost)
	}
	for range recentLen {
		h.add(historyReport(a, b))
	}
	if _, ok := h.recentAll()["a"]; ok {
		t.Error("loss older than a minute still counts")
	}
	h.add(historyReport(b))
	if ss, _ := h.series("a"); ss != nil {
		t.Error("a removed stream keeps its history")
	}
	if len(h.rings) != 1 {
		t.Errorf("%d rings for one stream", len(h.rings))
	}
}

// The sparkline fits its box: newest sample at the right edge, values from
// the bottom (lowest, or zero) to the top (highest).
func TestSparkline(t *testing.T) {
	h := newHistory()
	s := media.StreamStatus{Name: "cam1"}
	for i := range 11 {
		s.BitrateBps = float64(i) * 1e6
		h.add(historyReport(s))
	}
	sp := h.sparks("cam1")[0]
	if sp.Title != "Bitrate" || sp.Last != "10.0" || sp.Max != "10.0" || sp.Min != "0" {
		t.Fatalf("%+v", sp)
	}
	pts := strings.Fields(sp.Points)
	if len(pts) != 10 {
		t.Fatalf("%d points", len(pts))
	}
	for _, p := range pts {
		x, y, _ := strings.Cut(p, ",")
		xf, _ := strconv.ParseFloat(x, 64)
		yf, _ := strconv.ParseFloat(y, 64)
		if xf < 0 || xf > sparkW || yf < 0 || yf > sparkH {
			t.Errorf("point %s outside the %dx%d box", p, sparkW, sparkH)
		}
	}
	if pts[len(pts)-1] != "300.0,2.0" {
		t.Errorf("newest point %s, want the top right corner", pts[len(pts)-1])
	}
	if e := h.sparks("other")[0]; !e.Empty || e.Points != "" {
		t.Errorf("a stream without samples: %+v", e)
	}
}
