// Package health tracks the unit's named conditions (temp.critical,
// link.down:eth1, supervisor.gave-up, ...) with a severity each, and tells
// subscribers when one is raised, changes or clears.
//
// Raising and clearing are decisions made elsewhere (with hysteresis and
// debounce, in hw/); the tracker records them, timestamps them and fans them
// out. Every kind of condition is declared once, in conditions.go, and the
// tracker refuses a name no kind declares. Every method is safe on a nil
// *Tracker, so optional wiring needs no checks.
package health

import (
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"appliance/internal/clock"
	"appliance/internal/ring"
)

// Severity of a condition. The zero value is OK.
type Severity int

const (
	OK Severity = iota
	Warning
	Critical
)

func (s Severity) String() string {
	switch s {
	case OK:
		return "ok"
	case Warning:
		return "warning"
	case Critical:
		return "critical"
	}
	return fmt.Sprintf("severity(%d)", int(s))
}

// MarshalText writes the severity as ok, warning or critical.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads ok, warning or critical.
func (s *Severity) UnmarshalText(b []byte) error {
	switch string(b) {
	case "ok":
		*s = OK
	case "warning":
		*s = Warning
	case "critical":
		*s = Critical
	default:
		return fmt.Errorf("unknown severity %q (want ok, warning or critical)", b)
	}
	return nil
}

// Condition is an active condition.
type Condition struct {
	Name     string    `json:"name"`
	Severity Severity  `json:"severity"`
	Message  string    `json:"message"`
	Since    time.Time `json:"since"` // when it was raised (a severity change keeps it)
}

// Event kinds.
const (
	Raised  = "raised"
	Changed = "changed" // severity or message of an active condition changed
	Cleared = "cleared"
)

// Event is a change of one condition.
type Event struct {
	Time      time.Time `json:"time"`
	Condition string    `json:"condition"`
	Kind      string    `json:"kind"`
	Severity  Severity  `json:"severity"` // the new severity; ok when cleared
	Message   string    `json:"message,omitempty"`
}

// Tracker holds the active conditions. It is safe for concurrent use.
type Tracker struct {
	clk clock.Clock
	log *slog.Logger

	events *ring.Ring[Event]

	mu     sync.Mutex
	active map[string]*Condition
	subs   map[chan Event]struct{}
	drops  uint64

	refused   uint64
	loggedBad map[string]bool // undeclared names (before ":") already logged
	loggedSev map[string]bool // kinds already logged for an undeclared severity
}

// maxLoggedBad bounds the undeclared names remembered for logging once, in
// case one is built from data rather than code.
const maxLoggedBad = 64

// NewTracker returns a tracker that keeps the last 256 events.
func NewTracker(clk clock.Clock, log *slog.Logger) *Tracker {
	if clk == nil {
		clk = clock.Real()
	}
	if log == nil {
		log = slog.Default()
	}
	return &Tracker{clk: clk, log: log, active: map[string]*Condition{}, events: ring.New[Event](256), subs: map[chan Event]struct{}{},
		loggedBad: map[string]bool{}, loggedSev: map[string]bool{}}
}

// Set raises name at sev with msg, or updates it; sev OK clears it.
// Setting the same severity and message again does nothing. Build name
// from its declaration (LinkDown.For(nic)): a name no kind declares is
// refused, logged once and counted in Refused.
func (t *Tracker) Set(name string, sev Severity, msg string) {
	if t == nil {
		return
	}
	if sev == OK {
		t.Clear(name)
		return
	}
	k, declared := KindOf(name)
	t.mu.Lock()
	defer t.mu.Unlock()
	if !declared {
		t.refuse(name)
		return
	}
	if !k.allows(sev) && !t.loggedSev[k.Name] {
		// Raised all the same: a real alarm at an unexpected severity is
		// better seen than hidden.
		t.loggedSev[k.Name] = true
		t.log.Error("health condition raised at a severity its declaration does not give; correct the raiser or the declaration in health/conditions.go",
			"condition", name, "severity", sev.String(), "declared", k.Severity.String())
	}
	now := t.clk.Now()
	c, ok := t.active[name]
	switch {
	case !ok:
		t.active[name] = &Condition{Name: name, Severity: sev, Message: msg, Since: now}
		t.publish(Event{Time: now, Condition: name, Kind: Raised, Severity: sev, Message: msg})
	case c.Severity != sev || c.Message != msg:
		c.Severity, c.Message = sev, msg
		t.publish(Event{Time: now, Condition: name, Kind: Changed, Severity: sev, Message: msg})
	}
}

