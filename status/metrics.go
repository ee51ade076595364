package status

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// runtimeRegistry holds the Go runtime's and the process's metrics. They
// keep no state between scrapes, so every server shares one.
var runtimeRegistry = sync.OnceValue(func() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
})

// metrics serves GET /metrics in the Prometheus text format (or another
// the scraper asks for).
//
// A scrape takes the server's shared rendering, the same report
// /api/v1/status serves, so scrapers and API clients together cost one
// Report per reuseFor, and nothing here touches the packet path, the
// heartbeats or their locks. The collectors turn that report into metrics
// at scrape time.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	g, ok := s.rendering(w, r, false)
	if !ok {
		return
	}
	report := reportGatherer(reportCollectors(&g.rep, g.at))
	gather := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := report.Gather()
		rt, rtErr := runtimeRegistry().Gather()
		return append(mfs, rt...), errors.Join(err, rtErr)
	})
	promhttp.HandlerFor(gather, promhttp.HandlerOpts{
		// A metric that cannot be made is logged and left out; the rest
		// of the scrape is still worth having.
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      promLog{s.log},
	}).ServeHTTP(w, r)
}

// reportGatherer gathers the report's collectors as prometheus.Registry
// would, less its checks of every series against every other and its
// sorting: at 1,000 streams those were a third of the CPU of gathering and
// encoding (BenchmarkMetrics). Here they hold by construction: the
// descriptions are fixed, and series are unique because the names they
// carry are (stream, output and link names are unique in the config;
// workers, supervision children, supplies and conditions are keyed by
// name; two sensors of one name are numbered apart; paths are numbered).
// The tests gather the same collectors through a pedantic registry, which
// makes every check.
type reportGatherer []prometheus.Collector

func (g reportGatherer) Gather() ([]*dto.MetricFamily, error) {
	ch := make(chan prometheus.Metric, 1024)
	go func() {
		defer close(ch)
		for _, c := range g {
			collectSafely(c, ch)
		}
	}()
	var errs []error
	byDesc := make(map[*prometheus.Desc]*dto.MetricFamily, 64)
	for m := range ch {
		d := m.Desc()
		dm := &dto.Metric{}
		if err := m.Write(dm); err != nil {
			errs = append(errs, err)
			continue
		}
		mf := byDesc[d]
		if mf == nil {
			var err error
			if mf, err = newFamily(d, dm); err != nil {
				errs = append(errs, err)
				continue
			}
			byDesc[d] = mf
		}
		mf.Metric = append(mf.Metric, dm)
	}
	out := make([]*dto.MetricFamily, 0, len(byDesc))
	for _, mf := range byDesc {
		out = append(out, mf)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, errors.Join(errs...)
}

// collectSafely is Collect, with a panic turned into an error: the
// collectors run outside the request's goroutine, where a panic would
// end the unit, not the scrape.
func collectSafely(c prometheus.Collector, ch chan<- prometheus.Metric) {
	defer func() {
		if r := recover(); r != nil {
			err := fmt.Errorf("the %T metrics panicked: %v; this is a bug, please report it with the log", c, r)
			ch <- prometheus.NewInvalidMetric(prometheus.NewInvalidDesc(err), err)
		}
	}()
	c.Collect(ch)
}

// newFamily is the family of the first metric dm of d.
func newFamily(d *prometheus.Desc, dm *dto.Metric) (*dto.MetricFamily, error) {
	meta, ok := descMeta[d]
	if !ok {
		return nil, fmt.Errorf("metric %s was made with a description no collector declares; this is a bug", d)
	}
	t := dto.MetricType_GAUGE
	if dm.Counter != nil {
		t = dto.MetricType_COUNTER
	}
	return &dto.MetricFamily{Name: &meta.name, Help: &meta.help, Type: &t}, nil
}

// promLog passes promhttp's errors (a metric that could not be made or
// written) to the unit's log.
type promLog struct{ log *slog.Logger }

func (l promLog) Println(v ...any) {
	l.log.Warn("status: /metrics", "err", strings.TrimSpace(fmt.Sprintln(v...)))
}
