package pairnet

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"appliance/internal/clock"
	"appliance/internal/testutil"
)

// grantAll is a witness logic that grants a lease to every unit and
// records what it was asked.
type grantAll struct {
	mu    sync.Mutex
	asked []WitnessRequest
}

func (g *grantAll) Ask(now time.Duration, r WitnessRequest) WitnessAnswer {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.asked = append(g.asked, r)
	return WitnessAnswer{Lease: true, Takeover: r.Takeover}
}

func (g *grantAll) requests() []WitnessRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]WitnessRequest(nil), g.asked...)
}

// TestWitnessOverLoopback: a node asks a witness every tick; the first
// request (before the node knows the witness) is answered with nothing
// granted and not put to the logic; later ones are, and their answers
// reach the handler with the request's send time.
func TestWitnessOverLoopback(t *testing.T) {
	t.Parallel()
	ad := freeAddrs(t, 3)
	logic := &grantAll{}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ServeWitness(ctx, ad[2], testKey, logic, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("ServeWitness: %v", err)
		}
	})

	o := options([]Path{{ad[0], ad[1]}})
	o.Witness = ad[2]
	n, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{node: n, witness: true}
	run(t, n, r)
	testutil.Eventually(t, 5*time.Second, "a lease granted", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, a := range r.answers {
			if a.lease {
				return true
			}
		}
		return false
	})
	r.mu.Lock()
	first := r.answers[0]
	for _, a := range r.answers {
		if a.sentAt <= 0 || a.sentAt > a.now {
			t.Errorf("answer %+v: the request's send time is not before the answer", a)
		}
	}
	r.mu.Unlock()
	if first.lease || first.takeover {
		t.Errorf("first answer %+v granted something before the request could be proven fresh", first)
	}
	want := WitnessRequest{Unit: "a", Peer: "b", HearsPeer: true, Detect: 3 * beat, Heartbeat: beat}
	if got := logic.requests(); len(got) == 0 || got[0] != want {
		t.Fatalf("the logic was asked %+v, want %+v", got, want)
	}
	s := n.Stats().Witness
	if s.Addr != ad[2] || !s.Answered || s.RTT <= 0 || s.Received == 0 || s.Garbage+s.Forged+s.Replayed+s.Version != 0 {
		t.Fatalf("witness stats %+v", s)
	}
	t.Logf("witness rtt %v after %d answers", s.RTT, s.Received)
}

// TestWitnessRefusals drives the witness's protocol state directly: a
// replayed request, a forged one and garbage are refused; a stale one gets
// an answer granting nothing.
func TestWitnessRefusals(t *testing.T) {
	t.Parallel()
	logic := &grantAll{}
	w, err := newWitnessServer(testKey, logic, clock.NewFake(time.Unix(0, 0)))
	if err != nil {
		t.Fatal(err)
	}
	unit, _ := newSession()
	seal := newSealer(testKey)
	request := func(h header, key []byte) []byte {
		r := WitnessRequest{Unit: "a", Peer: "b", Takeover: true}
		b := make([]byte, headerLen, maxDatagram)
		b = appendWitnessRequest(b, &r, 5)
		putHeader(b, h, len(b)-headerLen)
		return newSealer(key).seal(b)
	}
	answer := func(b []byte) WitnessAnswer {
		h, body, err := seal.open(b)
		if err != nil || h.kind != kindWitnessAnswer || h.echo != unit.self {
			t.Fatalf("answer header %+v, %v", h, err)
		}
		if err := unit.accept(h); err != nil && !errors.Is(err, ErrStale) {
			t.Fatal(err)
		}
		a, sent, err := decodeWitnessAnswer(body)
		if err != nil || sent != 5 {
			t.Fatalf("answer %+v sent %d: %v", a, sent, err)
		}
		return a
	}
	stale, err := w.handle(request(unit.next(1, kindWitnessRequest), testKey), nil)
	if err != nil {
		t.Fatal(err)
	}
	if a := answer(stale); a != (WitnessAnswer{}) || len(logic.requests()) != 0 {
		t.Fatalf("stale request: answered %+v, logic asked %d times", a, len(logic.requests()))
	}
	live := request(unit.next(1, kindWitnessRequest), testKey)
	out, err := w.handle(live, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a := answer(out); !a.Lease || !a.Takeover {
		t.Fatalf("live request answered %+v", a)
	}
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"replayed", live, ErrReplayed},
		{"forged", request(unit.next(1, kindWitnessRequest), []byte("some other key, 32 bytes long..")), ErrForged},
		{"pair message to the witness", request(unit.next(1, kindPair), testKey), ErrGarbage},
		{"another version", request(unit.next(2, kindWitnessRequest), testKey), ErrVersion},
		{"garbage", []byte("hello"), ErrGarbage},
	} {
		if _, err := w.handle(c.b, nil); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if n := len(logic.requests()); n != 1 {
		t.Fatalf("the logic was asked %d times, want once", n)
	}
}
