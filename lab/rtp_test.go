package lab

import (
	"encoding/binary"
	"errors"
	"net"
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

// TestReceiverStampsKernelArrival: a packet that waits in the socket while
// the receiver is busy is stamped when it arrived, not when it was read.
func TestReceiverStampsKernelArrival(t *testing.T) {
	t.Parallel()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{Conn: conn}
	r.Record()
	// The receiver arms the stamps when it starts; a packet sent before
	// that would carry none, so the first one only proves it runs.
	go r.Run()
	t.Cleanup(func() { conn.Close() })
	out, err := net.DialUDP("udp4", nil, conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	buf := make([]byte, 64)
	putPacket(buf, 1, 1, 1, 1, 0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := out.Write(buf); err != nil {
			t.Fatal(err)
		}
		r.mu.Lock()
		n := len(r.log)
		r.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the receiver recorded nothing")
		}
		time.Sleep(10 * time.Millisecond) // pacing the probe packets
	}
	r.Stop()

	// Hold the receiver's lock, as a busy receiver would be held: it reads
	// the first packet and waits for the lock; the second waits in the
	// socket for 200 ms before it can even be read.
	r.Record()
	r.mu.Lock()
	putPacket(buf, 1, 2, 2, 2, Clock())
	if _, err := out.Write(buf); err != nil {
		r.mu.Unlock()
		t.Fatal(err)
	}
	sent := Clock()
	putPacket(buf, 1, 3, 3, 3, sent)
	if _, err := out.Write(buf); err != nil {
		r.mu.Unlock()
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the delay under test, not a wait for an event
	r.mu.Unlock()
	var log []Arrival
	for time.Now().Before(deadline) && len(log) < 2 {
		r.mu.Lock()
		log = append([]Arrival(nil), r.log...)
		r.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	if len(log) < 2 {
		t.Fatalf("%d of the 2 packets recorded", len(log))
	}
	if waited := log[1].At - sent; waited > 100*time.Millisecond {
		t.Fatalf("stamped %v after it was sent: the read time, not the arrival", waited)
	}
}
