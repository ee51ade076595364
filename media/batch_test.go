package media

import (
	"bytes"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"appliance/internal/clock"
)

// A packet sequence, as a source (or an attacker) might send it.
type packetSeq struct {
	name    string
	rewrite bool // rewrite the SSRC: then no sequence here may rebase, whose timestamp step depends on timing
	pkts    [][]byte
}

func equivalenceSequences(t *testing.T) []packetSeq {
	t.Helper()
	pkt := func(seq uint16, ssrc uint32) []byte {
		return rtpPacket(t, seq, uint32(seq)*3000, ssrc, 96, []byte("payload of a test packet"))
	}
	ts := func(seq uint16, ccs ...uint8) []byte {
		return rtpPacket(t, seq, uint32(seq)*3000, 0x7575, PayloadTypeMP2T, tsPayload(0x100, ccs...))
	}
	var reordered, duplicated, malformed, mpegts, jumps, mixed [][]byte
	for i := uint16(0); i < 100; i++ {
		reordered = append(reordered, pkt(1000+i, 0xaaaa))
		if i%7 == 6 {
			n := len(reordered)
			reordered[n-1], reordered[n-2] = reordered[n-2], reordered[n-1]
		}
	}
	reordered[10], reordered[15] = reordered[15], reordered[10] // five late
	for i := uint16(0); i < 80; i++ {
		duplicated = append(duplicated, pkt(2000+i, 0xbbbb))
		if i%5 == 0 {
			duplicated = append(duplicated, pkt(2000+i, 0xbbbb))
		}
		if i == 40 {
			duplicated = append(duplicated, pkt(2010, 0xbbbb)) // long after
		}
	}
	good := pkt(1, 1)
	v1 := bytes.Clone(good)
	v1[0] = 0x40
	csrcPastEnd := bytes.Clone(good[:12])
	csrcPastEnd[0] |= 0x0f
	extPastEnd := bytes.Clone(good[:12])
	extPastEnd[0] |= 0x10
	padZero := bytes.Clone(good)
	padZero[0] |= 0x20
	padZero[len(padZero)-1] = 0
	oversize := append(bytes.Clone(good), make([]byte, MaxDatagram+1-len(good))...)
	bad := [][]byte{{}, good[:11], v1, []byte("GET / HTTP/1.1\r\n\r\n"), csrcPastEnd, extPastEnd, padZero,
		oversize, make([]byte, 2000), make([]byte, 9000)}
	for i := uint16(0); i < 60; i++ {
		malformed = append(malformed, pkt(3000+i, 0xcccc))
		if i%6 == 0 {
			malformed = append(malformed, bad[int(i/6)%len(bad)])
		}
	}
	cc := uint8(0)
	for i := uint16(0); i < 70; i++ {
		ccs := make([]uint8, 7)
		for j := range ccs {
			ccs[j] = cc & 0xf
			cc++
		}
		if i%9 == 4 {
			ccs[3] += 2 // a continuity counter error
		}
		p := ts(4000+i, ccs...)
		if i == 33 {
			p[12+2*tsPacketSize] = 0x46 // a lost sync byte
		}
		mpegts = append(mpegts, p)
	}
	// Loss, a jump far ahead (a discontinuity) and a new source: passed
	// through, so the output depends on the packets only.
	for i := uint16(0); i < 90; i++ {
		switch {
		case i%11 == 3:
			continue // lost
		case i < 30:
			jumps = append(jumps, pkt(5000+i, 0xdddd))
		case i < 60:
			jumps = append(jumps, pkt(30000+i, 0xdddd))
		default:
			jumps = append(jumps, pkt(100+i, 0xeeee))
		}
	}
	// Everything at once, from a seed, passed through.
	rnd := rand.New(rand.NewPCG(11, 12))
	seq := uint16(65500) // wraps
	for range 300 {
		switch k := rnd.IntN(20); {
		case k == 0:
			mixed = append(mixed, bad[rnd.IntN(len(bad))])
		case k == 1 && len(mixed) > 0:
			mixed = append(mixed, mixed[rnd.IntN(len(mixed))])
		case k == 2:
			seq += uint16(1 + rnd.IntN(5))
		case k == 3 && len(mixed) > 1:
			n := len(mixed)
			mixed[n-1], mixed[n-2] = mixed[n-2], mixed[n-1]
		default:
			mixed = append(mixed, ts(seq, uint8(seq), uint8(seq)+1, uint8(seq)+2))
			seq++
		}
	}
	return []packetSeq{
		{"reordered", true, reordered},
		{"duplicated", true, duplicated},
		{"malformed", true, malformed},
		{"mpeg-ts cc errors", true, mpegts},
		{"loss, jump and new source", false, jumps},
		{"mixed", false, mixed},
	}
}

