package pairnet

import (
	"crypto/hmac"
	"crypto/sha256"
	"testing"
	"time"

	"appliance/failover"
)

// The cost of a full message (32 entries) against the floor: an HMAC of
// the same bytes, which no authenticated encoding can beat. Compare
// BenchmarkSealPair and BenchmarkOpenPair with BenchmarkHMACBaseline.

func BenchmarkSealPair(b *testing.B) {
	m := fullMessage()
	s := newSealer(testKey)
	buf := make([]byte, 0, maxDatagram)
	h := header{version: 1, kind: kindPair, incarnation: 1, echo: 2}
	b.SetBytes(int64(headerLen + pairFixedLen + failover.MaxEntries*entryLen))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.counter = uint64(i)
		out := appendPair(buf[:headerLen], &m, timing{sent: uint64(i)})
		putHeader(out, h, len(out)-headerLen)
		_ = s.seal(out)
	}
}

func BenchmarkOpenPair(b *testing.B) {
	m := fullMessage()
	d := sealedPair(testKey, header{version: 1, kind: kindPair, incarnation: 1, counter: 1}, &m, timing{})
	s := newSealer(testKey)
	got := failover.Message{Entries: make([]failover.Entry, 0, failover.MaxEntries)}
	var tm timing
	b.SetBytes(int64(len(d) - macLen))
	b.ReportAllocs()
	for b.Loop() {
		_, body, err := s.open(d)
		if err != nil {
			b.Fatal(err)
		}
		if err := decodePair(body, &got, &tm); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHMACBaseline is HMAC-SHA-256 alone over the bytes a full
// message authenticates, with the state reused as the sealer does.
func BenchmarkHMACBaseline(b *testing.B) {
	m := fullMessage()
	d := sealedPair(testKey, header{version: 1, kind: kindPair}, &m, timing{})
	msg := d[:len(d)-macLen]
	mac := hmac.New(sha256.New, testKey)
	var sum [sha256.Size]byte
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		mac.Reset()
		mac.Write(msg)
		_ = mac.Sum(sum[:0])
	}
}

// BenchmarkRatioToHMAC measures sealing and opening a full message and a
// bare HMAC of the same bytes in alternating blocks, so that a busy
// machine slows all three alike, and reports each as a multiple of the
// HMAC: seal-x and open-x.
func BenchmarkRatioToHMAC(b *testing.B) {
	m := fullMessage()
	s := newSealer(testKey)
	buf := make([]byte, 0, maxDatagram)
	h := header{version: 1, kind: kindPair, incarnation: 1, counter: 1}
	d := sealedPair(testKey, h, &m, timing{})
	got := failover.Message{Entries: make([]failover.Entry, 0, failover.MaxEntries)}
	var tm timing
	mac := hmac.New(sha256.New, testKey)
	var sum [sha256.Size]byte
	var tSeal, tOpen, tMAC time.Duration
	const block = 100
	for b.Loop() {
		t0 := time.Now()
		for range block {
			out := appendPair(buf[:headerLen], &m, timing{})
			putHeader(out, h, len(out)-headerLen)
			_ = s.seal(out)
		}
		t1 := time.Now()
		for range block {
			_, body, _ := s.open(d)
			_ = decodePair(body, &got, &tm)
		}
		t2 := time.Now()
		for range block {
			mac.Reset()
			mac.Write(d[:len(d)-macLen])
			_ = mac.Sum(sum[:0])
		}
		t3 := time.Now()
		tSeal, tOpen, tMAC = tSeal+t1.Sub(t0), tOpen+t2.Sub(t1), tMAC+t3.Sub(t2)
	}
	b.ReportMetric(float64(tSeal)/float64(tMAC), "seal-x")
	b.ReportMetric(float64(tOpen)/float64(tMAC), "open-x")
	b.ReportMetric(float64(tMAC)/float64(b.N*block), "hmac-ns")
}
