package pairnet

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"appliance/failover"
)

// The fuzz targets open datagrams with testKey, so that the seeds in
// testdata/fuzz (written by -write-corpus) get past the HMAC and the
// fuzzer explores the bodies.
var writeCorpus = flag.Bool("write-corpus", false, "rewrite the seed corpus in testdata/fuzz")

// FuzzOpenPair: any datagram is refused or opens to a message that seals
// back to the very same bytes.
func FuzzOpenPair(f *testing.F) {
	for _, s := range pairSeeds() {
		f.Add(s.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := newSealer(testKey)
		h, body, err := s.open(b)
		if err != nil || h.kind != kindPair || h.version != failover.Version {
			return
		}
		var m failover.Message
		var tm timing
		if err := decodePair(body, &m, &tm); err != nil {
			return
		}
		if again := sealedPair(testKey, h, &m, tm); !bytes.Equal(again, b) {
			t.Fatalf("opened %+v %+v, which seals to different bytes", m, tm)
		}
	})
}

// FuzzOpenWitness: the same for witness requests and answers.
func FuzzOpenWitness(f *testing.F) {
	for _, s := range witnessSeeds() {
		f.Add(s.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := newSealer(testKey)
		h, body, err := s.open(b)
		if err != nil || h.version != failover.Version {
			return
		}
		out := make([]byte, headerLen, maxDatagram)
		switch h.kind {
		case kindWitnessRequest:
			r, sent, err := decodeWitnessRequest(body)
			if err != nil {
				return
			}
			out = appendWitnessRequest(out, &r, sent)
		case kindWitnessAnswer:
			a, sent, err := decodeWitnessAnswer(body)
			if err != nil {
				return
			}
			out = appendWitnessAnswer(out, a, sent)
		default:
			return
		}
		putHeader(out, h, len(out)-headerLen)
		if again := s.seal(out); !bytes.Equal(again, b) {
			t.Fatalf("opened kind %d, which seals to different bytes", h.kind)
		}
	})
}

// FuzzDecodePair reaches the body decoder directly: past the HMAC, which
// a mutated datagram never passes, this is what a peer with the key (or a
// bug in it) can send. Anything accepted encodes back to the same bytes.
func FuzzDecodePair(f *testing.F) {
	for _, s := range pairBodySeeds() {
		f.Add(s.b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m := failover.Message{Entries: make([]failover.Entry, 0, failover.MaxEntries)}
		var tm timing
		if err := decodePair(body, &m, &tm); err != nil {
			return
		}
		if again := appendPair(nil, &m, tm); !bytes.Equal(again, body) {
			t.Fatalf("decoded %+v %+v, which encodes to different bytes", m, tm)
		}
	})
}

// FuzzDecodeWitness: the same for witness request and answer bodies.
func FuzzDecodeWitness(f *testing.F) {
	for _, s := range witnessSeeds() {
		if len(s.b) > headerLen+macLen {
			f.Add(s.b[headerLen : len(s.b)-macLen])
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if r, sent, err := decodeWitnessRequest(body); err == nil {
			if again := appendWitnessRequest(nil, &r, sent); !bytes.Equal(again, body) {
				t.Fatalf("request %+v encodes to different bytes", r)
			}
		}
		if a, sent, err := decodeWitnessAnswer(body); err == nil {
			if again := appendWitnessAnswer(nil, a, sent); !bytes.Equal(again, body) {
				t.Fatalf("answer %+v encodes to different bytes", a)
			}
		}
	})
}

func pairBodySeeds() []seed {
	var out []seed
	for _, s := range pairSeeds() {
		if len(s.b) >= headerLen+macLen {
			out = append(out, seed{s.name, s.b[headerLen : len(s.b)-macLen]})
		}
	}
	return out
}

type seed struct {
	name string
	b    []byte
}

