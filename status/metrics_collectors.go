package status

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"appliance/health"
	"appliance/media"
	"appliance/supervisor"
)

// The collectors follow node_exporter's pattern: each area of the report
// is a prometheus.Collector whose descriptions are fixed and whose metrics
// are made from the report when a scrape collects them. Every metric
// is listed with its meaning in docs/metrics.md; a name is a contract, as
// the report's field names are.

// reportCollectors are the collectors of rep, taken at at.
func reportCollectors(rep *Report, at time.Time) []prometheus.Collector {
	return []prometheus.Collector{
		unitMetrics{rep, at},
		streamMetrics{rep},
		supervisorMetrics{rep},
		hardwareMetrics{rep},
		pairMetrics{rep},
	}
}

// descs is the fixed list of one collector's descriptions.
type descs []*prometheus.Desc

// descMeta is what a Desc keeps to itself: the name and help that
// reportGatherer needs, and the label names labelsOf pairs values with.
var descMeta = map[*prometheus.Desc]metricMeta{}

type metricMeta struct {
	name, help string
	labels     []string
}

func (d *descs) add(name, help string, labels ...string) *prometheus.Desc {
	desc := prometheus.NewDesc(name, help, labels, nil)
	*d = append(*d, desc)
	descMeta[desc] = metricMeta{name, help, labels}
	return desc
}

