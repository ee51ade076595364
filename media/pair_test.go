package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"golang.org/x/sys/unix"

	"appliance/internal/testutil"
	"appliance/supervisor"
)

// The tests here run Managers with real worker processes, on loopback: one
// Manager is one unit of a pair.

// runManager starts a Manager under a supervisor, with test defaults for
// what o leaves zero, and waits until every stream is carried.
func runManager(t *testing.T, o Options) *Manager {
	t.Helper()
	if o.Workers == 0 {
		o.Workers = 1
	}
	o.HangTimeout = 10 * time.Second
	if o.ReportInterval == 0 {
		o.ReportInterval = 50 * time.Millisecond
	}
	if o.ProgressInterval == 0 {
		o.ProgressInterval = 5 * time.Millisecond
	}
	o.StandbyRing = time.Second
	if o.BatchWindow == 0 {
		o.BatchWindow = testBatchWindow(t)
	}
	o.Command = []string{os.Args[0], "-test.run=^$"}
	o.Env = []string{benchChildEnv + "=worker"}
	m, err := NewManager(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close) // after the workers have stopped: cleanups run last first
	sup := supervisor.New(supervisor.Spec{Name: "media", Logger: slog.New(slog.DiscardHandler)}, m.Children()...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.Eventually(t, 10*time.Second, "the streams to be carried", func() bool {
		for _, p := range m.ProgressOf(nil) {
			if !p.Carried {
				return false
			}
		}
		return true
	})
	return m
}

// inputAddr is where a stream's input was bound (specs ask for port 0).
func inputAddr(t *testing.T, m *Manager, name string) netip.AddrPort {
	t.Helper()
	m.mu.Lock()
	fd := m.byName[name].inputFD
	m.mu.Unlock()
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	in4 := sa.(*unix.SockaddrInet4)
	return netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port))
}

func progressOf(m *Manager, name string) Progress {
	for _, p := range m.ProgressOf(nil) {
		if p.Name == name {
			return p
		}
	}
	return Progress{}
}

func setRoles(t *testing.T, m *Manager, changes ...RoleChange) []RoleResult {
	t.Helper()
	var res []RoleResult
	for i, o := range m.SetRoles(context.Background(), changes) {
		if o.Err != nil {
			t.Fatalf("role change %+v: %v", changes[i], o.Err)
		}
		res = append(res, o.Result)
	}
	return res
}

// packetSink records whole datagrams.
type packetSink struct {
	addr netip.AddrPort
	pkts chan []byte
}

func newPacketSink(t *testing.T) *packetSink {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	setReceiveBuffer(c, 4<<20)
	s := &packetSink{addr: c.LocalAddr().(*net.UDPAddr).AddrPort(), pkts: make(chan []byte, 100000)}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			s.pkts <- append([]byte(nil), buf[:n]...)
		}
	}()
	t.Cleanup(func() { c.Close() })
	return s
}

func (s *packetSink) take(t *testing.T, n int) []rtp.Packet {
	t.Helper()
	out := make([]rtp.Packet, 0, n)
	for len(out) < n {
		select {
		case b := <-s.pkts:
			var p rtp.Packet
			if err := p.Unmarshal(b); err != nil {
				t.Fatalf("received a datagram that is not RTP: %v", err)
			}
			p.Raw = b
			out = append(out, p)
		case <-time.After(5 * time.Second):
			t.Fatalf("received %d of %d packets", len(out), n)
		}
	}
	return out
}

func (s *packetSink) quiet(d time.Duration) bool {
	select {
	case <-s.pkts:
		return false
	case <-time.After(d):
		return true
	}
}

// feedSender is a source feeding the same packets to several inputs, as
// the pair's two units receive one stream.
type feedSender struct {
	c    *net.UDPConn
	to   []netip.AddrPort
	ssrc uint32
	seq  uint16
	ts   uint32
}

func newFeedSender(t *testing.T, to ...netip.AddrPort) *feedSender {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &feedSender{c: c, to: to, ssrc: 0xaaaa, seq: 1000, ts: 90000}
}

func (s *feedSender) send(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		b := rtpPacket(t, s.seq, s.ts, s.ssrc, 96, []byte{byte(s.seq), byte(s.seq >> 8), 0xee})
		for _, to := range s.to {
			if _, err := s.c.WriteToUDPAddrPort(b, to); err != nil {
				t.Fatal(err)
			}
		}
		s.seq++
		s.ts += 90
	}
}

