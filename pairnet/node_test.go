package pairnet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"appliance/failover"
	"appliance/internal/clock"
	"appliance/internal/testutil"
)

const beat = 10 * time.Millisecond

// freeAddrs returns n loopback addresses with ports nobody holds now.
func freeAddrs(t *testing.T, n int) []netip.AddrPort {
	t.Helper()
	var out []netip.AddrPort
	var conns []*net.UDPConn
	for range n {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		out = append(out, c.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	for _, c := range conns {
		c.Close()
	}
	return out
}

// recorder is a Handler that sends its table on every path each tick, as
// the machine does, and records what it hears.
type recorder struct {
	node     *Node
	witness  bool
	mu       sync.Mutex
	got      []received
	answers  []answer
	ticks    atomic.Int64
	echoed   atomic.Int64 // the newest of our send times the peer echoed
	sendWith failover.Message
}

type received struct {
	path int
	m    failover.Message
}

type answer struct {
	now, sentAt     time.Duration
	lease, takeover bool
}

func (r *recorder) Tick(now time.Duration) {
	r.ticks.Add(1)
	r.node.Send(-1, r.sendWith)
	if r.witness {
		r.node.AskWitness(false, true)
	}
}

func (r *recorder) PeerHeard(now, sentAt time.Duration) {
	if sentAt > now {
		panic("an echoed send time in the future")
	}
	r.echoed.Store(int64(sentAt))
}

func (r *recorder) Receive(now time.Duration, path int, m failover.Message) {
	m.Entries = append([]failover.Entry(nil), m.Entries...)
	r.mu.Lock()
	r.got = append(r.got, received{path, m})
	r.mu.Unlock()
}

func (r *recorder) WitnessAnswer(now, sentAt time.Duration, lease, takeover bool) {
	r.mu.Lock()
	r.answers = append(r.answers, answer{now, sentAt, lease, takeover})
	r.mu.Unlock()
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func (r *recorder) snapshot() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

func options(paths []Path) Options {
	return Options{Paths: paths, Key: testKey, Self: "a", Peer: "b", Heartbeat: beat, Detect: 3 * beat, RTPriority: -1}
}

// run starts n's loop with h and stops it at the end of the test.
func run(t *testing.T, n *Node, h Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		n.Close()
	})
}

// proxy relays datagrams between two sockets, as a switch on a heartbeat
// path would, until told to drop them.
type proxy struct {
	a, b *net.UDPConn // a faces one node, b the other
	toA  netip.AddrPort
	toB  netip.AddrPort
	drop atomic.Bool
}

func newProxy(t *testing.T, a, b, toA, toB netip.AddrPort) *proxy {
	t.Helper()
	ca, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(a))
	if err != nil {
		t.Fatal(err)
	}
	cb, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(b))
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{a: ca, b: cb, toA: toA, toB: toB}
	relay := func(from, via *net.UDPConn, to netip.AddrPort) {
		buf := make([]byte, 2048)
		for {
			n, _, err := from.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if !p.drop.Load() {
				_, _ = via.WriteToUDPAddrPort(buf[:n], to)
			}
		}
	}
	go relay(ca, cb, toB)
	go relay(cb, ca, toA)
	t.Cleanup(func() { ca.Close(); cb.Close() })
	return p
}

