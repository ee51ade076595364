package status

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	dto "github.com/prometheus/client_model/go"

	"appliance/health"
	"appliance/hw"
	"appliance/internal/testutil"
	"appliance/media"
	"appliance/supervisor"
	"appliance/watchdog"
)

// scrapeRegistry is rep's collectors, at at, in a pedantic registry,
// which checks every series against the others and against the
// descriptions: what reportGatherer leaves out.
func scrapeRegistry(rep *Report, at time.Time) (*prometheus.Registry, error) {
	reg := prometheus.NewPedanticRegistry()
	for _, c := range reportCollectors(rep, at) {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering the %T metrics: %w", c, err)
		}
	}
	return reg, nil
}

// writeMetrics gathers rep's metrics through the pedantic registry, in
// the text format.
func writeMetrics(w io.Writer, rep *Report, at time.Time) error {
	reg, err := scrapeRegistry(rep, at)
	if err != nil {
		return err
	}
	mfs, err := reg.Gather()
	if err != nil {
		return err
	}
	return encodeText(w, mfs)
}

func encodeText(w io.Writer, mfs []*dto.MetricFamily) error {
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	return nil
}

// parseMetrics reads the text format as Prometheus does.
func parseMetrics(t *testing.T, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the text parser refused /metrics: %v\n%s", err, body)
	}
	return mfs
}

// scrape GETs /metrics and parses it.
func scrape(t *testing.T, base string) (map[string]*dto.MetricFamily, []byte) {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type %q, want the text format", ct)
	}
	return parseMetrics(t, body), body
}

