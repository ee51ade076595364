package media

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"appliance/internal/clock"
)

// handoverRelays returns a rewriting relay that forwarded packets 0..9 of
// a source and then 0..9 of a restarted one (so its offsets are not zero),
// and a standby relay that received the same packets.
func handoverRelays(t *testing.T) (a, b *relay, pkt func(seq uint16) []byte) {
	t.Helper()
	ssrc := uint32(0x77)
	a, b = newRelay(90000, &ssrc, Continuity{}), newRelay(90000, &ssrc, Continuity{})
	b.setStandby(time.Hour)
	src := uint32(1)
	pkt = func(seq uint16) []byte { return rtpPacket(t, seq, uint32(seq)*90, src, 96, []byte{byte(seq)}) }
	at := time.Duration(0)
	for _, s := range []uint32{1, 2} {
		src = s
		for i := uint16(0); i < 10; i++ {
			at += time.Millisecond
			if feed(a, pkt(500*uint16(s)+i), at) == nil || feed(b, pkt(500*uint16(s)+i), at) != nil {
				t.Fatal("forward or standby misbehaved")
			}
		}
	}
	if a.cont.SeqOffset == 0 {
		t.Fatal("the offsets did not move with the source")
	}
	return a, b, pkt
}

// TestAdoptLinesUp: a standby relay that adopts the forwarding one's
// numbering sends what it would have sent, to the byte.
func TestAdoptLinesUp(t *testing.T) {
	a, b, pkt := handoverRelays(t)
	pc := peerContinuity(a.cont, 20*time.Millisecond)
	last := a.lastFwd
	// a forwards two more; b takes over from the first of them, replaying both.
	var fromA [][]byte
	for i := uint16(1); i <= 2; i++ {
		fromA = append(fromA, bytes.Clone(feed(a, pkt(last+i), time.Duration(20+i)*time.Millisecond)))
		feed(b, pkt(last+i), time.Duration(20+i)*time.Millisecond)
	}
	b.adopt(pc.continuity(23 * time.Millisecond))
	from := last + 1
	var fromB [][]byte
	n, ignored := b.startForward(&from, true, func(p []byte) { fromB = append(fromB, bytes.Clone(p)) })
	if n != 2 || ignored || len(fromB) != 2 {
		t.Fatalf("replayed %d (ignored %v), want 2", n, ignored)
	}
	for i := range fromA {
		if !bytes.Equal(fromA[i], fromB[i]) {
			t.Fatalf("packet %d:\nunit a % x\nunit b % x", i, fromA[i], fromB[i])
		}
	}
	na, nb := feed(a, pkt(last+3), 24*time.Millisecond), feed(b, pkt(last+3), 24*time.Millisecond)
	if !bytes.Equal(na, nb) {
		t.Fatalf("live packet after the hand-over:\nunit a % x\nunit b % x", na, nb)
	}
}

// TestAdoptRebases: input that does not line up with the adopted numbering
// continues it from its last numbers, without a margin, the timestamp
// stepped by the time since the peer's last packet.
func TestAdoptRebases(t *testing.T) {
	a, _, _ := handoverRelays(t)
	ssrc := uint32(0x77)
	b := newRelay(90000, &ssrc, Continuity{})
	b.setStandby(time.Hour)
	feed(b, rtpPacket(t, 7, 7, 0x999, 96, nil), time.Second) // another source altogether
	b.adopt(peerContinuity(a.cont, time.Second).continuity(time.Second))
	b.startForward(nil, true, nil)
	h := outHeader(t, feed(b, rtpPacket(t, 8, 7+90, 0x999, 96, nil), time.Second+10*time.Millisecond))
	if h.SequenceNumber != a.cont.LastOutSeq+1 || h.SSRC != ssrc {
		t.Fatalf("after a rebase: seq %d, want %d", h.SequenceNumber, a.cont.LastOutSeq+1)
	}
	// a's last packet went at 20 ms, this one at 1010 ms: 990 ms at 90 kHz.
	if d := h.Timestamp - a.cont.LastOutTS; d != 89100 {
		t.Fatalf("timestamp stepped by %d, want 89100", d)
	}
}