// TestTwoNodes: two nodes on loopback, path 0 direct and path 1 through a
// proxy. Both paths deliver, round trips are measured, and when path 1 is
// cut path 0 keeps delivering.
func TestTwoNodes(t *testing.T) {
	t.Parallel()
	ad := freeAddrs(t, 6)
	a0, b0, a1, b1, pxA, pxB := ad[0], ad[1], ad[2], ad[3], ad[4], ad[5]
	px := newProxy(t, pxA, pxB, a1, b1)

	na, err := Open(options([]Path{{a0, b0}, {a1, pxA}}))
	if err != nil {
		t.Fatal(err)
	}
	ob := options([]Path{{b0, a0}, {b1, pxB}})
	ob.Self, ob.Peer = "b", "a"
	nb, err := Open(ob)
	if err != nil {
		t.Fatal(err)
	}
	m := fullMessage()
	m.Entries = m.Entries[:3]
	ra := &recorder{node: na, sendWith: m}
	rb := &recorder{node: nb, sendWith: m}
	run(t, na, ra)
	run(t, nb, rb)

	testutil.Eventually(t, 5*time.Second, "live messages and round trips on both paths", func() bool {
		s := na.Stats()
		return s.Paths[0].Received > 0 && s.Paths[1].Received > 0 && s.Paths[0].RTT > 0 && s.Paths[1].RTT > 0
	})
	// Each side learns that the other hears it: the echo of its own send
	// time, no older than a few heartbeats.
	for _, r := range []*recorder{ra, rb} {
		testutil.Eventually(t, 5*time.Second, "the peer echoing our send times", func() bool {
			e := r.echoed.Load()
			return e > 0 && clock.Mono()-time.Duration(e) < time.Second
		})
	}
	for _, r := range ra.snapshot() {
		if int(r.m.Path) != r.path {
			t.Fatalf("message on path %d says it was sent on %d", r.path, r.m.Path)
		}
		want := m
		want.Path = uint8(r.path)
		if r.m.Version != 1 || r.m.Digest != want.Digest || len(r.m.Entries) != 3 || r.m.Entries[2] != want.Entries[2] {
			t.Fatalf("received %+v, want %+v", r.m, want)
		}
	}
	s := na.Stats()
	for i, p := range s.Paths {
		if !p.Heard || p.LastHeard > time.Second || p.RTT > time.Second {
			t.Errorf("path %d: %+v", i, p)
		}
		if p.Garbage+p.Forged+p.Replayed+p.Version > 0 {
			t.Errorf("path %d: refusals between two honest nodes: %+v", i, p.Counters)
		}
		t.Logf("path %d: rtt %v, sent %d, received %d, stale %d", i, p.RTT, p.Sent, p.Received, p.Stale)
	}

	px.drop.Store(true)
	// What was in flight on path 1 when it was cut may still arrive: count
	// from the moment path 0 has brought a few messages sent after the cut.
	base := na.Stats().Paths[0].Received
	testutil.Eventually(t, 5*time.Second, "path 0 delivering with path 1 cut", func() bool {
		return na.Stats().Paths[0].Received >= base+5
	})
	cut := na.Stats().Paths[1].Received
	base = na.Stats().Paths[0].Received
	testutil.Eventually(t, 5*time.Second, "path 0 delivering with path 1 cut", func() bool {
		return na.Stats().Paths[0].Received >= base+20
	})
	if got := na.Stats().Paths[1].Received; got != cut {
		t.Fatalf("path 1 delivered %d messages while cut", got-cut)
	}
	if s := na.Stats().Paths[1]; s.LastHeard < 20*beat {
		t.Fatalf("path 1 last heard %v ago, though cut for 20 heartbeats", s.LastHeard)
	}
	// The loop counts the cut path's misses while it stays silent.
	testutil.Eventually(t, 5*time.Second, "path 1's heartbeats counted missed", func() bool {
		return na.Stats().Paths[1].Missed >= 15
	})
}

// peerSim is a hand-driven peer on a raw socket: it seals whatever the
// test wants, so every refusal can be provoked.
type peerSim struct {
	t    *testing.T
	conn *net.UDPConn
	to   netip.AddrPort
	sess *session
	seal *sealer
}

func newPeerSim(t *testing.T, local, to netip.AddrPort, key []byte) *peerSim {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(local))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, _ := newSession()
	return &peerSim{t: t, conn: c, to: to, sess: s, seal: newSealer(key)}
}

func (p *peerSim) message(h header) []byte {
	m := failover.Message{State: failover.Up, Entries: []failover.Entry{{Index: 1, Epoch: 3}}}
	b := make([]byte, headerLen, maxDatagram)
	b = appendPair(b, &m, timing{sent: 1})
	putHeader(b, h, len(b)-headerLen)
	return p.seal.seal(b)
}

func (p *peerSim) send(b []byte) {
	if _, err := p.conn.WriteToUDPAddrPort(b, p.to); err != nil {
		p.t.Fatal(err)
	}
}

// hear reads the node's messages until one arrives, so the simulated peer
// learns the node's incarnation.
func (p *peerSim) hear() {
	buf := make([]byte, 2048)
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := p.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		p.t.Fatalf("no message from the node: %v", err)
	}
	h, _, err := p.seal.open(buf[:n])
	if err != nil {
		p.t.Fatalf("the node's message does not open: %v", err)
	}
	if err := p.sess.accept(h); err != nil && !errors.Is(err, ErrStale) {
		p.t.Fatal(err)
	}
}