// restart makes the source start again with a new SSRC and numbering, so
// that a rewriting stream moves its offsets away from zero.
func (s *feedSender) restart() { s.ssrc, s.seq, s.ts = 0xbbbb, 40000, 12345 }

// TestSetRolesManyStreamsOnManyWorkers: one call switches streams on two
// workers, answers each change on its own, and fails only the changes that
// cannot be made.
func TestSetRolesManyStreamsOnManyWorkers(t *testing.T) {
	out1, out2 := newSink(t), newSink(t)
	busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	m := runManager(t, Options{Workers: 2, Streams: []StreamSpec{
		{Name: "s1", Input: lo, Outputs: []netip.AddrPort{out1.addr}, ClockRate: 90000},
		{Name: "s2", Input: lo, Outputs: []netip.AddrPort{out2.addr}, ClockRate: 90000},
	}})
	if _, err := m.Apply(context.Background(), append(specsOf(m), StreamSpec{Name: "unbound",
		Input: busy.LocalAddr().(*net.UDPAddr).AddrPort(), Outputs: []netip.AddrPort{out1.addr}, ClockRate: 90000})); err != nil {
		t.Fatal(err)
	}
	if st := m.Streams(); st[0].Worker == st[1].Worker {
		t.Fatalf("both streams on worker %d; the test needs two", st[0].Worker)
	}
	snd1, snd2 := newSender(t, inputAddr(t, m, "s1")), newSender(t, inputAddr(t, m, "s2"))
	snd1.send(t, 10)
	snd2.send(t, 10)
	first1, first2 := out1.take(t, 10), out2.take(t, 10)

	outs := m.SetRoles(context.Background(), []RoleChange{
		{Name: "s1", Role: RoleStandby},
		{Name: "s2", Role: RoleStandby},
		{Name: "nosuch", Role: RoleStandby},
		{Name: "unbound", Role: RoleStandby},
		{Name: "s1", Role: RoleForward},
		{Name: "s2", Role: RoleStandby, From: new(uint16(3))},
	})
	for i, name := range []string{"s1", "s2"} {
		if o := outs[i]; o.Err != nil || o.Result.LastForwarded == nil || *o.Result.LastForwarded != 1009 {
			t.Errorf("%s to standby: %+v, want last forwarded 1009", name, o)
		}
	}
	if !errors.Is(outs[2].Err, ErrNoStream) {
		t.Errorf("an unknown stream: %v, want ErrNoStream", outs[2].Err)
	}
	if !errors.Is(outs[3].Err, ErrNotCarried) {
		t.Errorf("a stream whose input is taken: %v, want ErrNotCarried", outs[3].Err)
	}
	if outs[4].Err == nil || outs[5].Err == nil {
		t.Errorf("a stream listed twice and a start with standby were accepted: %v, %v", outs[4].Err, outs[5].Err)
	}

	snd1.send(t, 10)
	snd2.send(t, 10)
	testutil.Eventually(t, 5*time.Second, "both rings to hold 1010..1019", func() bool {
		for _, name := range []string{"s1", "s2"} {
			p := progressOf(m, name)
			if p.Role != RoleStandby || p.RingPackets != 10 || p.RingFirst != 1010 || p.RingLast != 1019 {
				return false
			}
		}
		return true
	})
	if !out1.quiet(50*time.Millisecond) || !out2.quiet(0) {
		t.Fatal("a standby stream sent")
	}

	from := uint16(1010)
	for i, r := range setRoles(t, m, RoleChange{Name: "s1", Role: RoleForward, From: &from}, RoleChange{Name: "s2", Role: RoleForward, From: &from}) {
		if r.Replayed != 10 || r.FromIgnored {
			t.Errorf("stream %d forward from 1010: %+v, want 10 replayed", i+1, r)
		}
	}
	snd1.send(t, 5)
	snd2.send(t, 5)
	for _, c := range []struct {
		first []uint16
		s     *sink
	}{{first1, out1}, {first2, out2}} {
		all := append(c.first, c.s.take(t, 15)...)
		for i := range all {
			if all[i] != uint16(1000+i) {
				t.Fatalf("output %v: want 1000..1024 without gap or duplicate", all)
			}
		}
	}

	// A starting number from another numbering is ignored, and counted.
	far := uint16(30000)
	setRoles(t, m, RoleChange{Name: "s1", Role: RoleStandby})
	if r := setRoles(t, m, RoleChange{Name: "s1", Role: RoleForward, From: &far})[0]; !r.FromIgnored || r.Replayed != 0 {
		t.Fatalf("forward from %d answered %+v; want it ignored", far, r)
	}
	snd1.send(t, 1)
	if got := out1.take(t, 1); got[0] != 1025 {
		t.Fatalf("after an ignored start the next packet out is %d, want 1025", got[0])
	}
	testutil.Eventually(t, 5*time.Second, "from_ignored in the status", func() bool {
		return m.Streams()[0].FromIgnored == 1
	})
}

