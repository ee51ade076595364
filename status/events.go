package status

import (
	"sort"
	"time"

	"appliance/health"
	"appliance/supervisor"
)

// Event is one entry of the unit's event log: a supervision event (a child
// started, exited, was restarted; a supervisor gave up), a health condition
// raised, changed or cleared, or an action an operator asked for (through
// the control socket or the API). Field names are a contract.
type Event struct {
	Time   time.Time `json:"time"`
	Source string    `json:"source"` // "supervisor", "health" or "action"
	// Kind is start, exit, restart, stop, stop_timeout or give_up for the
	// supervisor; raised, changed or cleared for health; the operation
	// (reload, role, handover, restart, drill) for an action.
	Kind       string `json:"kind"`
	Supervisor string `json:"supervisor,omitempty"` // path, e.g. root/media
	Child      string `json:"child,omitempty"`
	Reason     string `json:"reason,omitempty"`
	PID        int    `json:"pid,omitempty"`
	Condition  string `json:"condition,omitempty"`
	Severity   string `json:"severity,omitempty"`
	Message    string `json:"message,omitempty"`
	// For an action: the stream it was about, who asked, and whether it
	// failed (Message says what it did, or why not).
	Stream string `json:"stream,omitempty"`
	By     string `json:"by,omitempty"`
	Failed bool   `json:"failed,omitempty"`
}

// SupervisorEvents converts supervision events.
func SupervisorEvents(in []supervisor.Event) []Event {
	out := make([]Event, 0, len(in))
	for _, e := range in {
		out = append(out, Event{Time: e.Time, Source: "supervisor", Kind: e.Kind, Supervisor: e.Supervisor,
			Child: e.Child, Reason: e.Reason, PID: e.PID})
	}
	return out
}

// HealthEvents converts health events.
func HealthEvents(in []health.Event) []Event {
	out := make([]Event, 0, len(in))
	for _, e := range in {
		out = append(out, Event{Time: e.Time, Source: "health", Kind: e.Kind, Condition: e.Condition,
			Severity: e.Severity.String(), Message: e.Message})
	}
	return out
}

// MergeEvents merges event lists, most recent first, keeping at most limit.
func MergeEvents(limit int, lists ...[]Event) []Event {
	var all []Event
	for _, l := range lists {
		all = append(all, l...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time.After(all[j].Time) })
	if limit > 0 && len(all) > limit {
		all = all[:limit]
	}
	return all
}
