package media

import (
	"bytes"
	"encoding/json"
	"testing"
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
			out := r.handle(buf, n, 1)
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
// bytes give a report for owned streams only, or an error.
func FuzzDecodeReport(f *testing.F) {
	f.Add([]byte(`{"seq":1,"streams":[{"index":0,"counters":{"packets_in":5},"continuity":{"valid":true}}]}`))
	f.Add([]byte(`{"seq":1,"streams":[{"index":7}]}`))
	f.Add([]byte(`{"streams":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		owned := map[int]bool{0: true, 1: true}
		r, err := decodeReport(json.NewDecoder(bytes.NewReader(b)), owned)
		if err != nil {
			return
		}
		for _, s := range r.Streams {
			if !owned[s.Index] {
				t.Fatalf("accepted a report for stream %d", s.Index)
			}
		}
	})
}
