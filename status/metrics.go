package status

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// runtimeCollectors are the Go runtime's and the process's metrics. They
// hold no state of their own, so every server shares one of each.
var runtimeCollectors = sync.OnceValue(func() []prometheus.Collector {
	return []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
})

// metrics serves GET /metrics in the Prometheus text format (or another
// the scraper asks for).
//
// A scrape takes the server's shared rendering, the same report
// /api/v1/status serves, so scrapers and API clients together cost one
// Report per reuseFor, and nothing here touches the packet path, the
// heartbeats or their locks. The collectors turn that report into metrics
// in a registry made for the scrape, as node_exporter does for a filtered
// scrape: the report a collector reads is then its own field, not state
// shared between scrapes.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	g, ok := s.rendering(w, r, false)
	if !ok {
		return
	}
	reg, err := scrapeRegistry(&g.rep, g.at)
	if err != nil {
		s.serverError(w, g, err)
		return
	}
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// A metric that cannot be made is logged and left out; the rest
		// of the scrape is still worth having.
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      promLog{s.log},
	}).ServeHTTP(w, r)
}

// scrapeRegistry holds the collectors of one scrape: rep as it was at at.
func scrapeRegistry(rep *Report, at time.Time) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	for _, c := range append(reportCollectors(rep, at), runtimeCollectors()...) {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering the %T metrics: %w", c, err)
		}
	}
	return reg, nil
}

// promLog passes promhttp's errors (a metric that could not be made or
// written) to the unit's log.
type promLog struct{ log *slog.Logger }

func (l promLog) Println(v ...any) {
	l.log.Warn("status: /metrics", "err", strings.TrimSpace(fmt.Sprintln(v...)))
}