// valueOf finds the one sample of family name whose labels are exactly
// labels (name=value pairs), failing the test if there is not exactly one.
func valueOf(t *testing.T, mfs map[string]*dto.MetricFamily, name string, typ dto.MetricType, labels ...string) float64 {
	t.Helper()
	mf := mfs[name]
	if mf == nil {
		t.Errorf("no %s", name)
		return math.NaN()
	}
	if mf.GetType() != typ {
		t.Errorf("%s is a %v, want a %v", name, mf.GetType(), typ)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	var found []*dto.Metric
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		match := true
		for _, lp := range m.GetLabel() {
			if v, ok := want[lp.GetName()]; !ok || v != lp.GetValue() {
				match = false
			}
		}
		if match {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Errorf("%s%v: %d series, want 1", name, labels, len(found))
		return math.NaN()
	}
	m := found[0]
	switch typ {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	}
	return math.NaN()
}

const (
	counter = dto.MetricType_COUNTER
	gauge   = dto.MetricType_GAUGE
)

// unitReport is a paired unit with two streams, cam1 carried here, cam2
// held in standby, and something to say in every area.
func unitReport() Report {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fed := now.Add(-1500 * time.Millisecond)
	rtt, heard, answer := 0.75, 20.0, 250.0
	online, charge := false, 64
	return Report{
		Unit: Unit{Name: "unit-a", Version: "1.2.3", UptimeS: 3600.5, Started: now, State: "running"},
		Streams: []media.StreamStatus{
			{Name: "cam1", State: "running", Role: "active", Restarts: 2,
				Outputs: []media.OutputStatus{
					{Address: "udp://10.0.0.9:6000", State: "ok", Packets: 990, Errors: 0},
					{Address: "udp://10.0.0.10:6000", State: "failing", Packets: 900, Errors: 90},
				},
				Counters: media.Counters{PacketsIn: 1000, BytesIn: 1_328_000, PacketsOut: 990, BytesOut: 1_314_720,
					Lost: 7, Duplicates: 1, Reordered: 3, Malformed: 4, CCErrors: 5, JitterMs: 1.25}},
			{Name: "cam2", State: "idle", Role: "standby", Counters: media.Counters{PacketsIn: 10}},
		},
		Workers: []media.WorkerStatus{{Name: "worker-0", PID: 41, Streams: 2, LastReportMs: 50, MaxReportGapMs: 180}},
		Supervisor: supervisor.Node{Name: "root", Kind: "supervisor", State: "running", Children: []supervisor.Node{
			{Name: "hw", Kind: "service", State: "running"},
			{Name: "media", Kind: "supervisor", State: "failed", Restarts: 1, GiveUps: 3, Children: []supervisor.Node{
				{Name: "worker-0", Kind: "process", State: "stopped", Restarts: 4},
			}},
		}},
		Hardware: hw.Hardware{
			Temperatures: []hw.TempStatus{{Temperature: hw.Temperature{Sensor: "coretemp_package_id_0", Celsius: 84.5}, WarnC: 80, CritC: 90, Severity: health.Warning}},
			PowerSupplies: []hw.PowerSupply{{Name: "AC", Type: "Mains", Online: &online},
				{Name: "BAT0", Type: "Battery", Status: "Discharging", CapacityPct: &charge}},
			Links: []hw.Link{{Name: "eth0", Role: "input", Present: true, AdminUp: true, Carrier: true, SpeedMbps: 1000, RxErrors: 3, TxDropped: 4},
				{Name: "eth1", Role: "output", Present: true, AdminUp: true}},
			Load: hw.Load{CPUPct: 25, MemUsedPct: 50, Load1: 0.5},
		},
		Health: []health.Condition{
			{Name: "power.on-battery", Severity: health.Critical, Message: "no mains supply online, running on BAT0"},
			{Name: "temp:coretemp_package_id_0", Severity: health.Warning, Message: "84.5 °C"},
		},
		Watchdog: watchdog.Status{Device: "/dev/watchdog0", Armed: true, TimeoutS: 30, LastFeed: &fed, Feeding: true,
			LastResetReason: "watchdog", BootCount: 17, Systemd: true, DeviceFeeds: 2400, SystemdFeeds: 2399},
		Pair: &Pair{Peer: "unit-b", PeerState: "silent", Agreement: true, State: "up", Realtime: true, DetectMs: 300,
			LateBeats: 6, MaxLateMs: 45, Beacon: true, CoveredBeats: 2,
			Paths: []PairPath{
				{Local: "10.1.0.1:7400", Remote: "10.1.0.2:7400", Up: true, LastHeardMs: &heard, RTTMs: &rtt, Sent: 500, Received: 480,
					Missed: 12, Garbage: 1, Forged: 2, Replayed: 3, Version: 4},
				{Local: "10.2.0.1:7400", Remote: "10.2.0.2:7400", Sent: 500, Missed: 400},
			},
			Witness: &Witness{Address: "10.9.0.1:7400", Lease: true, LastAnswerMs: &answer}},
	}
}

// The per-stream series, and one of every other area, come out of
// /metrics with the report's values, in base units, readable by
// Prometheus's own text parser.
func TestMetricsFromTheReport(t *testing.T) {
	s := serveWith(t, &fixed{unitReport()}, testOpts)
	// The rendering is taken 1.5 s after the last feed.
	s.render.now = func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }
	mfs, _ := scrape(t, "http://"+s.Addr().String())

	for _, tt := range []struct {
		name   string
		typ    dto.MetricType
		labels []string
		want   float64
	}{
		{"appliance_stream_packets_total", counter, []string{"stream", "cam1", "direction", "in"}, 1000},
		{"appliance_stream_packets_total", counter, []string{"stream", "cam1", "direction", "out"}, 990},
		{"appliance_stream_bytes_total", counter, []string{"stream", "cam1", "direction", "in"}, 1_328_000},
		{"appliance_stream_bytes_total", counter, []string{"stream", "cam1", "direction", "out"}, 1_314_720},
		{"appliance_stream_lost_packets", gauge, []string{"stream", "cam1"}, 7},
		{"appliance_stream_jitter_seconds", gauge, []string{"stream", "cam1"}, 0.00125},
		{"appliance_stream_cc_errors_total", counter, []string{"stream", "cam1"}, 5},
		{"appliance_stream_restarts_total", counter, []string{"stream", "cam1"}, 2},
		{"appliance_stream_role", gauge, []string{"stream", "cam1", "role", "active"}, 1},
		{"appliance_stream_role", gauge, []string{"stream", "cam2", "role", "standby"}, 1},
		{"appliance_stream_state", gauge, []string{"stream", "cam1", "state", "running"}, 1},
		{"appliance_stream_state", gauge, []string{"stream", "cam2", "state", "idle"}, 1},
		{"appliance_stream_packets_total", counter, []string{"stream", "cam2", "direction", "in"}, 10},
		{"appliance_output_errors_total", counter, []string{"stream", "cam1", "output", "udp://10.0.0.10:6000"}, 90},
		{"appliance_output_errors_total", counter, []string{"stream", "cam1", "output", "udp://10.0.0.9:6000"}, 0},

		{"appliance_build_info", gauge, []string{"version", "1.2.3"}, 1},
		{"appliance_unit_info", gauge, []string{"name", "unit-a"}, 1},
		{"appliance_unit_state", gauge, []string{"state", "running"}, 1},
		{"appliance_uptime_seconds", gauge, nil, 3600.5},
		{"appliance_worker_streams", gauge, []string{"worker", "worker-0"}, 2},
		{"appliance_worker_report_age_seconds", gauge, []string{"worker", "worker-0"}, 0.05},
		{"appliance_worker_max_report_gap_seconds", gauge, []string{"worker", "worker-0"}, 0.18},

		{"appliance_health_condition", gauge, []string{"name", "power.on-battery", "severity", "critical"}, 1},
		{"appliance_health_condition", gauge, []string{"name", "temp:coretemp_package_id_0", "severity", "warning"}, 1},
		{"appliance_health_severity", gauge, nil, 2},
		{"appliance_power_on_battery", gauge, nil, 1},

		{"appliance_watchdog_armed", gauge, nil, 1},
		{"appliance_watchdog_feeding", gauge, nil, 1},
		{"appliance_watchdog_timeout_seconds", gauge, nil, 30},
		{"appliance_watchdog_last_feed_age_seconds", gauge, nil, 1.5},
		{"appliance_watchdog_systemd", gauge, nil, 1},
		{"appliance_watchdog_feeds_total", counter, []string{"target", "hardware"}, 2400},
		{"appliance_watchdog_feeds_total", counter, []string{"target", "systemd"}, 2399},
		{"appliance_boots_total", counter, nil, 17},
		{"appliance_last_reset_info", gauge, []string{"reason", "watchdog"}, 1},

		{"appliance_supervisor_restarts_total", counter, []string{"child", "root/media"}, 1},
		{"appliance_supervisor_restarts_total", counter, []string{"child", "root/media/worker-0"}, 4},
		{"appliance_supervisor_child_state", gauge, []string{"child", "root/media/worker-0", "state", "stopped"}, 1},
		{"appliance_supervisor_gave_up", gauge, []string{"child", "root/media"}, 1},
		{"appliance_supervisor_gave_up", gauge, []string{"child", "root"}, 0},
		{"appliance_supervisor_give_ups_total", counter, []string{"child", "root/media"}, 3},
		{"appliance_supervisor_give_ups_total", counter, []string{"child", "root"}, 0},

		{"appliance_temperature_celsius", gauge, []string{"sensor", "coretemp_package_id_0"}, 84.5},
		{"appliance_temperature_warn_celsius", gauge, []string{"sensor", "coretemp_package_id_0"}, 80},
		{"appliance_temperature_crit_celsius", gauge, []string{"sensor", "coretemp_package_id_0"}, 90},
		{"appliance_power_supply_online", gauge, []string{"supply", "AC", "type", "Mains"}, 0},
		{"appliance_power_supply_discharging", gauge, []string{"supply", "BAT0", "type", "Battery"}, 1},
		{"appliance_power_supply_capacity_ratio", gauge, []string{"supply", "BAT0", "type", "Battery"}, 0.64},
		{"appliance_link_up", gauge, []string{"nic", "eth0", "role", "input"}, 1},
		{"appliance_link_up", gauge, []string{"nic", "eth1", "role", "output"}, 0},
		{"appliance_link_speed_bytes", gauge, []string{"nic", "eth0", "role", "input"}, 125e6},
		{"appliance_link_errors_total", counter, []string{"nic", "eth0", "role", "input", "direction", "rx"}, 3},
		{"appliance_link_dropped_total", counter, []string{"nic", "eth0", "role", "input", "direction", "tx"}, 4},
		{"appliance_cpu_busy_ratio", gauge, nil, 0.25},
		{"appliance_memory_used_ratio", gauge, nil, 0.5},
		{"appliance_load1", gauge, nil, 0.5},

		{"appliance_pair_peer_state", gauge, []string{"peer", "unit-b", "state", "silent"}, 1},
		{"appliance_pair_state", gauge, []string{"state", "up"}, 1},
		{"appliance_pair_agreement", gauge, nil, 1},
		{"appliance_pair_detect_seconds", gauge, nil, 0.3},
		{"appliance_pair_late_heartbeats_total", counter, nil, 6},
		{"appliance_pair_heartbeat_max_late_seconds", gauge, nil, 0.045},
		{"appliance_pair_beacon_heartbeats_total", counter, nil, 2},
		{"appliance_pair_path_info", gauge, []string{"path", "1", "local", "10.2.0.1:7400", "remote", "10.2.0.2:7400"}, 1},
		{"appliance_pair_path_up", gauge, []string{"path", "0"}, 1},
		{"appliance_pair_path_up", gauge, []string{"path", "1"}, 0},
		{"appliance_pair_path_rtt_seconds", gauge, []string{"path", "0"}, 0.00075},
		{"appliance_pair_path_last_heartbeat_age_seconds", gauge, []string{"path", "0"}, 0.02},
		{"appliance_pair_path_heartbeats_sent_total", counter, []string{"path", "1"}, 500},
		{"appliance_pair_path_heartbeats_received_total", counter, []string{"path", "0"}, 480},
		{"appliance_pair_path_heartbeats_missed_total", counter, []string{"path", "0"}, 12},
		{"appliance_pair_path_heartbeats_missed_total", counter, []string{"path", "1"}, 400},
		{"appliance_pair_path_refused_total", counter, []string{"path", "0", "reason", "garbage"}, 1},
		{"appliance_pair_path_refused_total", counter, []string{"path", "0", "reason", "forged"}, 2},
		{"appliance_pair_path_refused_total", counter, []string{"path", "0", "reason", "replayed"}, 3},
		{"appliance_pair_path_refused_total", counter, []string{"path", "0", "reason", "version"}, 4},
		{"appliance_pair_witness_lease", gauge, nil, 1},
		{"appliance_pair_witness_last_answer_age_seconds", gauge, nil, 0.25},
	} {
		if got := valueOf(t, mfs, tt.name, tt.typ, tt.labels...); math.Abs(got-tt.want) > 1e-9*max(1, math.Abs(tt.want)) {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}

	// Give-ups are the supervisors', not their other children's.
	if n := len(mfs["appliance_supervisor_give_ups_total"].GetMetric()); n != 2 {
		t.Errorf("appliance_supervisor_give_ups_total: %d series for 2 supervisors", n)
	}
	// Only the current role and state are shown, so a stream has one of each.
	for _, name := range []string{"appliance_stream_role", "appliance_stream_state"} {
		if n := len(mfs[name].GetMetric()); n != 2 {
			t.Errorf("%s: %d series for 2 streams", name, n)
		}
	}
	// Unknowns are left out, not shown as zero.
	for _, absent := range []string{"appliance_pair_path_rtt_seconds", "appliance_pair_path_last_heartbeat_age_seconds"} {
		for _, m := range mfs[absent].GetMetric() {
			if m.GetLabel()[0].GetValue() == "1" {
				t.Errorf("%s for path 1, which has no measurement", absent)
			}
		}
	}
	if _, ok := mfs["appliance_pair_witness_rtt_seconds"]; ok {
		t.Error("appliance_pair_witness_rtt_seconds without a measurement")
	}
	// The Go runtime's and the process's own metrics come too.
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		if mfs[name] == nil {
			t.Errorf("no %s", name)
		}
	}
}