func (d descs) describe(ch chan<- *prometheus.Desc) {
	for _, desc := range d {
		ch <- desc
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// --- the unit, its health and its watchdog

var (
	unitDescs         descs
	buildInfoDesc     = unitDescs.add("appliance_build_info", "The running build: 1, with its version as a label.", "version")
	unitInfoDesc      = unitDescs.add("appliance_unit_info", "The unit: 1, with its name (unit.name) as a label.", "name")
	unitStateDesc     = unitDescs.add("appliance_unit_state", "1 for the unit's state: running, or failed once the supervision root has given up.", "state")
	uptimeDesc        = unitDescs.add("appliance_uptime_seconds", "Time since the unit started.")
	conditionDesc     = unitDescs.add("appliance_health_condition", "1 for each active health condition (see the alarms in docs/operations.md).", "name", "severity")
	severityDesc      = unitDescs.add("appliance_health_severity", "The most severe active condition: 0 none, 1 warning, 2 critical.")
	onBatteryDesc     = unitDescs.add("appliance_power_on_battery", "1 while no mains supply is online and a battery or UPS is discharging (the power.on-battery condition).")
	wdArmedDesc       = unitDescs.add("appliance_watchdog_armed", "1 while the hardware watchdog is counting down.")
	wdFeedingDesc     = unitDescs.add("appliance_watchdog_feeding", "1 while the unit feeds its watchdogs; 0 once it stopped because the supervision root is stuck or gave up (the reason is in the API), so that the watchdogs reset it.")
	wdTimeoutDesc     = unitDescs.add("appliance_watchdog_timeout_seconds", "The hardware watchdog's timeout; absent without one.")
	wdLastFeedDesc    = unitDescs.add("appliance_watchdog_last_feed_age_seconds", "Time since the hardware watchdog was last fed; absent before the first feed.")
	wdSystemdDesc     = unitDescs.add("appliance_watchdog_systemd", "1 when systemd's watchdog is fed too.")
	wdFeedsDesc       = unitDescs.add("appliance_watchdog_feeds_total", "Feeds the watchdog took: target hardware (a keepalive of the device) or systemd (a WATCHDOG=1); each is absent when not in use.", "target")
	bootsDesc         = unitDescs.add("appliance_boots_total", "Boots counted in the unit's boot record.")
	lastResetDesc     = unitDescs.add("appliance_last_reset_info", "1, with why the previous boot ended as a label: watchdog, clean, unknown or first boot.", "reason")
	workerStreamsDesc = unitDescs.add("appliance_worker_streams", "Streams placed on the media worker.", "worker")
	workerReportDesc  = unitDescs.add("appliance_worker_report_age_seconds", "Time since the media worker's last report (its heartbeat).", "worker")
	workerMaxGapDesc  = unitDescs.add("appliance_worker_max_report_gap_seconds", "Longest time between two reports of the media worker's current process.", "worker")
)

type unitMetrics struct {
	rep *Report
	at  time.Time
}

func (unitMetrics) Describe(ch chan<- *prometheus.Desc) { unitDescs.describe(ch) }

func (c unitMetrics) Collect(ch chan<- prometheus.Metric) {
	s, rep := sink(ch), c.rep
	s.gauge(buildInfoDesc, 1, rep.Unit.Version)
	s.gauge(unitInfoDesc, 1, rep.Unit.Name)
	if rep.Unit.State != "" {
		s.gauge(unitStateDesc, 1, rep.Unit.State)
	}
	s.gauge(uptimeDesc, rep.Unit.UptimeS)

	worst, onBattery := health.OK, false
	for _, h := range rep.Health {
		s.gauge(conditionDesc, 1, h.Name, h.Severity.String())
		worst = max(worst, h.Severity)
		onBattery = onBattery || h.Name == health.PowerOnBattery.Name
	}
	s.gauge(severityDesc, float64(worst))
	s.gauge(onBatteryDesc, b2f(onBattery))

	wd := &rep.Watchdog
	s.gauge(wdArmedDesc, b2f(wd.Armed))
	s.gauge(wdFeedingDesc, b2f(wd.Feeding))
	if wd.TimeoutS > 0 {
		s.gauge(wdTimeoutDesc, wd.TimeoutS)
	}
	if wd.LastFeed != nil {
		s.gauge(wdLastFeedDesc, max(c.at.Sub(*wd.LastFeed), 0).Seconds())
	}
	s.gauge(wdSystemdDesc, b2f(wd.Systemd))
	if wd.TimeoutS > 0 {
		s.counter(wdFeedsDesc, float64(wd.DeviceFeeds), "hardware")
	}
	if wd.Systemd {
		s.counter(wdFeedsDesc, float64(wd.SystemdFeeds), "systemd")
	}
	s.counter(bootsDesc, float64(wd.BootCount))
	if wd.LastResetReason != "" {
		s.gauge(lastResetDesc, 1, wd.LastResetReason)
	}

	for _, w := range rep.Workers {
		s.gauge(workerStreamsDesc, float64(w.Streams), w.Name)
		s.gauge(workerReportDesc, w.LastReportMs/1e3, w.Name)
		s.gauge(workerMaxGapDesc, w.MaxReportGapMs/1e3, w.Name)
	}
}

// --- streams and their outputs

var (
	streamDescs    descs
	streamPackets  = streamDescs.add("appliance_stream_packets_total", "RTP packets received (direction in) and forwarded (out: a packet counts once if at least one output took it).", "stream", "direction")
	streamBytes    = streamDescs.add("appliance_stream_bytes_total", "Bytes of RTP packets received (in) and forwarded (out).", "stream", "direction")
	streamLost     = streamDescs.add("appliance_stream_lost_packets", "Input packets missing from the sequence and not filled by late ones; falls when a late packet arrives.", "stream")
	streamJitter   = streamDescs.add("appliance_stream_jitter_seconds", "Interarrival jitter of the input (RFC 3550).", "stream")
	streamCC       = streamDescs.add("appliance_stream_cc_errors_total", "MPEG-TS continuity counter errors in the input (payload type 33).", "stream")
	streamRestarts = streamDescs.add("appliance_stream_restarts_total", "Times the stream was restarted on a new worker process.", "stream")
	streamRole     = streamDescs.add("appliance_stream_role", "1 for the stream's role on this unit: active (forwarded here) or standby.", "stream", "role")
	streamState    = streamDescs.add("appliance_stream_state", "1 for the stream's state: starting, running, idle, restarting, failed or stopped.", "stream", "state")
	outputErrors   = streamDescs.add("appliance_output_errors_total", "Sends to the output that failed.", "stream", "output")
)

type streamMetrics struct{ rep *Report }

func (streamMetrics) Describe(ch chan<- *prometheus.Desc) { streamDescs.describe(ch) }

// Collect sends the streams in the order of their names, so that
// /metrics reads like the config's list, whatever order the report has.
func (c streamMetrics) Collect(ch chan<- prometheus.Metric) {
	s := sink(ch)
	streams := make([]*media.StreamStatus, len(c.rep.Streams))
	for i := range c.rep.Streams {
		streams[i] = &c.rep.Streams[i]
	}
	slices.SortFunc(streams, func(a, b *media.StreamStatus) int { return strings.Compare(a.Name, b.Name) })
	for _, st := range streams {
		k := &st.Counters
		// The stream's series share three sets of labels.
		one, ok1 := s.labels(streamLost, st.Name)
		in, ok2 := s.labels(streamPackets, st.Name, "in")
		out, ok3 := s.labels(streamPackets, st.Name, "out")
		if !ok1 || !ok2 || !ok3 {
			continue
		}
		s.send(streamPackets, prometheus.CounterValue, float64(k.PacketsIn), in)
		s.send(streamPackets, prometheus.CounterValue, float64(k.PacketsOut), out)
		s.send(streamBytes, prometheus.CounterValue, float64(k.BytesIn), in)
		s.send(streamBytes, prometheus.CounterValue, float64(k.BytesOut), out)
		s.send(streamLost, prometheus.GaugeValue, float64(k.Lost), one)
		s.send(streamJitter, prometheus.GaugeValue, k.JitterMs/1e3, one)
		s.send(streamCC, prometheus.CounterValue, float64(k.CCErrors), one)
		s.send(streamRestarts, prometheus.CounterValue, float64(st.Restarts), one)
		if st.Role != "" {
			s.gauge(streamRole, 1, st.Name, st.Role)
		}
		if st.State != "" {
			s.gauge(streamState, 1, st.Name, st.State)
		}
		for i := range st.Outputs {
			o := &st.Outputs[i]
			s.counter(outputErrors, float64(o.Errors), st.Name, o.Address)
		}
	}
}

// --- the supervision tree

var (
	supervisorDescs descs
	childRestarts   = supervisorDescs.add("appliance_supervisor_restarts_total", "Times the supervision tree restarted the child (named by its path, e.g. root/media/worker-0).", "child")
	childState      = supervisorDescs.add("appliance_supervisor_child_state", "1 for the child's state: running, restarting, stopped or failed.", "child", "state")
	gaveUp          = supervisorDescs.add("appliance_supervisor_gave_up", "1 while the supervisor has given up (too many restarts too fast) and has not been restarted.", "child")
	giveUps         = supervisorDescs.add("appliance_supervisor_give_ups_total", "Times the supervisor gave up (too many restarts too fast), whether or not it was restarted since.", "child")
)

type supervisorMetrics struct{ rep *Report }

func (supervisorMetrics) Describe(ch chan<- *prometheus.Desc) { supervisorDescs.describe(ch) }

func (c supervisorMetrics) Collect(ch chan<- prometheus.Metric) {
	if c.rep.Supervisor.Name == "" {
		return // no tree yet
	}
	collectNode(sink(ch), &c.rep.Supervisor, "")
}

func collectNode(s sink, n *supervisor.Node, parent string) {
	path := n.Name
	if parent != "" {
		path = parent + "/" + n.Name
	}
	s.counter(childRestarts, float64(n.Restarts), path)
	if n.State != "" {
		s.gauge(childState, 1, path, n.State)
	}
	if n.Kind == "supervisor" {
		s.gauge(gaveUp, b2f(n.State == "failed"), path)
		s.counter(giveUps, float64(n.GiveUps), path)
	}
	for i := range n.Children {
		collectNode(s, &n.Children[i], path)
	}
}

// --- hardware

var (
	hardwareDescs   descs
	tempDesc        = hardwareDescs.add("appliance_temperature_celsius", "The sensor's temperature.", "sensor")
	tempWarnDesc    = hardwareDescs.add("appliance_temperature_warn_celsius", "The temperature at which the sensor raises a warning (hw.temperature.warn_c).", "sensor")
	tempCritDesc    = hardwareDescs.add("appliance_temperature_crit_celsius", "The temperature at which the sensor is critical (hw.temperature.crit_c).", "sensor")
	psuOnlineDesc   = hardwareDescs.add("appliance_power_supply_online", "1 while the supply is online; absent when it does not say.", "supply", "type")
	psuDischargeDes = hardwareDescs.add("appliance_power_supply_discharging", "1 while the battery or UPS is discharging; absent when it gives no status.", "supply", "type")
	psuCapacityDesc = hardwareDescs.add("appliance_power_supply_capacity_ratio", "Charge of the battery or UPS, from 0 to 1; absent when it does not say.", "supply", "type")
	linkUpDesc      = hardwareDescs.add("appliance_link_up", "1 while the link exists, is administratively up and has carrier.", "nic", "role")
	linkSpeedDesc   = hardwareDescs.add("appliance_link_speed_bytes", "The link's negotiated speed in bytes per second; absent when unknown.", "nic", "role")
	linkErrorsDesc  = hardwareDescs.add("appliance_link_errors_total", "Receive (rx) and transmit (tx) errors of the link, as the kernel counts them.", "nic", "role", "direction")
	linkDropsDesc   = hardwareDescs.add("appliance_link_dropped_total", "Packets the kernel dropped on the link, received (rx) and sent (tx).", "nic", "role", "direction")
	cpuDesc         = hardwareDescs.add("appliance_cpu_busy_ratio", "Share of CPU time busy between the last two hardware polls, from 0 to 1.")
	memDesc         = hardwareDescs.add("appliance_memory_used_ratio", "Share of memory in use, from 0 to 1.")
	load1Desc       = hardwareDescs.add("appliance_load1", "The one-minute load average.")
)

const dischargingStatus = "Discharging" // as the kernel spells it

type hardwareMetrics struct{ rep *Report }

func (hardwareMetrics) Describe(ch chan<- *prometheus.Desc) { hardwareDescs.describe(ch) }

func (c hardwareMetrics) Collect(ch chan<- prometheus.Metric) {
	s, hw := sink(ch), &c.rep.Hardware
	// Sensor keys are the chip's name and label, which two identical
	// chips share: the second is shown as NAME#2 (or #3, ... if that name
	// is taken too), not dropped.
	used := make(map[string]bool, len(hw.Temperatures))
	for _, t := range hw.Temperatures {
		name := t.Sensor
		for n := 2; used[name]; n++ {
			name = t.Sensor + "#" + strconv.Itoa(n)
		}
		used[name] = true
		s.gauge(tempDesc, t.Celsius, name)
		s.gauge(tempWarnDesc, t.WarnC, name)
		s.gauge(tempCritDesc, t.CritC, name)
	}
	for _, p := range hw.PowerSupplies {
		if p.Online != nil {
			s.gauge(psuOnlineDesc, b2f(*p.Online), p.Name, p.Type)
		}
		if p.Status != "" {
			s.gauge(psuDischargeDes, b2f(p.Status == dischargingStatus), p.Name, p.Type)
		}
		if p.CapacityPct != nil {
			s.gauge(psuCapacityDesc, float64(*p.CapacityPct)/100, p.Name, p.Type)
		}
	}
	for _, l := range hw.Links {
		s.gauge(linkUpDesc, b2f(l.Present && l.AdminUp && l.Carrier), l.Name, l.Role)
		if l.SpeedMbps > 0 {
			s.gauge(linkSpeedDesc, float64(l.SpeedMbps)*1e6/8, l.Name, l.Role)
		}
		s.counter(linkErrorsDesc, float64(l.RxErrors), l.Name, l.Role, "rx")
		s.counter(linkErrorsDesc, float64(l.TxErrors), l.Name, l.Role, "tx")
		s.counter(linkDropsDesc, float64(l.RxDropped), l.Name, l.Role, "rx")
		s.counter(linkDropsDesc, float64(l.TxDropped), l.Name, l.Role, "tx")
	}
	s.gauge(cpuDesc, hw.Load.CPUPct/100)
	s.gauge(memDesc, hw.Load.MemUsedPct/100)
	s.gauge(load1Desc, hw.Load.Load1)
}

// --- the pair

var (
	pairDescs        descs
	peerStateDesc    = pairDescs.add("appliance_pair_peer_state", "1 for the peer's state: starting, up, draining, failed, silent (not heard for the detection time) or unknown (never heard).", "peer", "state")
	pairStateDesc    = pairDescs.add("appliance_pair_state", "1 for this unit's state as the peer is told it.", "state")
	agreementDesc    = pairDescs.add("appliance_pair_agreement", "1 while the peer runs the same protocol version and stream list; no stream moves without it.")
	realtimeDesc     = pairDescs.add("appliance_pair_realtime", "1 while heartbeats are sent at real-time priority.")
	detectDesc       = pairDescs.add("appliance_pair_detect_seconds", "The detection time: silence on every path for this long means the peer is lost.")
	lateBeatsDesc    = pairDescs.add("appliance_pair_late_heartbeats_total", "Heartbeats sent more than a heartbeat interval late (the sending loop was held off).")
	maxLateDesc      = pairDescs.add("appliance_pair_heartbeat_max_late_seconds", "The longest delay of a late heartbeat.")
	beaconDesc       = pairDescs.add("appliance_pair_beacon_running", "1 while the heartbeat beacon runs.")
	beaconBeatsDesc  = pairDescs.add("appliance_pair_beacon_heartbeats_total", "Heartbeats the beacon sent for a sending loop that was held off.")
	pathInfoDesc     = pairDescs.add("appliance_pair_path_info", "1 for each heartbeat path (numbered from 0 in pair.paths order, as in pair.path-down:<path>), with its addresses.", "path", "local", "remote")
	pathUpDesc       = pairDescs.add("appliance_pair_path_up", "1 while the peer was heard on the path within the detection time.", "path")
	pathRTTDesc      = pairDescs.add("appliance_pair_path_rtt_seconds", "Heartbeat round-trip time on the path; absent until measured.", "path")
	pathHeardDesc    = pairDescs.add("appliance_pair_path_last_heartbeat_age_seconds", "Time since the peer was last heard on the path; absent if never.", "path")
	pathSentDesc     = pairDescs.add("appliance_pair_path_heartbeats_sent_total", "Messages sent to the peer on the path.", "path")
	pathReceivedDesc = pairDescs.add("appliance_pair_path_heartbeats_received_total", "Messages from the peer accepted on the path.", "path")
	pathMissedDesc   = pairDescs.add("appliance_pair_path_heartbeats_missed_total", "Heartbeats from the peer that did not arrive on the path, each counted half a heartbeat interval after it was due.", "path")
	pathRefusedDesc  = pairDescs.add("appliance_pair_path_refused_total", "Messages refused on the path, by reason: garbage (not the pair's), forged (wrong key), replayed, version (a protocol this unit does not speak).", "path", "reason")
	witnessLeaseDesc = pairDescs.add("appliance_pair_witness_lease", "1 while the witness lets this unit forward without hearing its peer.")
	witnessRTTDesc   = pairDescs.add("appliance_pair_witness_rtt_seconds", "Round-trip time to the witness; absent until measured.")
	witnessAgeDesc   = pairDescs.add("appliance_pair_witness_last_answer_age_seconds", "Time since the witness last answered; absent if never.")
)

type pairMetrics struct{ rep *Report }

func (pairMetrics) Describe(ch chan<- *prometheus.Desc) { pairDescs.describe(ch) }

func (c pairMetrics) Collect(ch chan<- prometheus.Metric) {
	p := c.rep.Pair
	if p == nil {
		return // a unit that runs alone
	}
	s := sink(ch)
	s.gauge(peerStateDesc, 1, p.Peer, p.PeerState)
	s.gauge(pairStateDesc, 1, p.State)
	s.gauge(agreementDesc, b2f(p.Agreement))
	s.gauge(realtimeDesc, b2f(p.Realtime))
	s.gauge(detectDesc, p.DetectMs/1e3)
	s.counter(lateBeatsDesc, float64(p.LateBeats))
	s.gauge(maxLateDesc, p.MaxLateMs/1e3)
	s.gauge(beaconDesc, b2f(p.Beacon))
	s.counter(beaconBeatsDesc, float64(p.CoveredBeats))
	for i, pp := range p.Paths {
		path := strconv.Itoa(i)
		s.gauge(pathInfoDesc, 1, path, pp.Local, pp.Remote)
		s.gauge(pathUpDesc, b2f(pp.Up), path)
		if pp.RTTMs != nil {
			s.gauge(pathRTTDesc, *pp.RTTMs/1e3, path)
		}
		if pp.LastHeardMs != nil {
			s.gauge(pathHeardDesc, *pp.LastHeardMs/1e3, path)
		}
		s.counter(pathSentDesc, float64(pp.Sent), path)
		s.counter(pathReceivedDesc, float64(pp.Received), path)
		s.counter(pathMissedDesc, float64(pp.Missed), path)
		s.counter(pathRefusedDesc, float64(pp.Garbage), path, "garbage")
		s.counter(pathRefusedDesc, float64(pp.Forged), path, "forged")
		s.counter(pathRefusedDesc, float64(pp.Replayed), path, "replayed")
		s.counter(pathRefusedDesc, float64(pp.Version), path, "version")
	}
	if w := p.Witness; w != nil {
		s.gauge(witnessLeaseDesc, b2f(w.Lease))
		if w.RTTMs != nil {
			s.gauge(witnessRTTDesc, *w.RTTMs/1e3)
		}
		if w.LastAnswerMs != nil {
			s.gauge(witnessAgeDesc, *w.LastAnswerMs/1e3)
		}
	}
}
