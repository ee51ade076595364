package status

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"appliance/hw"
)

// pairedReport is syntheticReport on a paired unit with sensors and power
// supplies, so that every collector has something to say.
func metricsPairedReport(streams, outputs, events int) Report {
	rep := syntheticReport(streams, outputs, events)
	rtt, heard := 0.42, 12.5
	rep.Pair = &Pair{Peer: "rack7-unit-b", PeerState: "up", Agreement: true, State: "up", Realtime: true, DetectMs: 300,
		LateBeats: 2, MaxLateMs: 41.5, Beacon: true, CoveredBeats: 3, Drills: []Drill{},
		Witness: &Witness{Address: "10.9.0.1:7400", Lease: true, LastAnswerMs: &heard, RTTMs: &rtt}}
	for i := range 2 {
		rep.Pair.Paths = append(rep.Pair.Paths, PairPath{Local: fmt.Sprintf("10.%d.0.1:7400", i), Remote: fmt.Sprintf("10.%d.0.2:7400", i),
			Up: true, LastHeardMs: &heard, RTTMs: &rtt, Sent: 864000, Received: 863990, Garbage: 1, Forged: 2, Replayed: 3, Version: 4})
	}
	online, full := true, 100
	rep.Hardware.PowerSupplies = []hw.PowerSupply{{Name: "AC", Type: "Mains", Online: &online},
		{Name: "BAT0", Type: "Battery", Status: "Full", CapacityPct: &full}}
	for i := range 8 {
		rep.Hardware.Temperatures = append(rep.Hardware.Temperatures, hw.TempStatus{
			Temperature: hw.Temperature{Sensor: fmt.Sprintf("coretemp_core_%d", i), Celsius: 55 + float64(i)}, WarnC: 80, CritC: 90})
	}
	return rep
}

// BenchmarkMetrics measures one GET /metrics at 1,000 streams of 2 outputs
// each (about 12,000 series). "scrape" is a scrape that builds the shared
// rendering itself (the report and its JSON encoding, as when no API
// client polled within reuseFor); "shared" one that finds it built;
// "gzip" the same, gzipped, as Prometheus asks for it; "collect" the
// report's collectors and the text encoding alone, without HTTP and the Go
// runtime's metrics, and "registry" the same gathered by a
// prometheus.Registry instead of reportGatherer. cpu-ms/op is the process's CPU time per scrape (user
// and system, every thread: the garbage collector's too), which a busy
// machine does not inflate as it does the wall time (ns/op).
func BenchmarkMetrics(b *testing.B) {
	rep := metricsPairedReport(1000, 2, MaxEvents)
	req := httptest.NewRequest("GET", "/metrics", nil)
	var size int
	b.Run("scrape", func(b *testing.B) {
		s := &Server{src: &fixed{rep}, log: discard()}
		now := time.Now()
		s.render = renderer{src: s.src, now: func() time.Time { now = now.Add(time.Hour); return now }}
		w := &nullWriter{h: http.Header{}}
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			s.metrics(w, req)
		}
		reportCPU(b, cpu)
	})
	b.Run("shared", func(b *testing.B) {
		s := &Server{src: &fixed{rep}, log: discard()}
		s.render = renderer{src: s.src, now: func() time.Time { return time.Time{} }}
		rec := httptest.NewRecorder()
		s.metrics(rec, req) // builds the rendering the loop reuses
		if rec.Code != 200 {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		size = rec.Body.Len()
		w := &nullWriter{h: http.Header{}}
		b.SetBytes(int64(size))
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			s.metrics(w, req)
		}
		reportCPU(b, cpu)
	})
	b.Run("gzip", func(b *testing.B) {
		s := &Server{src: &fixed{rep}, log: discard()}
		s.render = renderer{src: s.src, now: func() time.Time { return time.Time{} }}
		req := httptest.NewRequest("GET", "/metrics", nil)
		req.Header.Set("Accept-Encoding", "gzip")
		rec := httptest.NewRecorder()
		s.metrics(rec, req)
		if rec.Header().Get("Content-Encoding") != "gzip" {
			b.Fatalf("not gzipped: %v", rec.Header())
		}
		w := &nullWriter{h: http.Header{}}
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			s.metrics(w, req)
		}
		reportCPU(b, cpu)
		b.ReportMetric(float64(rec.Body.Len()), "gzipped-bytes")
	})
	b.Run("collect", func(b *testing.B) {
		var buf bytes.Buffer
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			buf.Reset()
			mfs, err := reportGatherer(reportCollectors(&rep, time.Time{})).Gather()
			if err != nil {
				b.Fatal(err)
			}
			if err := encodeText(&buf, mfs); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu)
	})
	b.Run("registry", func(b *testing.B) {
		var buf bytes.Buffer
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			buf.Reset()
			reg := prometheus.NewRegistry()
			for _, c := range reportCollectors(&rep, time.Time{}) {
				reg.MustRegister(c)
			}
			mfs, err := reg.Gather()
			if err != nil {
				b.Fatal(err)
			}
			if err := encodeText(&buf, mfs); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu)
	})
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, since time.Duration) {
	b.ReportMetric(float64(cpuTime()-since)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}