// Every family has help text; counters, and only counters, end in _total.
func TestMetricsNaming(t *testing.T) {
	var b bytes.Buffer
	rep := unitReport()
	if err := writeMetrics(&b, &rep, time.Time{}); err != nil {
		t.Fatal(err)
	}
	mfs := parseMetrics(t, b.Bytes())
	if len(mfs) < 60 {
		t.Fatalf("only %d families", len(mfs))
	}
	for name, mf := range mfs {
		if !strings.HasPrefix(name, "appliance_") {
			t.Errorf("%s: not under appliance_", name)
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s: no help", name)
		}
		if isCounter, total := mf.GetType() == counter, strings.HasSuffix(name, "_total"); isCounter != total {
			t.Errorf("%s is a %v", name, mf.GetType())
		}
		for _, bad := range []string{"_ms", "milliseconds", "_pct", "percent", "_mbps"} {
			if strings.Contains(name, bad) {
				t.Errorf("%s: not in a base unit", name)
			}
		}
	}
}

// A unit alone has no pair series, and a unit before its supervision tree
// runs has no supervision series; neither is an error.
func TestMetricsOfAnEmptyReport(t *testing.T) {
	mfs, _ := scrape(t, serve(t, &fixed{Report{Unit: Unit{Name: "unit-a", Version: "dev", State: "running"}}}))
	for name := range mfs {
		if strings.HasPrefix(name, "appliance_pair_") || strings.HasPrefix(name, "appliance_supervisor_") ||
			strings.HasPrefix(name, "appliance_stream_") || strings.HasPrefix(name, "appliance_watchdog_last_feed") ||
			name == "appliance_watchdog_timeout_seconds" || name == "appliance_watchdog_feeds_total" {
			t.Errorf("%s with nothing to show", name)
		}
	}
	if got := valueOf(t, mfs, "appliance_health_severity", gauge); got != 0 {
		t.Errorf("appliance_health_severity %v with no condition", got)
	}
}

