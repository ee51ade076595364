package media

import (
	"testing"
	"time"

	"github.com/pion/rtp"
)

func rtpPacket(t testing.TB, seq uint16, ts, ssrc uint32, pt uint8, payload []byte) []byte {
	t.Helper()
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc}, Payload: payload}
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, readBufSize)
	copy(buf, b)
	return buf[:len(b)]
}

func feed(r *relay, b []byte, now time.Duration) []byte {
	buf := make([]byte, readBufSize)
	n := copy(buf, b)
	if len(b) > len(buf) {
		n = len(b)
	}
	return r.handle(buf, n, now)
}

func TestRelayMalformed(t *testing.T) {
	t.Parallel()
	good := rtpPacket(t, 1, 1, 1, 96, []byte("x"))
	v1 := append([]byte(nil), good...)
	v1[0] = 0x40
	csrcPastEnd := append([]byte(nil), good[:12]...)
	csrcPastEnd[0] |= 0x0f
	extPastEnd := append([]byte(nil), good[:12]...)
	extPastEnd[0] |= 0x10
	padZero := append([]byte(nil), good...)
	padZero[0] |= 0x20
	padZero[len(padZero)-1] = 0
	tests := []struct {
		name string
		b    []byte
		kind malformedKind
	}{
		{"empty", nil, malformedShort},
		{"truncated header", good[:11], malformedShort},
		{"version 1", v1, malformedVersion},
		{"text", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), malformedVersion},
		{"csrc past end", csrcPastEnd, malformedHeader},
		{"extension past end", extPastEnd, malformedHeader},
		{"zero padding", padZero, malformedHeader},
		{"jumbo", make([]byte, 9000), malformedOversize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRelay(90000, nil, Continuity{})
			if out := feed(r, tt.b, 1); out != nil {
				t.Fatalf("malformed datagram forwarded: % x", out)
			}
			c, _ := r.snapshot()
			if c.Malformed != 1 || r.malformed[tt.kind] != 1 || c.PacketsIn != 0 {
				t.Fatalf("counters %+v kinds %v", c, r.malformed)
			}
			if out := feed(r, good, 2); out == nil {
				t.Fatal("good packet after a malformed one was dropped")
			}
		})
	}
}

func TestRelayPassThroughIsUnchanged(t *testing.T) {
	t.Parallel()
	r := newRelay(90000, nil, Continuity{})
	in := rtpPacket(t, 7, 700, 0xabc, 33, tsPayload(0x100, 0, 1))
	out := feed(r, in, 1)
	if string(out) != string(in) {
		t.Fatal("pass-through changed the packet")
	}
}

func outHeader(t *testing.T, b []byte) rtp.Header {
	t.Helper()
	var p rtp.Packet
	if err := p.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	return p.Header
}

func TestRewriteContinuesAcrossHandover(t *testing.T) {
	t.Parallel()
	ssrc := uint32(0x1234)
	r := newRelay(90000, &ssrc, Continuity{})
	ms := time.Millisecond
	var last rtp.Header
	for i := 0; i < 10; i++ {
		last = outHeader(t, feed(r, rtpPacket(t, uint16(100+i), uint32(9000*i), 0xaaaa, 96, []byte{1}), time.Duration(i)*ms))
	}
	if last.SSRC != ssrc || last.SequenceNumber != 109 {
		t.Fatalf("rewritten header %+v", last)
	}
	_, cont := r.snapshot()

	// Same input, picked up by a new worker: the numbering is kept exactly.
	r2 := newRelay(90000, &ssrc, cont)
	h := outHeader(t, feed(r2, rtpPacket(t, 112, 9000*12, 0xaaaa, 96, []byte{1}), 12*ms))
	if h.SequenceNumber != 112 || h.Timestamp != 9000*12 || h.SSRC != ssrc {
		t.Fatalf("after handover with the same input got %+v", h)
	}

	// The source restarted with new numbering and a new SSRC while the worker
	// was down: the output steps on from where it was, past the margin.
	cont.Margin = 5
	r3 := newRelay(90000, &ssrc, cont)
	h = outHeader(t, feed(r3, rtpPacket(t, 40000, 77, 0xbbbb, 96, []byte{1}), 20*ms))
	wantSeq := last.SequenceNumber + 1 + 5
	if h.SequenceNumber != wantSeq || h.SSRC != ssrc {
		t.Fatalf("after rebase got seq %d want %d (%+v)", h.SequenceNumber, wantSeq, h)
	}
	if d := h.Timestamp - last.Timestamp; d != 90000*11/1000 {
		t.Fatalf("timestamp stepped by %d, want the 11 ms that passed (%d)", d, 90000*11/1000)
	}
	h2 := outHeader(t, feed(r3, rtpPacket(t, 40001, 77+90, 0xbbbb, 96, []byte{1}), 21*ms))
	if h2.SequenceNumber != wantSeq+1 || h2.Timestamp != h.Timestamp+90 {
		t.Fatalf("next packet after rebase %+v", h2)
	}
}

