package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"appliance/internal/testutil"
	"appliance/media"
)

// rx is an in-test receiver: it remembers when the first packet came.
type rx struct {
	c     *net.UDPConn
	mu    sync.Mutex
	first time.Time
	n     int
}

func newRx(t *testing.T, port int) *rx {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	r := &rx{c: c}
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			r.mu.Lock()
			if r.n == 0 {
				r.first = time.Now()
			}
			r.n++
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close() })
	return r
}

func (r *rx) got() (int, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n, r.first
}

// runCLI runs an appliance subcommand and returns its exit code and output.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runCLIArgs(t, append([]string{bin}, args...))
}

type streamDef struct {
	name    string
	in      int
	outs    []int
	rewrite uint32
}

func writeStreams(workers int, defs []streamDef) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nunit: {name: e2e}\nmedia:\n  workers: %d\nstreams:\n", workers)
	for _, d := range defs {
		var outs []string
		for _, o := range d.outs {
			outs = append(outs, fmt.Sprintf("%q", fmt.Sprintf("udp://127.0.0.1:%d", o)))
		}
		fmt.Fprintf(&b, "  - name: %s\n    input: \"udp://127.0.0.1:%d\"\n    outputs: [%s]\n", d.name, d.in, strings.Join(outs, ", "))
		if d.rewrite != 0 {
			fmt.Fprintf(&b, "    rewrite: {ssrc: 0x%x}\n", d.rewrite)
		}
	}
	return b.String()
}

