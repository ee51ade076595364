package media

import (
	"context"
	"errors"
	"fmt"
	"time"

	"appliance/internal/clock"
)

// RoleResult is a worker's answer to a role change.
type RoleResult struct {
	// LastForwarded is the input sequence number of the last packet the
	// stream forwarded before the change, if it forwarded any.
	LastForwarded *uint16 `json:"last_forwarded,omitempty"`
	Replayed      int     `json:"replayed"` // packets sent from the ring
	// FromIgnored: the starting sequence number asked for was too far from
	// the input's numbering to place, so forwarding started with the next
	// packet instead (also counted in the stream's from_ignored).
	FromIgnored bool `json:"from_ignored,omitempty"`
}

// RoleChange is one stream's part of SetRoles.
type RoleChange struct {
	Name string
	Role string // RoleForward or RoleStandby
	// From, with RoleForward: start at this input sequence number,
	// replaying what the standby ring holds from it, as SetRole does.
	From *uint16
	// Cont, with RoleForward: continue the output numbering of the unit
	// that forwarded the stream before. Ignored when not Valid (the peer
	// never forwarded it: there is nothing to continue).
	Cont *PeerContinuity
}

// PeerContinuity is a stream's output numbering as a unit reports it to its
// peer: what the peer needs to carry on the same SSRC, sequence and
// timestamp numbering. Units share no monotonic clock, so the time of the
// last packet travels as an age.
type PeerContinuity struct {
	Valid      bool   `json:"valid"` // false until the stream has forwarded
	InSSRC     uint32 `json:"in_ssrc"`
	LastInSeq  uint16 `json:"last_in_seq"`
	SeqOffset  uint16 `json:"seq_offset"`
	TSOffset   uint32 `json:"ts_offset"`
	LastOutSeq uint16 `json:"last_out_seq"`
	LastOutTS  uint32 `json:"last_out_ts"`
	// Age is how long before now the last packet was forwarded.
	Age time.Duration `json:"age_ns"`
}

// continuity turns a peer's numbering into this machine's terms at now
// (CLOCK_MONOTONIC).
func (p PeerContinuity) continuity(now time.Duration) Continuity {
	at := now - max(p.Age, 0)
	if at <= 0 {
		at = 1 // 0 means "unknown" to the relay
	}
	return Continuity{Valid: true, InSSRC: p.InSSRC, LastInSeq: p.LastInSeq, SeqOffset: p.SeqOffset, TSOffset: p.TSOffset,
		LastOutSeq: p.LastOutSeq, LastOutTS: p.LastOutTS, At: at}
}

// peerContinuity is the inverse of continuity.
func peerContinuity(c Continuity, now time.Duration) PeerContinuity {
	p := PeerContinuity{Valid: c.Valid, InSSRC: c.InSSRC, LastInSeq: c.LastInSeq, SeqOffset: c.SeqOffset, TSOffset: c.TSOffset,
		LastOutSeq: c.LastOutSeq, LastOutTS: c.LastOutTS}
	if c.At != 0 {
		p.Age = max(now-c.At, 0)
	}
	return p
}

// RoleOutcome is one change's result in SetRoles.
type RoleOutcome struct {
	Result RoleResult
	Err    error // ErrNoStream, ErrNotCarried (errors.Is), or why the worker refused
}

// SetRole puts a stream in standby (it reads and counts its input and keeps
// the most recent packets in a ring, sending nothing) or in forward. With
// from set, forwarding starts at that input sequence number: what the ring
// holds from it is sent first, and the output continues the stream's SSRC,
// sequence and timestamp numbering. The role outlives worker restarts.
func (m *Manager) SetRole(ctx context.Context, name, role string, from *uint16) (RoleResult, error) {
	o := m.SetRoles(ctx, []RoleChange{{Name: name, Role: role, From: from}})
	return o[0].Result, o[0].Err
}

