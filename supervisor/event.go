package supervisor

import (
	"time"

	"appliance/internal/ring"
)

// Event kinds. The strings are part of the API contract.
const (
	EventStart       = "start"        // a child started (with its PID if it is a process)
	EventExit        = "exit"         // a child exited on its own, with the reason
	EventRestart     = "restart"      // the supervisor decided to restart a child (reason: why, and any backoff)
	EventStop        = "stop"         // the supervisor stopped a child (shutdown, or a sibling's restart)
	EventStopTimeout = "stop_timeout" // a child outlived its shutdown timeout and was killed or abandoned
	EventGiveUp      = "give_up"      // restart intensity exceeded: the supervisor stopped everything and failed
)

// Event is one thing that happened in the supervision tree.
type Event struct {
	Time       time.Time `json:"time"`
	Supervisor string    `json:"supervisor"` // path from the root, e.g. "root/media"
	Child      string    `json:"child,omitempty"`
	Kind       string    `json:"kind"`
	Reason     string    `json:"reason,omitempty"`
	PID        int       `json:"pid,omitempty"`
}

// EventLog keeps the most recent events. It is safe for concurrent use, and
// its Add method can be given to every supervisor of a tree.
type EventLog struct{ r *ring.Ring[Event] }

// NewEventLog returns a log that keeps the last n events (at least 1).
func NewEventLog(n int) *EventLog { return &EventLog{ring.New[Event](n)} }

// Add records an event.
func (l *EventLog) Add(e Event) { l.r.Add(e) }

// Recent returns up to n events, most recent first. n <= 0 means all kept.
func (l *EventLog) Recent(n int) []Event { return l.r.Recent(n) }