// rawSink keeps every datagram it receives, whole.
type rawSink struct {
	addr netip.AddrPort
	got  chan []byte
}

func newRawSink(t *testing.T) *rawSink {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	setReceiveBuffer(c, 4<<20)
	s := &rawSink{addr: c.LocalAddr().(*net.UDPAddr).AddrPort(), got: make(chan []byte, 10000)}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			s.got <- bytes.Clone(buf[:n])
		}
	}()
	t.Cleanup(func() { c.Close() })
	return s
}

type relayedSeq struct {
	c   Counters
	out [][]byte
}

// relaySequences queues every sequence in its own input before the worker
// takes it, so that a batching worker finds full batches, and returns what
// each stream counted and sent.
func relaySequences(t *testing.T, window time.Duration, seqs []packetSeq) []relayedSeq {
	t.Helper()
	tw := startTestWorkerWindow(t, 0, window)
	sinks := make([]*rawSink, len(seqs))
	for i, sq := range seqs {
		in, inAddr := udpIn(t)
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(inAddr))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range sq.pkts {
			if _, err := c.Write(p); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
		sinks[i] = newRawSink(t)
		var ssrc *uint32
		if sq.rewrite {
			v := uint32(0x1234)
			ssrc = &v
		}
		tw.add(uint32(i), in, []netip.AddrPort{sinks[i].addr}, ssrc, RoleForward)
	}
	res := make([]relayedSeq, len(seqs))
	deadline := time.Now().Add(10 * time.Second)
	for done := 0; done < len(seqs); {
		if time.Now().After(deadline) {
			t.Fatalf("window %v: the worker did not take every packet in 10s: %+v", window, res)
		}
		done = 0
		for _, sr := range tw.report().Streams {
			res[sr.SID].c = sr.Counters
			if sr.Counters.PacketsIn+sr.Counters.Malformed == uint64(len(seqs[sr.SID].pkts)) {
				done++
			}
		}
	}
	for i := range seqs {
		want := int(res[i].c.PacketsOut)
		for len(res[i].out) < want {
			select {
			case b := <-sinks[i].got:
				res[i].out = append(res[i].out, b)
			case <-time.After(5 * time.Second):
				t.Fatalf("window %v, %s: %d of %d datagrams reached the output", window, seqs[i].name, len(res[i].out), want)
			}
		}
	}
	return res
}

// TestBatchEquivalence relays the same packet sequences through a worker
// that reads per packet and one that reads in batches: the counters and the
// output are the same, datagram for datagram. The jitter gauge is left out:
// it depends on when the datagrams arrived, which differs between two runs
// (TestBatchArrivalTimes checks a batch keeps each datagram's own).
func TestBatchEquivalence(t *testing.T) {
	t.Parallel()
	seqs := equivalenceSequences(t)
	perPacket := relaySequences(t, 0, seqs)
	batched := relaySequences(t, time.Millisecond, seqs)
	for i, sq := range seqs {
		a, b := perPacket[i], batched[i]
		a.c.JitterMs, b.c.JitterMs = 0, 0
		if a.c != b.c {
			t.Errorf("%s: counters differ\nper packet %+v\nbatched    %+v", sq.name, a.c, b.c)
		}
		if a.c.PacketsIn == 0 || a.c.PacketsOut == 0 {
			t.Errorf("%s: nothing relayed: %+v", sq.name, a.c)
		}
		for j := range min(len(a.out), len(b.out)) {
			if !bytes.Equal(a.out[j], b.out[j]) {
				t.Errorf("%s: output datagram %d differs\nper packet %d bytes % x\nbatched    %d bytes % x", sq.name, j,
					len(a.out[j]), a.out[j][:min(len(a.out[j]), 16)], len(b.out[j]), b.out[j][:min(len(b.out[j]), 16)])
				break
			}
		}
	}
	// The sequences do hit what they are named after.
	c := func(name string) Counters {
		for i, sq := range seqs {
			if sq.name == name {
				return perPacket[i].c
			}
		}
		t.Fatalf("no sequence %q", name)
		return Counters{}
	}
	if c("reordered").Reordered == 0 || c("duplicated").Duplicates == 0 || c("mpeg-ts cc errors").CCErrors == 0 ||
		c("mpeg-ts cc errors").TSSyncErrors == 0 || c("loss, jump and new source").SSRCChanges == 0 ||
		c("loss, jump and new source").Discontinuities == 0 || c("loss, jump and new source").Lost == 0 {
		t.Errorf("a sequence misses its point: %+v", perPacket)
	}
	m := c("malformed")
	if m.MalformedShort == 0 || m.MalformedVer == 0 || m.MalformedHeader == 0 || m.MalformedBig < 3 {
		t.Errorf("malformed sequence: %+v", m)
	}
}

