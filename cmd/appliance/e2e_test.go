package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"appliance/config"
	"appliance/internal/testutil"
	"appliance/media"
	"appliance/status"
)

// streamsConfig writes a config with one stream per (input, output) pair,
// spread over the given number of workers.
func streamsConfig(workers int, in, out []int, rewrite map[int]uint32, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nunit: {name: e2e}\nmedia:\n  workers: %d\n%sstreams:\n", workers, extra)
	for i := range in {
		fmt.Fprintf(&b, "  - name: s%d\n    input: \"udp://127.0.0.1:%d\"\n    outputs: [\"udp://127.0.0.1:%d\"]\n", i, in[i], out[i])
		if ssrc, ok := rewrite[i]; ok {
			fmt.Fprintf(&b, "    rewrite: {ssrc: 0x%x}\n", ssrc)
		}
	}
	return b.String()
}

// TestCrashIsolation: 4 streams over 2 workers at 1,000 packets/s; SIGKILL
// of one worker costs the other worker's streams nothing, and the killed
// worker's streams come back with the same SSRC and no jump in numbering.
func TestCrashIsolation(t *testing.T) {
	skipShort(t)
	ports := freeUDPPorts(t, 8)
	in, out := ports[:4], ports[4:]
	// Streams 0 and 1 rewrite (one on each worker); 2 and 3 pass through.
	rewrite := map[int]uint32{0: 0xa0, 1: 0xa1}
	u := startUnit(t, streamsConfig(2, in, out, rewrite, ""))

	const pps, sendFor = 1000, 5 * time.Second
	probes := make([]*jsonProc, 4)
	for i := range probes {
		probes[i] = startProbe(t, out[i], sendFor+4*time.Second)
	}
	gens := make([]*jsonProc, 4)
	for i := range gens {
		gens[i] = startGen(t, in[i], pps, sendFor, uint32(0x100+i))
	}
	testutil.Eventually(t, 10*time.Second, "every stream to relay 1000 packets", func() bool {
		for _, s := range u.mustReport().Streams {
			if s.PacketsOut < 1000 {
				return false
			}
		}
		return true
	})

	victim := u.stream("s0")
	if other := u.stream("s1"); other.WorkerPID == victim.WorkerPID {
		t.Fatalf("streams s0 and s1 share worker %d; want them spread", victim.WorkerPID)
	}
	killedAt := time.Now()
	if err := syscall.Kill(victim.WorkerPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "a new worker for s0", func() bool {
		s := u.stream("s0")
		return s.WorkerPID != 0 && s.WorkerPID != victim.WorkerPID && s.State == "running"
	})
	t.Logf("replacement worker relaying %v after the kill (seen by polling the API)", time.Since(killedAt).Round(time.Millisecond))

	for i := range gens {
		var sent media.GenResult
		gens[i].wait(t, &sent)
		var got media.ProbeResult
		probes[i].wait(t, &got)
		name := fmt.Sprintf("s%d", i)
		killed := i%2 == 0
		t.Logf("%s (killed worker: %v): sent %d received %d lost %d dup %d reordered %d discontinuities %d ssrc changes %d max gap %.1f ms jitter %.2f ms cc errors %d",
			name, killed, sent.Sent, got.Received, got.Lost, got.Duplicates, got.Reordered, got.SeqDiscontinuities, got.SSRCChanges, got.MaxGapMs, got.JitterMs, got.CCErrors)
		if got.SSRCChanges != 0 || got.SeqDiscontinuities != 0 || got.Duplicates != 0 {
			t.Errorf("%s: ssrc changes %d, discontinuities %d, duplicates %d; want none", name, got.SSRCChanges, got.SeqDiscontinuities, got.Duplicates)
		}
		if ssrc, ok := rewrite[i]; ok && got.SSRC != ssrc {
			t.Errorf("%s: output SSRC 0x%x, want the rewritten 0x%x", name, got.SSRC, ssrc)
		}
		if !killed && (got.Lost != 0 || got.Received != sent.Sent) {
			t.Errorf("%s on the surviving worker: received %d of %d, lost %d; want every packet", name, got.Received, sent.Sent, got.Lost)
		}
		if killed && got.Received+uint64(max(got.Lost, 0)) != sent.Sent {
			t.Errorf("%s: received %d + lost %d != sent %d: the numbering does not account for every packet", name, got.Received, got.Lost, sent.Sent)
		}
		if killed {
			t.Logf("%s: output gap across the worker kill: %.1f ms (target under 100 ms)", name, got.MaxGapMs)
		}
	}
	ev := findEvent(u.mustReport().Events, func(e status.Event) bool {
		return e.Kind == "exit" && e.Child == "worker-0" && e.Reason == "killed by signal KILL"
	})
	if ev == nil {
		t.Error("the API shows no exit event for worker-0 with the KILL signal")
	}
	if r := u.stream("s0").Restarts; r != 1 {
		t.Errorf("s0 restarts %d, want 1", r)
	}
	if r := u.stream("s1").Restarts; r != 0 {
		t.Errorf("s1 restarts %d, want 0", r)
	}
}