// TestRefusalsCountedNeverDelivered provokes every refusal at a running
// node: each is counted under its reason and none reaches the machine.
func TestRefusalsCountedNeverDelivered(t *testing.T) {
	t.Parallel()
	ad := freeAddrs(t, 3)
	local, remote, stranger := ad[0], ad[1], ad[2]
	n, err := Open(options([]Path{{local, remote}}))
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{node: n}
	run(t, n, r)
	peer := newPeerSim(t, remote, local, testKey)

	// Before the peer has heard the node, its messages cannot echo it.
	first := peer.message(peer.sess.next(1, kindPair))
	peer.send(first)
	testutil.Eventually(t, 5*time.Second, "the first message counted stale", func() bool { return n.Stats().Paths[0].Stale == 1 })
	if r.count() != 0 {
		t.Fatal("a stale message was delivered")
	}
	// One round trip later the peer is live.
	peer.hear()
	live := peer.message(peer.sess.next(1, kindPair))
	peer.send(live)
	testutil.Eventually(t, 5*time.Second, "a live message delivered", func() bool { return r.count() == 1 })

	other := newSealer([]byte("a key that is not the pair's key"))
	forged := peer.message(peer.sess.next(1, kindPair))
	forged = other.seal(forged[:len(forged)-macLen])
	badMagic := peer.message(peer.sess.next(1, kindPair))
	badMagic[0] = 'X'
	wrongKind := peer.message(header{version: 1, kind: kindWitnessAnswer, incarnation: peer.sess.self, counter: 1000, echo: n.peer.self})
	oldEcho := peer.message(header{version: 1, kind: kindPair, incarnation: peer.sess.self, counter: 2000, echo: n.peer.self + 1})
	// An old incarnation of the peer, recorded while it was live.
	oldPeer, _ := newSession()
	oldPeer.echo = n.peer.self
	recordedOld := peer.message(oldPeer.next(1, kindPair))
	peer.send(recordedOld) // first time: it is new, and live; it is delivered
	testutil.Eventually(t, 5*time.Second, "the old incarnation's message delivered once", func() bool { return r.count() == 2 })

	peer.send(live)        // replayed
	peer.send(first)       // replayed (and stale)
	peer.send(recordedOld) // replayed, from another incarnation
	peer.send(forged)
	peer.send(badMagic)
	peer.send(wrongKind)
	peer.send(oldEcho)
	peer.send(live[:40])
	strangerConn := newPeerSim(t, stranger, local, testKey)
	strangerConn.send(peer.message(peer.sess.next(1, kindPair))) // right key, wrong source

	want := Counters{Received: 2, Replayed: 3, Forged: 1, Garbage: 4, Stale: 2}
	testutil.Eventually(t, 5*time.Second, "every refusal counted", func() bool {
		c := n.Stats().Paths[0].Counters
		c.Sent, c.SendErrors = 0, 0
		return c == want
	})
	if r.count() != 2 {
		t.Fatalf("%d messages delivered, want 2", r.count())
	}
}

// TestAnotherVersion: an authentic message in another version reaches the
// machine with only its version, so the machine can raise pair.mismatch.
func TestAnotherVersion(t *testing.T) {
	t.Parallel()
	ad := freeAddrs(t, 2)
	n, err := Open(options([]Path{{ad[0], ad[1]}}))
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{node: n}
	run(t, n, r)
	peer := newPeerSim(t, ad[1], ad[0], testKey)
	peer.hear()
	b := make([]byte, headerLen, maxDatagram)
	b = append(b, 0xff) // a body version 1 could not read
	putHeader(b, header{version: 2, kind: kindPair, incarnation: peer.sess.self, counter: 99, echo: n.peer.self}, 1)
	peer.send(peer.seal.seal(b))
	testutil.Eventually(t, 5*time.Second, "the other version delivered", func() bool { return r.count() == 1 })
	got := r.snapshot()[0].m
	if got.Version != 2 || got.State != 0 || len(got.Entries) != 0 {
		t.Fatalf("received %+v, want only Version 2", got)
	}
	if c := n.Stats().Paths[0]; c.Version != 1 {
		t.Fatalf("counters %+v, want Version 1", c.Counters)
	}
}

