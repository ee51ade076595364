package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"appliance/internal/testutil"
)

// procCPU returns the CPU time pid has used so far, from /proc.
func procCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// cpuShare is the share of one core pid uses over d.
func cpuShare(tb testing.TB, pid int, d time.Duration) float64 {
	before := procCPU(tb, pid)
	start := time.Now()
	time.Sleep(d) // measuring over a span of time, not waiting for an event
	return float64(procCPU(tb, pid)-before) / float64(time.Since(start))
}

// BenchmarkControlPlane measures the parent of a unit with 1,000 idle
// streams: its CPU (against the same unit with one stream), the time to
// build a fresh status document (against /healthz), and how late worker
// reports (the heartbeats) arrive with and without 50 clients polling the
// API. One run, whatever b.N.
func BenchmarkControlPlane(b *testing.B) {
	ports := freeUDPPorts(b, 1002)
	measure := func(streams int) (cpu float64, u *unitProc) {
		u = startUnit(b, scaleConfig(streams, 2, ports[:streams], ports[1001]))
		testutil.Eventually(b, 30*time.Second, "the streams to start", func() bool {
			rep, err := u.report()
			return err == nil && len(rep.Streams) == streams && rep.Streams[streams-1].WorkerPID != 0
		})
		time.Sleep(2 * time.Second) // settle after start, before measuring
		return cpuShare(b, u.cmd.Process.Pid, 10*time.Second), u
	}
	base, u1 := measure(1)
	u1.stop()
	idle, u := measure(1000)
	b.Logf("parent CPU, idle: 1 stream %.2f%% of a core, 1,000 streams %.2f%%", base*100, idle*100)
	b.ReportMetric(idle*100, "parent-cpu-%-1000-idle")
	b.ReportMetric(base*100, "parent-cpu-%-1-idle")

	// A fresh document: a new connection, after the last rendering expired.
	fresh := func(path string) time.Duration {
		var ds []time.Duration
		for i := 0; i < 20; i++ {
			time.Sleep(150 * time.Millisecond) // let the shared rendering expire
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}}
			start := time.Now()
			resp, err := c.Get(u.api + path)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			ds = append(ds, time.Since(start))
		}
		return percentile(ds, 0.5)
	}
	doc, hz := fresh("/api/v1/status"), fresh("/healthz")
	b.Logf("status document at 1,000 streams, built fresh: %v (p50 of 20); /healthz %v", doc.Round(10*time.Microsecond), hz.Round(10*time.Microsecond))
	b.ReportMetric(float64(doc)/1e6, "status-doc-ms")
	b.ReportMetric(float64(hz)/1e6, "healthz-ms")

	gap := func() float64 {
		rep := u.mustReport()
		worst := 0.0
		for _, w := range rep.Workers {
			worst = max(worst, w.MaxReportGapMs)
		}
		return worst
	}
	quiet := gap()
	// 20 s of 50 clients polling back to back, from a process of their own,
	// with /healthz probed from here meanwhile.
	gen := exec.CommandContext(context.Background(), os.Args[0], "-test.run=^$")
	gen.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d", loadgenEnv, u.api+"/api/v1/status", 50, 20000))
	var outb strings.Builder
	gen.Stdout, gen.Stderr = &outb, &outb
	if err := gen.Start(); err != nil {
		b.Fatal(err)
	}
	genDone := make(chan error, 1)
	go func() { genDone <- gen.Wait() }()
	var lat []time.Duration
	hc := &http.Client{Timeout: 10 * time.Second}
	var genErr error
probe:
	for {
		select {
		case genErr = <-genDone:
			break probe
		default:
		}
		start := time.Now()
		resp, err := hc.Get(u.api + "/healthz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			lat = append(lat, time.Since(start))
		}
		time.Sleep(20 * time.Millisecond) // pacing the probe
	}
	if genErr != nil {
		b.Fatalf("load generator: %v %s", genErr, outb.String())
	}
	out := outb.String()
	loaded := gap()
	hz99 := percentile(lat, 0.99)
	b.Logf("/healthz under the load: p50 %v p99 %v over %d probes (target p99 under 10 ms)", percentile(lat, 0.5).Round(10*time.Microsecond), hz99.Round(10*time.Microsecond), len(lat))
	b.ReportMetric(float64(hz99)/1e6, "healthz-p99-ms-loaded")
	b.Logf("longest gap between worker reports (due every 100 ms): %.0f ms since start, %.0f ms after 20 s of 50 API clients (%s documents, MB)", quiet, loaded, strings.TrimSpace(out))
	b.ReportMetric(quiet-100, "report-delay-ms-quiet")
	b.ReportMetric(loaded-100, "report-delay-ms-loaded")
	u.stop()
}