// TestBatchReaderReadsQueued: what queued is read in batches of at most
// batchMax, each datagram whole with its real length, an oversize one seen
// as such.
func TestBatchReaderReadsQueued(t *testing.T) {
	t.Parallel()
	in, inAddr := udpIn(t)
	fd := dupFD(t, in)
	defer unix.Close(fd)
	br := newBatchReader(batchMax, readBufSize)
	snd, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(inAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	const total = 2*batchMax + 5
	sizes := make([]int, total)
	for i := range total {
		sizes[i] = 12 + i
		if i == batchMax+1 {
			sizes[i] = 4000
		}
		b := make([]byte, sizes[i])
		b[0] = byte(i)
		if _, err := snd.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	var got []int
	for len(got) < total {
		n, err := br.read(fd)
		if err != nil {
			t.Fatal(err)
		}
		if n < 1 || n > batchMax || len(got) == 0 && n != batchMax {
			t.Fatalf("a read of %d datagrams after %d, with %d queued", n, len(got), total)
		}
		for i := range n {
			if br.bufs[i][0] != byte(len(got)) {
				t.Fatalf("datagram %d read as %d", len(got), br.bufs[i][0])
			}
			got = append(got, br.lens[i])
		}
	}
	for i := range total {
		if got[i] != sizes[i] {
			t.Errorf("datagram %d: length %d, want %d", i, got[i], sizes[i])
		}
	}
	if got[batchMax+1] <= MaxDatagram {
		t.Errorf("the oversize datagram's length reads as %d", got[batchMax+1])
	}
}

// TestBatchPathAllocs: reading a batch and relaying it allocates nothing.
func TestBatchPathAllocs(t *testing.T) {
	in, inAddr := udpIn(t)
	// An output nobody reads: a reader here would allocate, and count.
	out, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	ssrc := uint32(9)
	s, err := openWorkerStream(addStream{streamConfig: streamConfig{SID: 1, Name: "a", Outputs: []netip.AddrPort{out.LocalAddr().(*net.UDPAddr).AddrPort()},
		ClockRate: 90000, RewriteSSRC: &ssrc}, Role: RoleForward}, dupFD(t, in), 0, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	s.w = &workerProc{}
	s.w.alive.Store(int64(clock.Mono()))
	defer s.close()
	snd, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(inAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	pkts := make([][]byte, batchMax)
	seq := uint16(0)
	allocs := testing.AllocsPerRun(50, func() {
		for i := range pkts {
			pkts[i] = rtpPacketInto(pkts[i], seq)
			seq++
			_, _ = snd.Write(pkts[i])
		}
		for got := 0; got < batchMax; {
			n, err := s.brd.read(s.fd)
			if err != nil {
				t.Fatal(err)
			}
			s.mu.Lock()
			s.handleBatchLocked(n, realtimeOffset())
			s.mu.Unlock()
			got += n
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per batch of %d", allocs, batchMax)
	}
	if st := s.r.state(); st.c.PacketsOut == 0 || st.c.Malformed != 0 {
		t.Errorf("counters %+v", st.c)
	}
}

// rtpPacketInto writes a 200-byte RTP packet numbered seq into b (made once).
func rtpPacketInto(b []byte, seq uint16) []byte {
	if b == nil {
		b = make([]byte, 200)
	}
	b[0], b[1] = 0x80, 96
	b[2], b[3] = byte(seq>>8), byte(seq)
	b[8], b[9], b[10], b[11] = 0, 0, 0, 7
	return b
}

// dupFD returns a descriptor of f's socket for a stream to own.
func dupFD(t *testing.T, f *os.File) int {
	t.Helper()
	c, err := net.FilePacketConn(f)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.Dup(int(fd)) }); err != nil || derr != nil {
		t.Fatal(err, derr)
	}
	return nfd
}

// A window out of range is refused by the worker and by the manager.
func TestBatchWindowBounds(t *testing.T) {
	t.Parallel()
	for _, w := range []time.Duration{-1, maxBatchWindow + 1} {
		h := helloMsg{Version: protocolVersion, ReportIntervalNs: 1, ProgressIntervalNs: 1, BatchWindowNs: int64(w)}
		if err := checkHello(&h); err == nil {
			t.Errorf("hello with a batch window of %v accepted", w)
		}
		_, err := NewManager(Options{Workers: 1, HangTimeout: time.Second, ReportInterval: time.Second, ProgressInterval: time.Second,
			BatchWindow: w, Command: []string{"true"}})
		if err == nil {
			t.Errorf("manager with a batch window of %v accepted", w)
		}
	}
	for _, w := range []time.Duration{0, maxBatchWindow} {
		h := helloMsg{Version: protocolVersion, ReportIntervalNs: 1, ProgressIntervalNs: 1, BatchWindowNs: int64(w)}
		if err := checkHello(&h); err != nil {
			t.Errorf("hello with a batch window of %v: %v", w, err)
		}
	}
}

// sendRun counts per datagram, whichever way the run leaves.
func TestSendRunCountsPerDatagram(t *testing.T) {
	t.Parallel()
	const seg, count = 200, 4
	run := make([]byte, seg*count)
	for i := range count {
		run[i*seg] = byte(i)
	}
	g := newGSOSender()
	for _, noGSO := range []bool{false, true} {
		s := newRawSink(t)
		o := newOutput(s.addr, 0)
		o.noGSO = noGSO
		if failed := o.sendRun(g, run, seg, count, 0); failed != 0 || o.packets != count || o.errors != 0 {
			t.Errorf("noGSO %v: failed %b, packets %d, errors %d", noGSO, failed, o.packets, o.errors)
		}
		for i := range count {
			select {
			case b := <-s.got:
				if len(b) != seg || b[0] != byte(i) {
					t.Errorf("noGSO %v: datagram %d is %d bytes starting %d", noGSO, i, len(b), b[0])
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("noGSO %v: %d of %d datagrams arrived", noGSO, i, count)
			}
		}
		o.close()
	}
	down := &output{fd: -1}
	if failed := down.sendRun(g, run, seg, count, 0); failed != 1<<count-1 || down.errors != count || down.packets != 0 {
		t.Errorf("a down output: failed %b, packets %d, errors %d", failed, down.packets, down.errors)
	}
}

// TestBatchArrivalTimes: datagrams read together in one batch keep the times
// they arrived (the kernel's stamps), so the jitter gauge sees the source's
// real spacing, not the batch's. Twelve packets 10 ms apart, their RTP
// timestamps following the send times, are queued before the worker takes
// the stream, so it reads them in one batch: a gauge fed the read's time
// for all would show about 5 ms of jitter; with the stamps it stays near 0
// (under 2.5 ms even if the sender was held up once).
func TestBatchArrivalTimes(t *testing.T) {
	t.Parallel()
	tw := startTestWorkerWindow(t, 0, time.Millisecond)
	in, inAddr := udpIn(t)
	awaitRxStamps(t)
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(inAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const count = 12
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var first time.Duration
	for i := range count {
		if i > 0 {
			<-tick.C // the source's pacing
		}
		now := clock.Mono()
		if i == 0 {
			first = now
		}
		p := rtpPacketInto(nil, uint16(i))
		ts := uint32((now - first) * 90000 / time.Second)
		p[4], p[5], p[6], p[7] = byte(ts>>24), byte(ts>>16), byte(ts>>8), byte(ts)
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	sink := newRawSink(t)
	tw.add(1, in, []netip.AddrPort{sink.addr}, nil, RoleForward)
	deadline := time.Now().Add(10 * time.Second)
	for {
		sr := tw.stream(1)
		if sr.Counters.PacketsIn == count {
			if sr.Counters.JitterMs > 2.5 { // half of what the read time would give: room for a late send on a busy machine
				t.Errorf("jitter %.2f ms for packets as evenly spaced as their timestamps: the batch's read time was taken for their arrival", sr.Counters.JitterMs)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d packets in after 10s", sr.Counters.PacketsIn, count)
		}
	}
}

// awaitRxStamps returns once the kernel stamps datagrams as they arrive.
// The first socket that asks for stamps turns stamping on for the whole
// machine a moment later (deferred work in the kernel); until then a
// datagram is stamped when it is read. A socket kept open until the test
// ends keeps it on.
func awaitRxStamps(t *testing.T) {
	t.Helper()
	in, addr := udpIn(t)
	fd := dupFD(t, in)
	t.Cleanup(func() { unix.Close(fd) })
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := newBatchReader(1, readBufSize)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.Write([]byte{0x80}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // the datagram's age when read, if stamped on arrival
		n, err := br.read(fd)
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 && br.stamps[0] != 0 && time.Since(time.Unix(0, br.stamps[0])) >= 4*time.Millisecond {
			return
		}
	}
	t.Fatal("the kernel does not stamp datagrams on arrival after 10s")
}