func findEvent(evs []status.Event, match func(status.Event) bool) *status.Event {
	for i := range evs {
		if match(evs[i]) {
			return &evs[i]
		}
	}
	return nil
}

// TestEscalation: killing a worker faster than the restart intensity allows
// makes the media supervisor give up; the root restarts the media subtree and
// the unit keeps serving its API throughout.
func TestEscalation(t *testing.T) {
	skipShort(t)
	ports := freeUDPPorts(t, 4)
	u := startUnit(t, streamsConfig(2, ports[:2], ports[2:], nil, "  restart: {intensity: 3, period: 10s}\n"))

	killed := map[int]bool{}
	for kill := 1; kill <= 4; kill++ {
		var pid int
		testutil.Eventually(t, 10*time.Second, fmt.Sprintf("worker-0 to be up for kill %d", kill), func() bool {
			pid = u.stream("s0").WorkerPID
			return pid != 0 && !killed[pid]
		})
		killed[pid] = true
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "the media supervisor to give up", func() bool {
		return findEvent(u.mustReport().Events, func(e status.Event) bool { return e.Kind == "give_up" }) != nil
	})
	testutil.Eventually(t, 10*time.Second, "the root to restart media and its workers", func() bool {
		rep := u.mustReport()
		for _, s := range rep.Streams {
			if s.WorkerPID == 0 || killed[s.WorkerPID] {
				return false
			}
		}
		return findEvent(rep.Events, func(e status.Event) bool {
			return e.Supervisor == "root" && e.Child == "media" && e.Kind == "restart"
		}) != nil
	})
	rep := u.mustReport()
	if rep.Unit.State != "running" {
		t.Errorf("unit state %q after a subtree restart, want running", rep.Unit.State)
	}
	resp, err := http.Get(u.api + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz %s", resp.Status)
	}
	for _, e := range rep.Events {
		if e.Kind == "give_up" || (e.Child == "media" && e.Supervisor == "root") {
			t.Logf("event %s %s/%s %s %s", e.Time.Format("15:04:05.000"), e.Supervisor, e.Child, e.Kind, e.Reason)
		}
	}
}

