package pairnet

import (
	"errors"
	"math/rand/v2"
	"testing"
)

func TestIncarnationIsRandomAndNonzero(t *testing.T) {
	t.Parallel()
	a, err := newIncarnation()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := newIncarnation()
	if a == 0 || b == 0 || a == b {
		t.Fatalf("incarnations %x and %x: want two different nonzero numbers", a, b)
	}
}

// TestReplayWindow checks the window against a plain set of everything
// seen, over reordered, duplicated and far-jumping counters.
func TestReplayWindow(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	var p incarnation
	seen := map[uint64]bool{}
	var highest uint64
	for range 200000 {
		var c uint64
		switch r := rng.IntN(100); {
		case r < 60:
			c = highest + 1 + uint64(rng.IntN(3))
		case r < 95 && highest > 0:
			c = highest - min(highest-1, uint64(rng.IntN(1100)))
		default:
			c = highest + uint64(rng.IntN(3000))
		}
		if c == 0 {
			continue
		}
		want := !seen[c] && (c > highest || highest-c < replayWindow)
		if got := p.check(c); got != want {
			t.Fatalf("counter %d with highest %d: accepted %v, want %v", c, highest, got, want)
		}
		if want {
			seen[c] = true
			highest = max(highest, c)
		}
	}
}

// pairOfSessions is a unit and its peer, with a way to carry one message.
func exchange(t *testing.T, from, to *session) error {
	t.Helper()
	return to.accept(from.next(1, kindPair))
}

func TestLiveAfterOneRoundTrip(t *testing.T) {
	t.Parallel()
	a, _ := newSession()
	b, _ := newSession()
	if err := exchange(t, a, b); !errors.Is(err, ErrStale) {
		t.Fatalf("first message, before a heard b: %v, want ErrStale", err)
	}
	if err := exchange(t, b, a); err != nil {
		t.Fatalf("b's answer echoes a: %v, want live", err)
	}
	if err := exchange(t, a, b); err != nil {
		t.Fatalf("a's next message echoes b: %v, want live", err)
	}
}

func TestReplayRefused(t *testing.T) {
	t.Parallel()
	a, _ := newSession()
	b, _ := newSession()
	_ = exchange(t, b, a)
	h := a.next(1, kindPair)
	if err := b.accept(h); err != nil {
		t.Fatal(err)
	}
	if err := b.accept(h); !errors.Is(err, ErrReplayed) {
		t.Fatalf("the same message again: %v, want ErrReplayed", err)
	}
	for _, h := range []header{{incarnation: 0, counter: 5, echo: b.self}, {incarnation: 9, counter: 0, echo: b.self}} {
		if err := b.accept(h); !errors.Is(err, ErrReplayed) {
			t.Fatalf("made-up header %+v: %v, want ErrReplayed", h, err)
		}
	}
}

// TestOldIncarnationReplay: after the peer restarts, its old incarnation's
// messages (recorded, so echoing this unit) stay refused, as long as it
// restarted fewer than 16 times since.
func TestOldIncarnationReplay(t *testing.T) {
	t.Parallel()
	b, _ := newSession()
	var recorded []header
	for range rememberedPeers - 1 {
		a, _ := newSession()
		_ = exchange(t, b, a)
		h := a.next(1, kindPair)
		if err := b.accept(h); err != nil {
			t.Fatal(err)
		}
		recorded = append(recorded, h)
		for range 2000 { // well past the window
			_ = b.accept(a.next(1, kindPair))
		}
	}
	for _, h := range recorded {
		if err := b.accept(h); !errors.Is(err, ErrReplayed) {
			t.Fatalf("replay of incarnation %x: %v, want ErrReplayed", h.incarnation, err)
		}
	}
}

func TestStaleDoesNotProveLiveButTeaches(t *testing.T) {
	t.Parallel()
	a, _ := newSession()
	b, _ := newSession()
	h := a.next(1, kindPair)
	h.echo = 12345 // a previous incarnation of b
	if err := b.accept(h); !errors.Is(err, ErrStale) {
		t.Fatalf("%v, want ErrStale", err)
	}
	if b.echo != a.self {
		t.Fatalf("b echoes %x after a stale message from %x: it should have learnt it", b.echo, a.self)
	}
}
