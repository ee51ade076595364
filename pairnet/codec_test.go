package pairnet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"time"

	"appliance/failover"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// fullMessage is a message with MaxEntries entries, every field and flag
// exercised somewhere.
func fullMessage() failover.Message {
	m := failover.Message{
		Version: failover.Version, Digest: 0x0102030405060708, State: failover.Draining,
		Path: 1, WitnessLease: true, FreeStreams: failover.NoLimitStreams, FreeBitrate: 123456789,
	}
	for i := range failover.MaxEntries {
		m.Entries = append(m.Entries, failover.Entry{
			Index: uint16(i), Epoch: uint32(2*i + 1),
			Forwarding: i%2 == 0, Ready: i%3 == 0, HasStart: i%4 == 0, HasProgress: i%5 == 0,
			HasRing: i%6 == 0, Prepare: i%7 == 0,
			Start: uint16(1000 + i), Progress: uint16(2000 + i), RingFirst: uint16(3000 + i),
			BitrateKbps: uint32(8000 + i),
			Cont: failover.Continuity{
				Valid: i%2 == 1, InSSRC: 0xdeadbeef + uint32(i), LastInSeq: 65535, SeqOffset: uint16(i),
				TSOffset: 90000 * uint32(i), LastOutSeq: 7, LastOutTS: 1 << 31, Age: time.Duration(i) * time.Millisecond,
			},
		})
	}
	return m
}

func sealedPair(key []byte, h header, m *failover.Message, t timing) []byte {
	b := make([]byte, headerLen, maxDatagram)
	b = appendPair(b, m, t)
	putHeader(b, h, len(b)-headerLen)
	return newSealer(key).seal(b)
}

func TestPairRoundTrip(t *testing.T) {
	t.Parallel()
	for name, m := range map[string]failover.Message{
		"full":  fullMessage(),
		"empty": {Version: failover.Version, State: failover.Starting, Entries: []failover.Entry{}},
	} {
		t.Run(name, func(t *testing.T) {
			h := header{version: failover.Version, kind: kindPair, incarnation: 7, counter: 9, echo: 11}
			tm := timing{sent: 100, echo: 200, held: 300}
			b := sealedPair(testKey, h, &m, tm)
			if len(b) > maxDatagram {
				t.Fatalf("%d bytes: more than one unfragmented datagram", len(b))
			}
			gotH, body, err := newSealer(testKey).open(b)
			if err != nil || gotH != h {
				t.Fatalf("open: %+v, %v; want %+v", gotH, err, h)
			}
			var got failover.Message
			var gotT timing
			if err := decodePair(body, &got, &gotT); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m) || gotT != tm {
				t.Fatalf("decoded\n%+v %+v\nwant\n%+v %+v", got, gotT, m, tm)
			}
		})
	}
}

func TestFullMessageSize(t *testing.T) {
	t.Parallel()
	m := fullMessage()
	b := sealedPair(testKey, header{version: 1, kind: kindPair}, &m, timing{})
	if want := headerLen + pairFixedLen + failover.MaxEntries*entryLen + macLen; len(b) != want || want > maxDatagram {
		t.Fatalf("full message is %d bytes, want %d (at most %d)", len(b), want, maxDatagram)
	}
}

func TestAgeSaturates(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   time.Duration
		want uint32
	}{{-time.Second, 0}, {999 * time.Nanosecond, 0}, {time.Millisecond, 1000}, {100 * time.Hour, 1<<32 - 1}} {
		if got := ageMicros(c.in); got != c.want {
			t.Errorf("ageMicros(%v) = %d, want %d", c.in, got, c.want)
		}
	}
}

