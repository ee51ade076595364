package pairnet

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

// Replay protection (docs/pair-protocol.md, Messages, Replay).
const (
	replayWindow    = 1024
	rememberedPeers = 16
	windowWords     = replayWindow / 64
)

// session is one side of an authenticated conversation with one peer: this
// unit's incarnation and counter, and what it has seen of the peer's
// incarnations. Not safe for concurrent use.
type session struct {
	self    uint64 // this unit's incarnation, never 0
	counter uint64 // the last counter sent
	// shared, when set, holds the counter instead: the beacon sends
	// under the same incarnation and draws from it too.
	shared *uint64
	echo   uint64 // the peer's incarnation as last heard, echoed in every message
	peers  [rememberedPeers]incarnation
	clock  uint64 // orders peers by last use, to forget the stalest
}

// incarnation is what is known of one of the peer's incarnations.
type incarnation struct {
	id      uint64 // 0: unused slot
	highest uint64
	// seen has bit i of word i/64 set when counter highest-i was accepted.
	seen [windowWords]uint64
	used uint64
}

// newIncarnation draws a random, nonzero incarnation.
func newIncarnation() (uint64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("pairnet: drawing an incarnation from the system's random source: %w", err)
		}
		if v := binary.BigEndian.Uint64(b[:]); v != 0 {
			return v, nil
		}
	}
}

func newSession() (*session, error) {
	inc, err := newIncarnation()
	if err != nil {
		return nil, err
	}
	return &session{self: inc}, nil
}

// next returns the header of the next message this side sends.
func (s *session) next(version, kind uint8) header {
	if s.shared != nil {
		s.counter = atomic.AddUint64(s.shared, 1)
	} else {
		s.counter++
	}
	return header{version: version, kind: kind, incarnation: s.self, counter: s.counter, echo: s.echo}
}

// accept applies the replay rules to an authentic message's header: nil
// when it is new and live, ErrStale when it is new but does not echo this
// side's incarnation (it teaches the sender's incarnation all the same),
// ErrReplayed when it was seen before or is too old to tell.
func (s *session) accept(h header) error {
	if h.incarnation == 0 || h.counter == 0 {
		// No sender ever writes these: they can only be made up, and
		// made-up messages with a valid HMAC are replays in effect.
		return ErrReplayed
	}
	p := s.find(h.incarnation)
	if !p.check(h.counter) {
		return ErrReplayed
	}
	s.clock++
	p.used = s.clock
	s.echo = h.incarnation
	if h.echo != s.self {
		return ErrStale
	}
	return nil
}

// find returns the record of incarnation id, making one in place of the
// least recently used when it is new. A forgotten incarnation comes back
// with an empty window: after 16 newer ones, which takes 16 restarts of the
// peer, or an attacker's recordings of 16 of them, and even then what is
// replayed cannot echo this side's incarnation unless it was recorded since
// this side started.
func (s *session) find(id uint64) *incarnation {
	oldest := &s.peers[0]
	for i := range s.peers {
		p := &s.peers[i]
		if p.id == id {
			return p
		}
		if p.used < oldest.used {
			oldest = p
		}
	}
	*oldest = incarnation{id: id}
	return oldest
}

// check records counter c and says whether it is new.
func (p *incarnation) check(c uint64) bool {
	if c > p.highest {
		p.shift(c - p.highest)
		p.highest = c
		p.seen[0] |= 1
		return true
	}
	back := p.highest - c
	if back >= replayWindow {
		return false
	}
	w, bit := back/64, uint64(1)<<(back%64)
	if p.seen[w]&bit != 0 {
		return false
	}
	p.seen[w] |= bit
	return true
}

// shift moves the window up by n counters.
func (p *incarnation) shift(n uint64) {
	if n >= replayWindow {
		p.seen = [windowWords]uint64{}
		return
	}
	words, bits := int(n/64), n%64
	for i := windowWords - 1; i >= 0; i-- {
		var v uint64
		if j := i - words; j >= 0 {
			v = p.seen[j] << bits
			if bits > 0 && j > 0 {
				v |= p.seen[j-1] >> (64 - bits)
			}
		}
		p.seen[i] = v
	}
}
