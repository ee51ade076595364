// Package pairnet carries the pair protocol on the wire: authenticated,
// replay-proof heartbeats on a real-time thread, the witness service, and
// the virtual addresses that move with streams (docs/pair-protocol.md).
//
// It decides nothing: the failover machine does, through a Handler that the
// node calls from its loop thread.
package pairnet

import (
	"errors"
	"log/slog"
	"net/netip"
	"os/exec"
	"sync/atomic"
	"time"

	"appliance/failover"
	"appliance/internal/clock"
)

// Path is one heartbeat path: this unit's address and the peer's.
type Path struct{ Local, Remote netip.AddrPort }

// Options configure a Node.
type Options struct {
	Paths   []Path
	Key     []byte         // the shared key (pair.key_file), 16 bytes at least
	Witness netip.AddrPort // the witness; zero: none
	// Self and Peer are the unit names the witness knows the units by, at
	// most 64 bytes each.
	Self, Peer string
	Heartbeat  time.Duration // how often Run calls Handler.Tick
	Detect     time.Duration // D, told to the witness
	// RTPriority is the SCHED_FIFO priority of the loop thread: 0 means
	// DefaultRTPriority, -1 leaves the thread at normal priority.
	RTPriority int
	// Beacon, when set, makes the command of the beacon process
	// (ServeBeacon), which covers for a loop that the Go runtime holds
	// off; BeaconGrace (0: DefaultBeaconGrace) is how long after the
	// loop's last beat it stops.
	Beacon      func() *exec.Cmd
	BeaconGrace time.Duration
	Clock       clock.Clock  // nil: the machine's clocks
	Logger      *slog.Logger // nil: discard
}

// DefaultRTPriority is above every kernel thread left at the usual
// defaults (threaded interrupts run at 50, so this is below them: a
// heartbeat must never hold off the NIC's own interrupt handling).
const DefaultRTPriority = 10

// Handler is the failover machine as the node sees it. Every method is
// called from the node's loop thread, one at a time; Node.Send and
// Node.AskWitness may be called from inside them, and only from there.
type Handler interface {
	// Tick is called every Heartbeat.
	Tick(now time.Duration)
	// Receive delivers a live message that arrived on path. m, and its
	// Entries, are reused for the next message: they are valid only during
	// the call. A message with another protocol version carries only its
	// Version.
	Receive(now time.Duration, path int, m failover.Message)
	// PeerHeard follows a Receive whose message echoed one of ours: sentAt
	// is when this unit sent the newest message the peer had received on
	// that path. It proves the peer hears this unit, which hearing the
	// peer does not.
	PeerHeard(now, sentAt time.Duration)
	// WitnessAnswer delivers the witness's answer to the request sent at
	// sentAt (on the same clock as now).
	WitnessAnswer(now, sentAt time.Duration, lease, takeover bool)
}

// Deadliner is a Handler that wants Tick sooner than the next heartbeat
// when something falls due in between: Deadline, asked on the loop thread
// before each wait, is when (0 or a time past: no such wish).
type Deadliner interface {
	Deadline() time.Duration
}

// ErrClosed is returned by Run on a closed Node.
var ErrClosed = errors.New("pairnet: node closed")

// Stats is a snapshot of a node's counters, for the status page and
// metrics.
type Stats struct {
	Realtime bool // the loop thread runs under SCHED_FIFO
	// Late counts beats the loop made more than a heartbeat after they
	// were due (the thread was held off); MaxLate is the longest delay.
	// Either growing means the peer may have seen this unit as silent.
	Late    uint64
	MaxLate time.Duration
	Beacon  BeaconStats
	Paths   []PathStats
	Witness WitnessStats
}

// Counters are kept per path and for the witness. Received counts live
// messages delivered; each refusal has its own counter.
type Counters struct {
	Sent       uint64
	SendErrors uint64
	Received   uint64
	Garbage    uint64 // not this protocol, or from an unexpected address
	Forged     uint64 // wrong HMAC
	Replayed   uint64
	Stale      uint64 // authentic but not echoing this unit's incarnation (after either side restarts)
	Version    uint64 // another protocol version (delivered to the machine, which raises pair.mismatch)
}

// PathStats describes one path.
type PathStats struct {
	Local, Remote netip.AddrPort
	Heard         bool          // a live message has arrived on this path
	LastHeard     time.Duration // since the newest live message, when Heard
	RTT           time.Duration // the newest round trip measured; 0: none yet
	// Missed counts the peer's heartbeats that did not arrive on this
	// path: after a live message (or the start of Run), the n-th heartbeat
	// is due n intervals later and missed once half an interval more has
	// passed without a live message. Counted at each beat and at each
	// message, so a silence in progress counts too.
	Missed uint64
	Counters
}

// WitnessStats describes the conversation with the witness.
type WitnessStats struct {
	Addr       netip.AddrPort // zero: no witness configured
	Answered   bool           // a live answer has arrived
	LastAnswer time.Duration  // since the newest live answer, when Answered
	RTT        time.Duration  // of the newest answer
	Counters
}

// counters are Counters updated by the loop and read by Stats.
type counters struct {
	sent, sendErrors, received, garbage, forged, replayed, stale, version atomic.Uint64
	lastHeard, rtt                                                        atomic.Int64 // Mono, ns; 0: never
}

func (c *counters) snapshot() Counters {
	return Counters{
		Sent: c.sent.Load(), SendErrors: c.sendErrors.Load(), Received: c.received.Load(),
		Garbage: c.garbage.Load(), Forged: c.forged.Load(), Replayed: c.replayed.Load(),
		Stale: c.stale.Load(), Version: c.version.Load(),
	}
}

// refused counts a refusal under its reason.
func (c *counters) refused(err error) {
	switch {
	case errors.Is(err, ErrForged):
		c.forged.Add(1)
	case errors.Is(err, ErrReplayed):
		c.replayed.Add(1)
	case errors.Is(err, ErrStale):
		c.stale.Add(1)
	case errors.Is(err, ErrVersion):
		c.version.Add(1)
	default:
		c.garbage.Add(1)
	}
}

// missedIn is how many of the peer's heartbeats, sent every hb, a silence
// of quiet after a live message holds: the n-th is due n*hb after it and
// missed from (n+1/2)*hb. The half interval takes in the jitter of both
// loops and of the path, so a heartbeat that is merely late is not counted.
func missedIn(quiet, hb time.Duration) uint64 {
	if quiet < hb+hb/2 {
		return 0
	}
	return uint64((quiet - hb/2) / hb)
}

// heard returns whether a live message was seen and its age at now.
func (c *counters) heard(now time.Duration) (bool, time.Duration) {
	at := time.Duration(c.lastHeard.Load())
	if at == 0 {
		return false, 0
	}
	return true, max(now-at, 0)
}
