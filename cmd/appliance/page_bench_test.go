package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"appliance/internal/testutil"
)

// BenchmarkPageFresh measures the status page of a real unit with 1,000
// streams (2 workers): GET / (every section and the first 50 streams) and
// a stream's page, each on a new connection after the last report
// expired, so each builds the report and the page; /healthz is the
// baseline of the same run. One run, whatever b.N.
func BenchmarkPageFresh(b *testing.B) {
	ports := freeUDPPorts(b, 1001)
	u := startUnit(b, scaleConfig(1000, 2, ports[:1000], ports[1000]))
	testutil.Eventually(b, 30*time.Second, "the streams to start", func() bool {
		rep, err := u.report()
		return err == nil && len(rep.Streams) == 1000 && rep.Streams[999].WorkerPID != 0
	})
	time.Sleep(2 * time.Second) // settle after start, before measuring

	fresh := func(path, want string) time.Duration {
		var ds []time.Duration
		for range 20 {
			time.Sleep(150 * time.Millisecond) // let the page's last report expire
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}}
			start := time.Now()
			resp, err := c.Get(u.api + path)
			if err != nil {
				b.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			ds = append(ds, time.Since(start))
			if err != nil || resp.StatusCode != 200 || !strings.Contains(string(body), want) {
				b.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
			}
		}
		return percentile(ds, 0.5)
	}
	page := fresh("/", `data-stream="s0049"`)
	stream := fresh("/streams/s0500", "Stream s0500")
	hz := fresh("/healthz", "running")
	b.Logf("at 1,000 streams, built fresh (p50 of 20): the page %v, a stream's page %v; /healthz %v",
		page.Round(10*time.Microsecond), stream.Round(10*time.Microsecond), hz.Round(10*time.Microsecond))
	b.ReportMetric(float64(page)/1e6, "page-ms")
	b.ReportMetric(float64(stream)/1e6, "stream-page-ms")
	b.ReportMetric(float64(hz)/1e6, "healthz-ms")
	u.stop()
}
