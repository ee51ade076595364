package hw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	"appliance/health"
	"appliance/internal/clock"
)

// LinkSpec names a link the unit needs and what it is for (media, pair, ...).
type LinkSpec struct {
	Name, Role string
}

// Options configure a Monitor. Zero values take the defaults noted.
type Options struct {
	Sysfs        string  // "" means /sys
	WarnC, CritC float64 // 0 means 80 and 90 °C
	ClearMarginC float64 // a severity steps down once the reading is this far below its threshold
	Links        []LinkSpec
	LinkDebounce time.Duration // a link change counts once it has held this long; 0 counts at once
	PollInterval time.Duration // default 2s

	Temps         TempReader                    // nil means NewTempReader(Sysfs)
	LinkWatcher   LinkWatcher                   // nil means NewLinkWatcher(netns.None())
	PowerSupplies func() ([]PowerSupply, error) // nil means ReadPowerSupplies(Sysfs)

	Health *health.Tracker
	Clock  clock.Clock
	Logger *slog.Logger
}

// Hardware is what the monitor last saw.
type Hardware struct {
	Temperatures  []TempStatus  `json:"temperatures"`
	PowerSupplies []PowerSupply `json:"power_supplies"`
	Links         []Link        `json:"links"`
	Load          Load          `json:"load"`
	UpdatedAt     time.Time     `json:"updated_at"`
}

// TempStatus is a reading with the thresholds it was judged by.
type TempStatus struct {
	Temperature
	WarnC    float64         `json:"warn_c"`
	CritC    float64         `json:"crit_c"`
	Severity health.Severity `json:"severity"`
}

// Monitor polls temperatures, power supplies and load, follows link
// updates, and raises and clears the hardware conditions in a health.Tracker.
//
// Conditions: temp:SENSOR (warning, then critical, with hysteresis),
// sensor.unreadable:SENSOR-OR-FILE and sensor.none (warning),
// power.mains-lost:NAME, power.on-battery, power.battery-low (critical),
// psu.failed:NAME and psu.unreadable:NAME (warning), link.missing:NAME and
// link.down:NAME (critical, debounced).
type Monitor struct {
	o       Options
	clk     clock.Clock
	log     *slog.Logger
	health  *health.Tracker
	temps   TempReader
	watcher LinkWatcher
	psus    func() ([]PowerSupply, error)
	load    func(context.Context) Load

	mu          sync.Mutex
	sensors     map[string]*sensorState
	sensorConds condSet
	powerConds  condSet
	links       []*linkState
	linkByName  map[string]*linkState
	listFailing bool
	hw          Hardware // temperatures, supplies, load and time of the last poll
}

type sensorState struct {
	level health.Level
	sev   health.Severity // what temp:SENSOR was last set to
}

type linkState struct {
	spec    LinkSpec
	deb     health.Debounce
	last    LinkUpdate // Present false until the link is first seen
	stats   LinkStats
	speed   int
	downMsg string
}

