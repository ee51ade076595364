package main

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"appliance/control"
	"appliance/internal/testutil"
)

// A pair on loopback: two real units, heartbeats over two paths
// (127.0.0.1 and 127.0.0.2), every stream fed to both (dual), outputs to
// receivers here. No root needed; the network-namespace scenarios are the
// lab's (`appliance lab`).

type pairRig struct {
	t        *testing.T
	a, b     *unitProc
	pathA    []string // A's heartbeat addresses, for the bad-input test
	streams  []string
	inA, inB []int
	rx       []*seqRx
	stop     chan struct{}
	wg       sync.WaitGroup
}

// seqRx records every RTP packet: its sequence number and SSRC, and which
// unit sent it (by source port).
type seqRx struct {
	c    *net.UDPConn
	mu   sync.Mutex
	seqs []uint16
	ssrc map[uint32]bool
	from map[int]int // source port: packets
}

func newSeqRx(t *testing.T, port int) *seqRx {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(1 << 20)
	r := &seqRx{c: c, ssrc: map[uint32]bool{}, from: map[int]int{}}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			r.mu.Lock()
			r.seqs = append(r.seqs, binary.BigEndian.Uint16(buf[2:]))
			r.ssrc[binary.BigEndian.Uint32(buf[8:])] = true
			r.from[from.Port]++
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close() })
	return r
}

// mark returns how many packets have arrived so far.
func (r *seqRx) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seqs)
}

// since checks the packets after mark: numbered one after the other, with
// no gap and no repeat. It returns how many it checked.
func (r *seqRx) since(t *testing.T, mark int, what string) int {
	t.Helper()
	r.mu.Lock()
	seqs := append([]uint16(nil), r.seqs[mark:]...)
	nssrc := len(r.ssrc)
	r.mu.Unlock()
	if nssrc != 1 {
		t.Errorf("%s: the output carried %d SSRCs, want 1", what, nssrc)
	}
	for i := 1; i < len(seqs); i++ {
		if d := seqs[i] - seqs[i-1]; d != 1 {
			t.Errorf("%s: sequence %d follows %d: %s", what, seqs[i], seqs[i-1], map[bool]string{true: "a repeat", false: "a gap"}[d == 0 || d > 0x8000])
			return len(seqs)
		}
	}
	return len(seqs)
}

func (r *seqRx) senders() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.from)
}

// pairConfig writes one unit's config: dual inputs of its own, both units
// sending to the same outputs, stream i preferring unit-a when i is even.
func pairConfig(t *testing.T, dir, self, peer string, paths [][2]string, ins, outs []int, streams []string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nunit: {name: %s, state_dir: %s}\ncontrol: {socket: %s}\n", self, filepath.Join(dir, "state"), filepath.Join(dir, "control.sock"))
	b.WriteString("media: {workers: 2}\npair:\n")
	// Detection at 100 ms, not the default 30: these tests are about what
	// the units do, and a false takeover (both units' heartbeat loops held
	// off 15-20 ms at once while CI compiles beside them) would move a
	// stream the test expects where it was. The default's detection time
	// and its margin under load are the lab's (lab/, make lab).
	fmt.Fprintf(&b, "  heartbeat: 10ms\n  detect_multiplier: 10\n")
	fmt.Fprintf(&b, "  peer_name: %s\n  key_file: %s\n  paths:\n", peer, filepath.Join(dir, "..", "pair.key"))
	for _, p := range paths {
		fmt.Fprintf(&b, "    - {local: %q, remote: %q}\n", p[0], p[1])
	}
	b.WriteString("streams:\n")
	for i, s := range streams {
		prefer := "unit-a"
		if i%2 == 1 {
			prefer = "unit-b"
		}
		fmt.Fprintf(&b, "  - {name: %s, input: \"udp://127.0.0.1:%d\", input_mode: dual, prefer: %s, outputs: [\"udp://127.0.0.1:%d\"], rewrite: {ssrc: 0x1234}}\n",
			s, ins[i], prefer, outs[i])
	}
	return b.String()
}

// pairOption adds to the config of one unit of a pair.
type pairOption struct{ unit, yaml string }

// withConfig appends yaml, whole top-level sections, to the config of the
// unit named unit ("unit-a" or "unit-b").
func withConfig(unit, yaml string) pairOption { return pairOption{unit, yaml} }