// The loss estimate falls when late packets fill a gap; as a gauge it
// may, where a counter would read as a reset.
func TestMetricsFollowTheReport(t *testing.T) {
	src := &liveSource{rep: unitReport()}
	s := serveWith(t, src, testOpts)
	var mu sync.Mutex
	now := time.Now()
	s.render.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	base := "http://" + s.Addr().String()

	mfs, _ := scrape(t, base)
	if got := valueOf(t, mfs, "appliance_stream_lost_packets", gauge, "stream", "cam1"); got != 7 {
		t.Fatalf("lost %v, want 7", got)
	}
	src.edit(func(r *Report) { r.Streams[0].Lost = 2 })
	mfs, _ = scrape(t, base)
	if got := valueOf(t, mfs, "appliance_stream_lost_packets", gauge, "stream", "cam1"); got != 7 {
		t.Errorf("lost %v within reuseFor of the last report, want the shared 7", got)
	}
	mu.Lock()
	now = now.Add(reuseFor)
	mu.Unlock()
	mfs, _ = scrape(t, base)
	if got := valueOf(t, mfs, "appliance_stream_lost_packets", gauge, "stream", "cam1"); got != 2 {
		t.Errorf("lost %v after the report changed, want 2", got)
	}
}

// Scrapes and API reads within reuseFor share one report.
func TestMetricsShareTheAPIReport(t *testing.T) {
	src := &counting{rep: unitReport()}
	s := serveWith(t, src, testOpts)
	now := time.Now()
	s.render.now = func() time.Time { return now }
	base := "http://" + s.Addr().String()
	if code, _ := get(t, "GET", base+"/api/v1/status"); code != 200 {
		t.Fatalf("status %d", code)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			resp, err := http.Get(base + "/metrics")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("GET /metrics: %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	if n := src.calls.Load(); n != 1 {
		t.Errorf("an API read and 4 scrapes made %d reports, want 1", n)
	}
}

// /metrics is read-only like the rest of the API, and HEAD works.
func TestMetricsMethods(t *testing.T) {
	base := serve(t, sample("running"))
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		code, body := get(t, m, base+"/metrics")
		if code != 405 || !strings.Contains(body["error"].(string), "read-only") {
			t.Errorf("%s /metrics: %d %v, want 405 saying it is read-only", m, code, body)
		}
	}
	resp, err := http.Head(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("HEAD /metrics: %d", resp.StatusCode)
	}
}