// NewMonitor returns a monitor; Serve runs it.
func NewMonitor(o Options) *Monitor {
	if o.Sysfs == "" {
		o.Sysfs = "/sys"
	}
	if o.WarnC == 0 {
		o.WarnC = 80
	}
	if o.CritC == 0 {
		o.CritC = 90
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 2 * time.Second
	}
	m := &Monitor{
		o:           o,
		clk:         o.Clock,
		log:         o.Logger,
		health:      o.Health,
		temps:       o.Temps,
		watcher:     o.LinkWatcher,
		psus:        o.PowerSupplies,
		sensors:     map[string]*sensorState{},
		sensorConds: condSet{},
		powerConds:  condSet{},
		linkByName:  map[string]*linkState{},
	}
	if m.clk == nil {
		m.clk = clock.Real()
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.temps == nil {
		m.temps = NewTempReader(o.Sysfs)
	}
	if m.watcher == nil {
		m.watcher = NewLinkWatcher(netns.None())
	}
	if lw, ok := m.watcher.(interface{ setLogger(*slog.Logger) }); ok {
		lw.setLogger(m.log)
	}
	if m.psus == nil {
		m.psus = func() ([]PowerSupply, error) { return ReadPowerSupplies(o.Sysfs) }
	}
	m.load = (&loadReader{log: m.log}).read
	for _, spec := range o.Links {
		if _, dup := m.linkByName[spec.Name]; dup {
			continue
		}
		ls := &linkState{spec: spec, deb: health.Debounce{Delay: o.LinkDebounce}}
		m.links = append(m.links, ls)
		m.linkByName[spec.Name] = ls
	}
	return m
}

// Serve polls every PollInterval and follows link updates until ctx ends,
// then returns nil. It fails only if it cannot subscribe to link updates.
func (m *Monitor) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var updates chan LinkUpdate // nil, so never ready, when no links are watched
	if len(m.links) > 0 {
		// Unbuffered: the watcher holds its own buffer, and a sender knows
		// the previous update has been handled once the next is taken.
		updates = make(chan LinkUpdate)
		// Subscribe before the first listing, so no change falls between.
		if err := m.watcher.Subscribe(ctx, updates); err != nil {
			return fmt.Errorf("hardware monitor: %w", err)
		}
	}

	m.poll(ctx)
	ticker := m.clk.NewTicker(m.o.PollInterval)
	defer ticker.Stop()

	// One timer for the earliest pending link debounce, so a change is
	// confirmed on time without waiting for another update or poll.
	var (
		timer  clock.Timer
		timerC <-chan time.Time
		armed  bool
		armedT time.Duration // when it fires, on the monotonic clock
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		due, pending := m.settle()
		switch {
		case pending && (!armed || due != armedT):
			d := due - m.clk.Mono()
			if timer == nil {
				timer = m.clk.NewTimer(d)
				timerC = timer.C()
			} else {
				timer.Reset(d)
			}
			armed, armedT = true, due
		case !pending && armed:
			timer.Stop()
			armed = false
		}

		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C():
			m.poll(ctx)
		case u := <-updates:
			m.mu.Lock()
			m.linkUpdate(m.clk.Mono(), u)
			m.mu.Unlock()
		case <-timerC:
			armed = false // settle confirms what fell due
		}
	}
}

// settle confirms every debounced link change that is due and returns when
// the next one will be, on the monotonic clock.
func (m *Monitor) settle() (time.Duration, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clk.Mono()
	var next time.Duration
	pending := false
	for _, ls := range m.links {
		if !ls.last.Present {
			continue
		}
		if up, changed := ls.deb.Poll(now); changed {
			m.showLink(ls, up)
		}
		if due, ok := ls.deb.Due(); ok && (!pending || due < next) {
			next, pending = due, true
		}
	}
	return next, pending
}