func TestRewriteMidStreamSourceRestart(t *testing.T) {
	t.Parallel()
	ssrc := uint32(9)
	r := newRelay(90000, &ssrc, Continuity{})
	a := outHeader(t, feed(r, rtpPacket(t, 10, 1000, 1, 96, nil), 0))
	b := outHeader(t, feed(r, rtpPacket(t, 50000, 5, 1, 96, nil), 1e6)) // numbering jump, same SSRC
	c := outHeader(t, feed(r, rtpPacket(t, 3, 5, 2, 96, nil), 2e6))     // new SSRC
	if b.SequenceNumber != a.SequenceNumber+1 || c.SequenceNumber != b.SequenceNumber+1 {
		t.Fatalf("output numbering %d %d %d", a.SequenceNumber, b.SequenceNumber, c.SequenceNumber)
	}
	if a.SSRC != 9 || b.SSRC != 9 || c.SSRC != 9 {
		t.Fatal("output SSRC changed")
	}
}

func TestRelayDoesNotAllocate(t *testing.T) {
	ssrc := uint32(5)
	for _, tc := range []struct {
		name string
		ssrc *uint32
	}{{"pass-through", nil}, {"rewrite", &ssrc}} {
		r := newRelay(90000, tc.ssrc, Continuity{})
		pkt := rtpPacket(t, 0, 0, 1, 33, tsPayload(0x100, 0, 1, 2, 3, 4, 5, 6))
		buf := make([]byte, readBufSize)
		seq := uint16(0)
		allocs := testing.AllocsPerRun(1000, func() {
			copy(buf, pkt)
			buf[2], buf[3] = byte(seq>>8), byte(seq)
			seq++
			if r.handle(buf, len(pkt), time.Duration(seq)*time.Millisecond) == nil {
				t.Fatal("dropped")
			}
			r.wroteOut(len(pkt), 1, 0)
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per packet, want 0", tc.name, allocs)
		}
	}
}

func TestReplayRingKeepsByTime(t *testing.T) {
	t.Parallel()
	q := replayRing{keep: 100 * time.Millisecond}
	for i := 0; i < 1000; i++ {
		q.push([]byte{byte(i)}, uint64(i), time.Duration(i)*time.Millisecond)
	}
	// At 999 ms the ring holds what arrived from 899 ms on.
	var exts []uint64
	q.each(func(b []byte, ext uint64, at time.Duration) { exts = append(exts, ext) })
	if len(exts) != 101 || exts[0] != 899 || exts[100] != 999 {
		t.Fatalf("ring holds %d packets, %v .. %v", len(exts), exts[0], exts[len(exts)-1])
	}
	if len(q.slots) > 256 {
		t.Fatalf("ring grew to %d slots for 101 packets", len(q.slots))
	}
}

func TestReplayRingIsBounded(t *testing.T) {
	t.Parallel()
	q := replayRing{keep: time.Hour}
	for i := 0; i < maxRingPackets+100; i++ {
		q.push([]byte{1}, uint64(i), time.Duration(i))
	}
	if q.n != maxRingPackets || len(q.slots) != maxRingPackets {
		t.Fatalf("ring holds %d in %d slots, want at most %d", q.n, len(q.slots), maxRingPackets)
	}
	var first uint64
	q.each(func(_ []byte, ext uint64, _ time.Duration) {
		if first == 0 {
			first = ext
		}
	})
	if first != 100 {
		t.Fatalf("oldest kept %d, want 100: the oldest go first", first)
	}
}

func TestStandbyDoesNotAllocate(t *testing.T) {
	r := newRelay(90000, nil, Continuity{})
	r.setStandby(50 * time.Millisecond)
	pkt := rtpPacket(t, 0, 0, 1, 33, tsPayload(0x100, 0, 1, 2, 3, 4, 5, 6))
	buf := make([]byte, readBufSize)
	seq := uint16(0)
	step := func() {
		copy(buf, pkt)
		buf[2], buf[3] = byte(seq>>8), byte(seq)
		seq++
		if r.handle(buf, len(pkt), time.Duration(seq)*time.Millisecond) != nil {
			t.Fatal("a standby stream forwarded")
		}
	}
	for i := 0; i < 200; i++ { // the ring grows to its size for this rate
		step()
	}
	if allocs := testing.AllocsPerRun(1000, step); allocs != 0 {
		t.Errorf("%.1f allocations per packet in standby, want 0", allocs)
	}
}