func specsOf(m *Manager) []StreamSpec {
	var out []StreamSpec
	for _, st := range *m.table.Load() {
		out = append(out, *st.spec.Load())
	}
	return out
}

// pairRig is two units fed the same stream, rewriting its SSRC, both
// sending to one receiver: unit a forwards, unit b is in standby. The source
// restarted once, so a's offsets are not zero and b cannot continue a's
// numbering by chance.
type pairRig struct {
	a, b *Manager
	src  *feedSender
	out  *packetSink
	got  []rtp.Packet
}

func newPairRig(t *testing.T) *pairRig {
	t.Helper()
	out := newPacketSink(t)
	ssrc := uint32(0x5151)
	spec := StreamSpec{Name: "cam", Input: netip.MustParseAddrPort("127.0.0.1:0"), Outputs: []netip.AddrPort{out.addr}, ClockRate: 90000, RewriteSSRC: &ssrc}
	r := &pairRig{a: runManager(t, Options{Streams: []StreamSpec{spec}}), b: runManager(t, Options{Streams: []StreamSpec{spec}}), out: out}
	setRoles(t, r.b, RoleChange{Name: "cam", Role: RoleStandby})
	r.src = newFeedSender(t, inputAddr(t, r.a, "cam"), inputAddr(t, r.b, "cam"))
	r.src.send(t, 10)
	r.got = out.take(t, 10)
	r.src.restart()
	r.send(t, 20)
	r.got = append(r.got, out.take(t, 20)...)
	if p := progressOf(r.a, "cam"); p.Cont.SeqOffset == 0 || !p.Cont.Valid {
		t.Fatalf("unit a's offsets did not move after the source restarted: %+v", p.Cont)
	}
	return r
}

// send sends n packets and waits until unit a has forwarded them (if it
// forwards) and unit b holds them (if in standby), as their progress says.
func (r *pairRig) send(t *testing.T, n int) {
	t.Helper()
	r.src.send(t, n)
	last := r.src.seq - 1
	testutil.Eventually(t, 5*time.Second, "both units' progress", func() bool {
		for _, m := range []*Manager{r.a, r.b} {
			p := progressOf(m, "cam")
			if p.Role == RoleForward && (!p.HaveForwarded || p.LastForwarded != last) {
				return false
			}
			if p.Role == RoleStandby && p.RingLast != last {
				return false
			}
		}
		return true
	})
}

// check asserts what the receiver saw: one SSRC; each sequence number's
// copies byte for byte the same; the distinct numbers consecutive, with
// timestamps 90 apart, from the first after the source restart; and
// duplicates exactly dups.
func (r *pairRig) check(t *testing.T, dups int) {
	t.Helper()
	bySeq := map[uint16][]byte{}
	var order []rtp.Packet
	seen := 0
	for _, p := range r.got {
		if p.SSRC != 0x5151 {
			t.Fatalf("output SSRC %#x, want 0x5151 throughout", p.SSRC)
		}
		if prev, ok := bySeq[p.SequenceNumber]; ok {
			if !bytes.Equal(prev, p.Raw) {
				t.Fatalf("two different packets numbered %d:\n% x\n% x", p.SequenceNumber, prev, p.Raw)
			}
			seen++
			continue
		}
		bySeq[p.SequenceNumber] = p.Raw
		order = append(order, p)
	}
	if seen != dups {
		t.Errorf("%d duplicates, want %d", seen, dups)
	}
	for i := 1; i < len(order); i++ {
		a, b := order[i-1], order[i]
		if b.SequenceNumber != a.SequenceNumber+1 {
			t.Fatalf("output numbering breaks after %d: %d", a.SequenceNumber, b.SequenceNumber)
		}
		if i != 10 && b.Timestamp != a.Timestamp+90 { // 10: where the source restarted
			t.Fatalf("output timestamp after %d steps by %d, want 90", a.Timestamp, b.Timestamp-a.Timestamp)
		}
	}
}

