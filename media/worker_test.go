package media

import (
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"appliance/internal/testutil"
)

// udpIn binds an input on loopback the way the parent does, and returns it
// with its address.
func udpIn(t *testing.T) (*os.File, netip.AddrPort) {
	t.Helper()
	f, err := bindInput(netip.MustParseAddrPort("127.0.0.1:0"), false)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.FilePacketConn(f)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Cleanup(func() { f.Close() })
	return f, c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// sink is a receiver on loopback that records the sequence numbers it gets.
type sink struct {
	c    *net.UDPConn
	addr netip.AddrPort
	seqs chan uint16
}

func newSink(t *testing.T) *sink {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	setReceiveBuffer(c, 4<<20)
	s := &sink{c: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort(), seqs: make(chan uint16, 100000)}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := c.Read(buf)
			if err != nil {
				close(s.seqs)
				return
			}
			if n >= 12 {
				s.seqs <- uint16(buf[2])<<8 | uint16(buf[3])
			}
		}
	}()
	t.Cleanup(func() { c.Close() })
	return s
}

// take returns the next n sequence numbers, failing after a while without.
func (s *sink) take(t *testing.T, n int) []uint16 {
	t.Helper()
	out := make([]uint16, 0, n)
	for len(out) < n {
		select {
		case q := <-s.seqs:
			out = append(out, q)
		case <-time.After(5 * time.Second):
			t.Fatalf("received %d of %d packets", len(out), n)
		}
	}
	return out
}

// quiet reports whether nothing arrives for d.
func (s *sink) quiet(d time.Duration) bool {
	select {
	case <-s.seqs:
		return false
	case <-time.After(d):
		return true
	}
}

type sender struct {
	c   *net.UDPConn
	seq uint16
}

func newSender(t *testing.T, to netip.AddrPort) *sender {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &sender{c: c, seq: 1000}
}

func (s *sender) send(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		b := rtpPacket(t, s.seq, uint32(s.seq)*90, 0xfeed, 96, []byte("payload"))
		if _, err := s.c.Write(b); err != nil {
			t.Fatal(err)
		}
		s.seq++
	}
}

func TestWorkerAddUpdateRemove(t *testing.T) {
	tw := startTestWorker(t, 0)
	in, inAddr := udpIn(t)
	a, b := newSink(t), newSink(t)
	tw.add(1, in, []netip.AddrPort{a.addr}, nil, RoleForward)
	snd := newSender(t, inAddr)
	snd.send(t, 10)
	if got := a.take(t, 10); got[0] != 1000 || got[9] != 1009 {
		t.Fatalf("first output got %v", got)
	}

	// Outputs change in place: a keeps its socket and counters, b is added.
	ack := tw.request(msgUpdate, updateMsg{ID: tw.nextID(), Streams: []streamConfig{{SID: 1, Name: "sb", Outputs: []netip.AddrPort{a.addr, b.addr}, ClockRate: 90000}}}, nil)
	if len(ack.Errors) > 0 {
		t.Fatalf("update refused: %+v", ack.Errors)
	}
	snd.send(t, 5)
	a.take(t, 5)
	b.take(t, 5)
	sr := tw.stream(1)
	if sr.Counters.PacketsIn != 15 || len(sr.Outputs) != 2 || sr.Outputs[0].Packets != 15 || sr.Outputs[1].Packets != 5 {
		t.Fatalf("after the update: %+v", sr)
	}

	// Removed: once acknowledged, the worker's copy of the input is closed,
	// so with the parent's closed too the port is free at once.
	ack = tw.request(msgRemove, removeMsg{ID: tw.nextID(), SIDs: []uint32{1}}, nil)
	if len(ack.Errors) > 0 {
		t.Fatalf("remove refused: %+v", ack.Errors)
	}
	in.Close()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(inAddr))
	if err != nil {
		t.Fatalf("the removed stream's port is still held: %v", err)
	}
	c.Close()
	for _, s := range tw.report().Streams {
		if s.SID == 1 {
			t.Fatal("a removed stream is still reported")
		}
	}
}

func TestWorkerRefusesBadStreams(t *testing.T) {
	tw := startTestWorker(t, 0)
	in, _ := udpIn(t)
	bad := addStream{streamConfig: streamConfig{SID: 3, Name: "bad", ClockRate: 90000}, Role: RoleForward}
	ack := tw.request(msgAdd, addMsg{ID: tw.nextID(), Streams: []addStream{bad}}, []int{int(in.Fd())})
	if len(ack.Errors) != 1 || ack.Errors[0].SID != 3 {
		t.Fatalf("a stream without outputs: %+v", ack)
	}
	// The worker carries on.
	good, _ := udpIn(t)
	s := newSink(t)
	tw.add(4, good, []netip.AddrPort{s.addr}, nil, RoleForward)
	ack = tw.request(msgRole, roleMsg{ID: tw.nextID(), Changes: []roleChange{{SID: 99, Role: RoleStandby}}}, nil)
	if len(ack.Errors) != 1 {
		t.Fatalf("a role for a stream that is not there: %+v", ack)
	}
	tw.stream(4)
}

