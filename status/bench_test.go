package status

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"appliance/health"
	"appliance/hw"
	"appliance/media"
	"appliance/supervisor"
	"appliance/watchdog"
)

// syntheticReport is a busy unit: streams with every counter set and
// outputs each, two workers, a few links and sensors, and a full event log.
func syntheticReport(streams, outputs, events int) Report {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rep := Report{
		Unit: Unit{Name: "rack7-unit-a", Version: "1.4.2", UptimeS: 86400.25, Started: now.Add(-24 * time.Hour), State: "running"},
		Supervisor: supervisor.Node{Name: "root", Kind: "supervisor", Strategy: "one_for_one", State: "running", Since: now,
			Children: []supervisor.Node{
				{Name: "hw", Kind: "service", State: "running", Since: now},
				{Name: "media", Kind: "supervisor", Strategy: "one_for_one", State: "running", Since: now, Children: []supervisor.Node{
					{Name: "worker-0", Kind: "process", State: "running", PID: 4101, Restarts: 3, LastExit: "killed by signal KILL", Since: now},
					{Name: "worker-1", Kind: "process", State: "running", PID: 4102, Since: now},
				}},
			}},
		Hardware: hw.Hardware{
			Links: []hw.Link{
				{Name: "eth0", Role: "input", Present: true, AdminUp: true, Carrier: true, SpeedMbps: 10000, RxDropped: 12},
				{Name: "eth1", Role: "output", Present: true, AdminUp: true, Carrier: true, SpeedMbps: 10000},
				{Name: "eth2", Role: "pair", Present: true, AdminUp: true, Carrier: true, SpeedMbps: 1000},
			},
			Load:      hw.Load{CPUPct: 61.5, MemUsedPct: 37.2, Load1: 1.42},
			UpdatedAt: now,
		},
		Health: []health.Condition{{Name: "temperature", Severity: health.Warning, Message: "cpu at 82.0 °C (warn 80, crit 90)", Since: now}},
		Watchdog: watchdog.Status{Device: "/dev/watchdog0", Identity: "iTCO_wdt", Armed: true, TimeoutS: 30, LastFeed: &now,
			Feeding: true, LastResetReason: "power-on", BootCount: 17, Systemd: true, SystemdIntervalS: 10},
	}
	for i := range streams {
		s := media.StreamStatus{
			Name: fmt.Sprintf("channel-%04d", i), State: "running", Worker: i % 2, WorkerPID: 4101 + i%2,
			Input: fmt.Sprintf("udp://239.1.%d.%d:5000", i/250, i%250), BitrateBps: 8_123_456.7, PacketRate: 771.3, Restarts: i % 3,
			Counters: media.Counters{PacketsIn: 66_640_000 + uint64(i), BytesIn: 88_000_000_000, PacketsOut: 66_639_000, BytesOut: 87_998_000_000,
				Lost: 41, Duplicates: 3, Reordered: 7, Discontinuities: 1, CCErrors: 2, Malformed: 1, MalformedShort: 1,
				JitterMs: 0.8125}, LastInput: &now, Role: "forward", LastForwardedSeq: new(uint16),
		}
		for o := range outputs {
			s.Outputs = append(s.Outputs, media.OutputStatus{Address: fmt.Sprintf("udp://10.20.%d.%d:%d", o, i%250, 6000+i),
				State: "ok", Packets: 66_639_000, Errors: uint64(o)})
		}
		rep.Streams = append(rep.Streams, s)
	}
	for i := range events {
		rep.Events = append(rep.Events, Event{Time: now.Add(-time.Duration(i) * time.Second), Source: "supervisor", Kind: "restart",
			Supervisor: "root/media", Child: "worker-0", Reason: "killed by signal KILL", PID: 4000 + i})
	}
	return rep
}

// BenchmarkStatusDocument measures one GET /api/v1/status document at
// 1,000 streams: "compact" is what the API builds at most once per
// reuseFor, "indented" is how it was built before (once per request),
// "pretty" is ?pretty=1 and "gzip" the compressed copy, each made from the
// compact one at most once per rendering, and "served" is one more
// poller's request answered from a rendering already built.
func BenchmarkStatusDocument(b *testing.B) {
	rep := syntheticReport(1000, 2, MaxEvents)
	size, _ := json.Marshal(rep)
	b.Run("compact", func(b *testing.B) {
		b.SetBytes(int64(len(size)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(rep); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("indented", func(b *testing.B) {
		b.SetBytes(int64(len(size)))
		b.ReportAllocs()
		for b.Loop() {
			enc := json.NewEncoder(io.Discard)
			enc.SetIndent("", "  ")
			if err := enc.Encode(rep); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pretty", func(b *testing.B) {
		b.SetBytes(int64(len(size)))
		b.ReportAllocs()
		for b.Loop() {
			g := &rendering{body: size}
			g.indented()
		}
	})
	b.Run("gzip", func(b *testing.B) {
		b.SetBytes(int64(len(size)))
		b.ReportAllocs()
		for b.Loop() {
			g := &rendering{body: size}
			g.compressed()
		}
	})
	b.Run("served", func(b *testing.B) {
		s := &Server{src: &fixed{rep}, log: discard()}
		s.render = renderer{src: s.src, now: func() time.Time { return time.Time{} }}
		req := httptest.NewRequest("GET", "/api/v1/status", nil)
		w := &nullWriter{h: http.Header{}}
		s.status(w, req) // builds the rendering the loop reuses
		b.ReportAllocs()
		for b.Loop() {
			s.status(w, req)
		}
	})
}

// nullWriter is a ResponseWriter that throws the body away, so the
// benchmark measures the server and not a recorder's buffer.
type nullWriter struct{ h http.Header }

func (w *nullWriter) Header() http.Header         { return w.h }
func (w *nullWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nullWriter) WriteHeader(int)             {}