// TestRootGivesUp: when the media subtree keeps failing, the root gives up
// too (the top of the ladder: later, the watchdogs stop being fed). The
// process stays up, says "failed" and keeps serving the API.
func TestRootGivesUp(t *testing.T) {
	skipShort(t)
	ports := freeUDPPorts(t, 2)
	u := startUnit(t, streamsConfig(1, ports[:1], ports[1:], nil, "  restart: {intensity: 1, period: 10s}\n"))
	killed := map[int]bool{}
	gaveUp := func() bool {
		return findEvent(u.mustReport().Events, func(e status.Event) bool {
			return e.Kind == "give_up" && e.Supervisor == "root"
		}) != nil
	}
	for kill := 1; !gaveUp(); kill++ {
		if kill > 20 {
			t.Fatal("the root did not give up after 20 kills")
		}
		var pid int
		testutil.Eventually(t, 10*time.Second, fmt.Sprintf("a worker to kill (kill %d)", kill), func() bool {
			pid = u.stream("s0").WorkerPID
			return (pid != 0 && !killed[pid]) || gaveUp()
		})
		if pid != 0 && !killed[pid] {
			killed[pid] = true
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	rep := u.mustReport()
	if rep.Unit.State != "failed" || rep.Supervisor.State != "failed" {
		t.Errorf("unit state %q, root state %q; want failed", rep.Unit.State, rep.Supervisor.State)
	}
	for _, s := range rep.Streams {
		if s.State != "stopped" || s.WorkerPID != 0 {
			t.Errorf("stream %s after the root gave up: state %q, worker pid %d; want stopped", s.Name, s.State, s.WorkerPID)
		}
	}
	resp, err := http.Get(u.api + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/healthz %s, want 503", resp.Status)
	}
	select {
	case err := <-u.waited:
		u.waited <- err
		t.Errorf("the unit exited (%v); it should stay up to explain itself", err)
	default:
	}
	t.Logf("root gave up after %d worker kills", len(killed))
}

// TestHungWorker: a worker that stops (SIGSTOP) stops sending heartbeats and
// is killed and replaced; its stream resumes without a numbering jump.
func TestHungWorker(t *testing.T) {
	skipShort(t)
	ports := freeUDPPorts(t, 2)
	u := startUnit(t, streamsConfig(1, ports[:1], ports[1:], map[int]uint32{0: 0x77}, "  hang_timeout: 500ms\n"))
	probe := startProbe(t, ports[1], 7*time.Second)
	gen := startGen(t, ports[0], 1000, 4*time.Second, 0x55)
	testutil.Eventually(t, 10*time.Second, "the stream to relay", func() bool { return u.stream("s0").PacketsOut > 500 })

	pid := u.stream("s0").WorkerPID
	stoppedAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	var ev *status.Event
	testutil.Eventually(t, 10*time.Second, "the hung worker to be detected", func() bool {
		ev = findEvent(u.mustReport().Events, func(e status.Event) bool {
			return e.Kind == "exit" && e.PID == pid && strings.Contains(e.Reason, "hung")
		})
		return ev != nil
	})
	t.Logf("hang detected %v after SIGSTOP (hang_timeout 500ms): %s", ev.Time.Sub(stoppedAt).Round(time.Millisecond), ev.Reason)
	testutil.Eventually(t, 10*time.Second, "a replacement worker", func() bool {
		s := u.stream("s0")
		return s.WorkerPID != 0 && s.WorkerPID != pid
	})

	var sent media.GenResult
	gen.wait(t, &sent)
	var got media.ProbeResult
	probe.wait(t, &got)
	t.Logf("across the hang: sent %d received %d lost %d max gap %.1f ms", sent.Sent, got.Received, got.Lost, got.MaxGapMs)
	if got.SSRCChanges != 0 || got.SeqDiscontinuities != 0 || got.Duplicates != 0 || got.SSRC != 0x77 {
		t.Errorf("after the hang: %+v; want one SSRC, no discontinuity, no duplicates", got)
	}
	if got.Received+uint64(max(got.Lost, 0)) != sent.Sent {
		t.Errorf("received %d + lost %d != sent %d", got.Received, got.Lost, sent.Sent)
	}
}

// TestBadInput: garbage of every kind into a stream's input is counted as
// malformed while the good packets flow untouched.
func TestBadInput(t *testing.T) {
	skipShort(t)
	ports := freeUDPPorts(t, 2)
	u := startUnit(t, streamsConfig(1, ports[:1], ports[1:], nil, ""))
	probe := startProbe(t, ports[1], 6*time.Second)
	gen := startGen(t, ports[0], 1000, 3*time.Second, 0x42)

	conn, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: ports[0]})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	good := []byte{0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1}
	csrcPastEnd := append([]byte{0x8f}, good[1:]...)
	extPastEnd := append([]byte{0x90}, good[1:]...)
	garbage := [][]byte{
		{0x80, 96, 0},                     // truncated header
		append([]byte{0x40}, good[1:]...), // RTP version 1
		[]byte("GET / HTTP/1.1\r\n\r\n"),  // not RTP at all
		csrcPastEnd,                       // CSRC list past the end
		extPastEnd,                        // extension past the end
		bytes.Repeat([]byte{0x80}, 9000),  // jumbo
		{},                                // empty
		bytes.Repeat([]byte{0xff}, 1400),  // noise
	}
	const rounds = 250 // 2,000 datagrams over about 2 s, beside 1,000 good packets/s
	sentBad := 0
	for r := 0; r < rounds; r++ {
		for _, g := range garbage {
			if _, err := conn.Write(g); err != nil {
				t.Fatal(err)
			}
			sentBad++
		}
		time.Sleep(8 * time.Millisecond) // pacing a load loop, not waiting for an event
	}
	testutil.Eventually(t, 10*time.Second, "every bad datagram to be counted", func() bool {
		return u.stream("s0").Malformed == uint64(sentBad)
	})
	s := u.stream("s0")
	t.Logf("malformed %d (short %d, version %d, header %d, oversize %d)", s.Malformed, s.MalformedShort, s.MalformedVer, s.MalformedHeader, s.MalformedBig)
	if s.MalformedShort != 2*rounds || s.MalformedVer != 3*rounds || s.MalformedHeader != 2*rounds || s.MalformedBig != rounds {
		t.Errorf("malformed by kind: %+v", s.Counters)
	}
	var sent media.GenResult
	gen.wait(t, &sent)
	var got media.ProbeResult
	probe.wait(t, &got)
	if got.Received != sent.Sent || got.Lost != 0 || got.Malformed != 0 || got.CCErrors != 0 {
		t.Errorf("good packets: sent %d, received %+v; want all of them, clean", sent.Sent, got)
	}
	if pid := u.stream("s0").WorkerPID; pid == 0 || u.stream("s0").Restarts != 0 {
		t.Errorf("the worker restarted under bad input")
	}
}