func TestOpenErrorsSayWhat(t *testing.T) {
	t.Parallel()
	ad := freeAddrs(t, 2)
	for _, c := range []struct {
		name string
		o    Options
		want string
	}{
		{"no paths", options(nil), "no heartbeat path"},
		{"short key", func() Options { o := options([]Path{{ad[0], ad[1]}}); o.Key = []byte("x"); return o }(), "16 random bytes"},
		{"address not here", options([]Path{{netip.MustParseAddrPort("198.18.200.1:7000"), ad[1]}}), "not on any interface"},
		{"mixed versions", options([]Path{{ad[0], netip.MustParseAddrPort("[::1]:7000")}}), "different IP versions"},
	} {
		_, err := Open(c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
	// The address in use by another socket.
	n, err := Open(options([]Path{{ad[0], ad[1]}}))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, err := Open(options([]Path{{ad[0], ad[1]}})); err == nil || !strings.Contains(err.Error(), "another socket holds") {
		t.Errorf("second bind: %v", err)
	}
}

func TestCloseStopsRun(t *testing.T) {
	t.Parallel()
	ad := freeAddrs(t, 2)
	n, err := Open(options([]Path{{ad[0], ad[1]}}))
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{node: n}
	done := make(chan error, 1)
	go func() { done <- n.Run(context.Background(), r) }()
	testutil.Eventually(t, 5*time.Second, "the loop ticking", func() bool { return r.ticks.Load() > 2 })
	n.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close: %v, want ErrClosed", err)
	}
	if err := n.Run(context.Background(), r); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run on a closed node: %v", err)
	}
}

// TestRealtimeThread: as root, the loop thread runs under SCHED_FIFO at
// the priority asked for.
func TestRealtimeThread(t *testing.T) {
	testutil.NeedRoot(t, "SCHED_FIFO needs CAP_SYS_NICE")
	t.Parallel()
	ad := freeAddrs(t, 2)
	o := options([]Path{{ad[0], ad[1]}})
	o.RTPriority = 0 // the default
	n, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{node: n}
	run(t, n, r)
	testutil.Eventually(t, 5*time.Second, "the loop ticking", func() bool { return r.ticks.Load() > 2 })
	if !n.Stats().Realtime {
		t.Fatal("Stats says the thread is not real-time, as root")
	}
	attr, err := unix.SchedGetAttr(int(n.tid.Load()), 0)
	if err != nil {
		t.Fatal(err)
	}
	if attr.Policy != unix.SCHED_FIFO || attr.Priority != DefaultRTPriority {
		t.Fatalf("loop thread policy %d priority %d, want SCHED_FIFO (%d) at %d", attr.Policy, attr.Priority, unix.SCHED_FIFO, DefaultRTPriority)
	}
}

// TestSteadyStateAllocations: sending and receiving a message allocate
// nothing once the pair is live.
func TestSteadyStateAllocations(t *testing.T) {
	ad := freeAddrs(t, 2)
	na, err := Open(options([]Path{{ad[0], ad[1]}}))
	if err != nil {
		t.Fatal(err)
	}
	defer na.Close()
	nb, err := Open(options([]Path{{ad[1], ad[0]}}))
	if err != nil {
		t.Fatal(err)
	}
	defer nb.Close()
	var h nopHandler
	m := fullMessage()
	exchange := func() {
		na.Send(0, m)
		waitReadable(t, nb.paths[0].fd)
		nb.drainPath(0, nb.paths[0], &h)
		nb.Send(0, m)
		waitReadable(t, na.paths[0].fd)
		na.drainPath(0, na.paths[0], &h)
	}
	exchange()
	exchange()
	if allocs := testing.AllocsPerRun(100, exchange); allocs != 0 {
		t.Fatalf("%v allocations per exchange, want none", allocs)
	}
	if h.n == 0 || na.Stats().Paths[0].RTT == 0 {
		t.Fatalf("nothing delivered (%d) or no round trip measured: the test measured nothing", h.n)
	}
}

type nopHandler struct{ n int }

func (*nopHandler) Tick(time.Duration)                             {}
func (h *nopHandler) Receive(time.Duration, int, failover.Message) { h.n++ }
func (*nopHandler) PeerHeard(time.Duration, time.Duration)         {}
func (*nopHandler) WitnessAnswer(_, _ time.Duration, _, _ bool)    {}

func waitReadable(t testing.TB, fd int) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 5000); n != 1 || err != nil {
		t.Fatalf("nothing to read after 5 s: %v", err)
	}
}

// deadlineHandler wants a beat at a set time between heartbeats.
type deadlineHandler struct {
	nopHandler
	at    time.Duration
	ticks chan time.Duration
}

