package lab

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

func TestParsePacket(t *testing.T) {
	t.Parallel()
	buf := make([]byte, 200)
	putPacket(buf, 0xabcdef01, 65535, 4294967290, 123456789, 3*time.Second)
	a, err := ParsePacket(buf)
	if err != nil {
		t.Fatal(err)
	}
	if a.SSRC != 0xabcdef01 || a.Seq != 65535 || a.TS != 4294967290 || a.Counter != 123456789 || a.SrcSeq != 65535 || a.SrcTS != 4294967290 {
		t.Errorf("round trip: %+v", a)
	}

	// A unit that rewrites the header keeps the payload: the source's
	// numbering survives a changed SSRC, sequence and timestamp.
	binary.BigEndian.PutUint16(buf[2:], 7)
	binary.BigEndian.PutUint32(buf[8:], 0x1234)
	if a, _ := ParsePacket(buf); a.Seq != 7 || a.SrcSeq != 65535 || a.SSRC != 0x1234 {
		t.Errorf("rewritten header: %+v", a)
	}

	// Two CSRCs and a one-word header extension before the payload.
	long := make([]byte, 12+8+8+200)
	copy(long, buf[:12])
	long[0] = 0x80 | 0x10 | 2
	binary.BigEndian.PutUint16(long[12+8+2:], 1)
	copy(long[12+8+8:], buf[12:])
	if a, err := ParsePacket(long); err != nil || a.Counter != 123456789 {
		t.Errorf("with CSRCs and an extension: %+v, %v", a, err)
	}

	for name, b := range map[string][]byte{
		"empty":              nil,
		"short header":       buf[:11],
		"version 1":          append([]byte{0x40}, buf[1:]...),
		"no payload":         buf[:12],
		"short payload":      buf[:12+payloadMin-1],
		"extension past end": long[:12+8+4],
		"CSRCs past end":     append([]byte{0x8f}, buf[1:40]...),
	} {
		if _, err := ParsePacket(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
}

// FuzzParsePacket: whatever arrives on a receiver's port, parsing neither
// panics nor reads past the datagram, and a packet the lab wrote reads back.
func FuzzParsePacket(f *testing.F) {
	buf := make([]byte, 40)
	putPacket(buf, 1, 2, 3, 4, 5)
	f.Add(buf)
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParsePacket(b)
		if err != nil {
			return
		}
		if len(b) < rtpHeader+payloadMin {
			t.Fatalf("accepted %d bytes", len(b))
		}
		out := make([]byte, rtpHeader+payloadMin)
		putPacket(out, a.SSRC, a.SrcSeq, a.SrcTS, a.Counter, 0)
		if back, err := ParsePacket(out); err != nil || back.Counter != a.Counter || back.SrcSeq != a.SrcSeq || back.SrcTS != a.SrcTS {
			t.Fatalf("round trip of %+v: %+v, %v", a, back, err)
		}
	})
}