// TestBrokenConfig: every problem is listed with its line, the exit code is
// 1, and nothing is started.
func TestBrokenConfig(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "broken.yaml")
	api := freeTCPAddr(t)
	broken := `version: 1
unit: {name: unit-a}
status: {listen: "` + api + `"}
media: {workers: 0}
streams:
  - name: cam1
    input: "udp://127.0.0.1:5004"
    outputs: ["udp://x:99999"]
    colour: red
  - name: cam1
    input: "udp://127.0.0.1:70000"
    outputs: []
`
	if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "--config", path}, {"run", "--config", path}} {
		cmd := exec.Command(bin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errorsAs(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("%v: %v, want exit code 1\n%s", args, err, stderr.String())
		}
		out := stderr.String()
		for _, want := range []string{":4:", ":8:", ":9:", ":10:", ":11:", ":12:", "colour"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: output lacks %q:\n%s", args, want, out)
			}
		}
		t.Logf("%v says:\n%s", args, out)
	}
	if c, err := net.DialTimeout("tcp", api, time.Second); err == nil {
		c.Close()
		t.Error("a broken config still started the status API")
	}
}

// demoOnFreePorts is the embedded demo config with its ports (which make
// run holds) moved to free ones, and the status address to use.
func demoOnFreePorts(t *testing.T) (cfg, api string) {
	t.Helper()
	udp := freeUDPPorts(t, 2)
	api = freeTCPAddr(t)
	cfg = strings.NewReplacer(
		"127.0.0.1:5004", fmt.Sprintf("127.0.0.1:%d", udp[0]),
		"127.0.0.1:6004", fmt.Sprintf("127.0.0.1:%d", udp[1]),
		"127.0.0.1:8080", api,
	).Replace(string(config.DefaultYAML()))
	if bad := demoPortsIn(string(config.DefaultYAML()), ""); len(bad) != len(demoPorts)+1 {
		t.Fatalf("the demo config uses %v; want every demo port (the input twice): update demoPorts", bad)
	}
	noDemoPorts(t, cfg, api)
	return cfg, api
}

// TestDefaultConfig: the embedded demo's stream is fed by the built-in test
// source, so the counters move. It runs on free ports: make run may be up.
func TestDefaultConfig(t *testing.T) {
	skipShort(t)
	cfg, api := demoOnFreePorts(t)
	dir := t.TempDir() // the demo keeps its state in .appliance-state, relative to where it runs
	if err := os.WriteFile(filepath.Join(dir, "demo.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", "demo.yaml", "--listen", api)
	cmd.Dir = dir
	logs := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("output:\n%s", logs.String())
		}
	}()
	u := &unitProc{t: t, api: "http://" + api}
	var first uint64
	testutil.Eventually(t, 15*time.Second, "the demo stream to move", func() bool {
		rep, err := u.report()
		if err != nil || len(rep.Streams) != 1 {
			return false
		}
		s := rep.Streams[0]
		if first == 0 {
			first = s.PacketsOut
			return false
		}
		return s.State == "running" && s.PacketsOut > first && s.BitrateBps > 0
	})
}

// TestRestartAfterParentKill: workers die with their parent, so a unit
// started again at once binds every input: none is left held by an orphan.
func TestRestartAfterParentKill(t *testing.T) {
	skipShort(t)
	ports := freeUDPPorts(t, 8)
	cfg := streamsConfig(2, ports[:4], ports[4:], nil, "")
	u := startUnit(t, cfg)
	var workers []int
	for _, w := range u.mustReport().Workers {
		workers = append(workers, w.PID)
	}
	if err := syscall.Kill(u.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-u.waited
	u.waited <- nil
	again := startUnit(t, cfg)
	for _, s := range again.mustReport().Streams {
		if s.State == "failed" {
			t.Errorf("stream %s could not bind its input after the restart: %s", s.Name, s.Error)
		}
	}
	if strings.Contains(again.logs.String(), "cannot be bound") {
		t.Errorf("an input was still held by an orphaned worker:\n%s", again.logs.String())
	}
	for _, pid := range workers {
		if alive(pid) {
			t.Errorf("worker %d outlived its parent", pid)
		}
	}
}

// alive reports whether pid is a process that has not exited (a zombie
// waiting for its reaper has).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}
