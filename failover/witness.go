package failover

import (
	"sort"
	"time"
)

// WitnessRequest is what a unit asks the witness every heartbeat.
type WitnessRequest struct {
	Unit, Peer string
	Takeover   bool // the unit asks to take over from its silent peer
	HearsPeer  bool // the peer hears the unit: a live message from it echoed a send time of the unit's less than D + heartbeat ago
	Detect     time.Duration
	Heartbeat  time.Duration
}

// WitnessAnswer is the witness's answer.
type WitnessAnswer struct {
	Lease    bool // the unit may forward for D from when it sent the request
	Takeover bool // the unit may take over its peer's streams
}

// Witness is the third party that lets one unit of a cut pair, and only
// one, carry on (docs/pair-protocol.md, Witness). It keeps, per unit name,
// when it last heard the unit and whether the unit is fenced.
type Witness struct {
	started bool
	since   time.Duration // the first request: nothing was heard before it
	units   map[string]*witnessUnit
}

type witnessUnit struct {
	heard  time.Duration
	asking bool
	fenced bool
}

// NewWitness returns a witness that has heard nobody yet.
func NewWitness() *Witness { return &Witness{units: map[string]*witnessUnit{}} }

// RestoreWitness returns a witness that starts with these units fenced.
// The fences must outlive the witness process: a witness that forgot one
// would give the fenced unit a lease, and it would resume streams its peer
// took over. `appliance witness` writes Fenced() to disk before it sends
// an answer that changed it, and restores it at start.
func RestoreWitness(fenced []string) *Witness {
	w := NewWitness()
	for _, name := range fenced {
		w.unit(name).fenced = true
	}
	return w
}

// Fenced lists the fenced units, sorted, for the witness to keep on disk.
func (w *Witness) Fenced() []string {
	var names []string
	for name, u := range w.units {
		if u.fenced {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

func (w *Witness) unit(name string) *witnessUnit {
	u := w.units[name]
	if u == nil {
		u = &witnessUnit{}
		w.units[name] = u
	}
	return u
}

// Ask answers one request received at now.
func (w *Witness) Ask(now time.Duration, r WitnessRequest) WitnessAnswer {
	if !w.started {
		// A witness that restarted may have granted leases it forgot: it
		// counts everyone as heard when it starts.
		w.started, w.since = true, now
	}
	u := w.unit(r.Unit)
	u.heard, u.asking = now, r.Takeover
	if u.fenced && r.HearsPeer {
		// The unit that took over heard it, and the message that said so
		// carried the newer epochs: it learnt them before it asked. (A
		// message it merely received could have been sent before the
		// takeover.)
		u.fenced = false
	}
	var a WitnessAnswer
	if r.Takeover {
		q := w.units[r.Peer]
		last := w.since
		if q != nil {
			last = max(last, q.heard)
		}
		// The peer's lease ran out by its own clock once it has been
		// unheard for D; a heartbeat more covers its media stopping.
		if now-last >= r.Detect+r.Heartbeat {
			a.Takeover = true
			w.unit(r.Peer).fenced = true
			// This unit may have been fenced by an earlier takeover of the
			// peer's: the peer is now the one fenced.
			u.fenced = false
		}
	}
	a.Lease = !u.fenced
	return a
}