// TestPlannedHandoverContinuesNumbering: unit a stops, unit b forwards from
// the next input packet adopting a's numbering: the receiver sees one
// stream, no gap, no duplicate.
func TestPlannedHandoverContinuesNumbering(t *testing.T) {
	r := newPairRig(t)
	pa := progressOf(r.a, "cam")
	if ra := setRoles(t, r.a, RoleChange{Name: "cam", Role: RoleStandby})[0]; ra.LastForwarded == nil || *ra.LastForwarded != pa.LastForwarded {
		t.Fatalf("unit a stopped at %v; its progress said %d", ra.LastForwarded, pa.LastForwarded)
	}
	from := pa.LastForwarded + 1
	if rb := setRoles(t, r.b, RoleChange{Name: "cam", Role: RoleForward, From: &from, Cont: &pa.Cont})[0]; rb.Replayed != 0 || rb.FromIgnored {
		t.Fatalf("unit b answered %+v; nothing to replay", rb)
	}
	r.send(t, 30)
	r.got = append(r.got, r.out.take(t, 30)...)
	if !r.out.quiet(100 * time.Millisecond) {
		t.Fatal("more packets than were sent")
	}
	r.check(t, 0)
	// b's numbering is now a's: had a's been lost, b's worker restarting
	// would carry it on.
	testutil.Eventually(t, 5*time.Second, "unit b's progress", func() bool {
		pb := progressOf(r.b, "cam")
		return pb.Role == RoleForward && pb.Cont.SeqOffset == pa.Cont.SeqOffset && pb.Cont.TSOffset == pa.Cont.TSOffset
	})
}

// TestUnplannedTakeoverDuplicatesOnly: unit a forwards a few packets past
// the progress it last reported, then stops; unit b starts from that
// progress. The receiver sees those packets twice, identical to the byte,
// and nothing else out of line.
func TestUnplannedTakeoverDuplicatesOnly(t *testing.T) {
	r := newPairRig(t)
	pa := progressOf(r.a, "cam")
	r.send(t, 5)
	r.got = append(r.got, r.out.take(t, 5)...)
	setRoles(t, r.a, RoleChange{Name: "cam", Role: RoleStandby})
	from := pa.LastForwarded + 1
	if rb := setRoles(t, r.b, RoleChange{Name: "cam", Role: RoleForward, From: &from, Cont: &pa.Cont})[0]; rb.Replayed != 5 {
		t.Fatalf("unit b replayed %d packets, want the 5 a sent after its progress", rb.Replayed)
	}
	r.send(t, 20)
	r.got = append(r.got, r.out.take(t, 25)...)
	if !r.out.quiet(100 * time.Millisecond) {
		t.Fatal("more packets than the duplicates expected")
	}
	r.check(t, 5)
}

// TestProgressIsFresh: what a stream forwards shows in ProgressOf within a
// few progress intervals (the bound leaves room for a loaded machine), with
// reports five times further apart than that bound.
func TestProgressIsFresh(t *testing.T) {
	out := newSink(t)
	const interval = 5 * time.Millisecond
	m := runManager(t, Options{ReportInterval: time.Second, ProgressInterval: interval, Streams: []StreamSpec{
		{Name: "s", Input: netip.MustParseAddrPort("127.0.0.1:0"), Outputs: []netip.AddrPort{out.addr}, ClockRate: 90000}}})
	snd := newSender(t, inputAddr(t, m, "s"))
	dst := make([]Progress, 0, 1)
	for i := 0; i < 20; i++ {
		snd.send(t, 1)
		want := snd.seq - 1
		testutil.Eventually(t, 40*interval, "the packet forwarded in ProgressOf", func() bool {
			dst = m.ProgressOf(dst)
			return dst[0].HaveForwarded && dst[0].LastForwarded == want
		})
		if p := dst[0]; !p.Carried || p.Role != RoleForward || p.InputAge < 0 || p.InputAge > time.Second || !p.Cont.Valid || p.Cont.LastInSeq != want {
			t.Fatalf("progress %+v", p)
		}
	}
}