// poll reads every polled source and applies what it read.
func (m *Monitor) poll(ctx context.Context) {
	temps, terr := m.temps.Temperatures(ctx)
	psus, perr := m.psus()
	load := m.load(ctx)
	var list []LinkUpdate
	var lerr error
	speeds := map[string]int{}
	if len(m.links) > 0 {
		list, lerr = m.watcher.List()
		for _, u := range list {
			if _, ok := m.linkByName[u.Name]; ok && u.Present {
				speeds[u.Name] = readSpeed(m.o.Sysfs, u.Name)
			}
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	now, mono := m.clk.Now(), m.clk.Mono()
	m.hw.Temperatures = m.applyTemps(temps, terr)
	m.applyPower(psus, perr)
	m.hw.PowerSupplies = psus
	m.hw.Load = load
	m.hw.UpdatedAt = now
	if len(m.links) == 0 {
		return
	}
	if lerr != nil {
		if !m.listFailing {
			m.log.Warn("cannot list links; following updates only", "err", lerr)
			m.listFailing = true
		}
		return
	}
	if m.listFailing {
		m.log.Info("listing links works again")
		m.listFailing = false
	}
	seen := map[string]bool{}
	for _, u := range list {
		seen[u.Name] = true
		m.linkUpdate(mono, u)
		if ls := m.linkByName[u.Name]; ls != nil {
			ls.speed = speeds[u.Name]
		}
	}
	for _, ls := range m.links {
		if !seen[ls.spec.Name] {
			m.linkUpdate(mono, LinkUpdate{Name: ls.spec.Name})
		}
	}
}

// applyTemps judges the readings and returns their status. Called with mu held.
func (m *Monitor) applyTemps(temps []Temperature, err error) []TempStatus {
	var (
		bad        SensorErrors
		want       []cond
		keepAll    bool // the read failed as a whole: keep every sensor's last severity
		unreadable = map[string]bool{}
	)
	switch {
	case err == nil:
	case errors.As(err, &bad):
	case errors.Is(err, ErrNoSensors):
		want = append(want, cond{health.SensorNone.Name, health.Warning, err.Error()})
	default:
		keepAll = true
		want = append(want, cond{health.SensorUnreadable.For("class/hwmon"), health.Warning, err.Error()})
	}
	for _, e := range bad {
		id := e.Sensor
		if id == "" {
			id = m.relSysfs(e.Path)
		} else {
			unreadable[id] = true
		}
		want = append(want, cond{health.SensorUnreadable.For(id), health.Warning,
			fmt.Sprintf("temperature sensor %s: cannot use %s: %v", id, e.Path, e.Err)})
	}
	m.sensorConds.apply(m.health, want)

	status := make([]TempStatus, 0, len(temps))
	seen := map[string]bool{}
	for _, t := range temps {
		// Two chips of one kind without labels share a key; number the
		// later ones so each keeps its own hysteresis.
		for n, key := 2, t.Sensor; seen[t.Sensor]; n++ {
			t.Sensor = fmt.Sprintf("%s_%d", key, n)
		}
		seen[t.Sensor] = true
		st := m.sensors[t.Sensor]
		if st == nil {
			st = &sensorState{level: health.Level{Warn: m.o.WarnC, Crit: m.o.CritC, ClearMargin: m.o.ClearMarginC}}
			m.sensors[t.Sensor] = st
		}
		if sev := st.level.Update(t.Celsius); sev != st.sev {
			// The message is written when the severity changes, not on
			// every reading, so a drifting value does not log a change
			// every poll; the snapshot has the current value.
			st.sev = sev
			m.health.Set(health.Temp.For(t.Sensor), sev, m.tempMessage(t, sev))
		}
		status = append(status, TempStatus{Temperature: t, WarnC: m.o.WarnC, CritC: m.o.CritC, Severity: st.sev})
	}
	for key, st := range m.sensors {
		// A sensor that cannot be read keeps its last severity: a broken
		// probe must not hide an overheat. One that is gone is forgotten.
		if seen[key] || unreadable[key] || keepAll {
			continue
		}
		if st.sev != health.OK {
			m.health.Clear(health.Temp.For(key))
		}
		delete(m.sensors, key)
	}
	sort.Slice(status, func(i, j int) bool { return status[i].Sensor < status[j].Sensor })
	return status
}

func (m *Monitor) tempMessage(t Temperature, sev health.Severity) string {
	switch sev {
	case health.Critical:
		return fmt.Sprintf("%s at %.1f °C (critical at %g)", t.Sensor, t.Celsius, m.o.CritC)
	case health.Warning:
		return fmt.Sprintf("%s at %.1f °C (warning at %g, critical at %g)", t.Sensor, t.Celsius, m.o.WarnC, m.o.CritC)
	}
	return ""
}

// applyPower raises and clears the power conditions. Called with mu held.
func (m *Monitor) applyPower(psus []PowerSupply, err error) {
	if err != nil {
		// Keep what was raised: not knowing is no reason to clear a mains loss.
		m.powerConds.add(m.health, cond{health.PSUUnreadable.For("class/power_supply"), health.Warning, err.Error()})
		return
	}
	m.powerConds.apply(m.health, powerConditions(psus))
}

// linkUpdate applies one link's state, seen at now on the monotonic clock.
// Called with mu held.
func (m *Monitor) linkUpdate(now time.Duration, u LinkUpdate) {
	ls := m.linkByName[u.Name]
	if ls == nil {
		return
	}
	ls.last = u
	if u.Stats != nil {
		ls.stats = *u.Stats
	}
	if !u.Present || !u.Carrier {
		ls.speed = 0
	}
	name := ls.spec.Name
	if !u.Present {
		// A missing link is its own condition. Its debounce is not fed, so
		// it resumes from the state the link had when it went away.
		m.health.Set(health.LinkMissing.For(name), health.Critical, fmt.Sprintf("%s is missing", linkTitle(ls.spec)))
		m.health.Clear(health.LinkDown.For(name))
		return
	}
	m.health.Clear(health.LinkMissing.For(name))
	up, _ := ls.deb.Observe(now, u.AdminUp && u.Carrier)
	m.showLink(ls, up)
}

// showLink raises or clears link.down for a debounced state. Called with mu held.
func (m *Monitor) showLink(ls *linkState, up bool) {
	name := health.LinkDown.For(ls.spec.Name)
	if up {
		m.health.Clear(name)
		return
	}
	// While a recovery is pending the raw state is up: keep the reason
	// the link went down.
	switch {
	case !ls.last.AdminUp:
		ls.downMsg = fmt.Sprintf("%s is down (administratively down)", linkTitle(ls.spec))
	case !ls.last.Carrier:
		ls.downMsg = fmt.Sprintf("%s is down (no carrier)", linkTitle(ls.spec))
	case ls.downMsg == "":
		ls.downMsg = fmt.Sprintf("%s is down", linkTitle(ls.spec))
	}
	m.health.Set(name, health.Critical, ls.downMsg)
}

func linkTitle(s LinkSpec) string {
	if s.Role == "" {
		return "link " + s.Name
	}
	return s.Role + " link " + s.Name
}

// relSysfs names a file by its path under sysfs, for condition names.
func (m *Monitor) relSysfs(path string) string {
	if rel, err := filepath.Rel(m.o.Sysfs, path); err == nil && !strings.HasPrefix(rel, "..") {
		return filepath.ToSlash(rel)
	}
	return path
}

// Snapshot returns what the monitor last saw.
func (m *Monitor) Snapshot() Hardware {
	m.mu.Lock()
	defer m.mu.Unlock()
	hw := Hardware{
		Temperatures:  append([]TempStatus{}, m.hw.Temperatures...),
		PowerSupplies: append([]PowerSupply{}, m.hw.PowerSupplies...),
		Links:         make([]Link, 0, len(m.links)),
		Load:          m.hw.Load,
		UpdatedAt:     m.hw.UpdatedAt,
	}
	for _, ls := range m.links {
		hw.Links = append(hw.Links, Link{
			Name:      ls.spec.Name,
			Role:      ls.spec.Role,
			Present:   ls.last.Present,
			AdminUp:   ls.last.AdminUp,
			Carrier:   ls.last.Carrier,
			SpeedMbps: ls.speed,
			RxErrors:  ls.stats.RxErrors,
			TxErrors:  ls.stats.TxErrors,
			RxDropped: ls.stats.RxDropped,
			TxDropped: ls.stats.TxDropped,
		})
	}
	return hw
}

// condSet is the set of conditions one rule raised, so it can clear the
// ones it no longer wants.
type condSet map[string]bool

// apply raises want and clears the rest of the set. The first of two
// conditions with one name wins, so they cannot flip each other.
func (cs condSet) apply(h *health.Tracker, want []cond) {
	now := map[string]bool{}
	for _, c := range want {
		if now[c.name] {
			continue
		}
		now[c.name] = true
		h.Set(c.name, c.sev, c.msg)
	}
	for name := range cs {
		if !now[name] {
			h.Clear(name)
			delete(cs, name)
		}
	}
	for name := range now {
		cs[name] = true
	}
}

// add raises c, leaving the rest of the set alone.
func (cs condSet) add(h *health.Tracker, c cond) {
	cs[c.name] = true
	h.Set(c.name, c.sev, c.msg)
}
