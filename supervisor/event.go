package supervisor

import (
	"sync"
	"time"
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

// EventLog keeps the most recent events in a ring. It is safe for concurrent
// use, and its Add method can be given to every supervisor of a tree.
type EventLog struct {
	mu   sync.Mutex
	ring []Event
	next int
	full bool
}

// NewEventLog returns a log that keeps the last n events (at least 1).
func NewEventLog(n int) *EventLog {
	return &EventLog{ring: make([]Event, max(n, 1))}
}

// Add records an event.
func (l *EventLog) Add(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ring[l.next] = e
	l.next++
	if l.next == len(l.ring) {
		l.next, l.full = 0, true
	}
}

// Recent returns up to n events, most recent first. n <= 0 means all kept.
func (l *EventLog) Recent(n int) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	size := l.next
	if l.full {
		size = len(l.ring)
	}
	if n <= 0 || n > size {
		n = size
	}
	out := make([]Event, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, l.ring[(l.next-i+len(l.ring))%len(l.ring)])
	}
	return out
}