// A report that cannot be built ends the scrape that built it, as it does
// an API request; scrapes waiting for it get a JSON error; the server
// goes on.
func TestMetricsWhenTheReportPanics(t *testing.T) {
	s := serveWith(t, panicking{}, testOpts)
	now := time.Now()
	s.render.now = func() time.Time { return now } // every request within reuseFor of the failed one
	base := "http://" + s.Addr().String()
	if resp, err := http.Get(base + "/metrics"); err == nil {
		resp.Body.Close()
		t.Fatalf("the scrape whose report panicked got %d, want the connection closed", resp.StatusCode)
	}
	code, body := get(t, "GET", base+"/metrics")
	if code != 500 || !strings.Contains(body["error"].(string), "could not be built") {
		t.Errorf("GET /metrics: %d %v, want 500 saying the report could not be built", code, body)
	}
	if code, _ := get(t, "GET", base+"/healthz"); code != 200 {
		t.Errorf("/healthz after: %d", code)
	}
}

type panicking struct{}

func (panicking) Report() Report { panic("a bug in the report") }
func (panicking) State() string  { return "running" }

// Sensor names come from sysfs: one that is not UTF-8 is shown under a
// readable spelling, and two sensors of one name are both shown.
func TestMetricsOddSensorNames(t *testing.T) {
	rep := Report{Hardware: hw.Hardware{Temperatures: []hw.TempStatus{
		{Temperature: hw.Temperature{Sensor: "nvme_composite", Celsius: 40}},
		{Temperature: hw.Temperature{Sensor: "nvme_composite#2", Celsius: 43}},
		{Temperature: hw.Temperature{Sensor: "nvme_composite", Celsius: 41}},
		{Temperature: hw.Temperature{Sensor: "chip\xff\"x\"\n", Celsius: 42}},
	}}}
	var b bytes.Buffer
	if err := writeMetrics(&b, &rep, time.Time{}); err != nil {
		t.Fatal(err)
	}
	mfs := parseMetrics(t, b.Bytes())
	for sensor, want := range map[string]float64{"nvme_composite": 40, "nvme_composite#2": 43, "nvme_composite#3": 41, "chip\uFFFD\"x\"\n": 42} {
		if got := valueOf(t, mfs, "appliance_temperature_celsius", gauge, "sensor", sensor); got != want {
			t.Errorf("sensor %q: %v, want %v", sensor, got, want)
		}
	}
}