// Clear clears name if it is active. A name no kind declares is refused
// like in Set: it could never have been raised, and the condition its caller
// meant would stay raised.
func (t *Tracker) Clear(name string) {
	if t == nil {
		return
	}
	_, declared := KindOf(name)
	t.mu.Lock()
	defer t.mu.Unlock()
	if !declared {
		t.refuse(name)
		return
	}
	if _, ok := t.active[name]; !ok {
		return
	}
	delete(t.active, name)
	t.publish(Event{Time: t.clk.Now(), Condition: name, Kind: Cleared, Severity: OK})
}

// refuse counts a Set or Clear of an undeclared name, and logs the first
// of each. Called with mu held.
func (t *Tracker) refuse(name string) {
	t.refused++
	base, _, _ := strings.Cut(name, ":")
	if t.loggedBad[base] || len(t.loggedBad) >= maxLoggedBad {
		return
	}
	t.loggedBad[base] = true
	t.log.Error("health condition refused: no kind declares this name; build it from a declaration in health/conditions.go (and list a new kind in the operator guide's alarms table)",
		"condition", name)
}

// publish records e and sends it to every subscriber. Called with mu held.
// A subscriber that does not keep up loses events (counted), never blocks
// the tracker: it can always resynchronise from Active.
func (t *Tracker) publish(e Event) {
	t.events.Add(e)
	attrs := []any{"condition", e.Condition, "event", e.Kind, "severity", e.Severity.String()}
	if e.Message != "" {
		attrs = append(attrs, "message", e.Message)
	}
	if e.Severity == Critical {
		t.log.Error("health", attrs...)
	} else if e.Severity == Warning {
		t.log.Warn("health", attrs...)
	} else {
		t.log.Info("health", attrs...)
	}
	for ch := range t.subs {
		select {
		case ch <- e:
		default:
			t.drops++
		}
	}
}

// Active returns the active conditions, most severe first, then by name.
func (t *Tracker) Active() []Condition {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Condition, 0, len(t.active))
	for _, c := range t.active {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Severity != out[j].Severity {
			return out[i].Severity > out[j].Severity
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Get returns the condition called name, if active.
func (t *Tracker) Get(name string) (Condition, bool) {
	if t == nil {
		return Condition{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	c, ok := t.active[name]
	if !ok {
		return Condition{}, false
	}
	return *c, true
}

// Worst returns the highest severity among the active conditions.
func (t *Tracker) Worst() Severity {
	worst := OK
	for _, c := range t.Active() {
		worst = max(worst, c.Severity)
	}
	return worst
}

// Events returns up to n recent events, most recent first; n <= 0 means all kept.
func (t *Tracker) Events(n int) []Event {
	if t == nil {
		return nil
	}
	return t.events.Recent(n)
}

// Subscribe returns a channel of every later event, buffered to buf, and a
// function that ends the subscription.
func (t *Tracker) Subscribe(buf int) (<-chan Event, func()) {
	ch := make(chan Event, max(buf, 1))
	if t == nil {
		return ch, func() {}
	}
	t.mu.Lock()
	t.subs[ch] = struct{}{}
	t.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			t.mu.Lock()
			delete(t.subs, ch)
			t.mu.Unlock()
		})
	}
}

// Dropped returns how many events slow subscribers missed.
func (t *Tracker) Dropped() uint64 {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.drops
}

// Refused returns how many times a condition no kind declares was set or
// cleared: a fault in the firmware, each one logged the first time.
func (t *Tracker) Refused() uint64 {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.refused
}
