package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"appliance/internal/testutil"
	"appliance/media"
	"appliance/status"
)

// netnsRig is a pair of network namespaces made for one test: the unit's,
// with only loopback at first, and a peer it can be given a route to.
type netnsRig struct {
	t          *testing.T
	unit, peer string
}

func newNetnsRig(t *testing.T) *netnsRig {
	t.Helper()
	testutil.NeedRoot(t, "network namespaces")
	testutil.NeedTools(t, testutil.Tool{Name: "ip", Package: "iproute2"})
	r := &netnsRig{t: t, unit: fmt.Sprintf("appl-u%d", os.Getpid()), peer: fmt.Sprintf("appl-p%d", os.Getpid())}
	for _, ns := range []string{r.unit, r.peer} {
		r.ip("netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		r.ip("-n", ns, "link", "set", "lo", "up")
	}
	return r
}

func (r *netnsRig) ip(args ...string) {
	r.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		r.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// in runs an appliance subcommand inside namespace ns.
func (r *netnsRig) in(ns string, args ...string) []string {
	return append([]string{"ip", "netns", "exec", ns, bin}, args...)
}

// TestOutputWithoutRoute: in a namespace with only loopback, a stream with
// one output on loopback and one with no route keeps its good output and
// every other stream flowing; the bad output is counted, raises its
// condition, and recovers by itself once the route exists. A route that
// disappears at runtime, and a worker restart while it is gone, cost the
// same output and nothing else.
func TestOutputWithoutRoute(t *testing.T) {
	skipShort(t)
	r := newNetnsRig(t)
	const api = "127.0.0.1:18080"
	dir := t.TempDir()
	cfg := fmt.Sprintf(`version: 1
unit: {name: e2e, state_dir: %s}
control: {socket: %s}
media: {workers: 2, output_alarm_after: 500ms}
streams:
  - {name: a, input: "udp://127.0.0.1:5000", outputs: ["udp://127.0.0.1:6000", "udp://198.18.9.9:6001"]}
  - {name: b, input: "udp://127.0.0.1:5002", outputs: ["udp://127.0.0.1:6002"]}
`, filepath.Join(dir, "state"), filepath.Join(dir, "control.sock"))
	path := filepath.Join(dir, "unit.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLIArgs(t, r.in(r.unit, "check", "--config", path))
	if code != 0 {
		t.Fatalf("check: %d %s %s", code, out, errs)
	}
	logs := &testutil.SyncBuffer{}
	argv := r.in(r.unit, "run", "--config", path, "--listen", api)
	unit := exec.Command(argv[0], argv[1:]...)
	unit.Stdout, unit.Stderr = logs, logs
	unit.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := unit.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unit.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = unit.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-unit.Process.Pid, syscall.SIGKILL)
		}
		if t.Failed() {
			t.Logf("appliance output:\n%s", logs.String())
		}
	})
	report := func() (status.Report, bool) {
		argv := r.in(r.unit, "status", "--json", "--addr", "http://"+api)
		b, err := exec.Command(argv[0], argv[1:]...).Output()
		var rep status.Report
		return rep, err == nil && json.Unmarshal(b, &rep) == nil
	}
	stream := func(rep status.Report, name string) media.StreamStatus {
		for _, s := range rep.Streams {
			if s.Name == name {
				return s
			}
		}
		return media.StreamStatus{}
	}
	condition := func(rep status.Report) bool {
		for _, c := range rep.Health {
			if c.Name == "output.failing:a:198.18.9.9:6001" {
				return true
			}
		}
		return false
	}

	const sendFor = 8 * time.Second
	probeA := startJSONArgs(t, "listening", r.in(r.unit, "probe", "--listen", "127.0.0.1:6000", "--duration", (sendFor+3*time.Second).String(), "--json"))
	probeB := startJSONArgs(t, "listening", r.in(r.unit, "probe", "--listen", "127.0.0.1:6002", "--duration", (sendFor+3*time.Second).String(), "--json"))
	var rep status.Report
	testutil.Eventually(t, 15*time.Second, "the unit to run its streams", func() bool {
		var ok bool
		rep, ok = report()
		return ok && stream(rep, "a").WorkerPID != 0 && stream(rep, "b").WorkerPID != 0
	})
	genA := startJSONArgs(t, "", r.in(r.unit, "gen", "--to", "127.0.0.1:5000", "--pps", "500", "--duration", sendFor.String(), "--json"))
	genB := startJSONArgs(t, "", r.in(r.unit, "gen", "--to", "127.0.0.1:5002", "--pps", "500", "--duration", sendFor.String(), "--json"))

	testutil.Eventually(t, 10*time.Second, "the unroutable output's condition", func() bool {
		rep, _ = report()
		return condition(rep)
	})
	a := stream(rep, "a")
	t.Logf("no route: stream a %s, outputs %+v", a.State, a.Outputs)
	if a.State != "running" || a.Restarts != 0 || a.Outputs[0].State != "ok" || a.Outputs[1].State != "down" ||
		!strings.Contains(a.Outputs[1].LastError, "unreachable") || a.Outputs[1].Errors == 0 {
		t.Errorf("stream a without a route for its second output: %+v", a)
	}

	// The route appears: a link to the peer namespace, with the address on it.
	r.ip("link", "add", "vu", "netns", r.unit, "type", "veth", "peer", "name", "vp", "netns", r.peer)
	r.ip("-n", r.peer, "addr", "add", "198.18.9.9/24", "dev", "vp")
	r.ip("-n", r.peer, "link", "set", "vp", "up")
	peerProbe := startJSONArgs(t, "listening", r.in(r.peer, "probe", "--listen", "198.18.9.9:6001", "--duration", "2s", "--json"))
	r.ip("-n", r.unit, "addr", "add", "198.18.9.1/24", "dev", "vu")
	r.ip("-n", r.unit, "link", "set", "vu", "up")
	routed := time.Now()
	testutil.Eventually(t, 10*time.Second, "the condition to clear once the route exists", func() bool {
		rep, _ = report()
		return !condition(rep) && stream(rep, "a").Outputs[1].State == "ok"
	})
	t.Logf("output recovered %v after the route was added", time.Since(routed).Round(time.Millisecond))
	var atPeer media.ProbeResult
	peerProbe.wait(t, &atPeer)
	if atPeer.Received == 0 {
		t.Error("the peer received nothing once the route existed")
	}

	// The route goes away at runtime, and the worker carrying a is killed
	// while it is gone: the worker comes back, the other output flows.
	r.ip("-n", r.unit, "link", "set", "vu", "down")
	testutil.Eventually(t, 10*time.Second, "the condition again once the route is gone", func() bool {
		rep, _ = report()
		return condition(rep)
	})
	pid := stream(rep, "a").WorkerPID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "a new worker for a", func() bool {
		rep, _ = report()
		s := stream(rep, "a")
		return s.WorkerPID != 0 && s.WorkerPID != pid && s.State == "running"
	})

	var sentA, sentB media.GenResult
	genA.wait(t, &sentA)
	genB.wait(t, &sentB)
	var gotA, gotB media.ProbeResult
	probeA.wait(t, &gotA)
	probeB.wait(t, &gotB)
	t.Logf("a's loopback output: sent %d received %d lost %d; b: sent %d received %d lost %d; peer got %d",
		sentA.Sent, gotA.Received, gotA.Lost, sentB.Sent, gotB.Received, gotB.Lost, atPeer.Received)
	if gotB.Received != sentB.Sent || gotB.Lost != 0 {
		t.Errorf("stream b lost packets while another stream's output had no route: %+v", gotB)
	}
	// a's good output loses nothing to the bad one; its worker was killed
	// once, which costs a pause, not packets (the parent holds the input).
	if gotA.Received != sentA.Sent || gotA.Lost != 0 || gotA.SeqDiscontinuities != 0 {
		t.Errorf("stream a's loopback output: %+v, sent %d", gotA, sentA.Sent)
	}
	rep, _ = report()
	if rep.Unit.State != "running" {
		t.Errorf("unit state %s", rep.Unit.State)
	}
}

func runCLIArgs(t *testing.T, argv []string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		var ee *exec.ExitError
		if !errorsAs(err, &ee) {
			t.Fatalf("%v: %v", argv, err)
		}
		return ee.ExitCode(), out.String(), errb.String()
	}
	return 0, out.String(), errb.String()
}