// TestForwardFromFarIsIgnored: a starting number the input's numbering
// cannot place is ignored and counted, and forwarding starts with the next
// packet.
func TestForwardFromFarIsIgnored(t *testing.T) {
	for _, from := range []uint16{1009 + maxDropout + 1, 65536 + 1009 - seqWindow} {
		r := newRelay(90000, nil, Continuity{})
		r.setStandby(time.Hour)
		for i := uint16(0); i < 10; i++ {
			feed(r, rtpPacket(t, 1000+i, 0, 1, 96, nil), time.Millisecond)
		}
		n, ignored := r.startForward(&from, false, func([]byte) { t.Fatal("replayed") })
		if n != 0 || !ignored || r.c.FromIgnored != 1 {
			t.Fatalf("from %d: replayed %d, ignored %v, counted %d", from, n, ignored, r.c.FromIgnored)
		}
		if feed(r, rtpPacket(t, 1010, 0, 1, 96, nil), time.Millisecond) == nil {
			t.Fatalf("from %d: the next packet was not forwarded", from)
		}
	}
}

// testWorkerProc is a worker's stream table without processes or inputs,
// writing its frames to a socket a goroutine drains.
func testWorkerProc(t testing.TB, n int) *workerProc {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "control")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
	}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := conns[1].Read(buf); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { conns[0].Close(); conns[1].Close() })
	w := &workerProc{ctrl: conns[0], fw: frameWriter{c: conns[0]}, streams: map[uint32]*wstream{}}
	for i := 0; i < n; i++ {
		ssrc := uint32(i)
		s := &wstream{sid: uint32(i), r: newRelay(90000, &ssrc, Continuity{}), progDirty: true}
		if i%2 == 1 {
			s.r.setStandby(50 * time.Millisecond)
		}
		w.streams[s.sid] = s
		w.list = append(w.list, s)
	}
	return w
}

// TestProgressFrameCarriesChanges: the first frame names every stream;
// after that only the streams that received packets or changed role.
func TestProgressFrameCarriesChanges(t *testing.T) {
	w := testWorkerProc(t, 3)
	decode := func(frame []byte) map[uint32]progressEntry {
		t.Helper()
		if frame == nil {
			return nil
		}
		es, err := decodeProgress(frame[5:], nil)
		if err != nil {
			t.Fatal(err)
		}
		out := map[uint32]progressEntry{}
		for _, e := range es {
			out[e.SID] = e
		}
		return out
	}
	if got := decode(w.progressFrame(time.Second)); len(got) != 3 {
		t.Fatalf("first frame names %d streams, want 3", len(got))
	}
	if got := w.progressFrame(time.Second); got != nil {
		t.Fatalf("a frame with nothing changed: % x", got)
	}
	feed(w.streams[0].r, rtpPacket(t, 10, 900, 5, 96, nil), time.Second)
	feed(w.streams[1].r, rtpPacket(t, 20, 900, 5, 96, nil), time.Second)
	feed(w.streams[1].r, rtpPacket(t, 21, 990, 5, 96, nil), time.Second+time.Millisecond)
	got := decode(w.progressFrame(time.Second + 3*time.Millisecond))
	f, s := got[0], got[1]
	if len(got) != 2 || f.Flags != progHaveFwd|progContValid || f.LastFwd != 10 || f.InAge != 3*time.Millisecond || f.ContAge != 3*time.Millisecond ||
		f.InSSRC != 5 || f.LastInSeq != 10 || f.LastOutSeq != 10 || f.LastOutTS != 900 {
		t.Fatalf("forward stream: %+v", f)
	}
	if s.Flags != progStandby || s.RingFirst != 20 || s.RingLast != 21 || s.RingPackets != 2 || s.InAge != 2*time.Millisecond || s.ContAge != -1 {
		t.Fatalf("standby stream: %+v", s)
	}
	// A role change is progress even without a packet.
	if _, err := w.role(roleChange{SID: 2, Role: RoleStandby}); err != nil {
		t.Fatal(err)
	}
	if got := decode(w.progressFrame(2 * time.Second)); len(got) != 1 || got[2].Flags != progStandby || got[2].InAge != -1 {
		t.Fatalf("after a role change: %+v", got)
	}
}