func pairSeeds() []seed {
	full := fullMessage()
	empty := failover.Message{State: failover.Up}
	h := header{version: failover.Version, kind: kindPair, incarnation: 0x1122334455667788, counter: 5, echo: 0x99}
	tm := timing{sent: 1e9, echo: 2e9, held: 3e6}
	valid := sealedPair(testKey, h, &full, tm)
	resealed := func(b []byte) []byte { return newSealer(testKey).seal(b[:len(b)-macLen]) }

	badMagic := bytes.Clone(valid)
	badMagic[3] = 1
	badHMAC := bytes.Clone(valid)
	badHMAC[len(badHMAC)-5] ^= 0x40
	hv := h
	hv.version = 2
	other := sealedPair(testKey, hv, &empty, timing{})
	// A count of 0xffff over a body with room for one entry: the count
	// must not be believed.
	huge := sealedPair(testKey, h, &failover.Message{State: failover.Up, Entries: full.Entries[:1]}, tm)
	huge[headerLen+pairFixedLen-2], huge[headerLen+pairFixedLen-1] = 0xff, 0xff
	huge = resealed(huge)
	return []seed{
		{"full", valid},
		{"empty", sealedPair(testKey, h, &empty, tm)},
		{"truncated", valid[:len(valid)-7]},
		{"bad-magic", resealed(badMagic)},
		{"bad-hmac", badHMAC},
		{"other-version", other},
		{"huge-count", huge},
	}
}

func witnessSeeds() []seed {
	r := WitnessRequest{Unit: "rack4-a", Peer: "rack4-b", Takeover: true, Detect: 30e6, Heartbeat: 10e6}
	seal := func(kind uint8, body []byte) []byte {
		b := make([]byte, headerLen, maxDatagram)
		b = append(b, body...)
		putHeader(b, header{version: 1, kind: kind, incarnation: 3, counter: 4, echo: 5}, len(body))
		return newSealer(testKey).seal(b)
	}
	long := appendWitnessRequest(nil, &r, 1)
	long[0] = 200 // a name length beyond the body
	return []seed{
		{"request", seal(kindWitnessRequest, appendWitnessRequest(nil, &r, 77))},
		{"answer", seal(kindWitnessAnswer, appendWitnessAnswer(nil, WitnessAnswer{Lease: true}, 77))},
		{"name-too-long", seal(kindWitnessRequest, long)},
		{"truncated", seal(kindWitnessRequest, appendWitnessRequest(nil, &r, 1))[:50]},
	}
}

// TestWriteCorpus rewrites testdata/fuzz from the seeds above when asked
// (go test -run TestWriteCorpus -write-corpus), so the corpus follows the
// wire format and the test key.
func TestWriteCorpus(t *testing.T) {
	if !*writeCorpus {
		t.Skip("only with -write-corpus")
	}
	for target, seeds := range corpora() {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s.b)
			if err := os.WriteFile(filepath.Join(dir, s.name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestCorpusIsCurrent: the seeds on disk are the ones the code makes, so
// a change of the wire format that forgets the corpus shows here.
func TestCorpusIsCurrent(t *testing.T) {
	t.Parallel()
	for target, seeds := range corpora() {
		for _, s := range seeds {
			got, err := os.ReadFile(filepath.Join("testdata", "fuzz", target, s.name))
			if err != nil {
				t.Fatalf("%v: run go test ./pairnet -run TestWriteCorpus -write-corpus", err)
			}
			if want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s.b); string(got) != want {
				t.Errorf("%s/%s is out of date: run go test ./pairnet -run TestWriteCorpus -write-corpus", target, s.name)
			}
		}
	}
}

func corpora() map[string][]seed {
	var witnessBodies []seed
	for _, s := range witnessSeeds() {
		if len(s.b) > headerLen+macLen {
			witnessBodies = append(witnessBodies, seed{s.name, s.b[headerLen : len(s.b)-macLen]})
		}
	}
	return map[string][]seed{
		"FuzzOpenPair": pairSeeds(), "FuzzOpenWitness": witnessSeeds(),
		"FuzzDecodePair": pairBodySeeds(), "FuzzDecodeWitness": witnessBodies,
	}
}
