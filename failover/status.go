package failover

import "time"

// Status is a copy of the machine's view, for the status API.
type Status struct {
	Self, Peer   string
	State        UnitState       // this unit's state as it tells the peer
	PeerState    UnitState       // as the peer last said; 0 before it spoke
	Live         bool            // a live message from the peer in the last D
	Agreement    bool            // the peer's last message had the same version and digest
	Paths        []time.Duration // per path, the age of the last live message; -1: none yet
	WitnessLease time.Duration   // how long the lease still runs; 0: none
	Fenced       bool            // a witness is configured and this unit may not forward now
	Streams      []StreamStatus
}

// StreamStatus is one stream as this unit sees it.
type StreamStatus struct {
	Name  string
	Owner string // the unit the epoch belongs to; "" before anyone claimed it
	Role  string // "active" when this unit forwards it, else "standby"
	Epoch uint32
	Phase Phase
	// Start is where the epoch's owner began forwarding, when the epoch
	// came with one: the previous owner forwarded everything before it.
	HasStart bool
	Start    uint16
}

// Status returns a copy of the machine's view at now.
func (m *Machine) Status(now time.Duration) Status {
	st := Status{
		Self:      m.cfg.Self,
		Peer:      m.cfg.Peer,
		State:     m.state(),
		PeerState: m.peerState,
		Live:      m.live(now),
		Agreement: m.heard != 0 && m.agree,
		Fenced:    !m.mayForward(now),
		Paths:     make([]time.Duration, len(m.pathHeard)),
		Streams:   make([]StreamStatus, len(m.streams)),
	}
	for p, t := range m.pathHeard {
		st.Paths[p] = -1
		if t != 0 {
			st.Paths[p] = now - t
		}
	}
	if m.leaseUntil > now {
		st.WitnessLease = m.leaseUntil - now
	}
	for i, s := range m.streams {
		ss := StreamStatus{Name: s.cfg.Name, Epoch: s.epoch, Phase: s.phase, Role: "standby", HasStart: s.hasStart, Start: s.start}
		switch {
		case m.mine(s.epoch):
			ss.Owner = m.cfg.Self
		case s.epoch != 0:
			ss.Owner = m.cfg.Peer
		}
		if s.phase == PhaseForwarding || s.phase == PhaseHandingOver || s.phase == PhaseStopping {
			ss.Role = "active"
		}
		st.Streams[i] = ss
	}
	return st
}