func startPair(t *testing.T, streamsB []string, opts ...pairOption) *pairRig {
	t.Helper()
	skipShort(t)
	root := t.TempDir()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if err := os.WriteFile(filepath.Join(root, "pair.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	streams := []string{"s0", "s1"}
	if streamsB == nil {
		streamsB = streams
	}
	ports := freeUDPPorts(t, 4+3*len(streamsB))
	r := &pairRig{t: t, streams: streams, stop: make(chan struct{})}
	pa0, pb0, pa1, pb1 := ports[0], ports[1], ports[2], ports[3]
	r.pathA = []string{fmt.Sprintf("127.0.0.1:%d", pa0), fmt.Sprintf("127.0.0.2:%d", pa1)}
	pathsA := [][2]string{{r.pathA[0], fmt.Sprintf("127.0.0.1:%d", pb0)}, {r.pathA[1], fmt.Sprintf("127.0.0.2:%d", pb1)}}
	pathsB := [][2]string{{pathsA[0][1], pathsA[0][0]}, {pathsA[1][1], pathsA[1][0]}}
	n := len(streamsB)
	r.inA, r.inB = ports[4:4+n], ports[4+n:4+2*n]
	outs := ports[4+2*n:]
	for i := range streams {
		r.rx = append(r.rx, newSeqRx(t, outs[i]))
	}
	// Sources first, so that both units see input from their start.
	r.wg.Add(1)
	go r.feed()
	t.Cleanup(func() { close(r.stop); r.wg.Wait() })

	start := func(name, peer string, paths [][2]string, ins []int, streams []string) *unitProc {
		dir := filepath.Join(root, name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		cfg := pairConfig(t, dir, name, peer, paths, ins, outs, streams)
		for _, o := range opts {
			if o.unit == name {
				cfg += o.yaml
			}
		}
		return startUnitIn(t, dir, cfg)
	}
	// Both at once, as a rack powers up.
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.a = start("unit-a", "unit-b", pathsA, r.inA, streams) }()
	go func() { defer wg.Done(); r.b = start("unit-b", "unit-a", pathsB, r.inB, streamsB) }()
	wg.Wait()
	if r.a == nil || r.b == nil {
		t.FailNow()
	}
	return r
}

// feed sends the same RTP packets to both units' inputs of every stream,
// 500 packets per second each, until the test ends.
func (r *pairRig) feed() {
	defer r.wg.Done()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return
	}
	defer c.Close()
	pkt := make([]byte, 12+188)
	pkt[0], pkt[1] = 0x80, 33
	tk := time.NewTicker(2 * time.Millisecond)
	defer tk.Stop()
	var seq uint16
	var ts uint32
	for {
		select {
		case <-r.stop:
			return
		case <-tk.C:
		}
		seq++
		ts += 180
		binary.BigEndian.PutUint16(pkt[2:], seq)
		binary.BigEndian.PutUint32(pkt[4:], ts)
		for i := range r.streams {
			binary.BigEndian.PutUint32(pkt[8:], 0xabc0+uint32(i))
			for _, port := range []int{r.inA[i], r.inB[i]} {
				_, _ = c.WriteToUDP(pkt, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
			}
		}
	}
}

// owners reads who each unit says forwards each stream, and checks that
// exactly one unit forwards it.
func (r *pairRig) owners() (map[string]string, map[string]uint32, bool) {
	owner, epoch := map[string]string{}, map[string]uint32{}
	active := map[string]int{}
	for _, u := range []*unitProc{r.a, r.b} {
		rep, err := u.report()
		if err != nil {
			return nil, nil, false
		}
		for _, s := range rep.Streams {
			if s.Role == "active" {
				active[s.Name]++
				owner[s.Name], epoch[s.Name] = rep.Unit.Name, s.Epoch
			}
		}
	}
	for _, s := range r.streams {
		if active[s] != 1 {
			return owner, epoch, false
		}
	}
	return owner, epoch, true
}

func (r *pairRig) waitOwners(want map[string]string, what string) map[string]uint32 {
	r.t.Helper()
	var epochs map[string]uint32
	testutil.Eventually(r.t, 10*time.Second, what, func() bool {
		owner, e, ok := r.owners()
		if !ok {
			return false
		}
		for s, u := range want {
			if owner[s] != u {
				return false
			}
		}
		epochs = e
		return true
	})
	return epochs
}

func TestPairOnLoopback(t *testing.T) {
	r := startPair(t, nil)
	r.waitOwners(map[string]string{"s0": "unit-a", "s1": "unit-b"}, "each stream forwarded by the unit it prefers")

	// The API shows the pair: the peer up, both paths heard, with round trips.
	rep := r.a.mustReport()
	if rep.Pair == nil || rep.Pair.Peer != "unit-b" || rep.Pair.PeerState != "up" || !rep.Pair.Agreement || len(rep.Pair.Paths) != 2 {
		t.Fatalf("pair section: %+v", rep.Pair)
	}
	testutil.Eventually(t, 5*time.Second, "both paths up with a round-trip time", func() bool {
		p := r.a.mustReport().Pair
		for _, path := range p.Paths {
			if !path.Up || path.LastHeardMs == nil || path.RTTMs == nil {
				return false
			}
		}
		return true
	})

	// A planned handover: the output goes on, numbered one after the other.
	mark := r.rx[0].mark()
	code, out, errOut := runCLI(t, "handover", "--socket", r.a.socket, "--json", "s0")
	if code != 0 {
		t.Fatalf("handover: %d %s %s", code, out, errOut)
	}
	var hr control.HandoverResult
	if err := json.Unmarshal([]byte(out), &hr); err != nil || hr.To != "unit-b" || hr.Start == nil {
		t.Fatalf("handover answered %q (%v)", out, err)
	}
	r.waitOwners(map[string]string{"s0": "unit-b"}, "s0 on unit-b")
	testutil.Eventually(t, 5*time.Second, "packets through unit-b", func() bool { return r.rx[0].mark() > mark+200 })
	if n := r.rx[0].since(t, mark, "s0 across the handover"); n < 200 {
		t.Fatalf("only %d packets after the handover", n)
	}
	if r.rx[0].senders() != 2 {
		t.Errorf("s0 came from %d units, want both in turn", r.rx[0].senders())
	}

	// A planned drill on unit-b, which now forwards both: both move to
	// unit-a, and the drill is in unit-b's history.
	mark0, mark1 := r.rx[0].mark(), r.rx[1].mark()
	code, out, errOut = runCLI(t, "drill", "--socket", r.b.socket, "--scenario", "planned", "--json")
	if code != 0 {
		t.Fatalf("drill: %d %s %s", code, out, errOut)
	}
	var dr control.DrillResult
	if err := json.Unmarshal([]byte(out), &dr); err != nil || dr.Result != "ok" || dr.Streams != 2 || dr.Lost != 0 || dr.Duplicates != 0 {
		t.Fatalf("drill answered %q (%v)", out, err)
	}
	r.waitOwners(map[string]string{"s0": "unit-a", "s1": "unit-a"}, "both streams on unit-a")
	testutil.Eventually(t, 5*time.Second, "packets after the drill", func() bool {
		return r.rx[0].mark() > mark0+200 && r.rx[1].mark() > mark1+200
	})
	r.rx[0].since(t, mark0, "s0 across the planned drill")
	r.rx[1].since(t, mark1, "s1 across the planned drill")
	if d := r.b.mustReport().Pair.Drills; len(d) != 1 || d[0].Scenario != "planned" || d[0].Result != "ok" {
		t.Errorf("unit-b's drill history: %+v", d)
	}

	// A power-loss drill on unit-a: it goes silent and stops at once;
	// unit-b takes over after the detection time. Dual inputs: nothing lost.
	mark0 = r.rx[0].mark()
	code, out, errOut = runCLI(t, "drill", "--socket", r.a.socket, "--scenario", "power-loss", "--json")
	if code != 0 {
		t.Fatalf("power-loss drill: %d %s %s", code, out, errOut)
	}
	if err := json.Unmarshal([]byte(out), &dr); err != nil || dr.Result != "ok" || dr.Lost != 0 {
		t.Fatalf("power-loss drill answered %q (%v)", out, err)
	}
	r.waitOwners(map[string]string{"s0": "unit-b", "s1": "unit-b"}, "both streams on unit-b")
	testutil.Eventually(t, 5*time.Second, "packets after the power-loss drill", func() bool { return r.rx[0].mark() > mark0+200 })
	checkNoLoss(t, r.rx[0], mark0, "s0 across the power-loss drill")
	t.Logf("power-loss drill: %+v", dr)
	// unit-b took over after hearing nothing for the detection time, ten
	// heartbeats: at least two of them count as missed on each path.
	testutil.Eventually(t, 5*time.Second, "unit-b counting missed heartbeats on both paths", func() bool {
		for _, p := range r.b.mustReport().Pair.Paths {
			if p.Missed < 2 {
				return false
			}
		}
		return true
	})
}

// checkNoLoss checks that from mark on every sequence number arrived: a
// takeover may send a few packets twice, never skip one.
func checkNoLoss(t *testing.T, r *seqRx, mark int, what string) {
	t.Helper()
	r.mu.Lock()
	seqs := append([]uint16(nil), r.seqs[mark:]...)
	r.mu.Unlock()
	if len(seqs) == 0 {
		t.Fatalf("%s: nothing arrived", what)
	}
	seen := map[uint16]bool{}
	lo, hi := seqs[0], seqs[0]
	for _, s := range seqs {
		seen[s] = true
		if int16(s-hi) > 0 {
			hi = s
		}
	}
	for s := lo; s != hi; s++ {
		if !seen[s] {
			t.Errorf("%s: sequence %d never arrived", what, s)
			return
		}
	}
}

// Garbage, forged messages and a peer with another stream list: counted,
// raised, and never a takeover.
func TestPairRefusesBadInput(t *testing.T) {
	r := startPair(t, nil)
	before := r.waitOwners(map[string]string{"s0": "unit-a", "s1": "unit-b"}, "each stream on the unit it prefers")

	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	to, _ := net.ResolveUDPAddr("udp", r.pathA[0])
	junk := make([]byte, 300)
	for i := 0; i < 50; i++ {
		_, _ = rand.Read(junk)
		_, _ = c.WriteToUDP(junk, to) // garbage
		// The header of a pair message, random after it: the HMAC fails.
		forged := make([]byte, 200)
		_, _ = rand.Read(forged)
		copy(forged, "APR\x00\x01\x01")
		binary.BigEndian.PutUint16(forged[6:], uint16(len(forged)-32-32))
		_, _ = c.WriteToUDP(forged, to) // well formed, signed with another key
	}
	testutil.Eventually(t, 5*time.Second, "refusals counted and pair.auth raised", func() bool {
		rep := r.a.mustReport()
		p := rep.Pair.Paths[0]
		// From an address that is not the peer's, a forged message is
		// refused as garbage before its HMAC is checked (pairnet's tests
		// forge from the peer's address).
		return p.Garbage >= 100 && hasCondition(rep, "pair.auth", "warning")
	})
	after := r.waitOwners(map[string]string{"s0": "unit-a", "s1": "unit-b"}, "the same owners")
	for s, e := range before {
		if after[s] != e {
			t.Errorf("%s: epoch %d became %d after bad input", s, e, after[s])
		}
	}
}

func TestPairMismatchMovesNothing(t *testing.T) {
	r := startPair(t, []string{"s0", "s1", "s2"})
	var last string
	defer func() {
		if t.Failed() {
			t.Logf("last pair sections: %s", last)
		}
	}()
	testutil.Eventually(t, 10*time.Second, "pair.mismatch on both units", func() bool {
		ra, rb := r.a.mustReport(), r.b.mustReport()
		last = fmt.Sprintf("%+v %+v %v", *ra.Pair, *rb.Pair, ra.Health)
		return hasCondition(ra, "pair.mismatch", "critical") && hasCondition(rb, "pair.mismatch", "critical") &&
			!ra.Pair.Agreement && ra.Pair.PeerState != "silent" && ra.Pair.PeerState != "unknown"
	})
	// Neither unit claims or takes a stream while they disagree, for as
	// long as we look (one second: ten detection times).
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		for _, u := range []*unitProc{r.a, r.b} {
			for _, s := range u.mustReport().Streams {
				if s.Role == "active" || s.Epoch != 0 {
					t.Fatalf("%s: stream %s is %s at epoch %d while the configs disagree", u.mustReport().Unit.Name, s.Name, s.Role, s.Epoch)
				}
			}
		}
		time.Sleep(50 * time.Millisecond) // observing a steady state, not waiting for an event
	}
}