// TestOpenRefusals: each malformed datagram is refused with the reason the
// specification counts it under, and the checks run in its order.
func TestOpenRefusals(t *testing.T) {
	t.Parallel()
	m := fullMessage()
	good := sealedPair(testKey, header{version: 1, kind: kindPair, incarnation: 1, counter: 1}, &m, timing{})
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	reseal := func(b []byte) []byte { return newSealer(testKey).seal(b[:len(b)-macLen]) }
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrGarbage},
		{"short", good[:minDatagram-1], ErrGarbage},
		{"truncated", good[:len(good)-1], ErrGarbage},
		{"too long", append(bytes.Clone(good), make([]byte, maxDatagram)...)[:maxDatagram+1], ErrGarbage},
		{"length field lies", mutate(func(b []byte) []byte { b[7]++; return b }), ErrGarbage},
		{"bad magic", mutate(func(b []byte) []byte { b[0] = 'X'; return reseal(b) }), ErrGarbage},
		{"bad magic and bad HMAC: magic first", mutate(func(b []byte) []byte { b[1] = 'X'; return b }), ErrGarbage},
		{"bit flipped in the body", mutate(func(b []byte) []byte { b[100] ^= 1; return b }), ErrForged},
		{"bit flipped in the HMAC", mutate(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrForged},
		{"another key", sealedPair([]byte("another key, same length, really"), header{version: 1, kind: kindPair}, &m, timing{}), ErrForged},
	} {
		if _, _, err := newSealer(testKey).open(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// TestDecodeRefusals: authentic bodies that do not parse are garbage and
// leave nothing half-decoded behind that could be mistaken for a message.
func TestDecodeRefusals(t *testing.T) {
	t.Parallel()
	m := fullMessage()
	body := appendPair(nil, &m, timing{})
	count := pairFixedLen - 2
	for _, c := range []struct {
		name string
		f    func(b []byte) []byte
	}{
		{"count above MaxEntries", func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[count:], failover.MaxEntries+1)
			return append(b, make([]byte, entryLen)...)
		}},
		{"huge count", func(b []byte) []byte { binary.BigEndian.PutUint16(b[count:], 0xffff); return b }},
		{"count above the body", func(b []byte) []byte { return b[:len(b)-entryLen] }},
		{"body longer than the count", func(b []byte) []byte { return append(b, 0) }},
		{"short fixed part", func(b []byte) []byte { return b[:pairFixedLen-1] }},
		{"unit state 0", func(b []byte) []byte { b[8] = 0; return b }},
		{"unit state 5", func(b []byte) []byte { b[8] = 5; return b }},
		{"unknown message flag", func(b []byte) []byte { b[10] |= 0x80; return b }},
		{"unknown entry flag", func(b []byte) []byte { b[pairFixedLen+6] |= 0x80; return b }},
		{"reserved byte set", func(b []byte) []byte { b[pairFixedLen+39] = 1; return b }},
	} {
		var got failover.Message
		var tm timing
		if err := decodePair(c.f(bytes.Clone(body)), &got, &tm); !errors.Is(err, ErrGarbage) {
			t.Errorf("%s: %v, want ErrGarbage", c.name, err)
		}
		if len(got.Entries) != 0 {
			t.Errorf("%s: %d entries left behind", c.name, len(got.Entries))
		}
	}
}

// TestDecodeReusesEntries: the node decodes into one message; a smaller
// message must not show the previous one's entries.
func TestDecodeReusesEntries(t *testing.T) {
	t.Parallel()
	full, small := fullMessage(), fullMessage()
	small.Entries = small.Entries[:2]
	got := failover.Message{Entries: make([]failover.Entry, 0, failover.MaxEntries)}
	backing := &got.Entries[:1][0]
	var tm timing
	for _, m := range []failover.Message{full, small} {
		if err := decodePair(appendPair(nil, &m, timing{}), &got, &tm); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("decoded %d entries, want %d", len(got.Entries), len(m.Entries))
		}
		if &got.Entries[:1][0] != backing {
			t.Fatal("entries reallocated: the node would allocate per message")
		}
	}
}

func TestWitnessRoundTrip(t *testing.T) {
	t.Parallel()
	for _, r := range []WitnessRequest{
		{Unit: "rack4-a", Peer: "rack4-b", Takeover: true, HearsPeer: false, Detect: 30 * time.Millisecond, Heartbeat: 10 * time.Millisecond},
		{Unit: string(bytes.Repeat([]byte{'u'}, 64)), Peer: "", HearsPeer: true},
	} {
		body := appendWitnessRequest(nil, &r, 42)
		got, sent, err := decodeWitnessRequest(body)
		if err != nil || got != r || sent != 42 {
			t.Fatalf("request %+v decoded as %+v, %d, %v", r, got, sent, err)
		}
	}
	for _, a := range []WitnessAnswer{{}, {Lease: true}, {Takeover: true}, {true, true}} {
		got, sent, err := decodeWitnessAnswer(appendWitnessAnswer(nil, a, 99))
		if err != nil || got != a || sent != 99 {
			t.Fatalf("answer %+v decoded as %+v, %d, %v", a, got, sent, err)
		}
	}
	bad := [][]byte{
		nil,
		{65},          // name longer than 64
		{3, 'a', 'b'}, // name cut short
		append([]byte{1, 'a', 1, 'b', 4}, make([]byte, 24)...),               // unknown flag
		append([]byte{1, 'a', 1, 'b', 0}, make([]byte, 23)...),               // short
		append(append([]byte{1, 'a', 1, 'b', 0}, 0x80), make([]byte, 23)...), // detect beyond a Duration
	}
	for _, b := range bad {
		if _, _, err := decodeWitnessRequest(b); !errors.Is(err, ErrGarbage) {
			t.Errorf("request % x: %v, want ErrGarbage", b, err)
		}
	}
	for _, b := range [][]byte{nil, make([]byte, 8), make([]byte, 10), append([]byte{4}, make([]byte, 8)...)} {
		if _, _, err := decodeWitnessAnswer(b); !errors.Is(err, ErrGarbage) {
			t.Errorf("answer % x: %v, want ErrGarbage", b, err)
		}
	}
}
