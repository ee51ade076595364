package status

import (
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// History is sampled from the published report, by one goroutine, every
// historyEvery: never from the packet path. historyLen samples make the
// last five minutes that a stream's page draws.
const (
	historyEvery = 2 * time.Second
	historyLen   = 150
	// recentLen samples (a minute) decide whether loss or continuity
	// errors make a stream amber.
	recentLen = 30
)

// point is one sample of a stream: its counters over one historyEvery
// as differences from the sample before, the gauges as read. 32 bytes, so
// five minutes of 1,000 streams hold under 5 MB.
type point struct {
	tick     uint32 // the history's sample number: gaps show where a stream was missing
	pktIn    uint32
	pktOut   uint32
	lost     int32 // may go down: a late packet fills a gap
	cc       uint32
	restarts uint32
	bitrate  float32 // bits per second
	jitter   float32 // ms
}

// streamRing is one stream's last historyLen samples.
type streamRing struct {
	s    [historyLen]point
	head int // where the next sample goes
	n    int
	// The cumulative counters of the last sample, for the next difference.
	pktIn, pktOut, cc uint64
	lost              int64
	restarts          int
}

func (r *streamRing) push(x point) {
	r.s[r.head] = x
	r.head = (r.head + 1) % historyLen
	r.n = min(r.n+1, historyLen)
}

// samples returns the samples oldest first.
func (r *streamRing) samples() []point {
	out := make([]point, 0, r.n)
	for i := range r.n {
		out = append(out, r.s[(r.head-r.n+i+historyLen)%historyLen])
	}
	return out
}

// recentCounts are a stream's losses and continuity errors over the last
// minute of samples.
type recentCounts struct{ Lost, CC int64 }

// history keeps each stream's ring. add is called by the page's one
// sampling goroutine; readers take the lock for the copy of one ring, or
// read the published recent counts without a lock.
type history struct {
	mu    sync.Mutex
	tick  uint32
	rings map[string]*streamRing

	recent atomic.Pointer[map[string]recentCounts]
}

func newHistory() *history {
	h := &history{rings: map[string]*streamRing{}}
	h.recent.Store(&map[string]recentCounts{})
	return h
}

// add takes a sample of every stream in rep. A stream no longer in the
// report loses its history; a new one has its first sample at the next.
func (h *history) add(rep *Report) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tick++
	recent := make(map[string]recentCounts, len(rep.Streams))
	seen := make(map[string]bool, len(rep.Streams))
	for i := range rep.Streams {
		s := &rep.Streams[i]
		seen[s.Name] = true
		r, ok := h.rings[s.Name]
		if !ok {
			// The first sample is the base the next one differs from.
			h.rings[s.Name] = &streamRing{pktIn: s.PacketsIn, pktOut: s.PacketsOut, cc: s.CCErrors, lost: s.Lost, restarts: s.Restarts}
			continue
		}
		r.push(point{
			tick:     h.tick,
			pktIn:    diff(s.PacketsIn, r.pktIn),
			pktOut:   diff(s.PacketsOut, r.pktOut),
			cc:       diff(s.CCErrors, r.cc),
			lost:     int32(max(min(s.Lost-r.lost, math.MaxInt32), math.MinInt32)),
			restarts: diff(uint64(max(s.Restarts, 0)), uint64(max(r.restarts, 0))),
			bitrate:  float32(s.BitrateBps),
			jitter:   float32(s.JitterMs),
		})
		r.pktIn, r.pktOut, r.cc, r.lost, r.restarts = s.PacketsIn, s.PacketsOut, s.CCErrors, s.Lost, s.Restarts
		var rc recentCounts
		for i := range min(r.n, recentLen) {
			x := &r.s[(r.head-1-i+historyLen)%historyLen]
			rc.Lost += int64(x.lost)
			rc.CC += int64(x.cc)
		}
		if rc.Lost > 0 || rc.CC > 0 {
			recent[s.Name] = rc
		}
	}
	for name := range h.rings {
		if !seen[name] {
			delete(h.rings, name)
		}
	}
	h.recent.Store(&recent)
}

// diff is how much a counter grew; a counter that went back (the stream
// was replaced) grew by nothing.
func diff(now, before uint64) uint32 {
	if now < before {
		return 0
	}
	return uint32(min(now-before, math.MaxUint32))
}

// recentAll is every stream's counts over the last minute; streams with
// none are absent.
func (h *history) recentAll() map[string]recentCounts { return *h.recent.Load() }

// series returns a copy of a stream's samples, oldest first, and the
// newest sample number.
func (h *history) series(name string) ([]point, uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.rings[name]
	if !ok {
		return nil, h.tick
	}
	return r.samples(), h.tick
}

// spark is one small line chart of a stream's page.
type spark struct {
	Title    string
	Unit     string
	Points   string // SVG polyline points, in a sparkW x sparkH box
	Last     string
	Min, Max string
	Empty    bool
}

// The sparkline's box: two pixels per sample.
const (
	sparkW = 2 * historyLen
	sparkH = 40
)

// sparks draws the stream's counters over the last minutes.
func (h *history) sparks(name string) []spark {
	ss, tick := h.series(name)
	per := historyEvery.Seconds()
	return []spark{
		draw("Bitrate", "Mb/s", ss, tick, func(x point) float64 { return float64(x.bitrate) / 1e6 }),
		draw("Packets in", "/s", ss, tick, func(x point) float64 { return float64(x.pktIn) / per }),
		draw("Lost", "per "+historyEvery.String(), ss, tick, func(x point) float64 { return float64(x.lost) }),
		draw("Jitter", "ms", ss, tick, func(x point) float64 { return float64(x.jitter) }),
		draw("CC errors", "per "+historyEvery.String(), ss, tick, func(x point) float64 { return float64(x.cc) }),
	}
}

// draw scales one series into the sparkline's box: time runs left to
// right with the newest sample at the right edge, values from the lowest
// (or zero) at the bottom to the highest at the top.
func draw(title, unit string, ss []point, tick uint32, val func(point) float64) spark {
	sp := spark{Title: title, Unit: unit, Empty: len(ss) == 0}
	if sp.Empty {
		return sp
	}
	lo, hi := 0.0, 0.0
	for _, x := range ss {
		v := val(x)
		lo, hi = min(lo, v), max(hi, v)
	}
	span := hi - lo
	if span == 0 {
		span = 1
	}
	var b strings.Builder
	b.Grow(len(ss) * 12)
	for i, x := range ss {
		age := float64(tick - x.tick) // 0 for the newest
		px := float64(sparkW) - age*float64(sparkW)/float64(historyLen-1)
		py := float64(sparkH-2) - (val(x)-lo)/span*float64(sparkH-4)
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.FormatFloat(max(px, 0), 'f', 1, 64))
		b.WriteByte(',')
		b.WriteString(strconv.FormatFloat(py, 'f', 1, 64))
	}
	sp.Points = b.String()
	sp.Last = short(val(ss[len(ss)-1]))
	sp.Min, sp.Max = short(lo), short(hi)
	return sp
}

// short writes a chart figure with three significant digits at most.
func short(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
