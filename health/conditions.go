package health

import "strings"

// Kind declares one kind of condition the unit can raise. Its name is a
// contract: the API shows it, operators alert on it and the paired unit
// reacts to it, so a kind is declared here once and every raiser builds its
// names from the declaration. The tracker refuses a name no kind declares.
//
// Raised and Clears are the operator's text, the same words as the alarms
// table in docs/operations.md (a test keeps the two equal).
type Kind struct {
	// Name is the condition's name, or the part before ":" for a kind
	// that takes a subject.
	Name string
	// Subject is what follows "Name:" as the operator guide writes it
	// ("<nic>", "<stream>:<ip:port>"); empty for a kind that takes none.
	Subject string
	// Severity is the severity the kind is raised at; for a graded kind
	// the highest one.
	Severity Severity
	// Graded kinds are raised at warning and move to Severity as things
	// get worse (a temperature).
	Graded bool
	// Raised says when the condition is raised, Clears when it clears.
	Raised, Clears string
}

// Scoped reports whether the kind takes a subject (a sensor, a NIC, a stream).
func (k Kind) Scoped() bool { return k.Subject != "" }

// For returns the name of the condition of this kind about subject; parts
// are joined with ":" (OutputFailing.For(stream, "198.18.0.1:5004")). An
// unscoped kind takes no parts and a scoped one needs some: a name built
// otherwise is not declared, and the tracker refuses it. A subject's text
// comes from the hardware or the configuration and is taken as it is, even
// empty: refusing it would hide a real alarm for a bad label.
func (k Kind) For(subject ...string) string {
	if len(subject) == 0 {
		return k.Name
	}
	return k.Name + ":" + strings.Join(subject, ":")
}

// Pattern is the name as the operator guide writes it: "link.down:<nic>".
func (k Kind) Pattern() string {
	if !k.Scoped() {
		return k.Name
	}
	return k.Name + ":" + k.Subject
}

// SubjectOf returns the subject of a condition called name if it is of this
// kind ("eth1" for LinkDown and "link.down:eth1"; "" for an unscoped kind).
func (k Kind) SubjectOf(name string) (string, bool) {
	base, subject, scoped := strings.Cut(name, ":")
	if k.Name == "" || base != k.Name || scoped != k.Scoped() {
		return "", false
	}
	return subject, true
}

// Is reports whether the condition called name is of this kind.
func (k Kind) Is(name string) bool {
	_, ok := k.SubjectOf(name)
	return ok
}

// allows reports whether the declaration lets the kind be raised at sev.
func (k Kind) allows(sev Severity) bool {
	if k.Graded {
		return sev >= Warning && sev <= k.Severity
	}
	return sev == k.Severity
}