// TestFreeBindInput: a stream on an address the machine does not have
// starts, in standby, without error; without FreeBind it cannot.
func TestFreeBindInput(t *testing.T) {
	testutil.NeedRoot(t, "IP_FREEBIND on an address the machine does not have, as the unit runs")
	probe, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.SetsockoptInt(probe, unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
	unix.Close(probe)
	if err != nil {
		t.Skipf("IP_FREEBIND is not supported here: %v", err)
	}
	vip := netip.MustParseAddrPort("198.18.77.1:5004")
	if c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(vip)); err == nil {
		c.Close()
		t.Skipf("%v can be bound without IP_FREEBIND (the address is here, or net.ipv4.ip_nonlocal_bind is set)", vip)
	}
	out := newSink(t)
	spec := StreamSpec{Name: "vip", Input: vip, Outputs: []netip.AddrPort{out.addr}, ClockRate: 90000}
	m := runManager(t, Options{Streams: []StreamSpec{{Name: "lo", Input: netip.MustParseAddrPort("127.0.0.1:0"), Outputs: []netip.AddrPort{out.addr}, ClockRate: 90000}}})

	res, err := m.Apply(context.Background(), append(specsOf(m), spec))
	if err != nil || res.Failed["vip"] == "" {
		t.Fatalf("without FreeBind: %+v, %v; want the stream failed", res, err)
	}
	spec.FreeBind = true
	res, err = m.Apply(context.Background(), append(specsOf(m)[:1], spec))
	if err != nil || len(res.Failed) != 0 || len(res.Changed) != 1 {
		t.Fatalf("with FreeBind: %+v, %v; want the stream replaced and carried", res, err)
	}
	setRoles(t, m, RoleChange{Name: "vip", Role: RoleStandby})
	testutil.Eventually(t, 5*time.Second, "the stream in standby on its worker", func() bool {
		p := progressOf(m, "vip")
		return p.Carried && p.Role == RoleStandby
	})
	if s := m.Streams()[1]; s.State == "failed" || s.Error != "" || s.WorkerPID == 0 {
		t.Fatalf("status %+v", s)
	}
}

// TestResumedWorkerHoldsUntilConfirmed: a worker stopped and resumed (the
// unit's SIGSTOP, a paused machine) does not forward what queued in its
// socket meanwhile: it holds the stream in its ring and names it, with the
// last packet it forwarded, until the parent confirms it; then the stream
// goes on from the next packet, nothing lost and nothing twice.
func TestResumedWorkerHoldsUntilConfirmed(t *testing.T) {
	out := newSink(t)
	held := make(chan []Held, 4)
	m := runManager(t, Options{OnHeld: func(h []Held) { held <- h }, Streams: []StreamSpec{
		{Name: "s", Input: netip.MustParseAddrPort("127.0.0.1:0"), Outputs: []netip.AddrPort{out.addr}, ClockRate: 90000}}})
	snd := newSender(t, inputAddr(t, m, "s"))
	snd.send(t, 10)
	got := out.take(t, 10)
	ws := m.Workers()
	if len(ws) != 1 || ws[0].PID == 0 {
		t.Fatalf("workers %+v", ws)
	}
	pid := ws[0].PID
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the worker stopped", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err == nil && strings.Contains(string(b), ") T ")
	})
	snd.send(t, 20)                    // queued in the socket
	time.Sleep(700 * time.Millisecond) // the stop under test (over stallAfter), not a wait for an event
	if err := unix.Kill(pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	var h []Held
	select {
	case h = <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the resumed worker named no held stream")
	}
	if len(h) != 1 || h[0].Name != "s" || !h[0].HasLast || h[0].LastForwarded != snd.seq-21 {
		t.Fatalf("held %+v, want stream s, last forwarded %d", h, snd.seq-21)
	}
	if !out.quiet(200 * time.Millisecond) {
		t.Fatal("the resumed worker forwarded its backlog before the parent confirmed the stream")
	}
	if p := m.ProgressOf(nil); p[0].Role != RoleStandby {
		t.Fatalf("the parent sees role %s for a held stream", p[0].Role)
	}
	m.Reforward(h)
	rest := out.take(t, 20)
	for i, seq := range rest {
		if want := got[9] + 1 + uint16(i); seq != want {
			t.Fatalf("after the confirmation, packet %d is %d, want %d: %v", i, seq, want, rest)
		}
	}
	if !out.quiet(100 * time.Millisecond) {
		t.Fatal("packets beyond the backlog: duplicates")
	}
}