// TestProgressFrameDoesNotAllocate: the worker's progress pass over 100
// busy streams, and writing the frame, allocate nothing.
func TestProgressFrameDoesNotAllocate(t *testing.T) {
	w := testWorkerProc(t, 100)
	pkt := rtpPacket(t, 0, 0, 1, 33, tsPayload(0x100, 0, 1))
	buf := make([]byte, readBufSize)
	seq := uint16(0)
	step := func() {
		seq++
		now := time.Duration(seq) * time.Millisecond // the rings keep 50 ms: 50 packets
		for _, s := range w.list {
			copy(buf, pkt)
			buf[2], buf[3] = byte(seq>>8), byte(seq)
			s.r.handle(buf, len(pkt), now)
		}
		if err := w.progress(); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 200; i++ { // rings and buffers grow to their size
		step()
	}
	if allocs := testing.AllocsPerRun(200, step); allocs != 0 {
		t.Errorf("%.1f allocations per progress pass, want 0", allocs)
	}
}

// TestProgressCellNeverTorn: a reader racing a writer always sees the
// fields of one entry together.
func TestProgressCellNeverTorn(t *testing.T) {
	var c progressCell
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint32(1); !stop.Load(); i++ {
			v := uint16(i)
			c.store(&progressEntry{Flags: progContValid, LastFwd: v, InSSRC: i, LastInSeq: v, SeqOffset: v, TSOffset: i, LastOutSeq: v,
				LastOutTS: i, ContAge: time.Duration(i), RingFirst: v, RingLast: v, RingPackets: i % maxRingPackets, InAge: time.Duration(i)}, 1<<40)
		}
	}()
	var p Progress
	for n := 0; n < 200000; n++ {
		if !c.load(&p, 1<<40) {
			continue
		}
		k := p.Cont
		v := p.LastForwarded
		if k.InSSRC != k.TSOffset || k.LastOutTS != k.InSSRC || uint16(k.InSSRC) != v || k.LastInSeq != v || k.SeqOffset != v || k.LastOutSeq != v ||
			p.RingFirst != v || p.RingLast != v || p.RingPackets != int(k.InSSRC%maxRingPackets) || k.Age != time.Duration(k.InSSRC) || p.InputAge != k.Age {
			t.Fatalf("torn read: %+v", p)
		}
	}
	stop.Store(true)
	wg.Wait()
}

// TestProgressOfDoesNotAllocate: with room in dst, reading every stream's
// progress allocates nothing.
func TestProgressOfDoesNotAllocate(t *testing.T) {
	m := progressManager(1000)
	dst := make([]Progress, 0, 1000)
	if allocs := testing.AllocsPerRun(100, func() { dst = m.ProgressOf(dst) }); allocs != 0 {
		t.Errorf("%.1f allocations per ProgressOf, want 0", allocs)
	}
	if len(dst) != 1000 || dst[999].Name != "s999" || !dst[999].HaveForwarded || dst[999].LastForwarded != 999 || dst[999].Role != RoleStandby {
		t.Fatalf("read %d streams, the last %+v", len(dst), dst[len(dst)-1])
	}
}

// progressManager is a Manager's stream table with n carried streams and
// their progress, without workers or sockets.
func progressManager(n int) *Manager {
	m := &Manager{clk: clock.Real()}
	t := make([]*stream, n)
	for i := range t {
		st := &stream{sid: uint32(i), name: "s" + strconv.Itoa(i)}
		st.view.Store(&streamView{up: true, bitrate: 1e6})
		st.prog.store(&progressEntry{SID: uint32(i), Flags: progStandby | progHaveFwd | progContValid, LastFwd: uint16(i), ContAge: time.Millisecond, InAge: 0}, m.mono())
		t[i] = st
	}
	m.table.Store(&t)
	return m
}

// BenchmarkProgressOf is the pair loop's read of 1,000 streams' progress.
func BenchmarkProgressOf(b *testing.B) {
	m := progressManager(1000)
	dst := make([]Progress, 0, 1000)
	b.ReportAllocs()
	for b.Loop() {
		dst = m.ProgressOf(dst)
	}
}

// BenchmarkTakeProgress is the parent's cost of a progress frame in which
// 1,000 streams changed (every stream busy): reading it and publishing each
// stream's entry for ProgressOf.
func BenchmarkTakeProgress(b *testing.B) {
	m := progressManager(1000)
	w := &mworker{m: m}
	wc := &wconn{}
	owned := map[uint32]*stream{}
	var e progressEncoder
	e.begin()
	for _, st := range *m.table.Load() {
		owned[st.sid] = st
		pe := sampleProgress()[0]
		pe.SID = st.sid
		e.entry(&pe)
	}
	wc.owned.Store(&owned)
	body := bytes.Clone(e.end()[5:])
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if wc.prog, err = decodeProgress(body, wc.prog[:0]); err != nil {
			b.Fatal(err)
		}
		w.progress(wc, wc.prog)
	}
}