// promtool, Prometheus's own linter, finds nothing to say about the
// output. CI installs it (and requires it); elsewhere the test is skipped
// with the package to install, like the other rig tests.
func TestMetricsPromtool(t *testing.T) {
	testutil.NeedTools(t, testutil.Tool{Name: "promtool", Package: "prometheus"})
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal(err)
	}
	_, body := scrape(t, serve(t, &fixed{metricsPairedReport(20, 2, 10)}))
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// Names the unit reads from sysfs and from the config end up as label
// values: whatever their bytes, the output parses, and each series is
// there once under the name as it reads in UTF-8.
func FuzzMetricsLabelValues(f *testing.F) {
	for _, s := range []string{"coretemp_package_id_0", "", "a\"b", "back\\slash", "new\nline", "\xff\xfe", "tab\there", "#2", "{x=\"y\"}", "😀"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, sensor, supply string) {
		online := true
		rep := Report{Hardware: hw.Hardware{
			Temperatures:  []hw.TempStatus{{Temperature: hw.Temperature{Sensor: sensor, Celsius: 50}}, {Temperature: hw.Temperature{Sensor: "other", Celsius: 51}}},
			PowerSupplies: []hw.PowerSupply{{Name: supply, Type: sensor, Online: &online}},
		}}
		mfs := parseMetrics(t, sameBothWays(t, &rep))
		want := 50.0
		if sensor == "other" {
			want = 51 // the first of two of that name
		}
		if got := valueOf(t, mfs, "appliance_temperature_celsius", gauge, "sensor", strings.ToValidUTF8(sensor, "\uFFFD")); got != want {
			t.Errorf("sensor %q: %v, want %v", sensor, got, want)
		}
		if got := valueOf(t, mfs, "appliance_power_supply_online", gauge, "supply", strings.ToValidUTF8(supply, "\uFFFD"), "type", strings.ToValidUTF8(sensor, "\uFFFD")); got != 1 {
			t.Errorf("supply %q: %v, want 1", supply, got)
		}
	})
}