// SetRoles changes the roles of many streams at once: every change goes to
// the workers together, one message per worker, and the answers are
// awaited together, so a unit's streams switch in about the time of one.
// Outcomes are in the order of changes; a change that fails costs only its
// own stream. The role outlives worker restarts, and so does an adopted
// continuity: it becomes the stream's own.
//
// With Cont set, the stream's output continues the peer's numbering: if the
// input lines up with it (same SSRC, a sequence number near LastInSeq), the
// same offsets are applied, so two units fed the same input send the same
// bytes; otherwise the output steps on from LastOutSeq and LastOutTS.
func (m *Manager) SetRoles(ctx context.Context, changes []RoleChange) []RoleOutcome {
	out := make([]RoleOutcome, len(changes))
	type batch struct {
		wc    *wconn
		msg   roleMsg
		idx   map[uint32]int // change by stream id
		adopt map[uint32]Continuity
		sids  []uint32
		wt    waiter
		sent  bool
	}
	var batches []*batch
	byConn := map[*wconn]*batch{}
	seen := make(map[string]bool, len(changes))

	m.ctlMu.Lock()
	defer m.ctlMu.Unlock()
	m.mu.Lock()
	now := clock.Mono() // Continuity.At is on the clock workers share
	for i, c := range changes {
		if err := c.check(); err != nil {
			out[i].Err = err
			continue
		}
		if seen[c.Name] {
			out[i].Err = fmt.Errorf("stream %s is listed twice in one role change; list each stream once", c.Name)
			continue
		}
		seen[c.Name] = true
		st := m.byName[c.Name]
		if st == nil {
			out[i].Err = fmt.Errorf("%w: %s", ErrNoStream, c.Name)
			continue
		}
		st.standby.Store(c.Role == RoleStandby)
		change := roleChange{SID: st.sid, Role: c.Role, FromSeq: c.From}
		var adopt *Continuity
		if c.Cont != nil && c.Cont.Valid {
			// Recorded before the worker hears of it, so a worker that
			// starts from here on starts from it.
			k := c.Cont.continuity(now)
			st.setCont(k)
			adopt, change.Continuity = &k, c.Cont
		}
		if f := st.failure.Load(); f != nil {
			out[i].Err = fmt.Errorf("%w: %s: %s", ErrNotCarried, c.Name, *f)
			continue
		}
		var wc *wconn
		if st.w != nil {
			wc = st.w.conn
		}
		if wc == nil {
			out[i].Err = fmt.Errorf("%w: %s: %w; it starts as %s", ErrNotCarried, c.Name, ErrWorkerStarting, c.Role)
			continue
		}
		b := byConn[wc]
		if b == nil {
			b = &batch{wc: wc, idx: map[uint32]int{}, adopt: map[uint32]Continuity{}}
			byConn[wc] = b
			batches = append(batches, b)
		}
		b.msg.Changes = append(b.msg.Changes, change)
		b.idx[st.sid] = i
		b.sids = append(b.sids, st.sid)
		if adopt != nil {
			b.adopt[st.sid] = *adopt
		}
	}
	for _, b := range batches {
		b.msg.ID = m.nextReq.Add(1)
		wt, err := b.wc.request(m, msgRole, b.msg.ID, b.msg, nil, b.sids, b.adopt)
		if err != nil {
			for _, i := range b.idx {
				out[i].Err = fmt.Errorf("stream %s: telling its worker: %w", changes[i].Name, err)
			}
			continue
		}
		b.wt, b.sent = wt, true
	}
	m.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	for _, b := range batches {
		if !b.sent {
			continue
		}
		select {
		case ack, ok := <-b.wt.ch:
			if !ok {
				for _, i := range b.idx {
					out[i].Err = fmt.Errorf("%w: %s: its worker exited before confirming; it restarts as %s", ErrNotCarried, changes[i].Name, changes[i].Role)
				}
				continue
			}
			for _, e := range ack.Errors {
				if i, ok := b.idx[e.SID]; ok {
					out[i].Err = fmt.Errorf("stream %s: %s", changes[i].Name, e.Error)
				}
			}
			for _, r := range ack.Roles {
				if i, ok := b.idx[r.SID]; ok {
					out[i].Result = RoleResult{LastForwarded: r.LastForwarded, Replayed: r.Replayed, FromIgnored: r.FromIgnored}
				}
			}
		case <-ctx.Done():
			for _, i := range b.idx {
				out[i].Err = fmt.Errorf("stream %s: %s did not confirm the role change within %v", changes[i].Name, b.wt.worker, ackTimeout)
			}
		}
	}
	return out
}

func (c RoleChange) check() error {
	switch {
	case c.Role != RoleForward && c.Role != RoleStandby:
		return fmt.Errorf("stream %s: role %q: use %s or %s", c.Name, c.Role, RoleForward, RoleStandby)
	case c.From != nil && c.Role != RoleForward:
		return errors.New("a starting sequence number goes with role forward only")
	case c.Cont != nil && c.Role != RoleForward:
		return errors.New("a continuity to adopt goes with role forward only")
	}
	return nil
}