// The conditions the unit raises, in the order the operator guide lists them.
var (
	Temp = Kind{Name: "temp", Subject: "<sensor>", Severity: Critical, Graded: true,
		Raised: "the sensor reaches `hw.temperature.warn_c` / `crit_c`",
		Clears: "it is `clear_margin_c` below the threshold (hysteresis)"}
	SensorUnreadable = Kind{Name: "sensor.unreadable", Subject: "<sensor>", Severity: Warning,
		Raised: "a sensor file is missing, unreadable, garbage or impossible (the sensor keeps its last severity, so a dead probe cannot hide an overheat); `sensor.unreadable:class/hwmon`: the sensor tree cannot be read at all",
		Clears: "it reads well again"}
	SensorNone = Kind{Name: "sensor.none", Severity: Warning,
		Raised: "no temperature sensor under `hw.sysfs`",
		Clears: "sensors appear"}
	PowerMainsLost = Kind{Name: "power.mains-lost", Subject: "<psu>", Severity: Critical,
		Raised: "the only mains supply is offline",
		Clears: "it is back"}
	PSUFailed = Kind{Name: "psu.failed", Subject: "<psu>", Severity: Warning,
		Raised: "one of redundant mains supplies is offline",
		Clears: "it is back"}
	PowerOnBattery = Kind{Name: "power.on-battery", Severity: Critical,
		Raised: "running on battery or UPS",
		Clears: "mains is back"}
	PowerBatteryLow = Kind{Name: "power.battery-low", Severity: Critical,
		Raised: "on battery below 20 %",
		Clears: "mains is back"}
	PSUUnreadable = Kind{Name: "psu.unreadable", Subject: "<psu>", Severity: Warning,
		Raised: "a power supply's files cannot be read or make no sense; `psu.unreadable:class/power_supply`: the power supply tree cannot be read at all (the power conditions already raised are kept)",
		Clears: "they can"}
	LinkDown = Kind{Name: "link.down", Subject: "<nic>", Severity: Critical,
		Raised: "a configured link has no carrier (or is administratively down) for `hw.link_debounce`",
		Clears: "carrier is back for as long"}
	LinkMissing = Kind{Name: "link.missing", Subject: "<nic>", Severity: Critical,
		Raised: "a configured link does not exist (replaces `link.down`)",
		Clears: "it appears"}
	SupervisorGaveUp = Kind{Name: "supervisor.gave-up", Severity: Critical,
		Raised: "the supervision root gave up (rung 3)",
		Clears: "the service restarts"}
	WatchdogUnavailable = Kind{Name: "watchdog.unavailable", Severity: Critical,
		Raised: "`watchdog.device` is set but cannot be opened; the message says why (busy: systemd's `RuntimeWatchdogSec=`; missing: driver not loaded)",
		Clears: "the service restarts with it available"}
	UnitConfigInvalid = Kind{Name: "unit-config.invalid", Severity: Critical,
		Raised: "the unit's own config (`--unit-config`, on the data partition) is there but cannot be read or has problems; the unit runs on the default config (`--config`) and carries none of its own streams; the message names the file and every problem with its line",
		Clears: "a reload or restart finds the file good, or gone"}
	StateUnwritable = Kind{Name: "state.unwritable", Severity: Warning,
		Raised: "the boot record in `unit.state_dir` cannot be written (the boot is still counted and shown)",
		Clears: "a retry, every 10 s, succeeds"}
	StreamFailed = Kind{Name: "stream.failed", Subject: "<stream>", Severity: Critical,
		Raised: "the stream is not carried: its input cannot be bound (port taken, address not on this box; tried again every 2 s), or its worker refused it; the message says why",
		Clears: "it is bound and a worker takes it"}
	OutputFailing = Kind{Name: "output.failing", Subject: "<stream>:<ip:port>", Severity: Warning,
		Raised: "one output of a stream has failed to send (no route, unreachable, refused by a firewall, a full buffer) for `media.output_alarm_after`; the stream's other outputs and every other stream carry on",
		Clears: "the output sends again; it is retried with backoff and recovers by itself"}
	PairPeerLost = Kind{Name: "pair.peer-lost", Severity: Critical,
		Raised: "the paired unit has been silent on every heartbeat path for the detection time; this unit took over what it could and carries the pair's streams alone",
		Clears: "the peer is heard again"}
	PairPathDown = Kind{Name: "pair.path-down", Subject: "<path>", Severity: Warning,
		Raised: "one heartbeat path (numbered from 0, in `pair.paths` order) has carried nothing from the peer for the detection time while another path still does: a cable or switch port to check",
		Clears: "the path carries heartbeats again"}
	PairMismatch = Kind{Name: "pair.mismatch", Severity: Critical,
		Raised: "the peer runs another protocol version or another stream list or pair timers; no stream moves in either direction until they agree",
		Clears: "both units run the same streams and settings (fix the config and reload)"}
	PairAuth = Kind{Name: "pair.auth", Severity: Warning,
		Raised: "messages on a pair or witness port were refused: garbage, forged (wrong key) or replayed; the message gives the counts. Check that both units use the same `pair.key_file` and that nothing else sends to the port",
		Clears: "no refused message for a minute"}
	PairCannotHandOver = Kind{Name: "pair.cannot-hand-over", Subject: "<stream>", Severity: Critical,
		Raised: "the stream should move to the peer (this unit is draining, its link is down, or an operator asked) but the peer cannot take it: silent, not up, not ready for the stream, or without capacity; the stream stays here",
		Clears: "the stream moved, or no longer needs to"}
	PairOverCapacity = Kind{Name: "pair.over-capacity", Severity: Critical,
		Raised: "a takeover would exceed `pair.capacity`; the streams of highest `priority` were taken, and the message names the ones that are not carried",
		Clears: "every stream has an owner again"}
	PairFenced = Kind{Name: "pair.fenced", Severity: Critical,
		Raised: "a witness is configured and this unit hears neither its peer nor the witness: it stops forwarding its streams so that two units never send the same stream",
		Clears: "the peer or the witness is heard again"}
	PairWitnessUnreachable = Kind{Name: "pair.witness-unreachable", Severity: Warning,
		Raised: "the witness (`pair.witness`) has not answered for the detection time; a takeover would wait for it",
		Clears: "it answers again"}
	PairNoRealtime = Kind{Name: "pair.no-realtime", Severity: Warning,
		Raised: "the heartbeat thread could not get real-time priority (the service needs `LimitRTPRIO=10`, or root), or the heartbeat beacon is not running; a saturated CPU could delay heartbeats and cause a false takeover",
		Clears: "the service restarts with the capability and the beacon"}
)

var kinds = []Kind{
	Temp, SensorUnreadable, SensorNone,
	PowerMainsLost, PSUFailed, PowerOnBattery, PowerBatteryLow, PSUUnreadable,
	LinkDown, LinkMissing,
	SupervisorGaveUp, WatchdogUnavailable, UnitConfigInvalid, StateUnwritable,
	StreamFailed, OutputFailing,
	PairPeerLost, PairPathDown, PairMismatch, PairAuth, PairCannotHandOver, PairOverCapacity,
	PairFenced, PairWitnessUnreachable, PairNoRealtime,
}

var byName = func() map[string]Kind {
	m := make(map[string]Kind, len(kinds))
	for _, k := range kinds {
		m[k.Name] = k
	}
	return m
}()

// Kinds returns every declared kind, in the operator guide's order.
func Kinds() []Kind { return append([]Kind(nil), kinds...) }

// KindOf returns the declaration of the condition called name, or false if
// no kind declares it.
func KindOf(name string) (Kind, bool) {
	base, _, _ := strings.Cut(name, ":")
	k, ok := byName[base]
	if !ok || !k.Is(name) {
		return Kind{}, false
	}
	return k, true
}