func (h *deadlineHandler) Tick(now time.Duration) {
	select {
	case h.ticks <- now:
	default:
	}
}
func (h *deadlineHandler) Deadline() time.Duration { return h.at }

// TestDeadlineBeats: a handler's deadline between two heartbeats is a
// beat of its own, not one at the next heartbeat.
func TestDeadlineBeats(t *testing.T) {
	t.Parallel()
	ad := freeAddrs(t, 2)
	o := options([]Path{{ad[0], ad[1]}})
	o.Heartbeat = 5 * time.Second
	n, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	h := &deadlineHandler{ticks: make(chan time.Duration, 8)}
	start := clock.Mono()
	h.at = start + 200*time.Millisecond
	run(t, n, h)
	<-h.ticks // the first beat, at once
	select {
	case at := <-h.ticks:
		if at < h.at {
			t.Fatalf("beat at %v, before the deadline %v", at-start, h.at-start)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no beat at the deadline: the loop waited for the next heartbeat (5 s)")
	}
}

// TestMissedHeartbeats drives one path's silence on a fake clock, beat by
// beat and message by message: a heartbeat counts as missed half an
// interval after it was due, once, whether a beat or the next message
// finds it.
func TestMissedHeartbeats(t *testing.T) {
	ad := freeAddrs(t, 2)
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	oa, ob := options([]Path{{ad[0], ad[1]}}), options([]Path{{ad[1], ad[0]}})
	oa.Clock, ob.Clock = clk, clk
	na, err := Open(oa)
	if err != nil {
		t.Fatal(err)
	}
	defer na.Close()
	nb, err := Open(ob)
	if err != nil {
		t.Fatal(err)
	}
	defer nb.Close()
	var h nopHandler
	m := fullMessage()
	// One round trip, so that na's messages echo nb's incarnation and are
	// live at nb.
	na.Send(0, m)
	waitReadable(t, nb.paths[0].fd)
	nb.drainPath(0, nb.paths[0], &h)
	nb.Send(0, m)
	waitReadable(t, na.paths[0].fd)
	na.drainPath(0, na.paths[0], &h)

	start := clk.Mono()
	for _, step := range []struct {
		at     time.Duration // since start, in heartbeats of 10 ms
		what   string        // "message" from the peer, or this unit's "beat"
		missed uint64
	}{
		{0, "message", 0},
		{12 * beat / 10, "beat", 0},
		{14 * beat / 10, "message", 0}, // late by 0.4 of an interval: not missed
		{24 * beat / 10, "beat", 0},
		{29 * beat / 10, "beat", 1},    // 1.5 intervals of silence: one missed
		{38 * beat / 10, "beat", 1},    // counted once
		{39 * beat / 10, "message", 2}, // 2.5 intervals: the second counted by the message
		{70 * beat / 10, "beat", 4},    // 3.1 intervals
		{100 * beat / 10, "beat", 7},   // 6.1
		{100 * beat / 10, "message", 7},
		{105 * beat / 10, "beat", 7},
		{114 * beat / 10, "beat", 7}, // the silence counts from the newest message
		{115 * beat / 10, "beat", 8},
	} {
		clk.Advance(start + step.at - clk.Mono())
		switch step.what {
		case "message":
			before := nb.Stats().Paths[0].Received
			na.Send(0, m)
			waitReadable(t, nb.paths[0].fd)
			nb.drainPath(0, nb.paths[0], &h)
			if got := nb.Stats().Paths[0].Received; got != before+1 {
				t.Fatalf("at %v: the message was not live (received %d, then %d)", step.at, before, got)
			}
		case "beat":
			nb.countMissed(clk.Mono())
		}
		if got := nb.Stats().Paths[0].Missed; got != step.missed {
			t.Errorf("after the %s at %v: %d missed, want %d", step.what, step.at, got, step.missed)
		}
	}
}

func TestMissedIn(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		quiet time.Duration
		want  uint64
	}{
		{0, 0}, {beat, 0}, {3*beat/2 - 1, 0}, {3 * beat / 2, 1}, {2 * beat, 1},
		{5*beat/2 - 1, 1}, {5 * beat / 2, 2}, {100 * beat, 99}, {-beat, 0},
	} {
		if got := missedIn(tt.quiet, beat); got != tt.want {
			t.Errorf("missedIn(%v, %v) = %d, want %d", tt.quiet, beat, got, tt.want)
		}
	}
}