// TestStandbyThenForwardFrom: a standby stream counts its input and sends
// nothing; "forward from S" replays from S and goes on live, and the output
// has no gap and no duplicate, with the rewritten SSRC and numbering.
func TestStandbyThenForwardFrom(t *testing.T) {
	tw := startTestWorker(t, time.Second)
	in, inAddr := udpIn(t)
	out := newSink(t)
	ssrc := uint32(0xabc)
	tw.add(1, in, []netip.AddrPort{out.addr}, &ssrc, RoleForward)
	snd := newSender(t, inAddr)
	snd.send(t, 20)
	first := out.take(t, 20)

	ack := tw.role(1, RoleStandby, nil, nil)
	if ack.LastForwarded == nil || *ack.LastForwarded != 1019 {
		t.Fatalf("standby answered %+v; want last forwarded 1019", ack)
	}
	snd.send(t, 30)
	testutil.Eventually(t, 5*time.Second, "the standby stream to count its input", func() bool {
		sr := tw.stream(1)
		return sr.Counters.PacketsIn == 50 && sr.Ring == 30 && sr.Role == roleStandby
	})
	if !out.quiet(100 * time.Millisecond) {
		t.Fatal("a standby stream sent a packet")
	}
	if sr := tw.stream(1); sr.Counters.PacketsOut != 20 {
		t.Fatalf("standby: packets out %d, want 20", sr.Counters.PacketsOut)
	}

	from := *ack.LastForwarded + 1
	ack = tw.role(1, RoleForward, &from, nil)
	if ack.Replayed != 30 {
		t.Fatalf("forward from %d answered %+v; want 30 replayed", from, ack)
	}
	snd.send(t, 10)
	rest := out.take(t, 40)
	all := append(first, rest...)
	for i := 1; i < len(all); i++ {
		if all[i] != all[i-1]+1 {
			t.Fatalf("output numbering breaks at %d: %v", i, all)
		}
	}
	if !out.quiet(100 * time.Millisecond) {
		t.Fatal("more packets than were sent: duplicates")
	}
	testutil.Eventually(t, 5*time.Second, "the counters after forward", func() bool {
		sr := tw.stream(1)
		return sr.Counters.PacketsOut == 60 && sr.Counters.Replayed == 30 && sr.LastFwd == 1059 && sr.Role == roleForward
	})
}

// TestForwardFromSkipsWhatWasSent: forward from a sequence number later than
// what the ring holds forwards nothing before it.
func TestForwardFromSkipsWhatWasSent(t *testing.T) {
	tw := startTestWorker(t, time.Second)
	in, inAddr := udpIn(t)
	out := newSink(t)
	tw.add(1, in, []netip.AddrPort{out.addr}, nil, RoleStandby)
	snd := newSender(t, inAddr)
	snd.send(t, 10) // 1000..1009, kept
	testutil.Eventually(t, 5*time.Second, "the ring to fill", func() bool { return tw.stream(1).Ring == 10 })
	from := uint16(1015) // the peer forwarded up to 1014
	ack := tw.role(1, RoleForward, &from, nil)
	if ack.Replayed != 0 {
		t.Fatalf("replayed %d, want 0", ack.Replayed)
	}
	snd.send(t, 10) // 1010..1019: only 1015.. go out
	got := out.take(t, 5)
	if got[0] != 1015 || got[4] != 1019 {
		t.Fatalf("forwarded %v, want 1015..1019", got)
	}
	if !out.quiet(100 * time.Millisecond) {
		t.Fatal("forwarded packets before the starting sequence number")
	}
	testutil.Eventually(t, 5*time.Second, "the skipped count", func() bool { return tw.stream(1).Counters.Skipped == 5 })
}

// TestWorkerFatalIsExplained: a worker that cannot go on says why before it
// exits, so the reason reaches the parent and not only stderr.
func TestWorkerFatalIsExplained(t *testing.T) {
	tw := startTestWorker(t, 0)
	if err := tw.fw.write('Z', []byte("?"), nil); err != nil {
		t.Fatal(err)
	}
	for {
		typ, body := tw.frame()
		if typ == msgReport {
			continue
		}
		if typ != msgFatal || !strings.Contains(string(body), "unexpected message type") {
			t.Fatalf("worker said %q %s", typ, body)
		}
		break
	}
	if err := tw.cmd.Wait(); err == nil {
		t.Fatal("the worker exited 0 after a protocol fault")
	}
}
