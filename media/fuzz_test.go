package media

import (
	"bytes"
	"testing"
	"time"
)

// FuzzRelay feeds arbitrary datagrams to a stream: nothing may panic, a
// datagram is either forwarded or counted as malformed, and what is
// forwarded parses as RTP version 2.
func FuzzRelay(f *testing.F) {
	f.Add([]byte{0x80, 33, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1})
	f.Add([]byte{0x8f, 0, 0, 0})
	f.Add([]byte{0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0})
	f.Add([]byte{0xa0, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 2, 3, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, ssrc := range []*uint32{nil, new(uint32)} {
			r := newRelay(90000, ssrc, Continuity{})
			buf := make([]byte, readBufSize)
			n := copy(buf, b)
			if len(b) > len(buf) {
				n = len(b)
			}
			out := r.handle(buf, n, time.Millisecond)
			c, _ := r.snapshot()
			if out == nil {
				if c.Malformed != 1 {
					t.Fatalf("dropped without counting: %+v", c)
				}
				continue
			}
			if c.PacketsIn != 1 || len(out) < 12 || out[0]>>6 != 2 {
				t.Fatalf("forwarded % x with counters %+v", out, c)
			}
			if ssrc == nil && !bytes.Equal(out, b) {
				t.Fatal("pass-through changed the datagram")
			}
		}
	})
}

// FuzzTSChecker: any payload is safe to check.
func FuzzTSChecker(f *testing.F) {
	f.Add(tsPayload(0x100, 0, 1, 2))
	f.Add([]byte{0x47, 0x1f, 0xff, 0x10})
	f.Fuzz(func(t *testing.T, b []byte) {
		var c TSChecker
		c.Check(b)
		c.Check(b)
	})
}

// FuzzDecodeReport: the parent reads reports from a separate process; any
// bytes give an error or a report that encodes back to the same bytes.
func FuzzDecodeReport(f *testing.F) {
	for _, r := range sampleReports() {
		f.Add(encodeReportBody(r))
	}
	f.Add([]byte{})
	f.Add(make([]byte, 12))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeReport(b)
		if err != nil {
			return
		}
		if again := encodeReportBody(r); !bytes.Equal(again, b) {
			t.Fatalf("decoded %+v, which encodes to different bytes", r)
		}
	})
}

func encodeReportBody(r report) []byte {
	var e reportEncoder
	e.begin(r.Seq, len(r.Streams))
	for i := range r.Streams {
		e.stream(&r.Streams[i])
	}
	return append([]byte(nil), e.end()[5:]...)
}

func sampleReports() []report {
	full := streamReport{SID: 7, Role: roleStandby, InAge: 5 * time.Millisecond, LastFwd: 99, HaveFwd: true, Ring: 12,
		Counters:   Counters{PacketsIn: 1000, BytesIn: 1328000, PacketsOut: 990, Lost: 3, JitterMs: 0.25, Replayed: 4, Skipped: 1},
		Continuity: Continuity{Valid: true, InSSRC: 0x5eed, LastInSeq: 99, SeqOffset: 7, TSOffset: 9, LastOutSeq: 106, LastOutTS: 12345, At: time.Hour},
		Outputs:    []outputReport{{Packets: 990, State: outOK}, {Errors: 990, State: outDown, Errno: 101, BadFor: time.Second}}}
	return []report{
		{Seq: 1},
		{Seq: 2, Streams: []streamReport{full}},
		{Seq: 3, Streams: []streamReport{{SID: 1, InAge: -1}, full}},
	}
}

// BenchmarkDecodeReport is the parent's cost of reading one report of 1,000
// streams with one output each: what docs/worker-protocol.md quotes.
func BenchmarkDecodeReport(b *testing.B) {
	s := sampleReports()[1].Streams[0]
	s.Outputs = s.Outputs[:1]
	r := report{Seq: 1}
	for i := 0; i < 1000; i++ {
		s.SID = uint32(i)
		r.Streams = append(r.Streams, s)
	}
	body := encodeReportBody(r)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeReport(body); err != nil {
			b.Fatal(err)
		}
	}
}