// reportGatherer, which skips the registry's checks of each series,
// gathers what the pedantic registry does, which makes them all.
func TestReportGathererMatchesTheRegistry(t *testing.T) {
	for _, rep := range []Report{unitReport(), metricsPairedReport(30, 3, 5)} {
		if n := bytes.Count(sameBothWays(t, &rep), []byte("\n")); n < 200 {
			t.Errorf("%d lines of metrics", n)
		}
	}
	sameBothWays(t, &Report{})
}

// sameBothWays gathers rep's metrics through reportGatherer and through
// the pedantic registry, fails the test unless both give the same, and
// returns reportGatherer's in the text format.
func sameBothWays(t *testing.T, rep *Report) []byte {
	t.Helper()
	var want, got bytes.Buffer
	if err := writeMetrics(&want, rep, time.Time{}); err != nil {
		t.Fatalf("the pedantic registry refused the report's metrics: %v", err)
	}
	mfs, err := reportGatherer(reportCollectors(rep, time.Time{})).Gather()
	if err != nil {
		t.Fatal(err)
	}
	if err := encodeText(&got, mfs); err != nil {
		t.Fatal(err)
	}
	// The registry sorts series by label values; the collectors send
	// most of them in that order already, but not all.
	sorted := func(b []byte) string {
		lines := strings.Split(string(b), "\n")
		slices.Sort(lines)
		return strings.Join(lines, "\n")
	}
	if sorted(got.Bytes()) != sorted(want.Bytes()) {
		t.Fatalf("reportGatherer:\n%s\nthe registry:\n%s", got.Bytes(), want.Bytes())
	}
	return got.Bytes()
}

// A collector that panics costs its own metrics, not the unit or the
// rest of the scrape.
func TestReportGathererSurvivesAPanic(t *testing.T) {
	rep := unitReport()
	mfs, err := reportGatherer{panickingCollector{}, unitMetrics{&rep, time.Time{}}}.Gather()
	if err == nil || !strings.Contains(err.Error(), "panicked: a bug") {
		t.Errorf("error %v, want one saying a collector panicked", err)
	}
	if !slices.ContainsFunc(mfs, func(mf *dto.MetricFamily) bool { return mf.GetName() == "appliance_build_info" }) {
		t.Error("the other collector's metrics are missing")
	}
}

type panickingCollector struct{}

func (panickingCollector) Describe(chan<- *prometheus.Desc) {}
func (panickingCollector) Collect(chan<- prometheus.Metric) { panic("a bug") }