func sampleProgress() []progressEntry {
	return []progressEntry{
		{SID: 3, Flags: progHaveFwd | progContValid, LastFwd: 4711, InSSRC: 0xaaaa, LastInSeq: 4711, SeqOffset: 9, TSOffset: 1 << 31,
			LastOutSeq: 4720, LastOutTS: 123456, ContAge: 2 * time.Millisecond, InAge: 2 * time.Millisecond},
		{SID: 4, Flags: progStandby, RingFirst: 65530, RingLast: 12, RingPackets: 19, ContAge: -1, InAge: 0},
		{SID: 5, ContAge: -1, InAge: -1},
	}
}

func encodeProgressBody(es []progressEntry) []byte {
	var e progressEncoder
	e.begin()
	for i := range es {
		e.entry(&es[i])
	}
	return bytes.Clone(e.end()[5:])
}

// FuzzDecodeProgress: the parent reads progress from a separate process;
// any bytes give an error or entries that encode back to the same bytes.
func FuzzDecodeProgress(f *testing.F) {
	s := sampleProgress()
	f.Add(encodeProgressBody(s))
	f.Add(encodeProgressBody(s[:1]))
	f.Add(encodeProgressBody(nil))
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := decodeProgress(b, nil)
		if err != nil {
			return
		}
		if again := encodeProgressBody(es); !bytes.Equal(again, b) {
			t.Fatalf("decoded %+v, which encodes to different bytes", es)
		}
	})
}

// BenchmarkProgressFrame is a worker's progress pass over 1,000 streams
// (half forwarding, half in standby with 50 packets in the ring) that all
// received a packet since the last pass, and writing the frame.
func BenchmarkProgressFrame(b *testing.B) {
	w := testWorkerProc(b, 1000)
	pkt := rtpPacket(b, 0, 0, 1, 33, tsPayload(0x100, 0, 1))
	buf := make([]byte, readBufSize)
	for seq := uint16(0); seq < 100; seq++ {
		for _, s := range w.list {
			copy(buf, pkt)
			buf[2], buf[3] = byte(seq>>8), byte(seq)
			s.r.handle(buf, len(pkt), time.Duration(seq)*time.Millisecond)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		// What a packet changes, without the cost of handling one.
		for _, s := range w.list {
			s.r.c.PacketsIn++
			s.r.lastIn++
		}
		if err := w.progress(); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzWorkerRoles: whatever a role message says (unknown streams, roles,
// numbers, continuities of any age), the worker answers each change and
// its relays go on forwarding or holding what arrives.
func FuzzWorkerRoles(f *testing.F) {
	f.Add([]byte(`{"id":1,"changes":[{"sid":0,"role":"standby"},{"sid":1,"role":"forward","from_seq":1000}]}`))
	f.Add([]byte(`{"id":2,"changes":[{"sid":1,"role":"forward","from_seq":65535,"continuity":{"valid":true,"in_ssrc":1,"last_in_seq":999,"seq_offset":7,"ts_offset":9,"last_out_seq":1006,"last_out_ts":5,"age_ns":9223372036854775807}}]}`))
	f.Add([]byte(`{"id":3,"changes":[{"sid":0,"role":"standby","from_seq":3},{"sid":9,"role":"forward"},{"sid":1,"role":"sideways"}]}`))
	f.Add([]byte(`{"id":4,"changes":[{"sid":0,"role":"forward","continuity":{"valid":true,"in_ssrc":2,"age_ns":-5}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var m roleMsg
		if json.Unmarshal(body, &m) != nil {
			return
		}
		w := testWorkerProc(t, 2)
		for i := uint16(0); i < 5; i++ {
			for _, s := range w.list {
				feed(s.r, rtpPacket(t, 998+i, uint32(i)*90, 1, 96, nil), time.Duration(i+1)*time.Millisecond)
			}
		}
		ack := w.roles(m)
		if len(ack.Roles)+len(ack.Errors) != len(m.Changes) {
			t.Fatalf("%d changes, %d answers and %d refusals", len(m.Changes), len(ack.Roles), len(ack.Errors))
		}
		for _, s := range w.list {
			out := feed(s.r, rtpPacket(t, 1003, 5*90, 1, 96, nil), 10*time.Millisecond)
			if out != nil && (s.r.standby || len(out) < 12) {
				t.Fatalf("stream %d: standby %v, sent % x", s.sid, s.r.standby, out)
			}
		}
		if frame := w.progressFrame(time.Second); frame != nil {
			if _, err := decodeProgress(frame[5:], nil); err != nil {
				t.Fatalf("the worker wrote a progress frame the parent refuses: %v", err)
			}
		}
	})
}