// TestReloadLive: 8 streams at 1,000 packets/s on 2 workers; a reload adds
// 4, removes 2 and moves one stream's output. The 5 untouched streams lose
// nothing and see no discontinuity, the new ones flow at once, the removed
// ports are free when the reload returns, and a broken reload changes nothing.
func TestReloadLive(t *testing.T) {
	skipShort(t)
	ports := freeUDPPorts(t, 8+8+4+4+1)
	in, out, newIn, newOut, moved := ports[:8], ports[8:16], ports[16:20], ports[20:24], ports[24]
	var defs []streamDef
	for i := 0; i < 8; i++ {
		d := streamDef{name: fmt.Sprintf("s%d", i), in: in[i], outs: []int{out[i]}}
		if i%2 == 0 {
			d.rewrite = uint32(0xa0 + i)
		}
		defs = append(defs, d)
	}
	u := startUnit(t, writeStreams(2, defs))

	const pps, sendFor = 1000, 5 * time.Second
	probes := map[int]*jsonProc{}
	for i := 0; i < 5; i++ {
		probes[i] = startProbe(t, out[i], sendFor+4*time.Second)
	}
	var gens []*jsonProc
	for i := 0; i < 8; i++ {
		gens = append(gens, startGen(t, in[i], pps, sendFor, uint32(0x100+i)))
	}
	var news []*rx
	for i := 0; i < 4; i++ {
		news = append(news, newRx(t, newOut[i]))
		// Sent before the stream exists: refused until the reload binds it.
		startGen(t, newIn[i], pps, sendFor, uint32(0x200+i))
	}
	movedRx := newRx(t, moved)
	testutil.Eventually(t, 10*time.Second, "every stream to relay", func() bool {
		for _, s := range u.mustReport().Streams {
			if s.PacketsOut < 500 {
				return false
			}
		}
		return true
	})
	before := u.mustReport()
	pids := map[string]int{}
	for _, s := range before.Streams {
		pids[s.Name] = s.WorkerPID
	}

	// s6 and s7 go, s5 moves its output, n0..n3 come.
	next := append([]streamDef(nil), defs[:6]...)
	next[5].outs = []int{moved}
	for i := 0; i < 4; i++ {
		next = append(next, streamDef{name: fmt.Sprintf("n%d", i), in: newIn[i], outs: []int{newOut[i]}, rewrite: uint32(0xb0 + i)})
	}
	cfg := withPrivateState(writeStreams(2, next), u.dir)
	if err := os.WriteFile(u.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	reloadAt := time.Now()
	code, stdout, stderr := runCLI(t, "reload", "--socket", u.socket, "--json")
	reloaded := time.Since(reloadAt)
	if code != 0 {
		t.Fatalf("reload exited %d: %s %s", code, stdout, stderr)
	}
	var res struct {
		Added, Removed, Changed, Unchanged []string
		RestartNeeded                      []string `json:"restart_needed"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("reload printed %q: %v", stdout, err)
	}
	t.Logf("reload took %v: %s", reloaded.Round(time.Millisecond), strings.TrimSpace(stdout))
	if !slices.Equal(res.Added, []string{"n0", "n1", "n2", "n3"}) || !slices.Equal(res.Removed, []string{"s6", "s7"}) ||
		!slices.Equal(res.Changed, []string{"s5"}) || len(res.Unchanged) != 5 || len(res.RestartNeeded) != 0 {
		t.Errorf("reload answered %+v", res)
	}
	// The removed streams' ports are free the moment the reload returns.
	for _, p := range []int{in[6], in[7]} {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
		if err != nil {
			t.Errorf("port %d of a removed stream is still held after the reload: %v", p, err)
			continue
		}
		c.Close()
	}
	testutil.Eventually(t, 5*time.Second, "the new streams and the moved output to flow", func() bool {
		for _, r := range append(news, movedRx) {
			if n, _ := r.got(); n == 0 {
				return false
			}
		}
		return true
	})
	for i, r := range news {
		_, first := r.got()
		d := first.Sub(reloadAt)
		t.Logf("n%d: first packet %v after the reload began", i, d.Round(time.Millisecond))
		if d > 500*time.Millisecond {
			t.Errorf("n%d flowed %v after the reload began; want within 500 ms", i, d)
		}
	}

	for i, p := range probes {
		var sent media.GenResult
		gens[i].wait(t, &sent)
		var got media.ProbeResult
		p.wait(t, &got)
		t.Logf("s%d (untouched): sent %d received %d lost %d dup %d discontinuities %d max gap %.1f ms",
			i, sent.Sent, got.Received, got.Lost, got.Duplicates, got.SeqDiscontinuities, got.MaxGapMs)
		if got.Received != sent.Sent || got.Lost != 0 || got.Duplicates != 0 || got.SeqDiscontinuities != 0 || got.SSRCChanges != 0 {
			t.Errorf("s%d was not touched by the reload but lost packets or numbering: %+v", i, got)
		}
	}
	after := u.mustReport()
	names := []string{}
	for _, s := range after.Streams {
		names = append(names, s.Name)
		if old, ok := pids[s.Name]; ok && s.Restarts != 0 {
			t.Errorf("%s restarted (%d) across the reload (worker %d)", s.Name, s.Restarts, old)
		}
	}
	if want := []string{"s0", "s1", "s2", "s3", "s4", "s5", "n0", "n1", "n2", "n3"}; !slices.Equal(names, want) {
		t.Errorf("streams after the reload: %v, want %v", names, want)
	}

	// A broken file changes nothing: every problem is printed with its line.
	broken := strings.Replace(cfg, "workers: 2", "workers: 0", 1) + "colour: red\n"
	broken = strings.Replace(broken, fmt.Sprintf("udp://127.0.0.1:%d\"\n", newIn[3]), "udp://127.0.0.1:99999\"\n", 1)
	if err := os.WriteFile(u.config, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, "reload", "--socket", u.socket)
	if code != 1 {
		t.Fatalf("a broken reload exited %d, want 1: %s %s", code, stdout, stderr)
	}
	for _, want := range []string{"media: workers", "99999", "colour"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the broken reload's answer lacks %q:\n%s", want, stderr)
		}
	}
	if n := strings.Count(strings.TrimSpace(stderr), "\n") + 1; n < 3 {
		t.Errorf("the broken reload listed %d problems, want every one (3):\n%s", n, stderr)
	}
	t.Logf("broken reload said:\n%s", stderr)
	var now []string
	for _, s := range u.mustReport().Streams {
		now = append(now, s.Name)
	}
	if !slices.Equal(now, names) {
		t.Errorf("a broken reload changed the streams: %v", now)
	}
}

// TestStandbyToForward on one unit: a stream in standby forwards nothing
// while its input counters move; "forward from S" gives the receiver every
// packet exactly once, one SSRC, continuous numbering.
func TestStandbyToForward(t *testing.T) {
	skipShort(t)
	ports := freeUDPPorts(t, 2)
	// A ring far longer than the standby lasts: the forward must find every
	// packet since the standby however slowly the two commands run.
	u := startUnit(t, streamsConfig(1, ports[:1], ports[1:], map[int]uint32{0: 0x5151}, "  standby_ring: 5s\n"))
	probe := startProbe(t, ports[1], 8*time.Second)
	gen := startGen(t, ports[0], 1000, 4*time.Second, 0x77)
	testutil.Eventually(t, 10*time.Second, "the stream to relay", func() bool { return u.stream("s0").PacketsOut > 500 })

	code, stdout, stderr := runCLI(t, "role", "--socket", u.socket, "--stream", "s0", "--role", "standby", "--json")
	if code != 0 {
		t.Fatalf("role standby: %d %s %s", code, stdout, stderr)
	}
	var r struct {
		LastForwarded *uint16 `json:"last_forwarded"`
	}
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || r.LastForwarded == nil {
		t.Fatalf("role standby printed %q", stdout)
	}
	var s1 media.StreamStatus
	testutil.Eventually(t, 5*time.Second, "the worker to report standby", func() bool {
		s1 = u.stream("s0")
		return s1.Role == "standby"
	})
	testutil.Eventually(t, 5*time.Second, "input to move while output stands still", func() bool {
		s := u.stream("s0")
		return s.PacketsIn > s1.PacketsIn+100 && s.RingPackets > 0
	})
	s2 := u.stream("s0")
	if s2.PacketsOut != s1.PacketsOut {
		t.Errorf("standby stream sent: packets out %d then %d", s1.PacketsOut, s2.PacketsOut)
	}
	t.Logf("standby: packets in %d -> %d, out %d -> %d, ring %d", s1.PacketsIn, s2.PacketsIn, s1.PacketsOut, s2.PacketsOut, s2.RingPackets)

	from := fmt.Sprint(*r.LastForwarded + 1)
	code, stdout, stderr = runCLI(t, "role", "--socket", u.socket, "--stream", "s0", "--role", "forward", "--from", from)
	if code != 0 {
		t.Fatalf("role forward: %d %s %s", code, stdout, stderr)
	}
	t.Logf("forward from %s: %s", from, strings.TrimSpace(stdout))

	var sent media.GenResult
	gen.wait(t, &sent)
	var got media.ProbeResult
	probe.wait(t, &got)
	t.Logf("receiver: sent %d received %d lost %d dup %d discontinuities %d ssrc 0x%x max gap %.1f ms",
		sent.Sent, got.Received, got.Lost, got.Duplicates, got.SeqDiscontinuities, got.SSRC, got.MaxGapMs)
	if got.Received != sent.Sent || got.Lost != 0 || got.Duplicates != 0 || got.SeqDiscontinuities != 0 || got.SSRCChanges != 0 || got.SSRC != 0x5151 {
		t.Errorf("across standby and forward from %s: %+v; want every packet once, one SSRC, continuous", from, got)
	}
	if s := u.stream("s0"); s.Role != "active" || s.Replayed == 0 {
		t.Errorf("after forward: role %s, replayed %d", s.Role, s.Replayed)
	}
}

// TestCheckRefusesWhatRunRefuses: loops, overlapping inputs, too many
// streams, a second document and a path that is not a file are refused by
// check, with their lines, exactly as by run.
func TestCheckRefusesWhatRunRefuses(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	many := func(n int) string {
		var b strings.Builder
		b.WriteString("version: 1\nunit: {name: big}\nmedia: {workers: 1}\nstreams:\n")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "  - {name: s%d, input: \"udp://127.0.0.1:%d\", outputs: [\"udp://127.0.0.1:%d\"]}\n", i, 20000+i, 40000+i)
		}
		return b.String()
	}
	cases := []struct {
		name, cfg string
		want      []string
	}{
		{"loop through another stream", `version: 1
unit: {name: e2e}
streams:
  - {name: cam1, input: "udp://127.0.0.1:5004", outputs: ["udp://127.0.0.1:5006"]}
  - {name: cam2, input: "udp://127.0.0.1:5006", outputs: ["udp://127.0.0.1:5004"]}
`, []string{":5:", "forwarding loop", "cam1 -> cam2 -> cam1"}},
		{"overlapping inputs", `version: 1
unit: {name: e2e}
streams:
  - {name: cam1, input: "udp://0.0.0.0:5004", outputs: ["udp://127.0.0.1:6004"]}
  - {name: cam2, input: "udp://127.0.0.1:5004", outputs: ["udp://127.0.0.1:6006"]}
`, []string{":5:", "cam1"}},
		{"second document", "version: 1\nunit: {name: e2e}\n---\nversion: 1\n", []string{":3:", "one"}},
		{"too many streams on a worker", many(1025), []string{"media: workers", "2 workers"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(tc.cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, cmd := range []string{"check", "run"} {
				args := []string{cmd, "--config", path}
				if cmd == "run" {
					args = append(args, "--listen", freeTCPAddr(t))
				}
				code, _, stderr := runCLI(t, args...)
				if code != 1 {
					t.Fatalf("%s exited %d, want 1: %s", cmd, code, stderr)
				}
				for _, w := range tc.want {
					if !strings.Contains(stderr, w) {
						t.Errorf("%s: output lacks %q:\n%s", cmd, w, stderr)
					}
				}
			}
		})
	}
	t.Run("not a regular file", func(t *testing.T) {
		fifo := filepath.Join(dir, "fifo.yaml")
		if err := mkfifo(fifo); err != nil {
			t.Skip("no FIFO here:", err)
		}
		code, _, stderr := runCLI(t, "check", "--config", fifo)
		if code != 1 || !strings.Contains(stderr, "not a regular file") {
			t.Errorf("check on a FIFO: exit %d: %s", code, stderr)
		}
	})
	t.Run("listen flag", func(t *testing.T) {
		code, _, stderr := runCLI(t, "run", "--listen", "localhost:http")
		if code != 2 || !strings.Contains(stderr, "--listen") {
			t.Errorf("run --listen localhost:http: exit %d: %s", code, stderr)
		}
	})
}

// TestLateFromBeforeTheFirst: a stream joined mid-flight, whose first packets
// are late ones from before the first number seen, shows no negative loss,
// in the unit and at the receiver.
func TestLateFromBeforeTheFirst(t *testing.T) {
	skipShort(t)
	ports := freeUDPPorts(t, 2)
	u := startUnit(t, streamsConfig(1, ports[:1], ports[1:], nil, ""))
	probe := startProbe(t, ports[1], 2*time.Second)
	conn, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: ports[0]})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, seq := range []uint16{1000, 999, 998, 997, 996, 995, 994, 993, 992, 991, 990} {
		b := []byte{0x80, 96, byte(seq >> 8), byte(seq), 0, 0, 0, 1, 0, 0, 0, 9, 'x'}
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "11 packets counted", func() bool { return u.stream("s0").PacketsIn == 11 })
	s := u.stream("s0")
	if s.Lost != 0 || s.Reordered != 10 {
		t.Errorf("unit: lost %d reordered %d, want 0 and 10", s.Lost, s.Reordered)
	}
	var got media.ProbeResult
	probe.wait(t, &got)
	if got.Lost != 0 || got.Reordered != 10 || got.Received != 11 {
		t.Errorf("probe: %+v, want 11 received, 0 lost, 10 reordered", got)
	}
}
