package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"appliance/internal/testutil"
)

// buildAppliance builds the appliance binary the units run.
func buildAppliance(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "appliance")
	build := exec.Command("go", "build", "-o", bin, "../cmd/appliance")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the appliance: %v\n%s", err, out)
	}
	return bin
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(Clock().Round(time.Millisecond), strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestLoneRestart runs the lab's one scenario that needs no pair: a unit
// alone in its namespace relays two streams from the client back to it;
// the worker carrying s000 is SIGKILLed. The row shows the restart's gap,
// the stream keeps its SSRC and numbering, and the lab leaves nothing
// behind.
func TestLoneRestart(t *testing.T) {
	needRoot(t)
	bin := buildAppliance(t)
	rows, err := Run(context.Background(), Options{Binary: bin, Scenarios: []string{"lone-restart"}, Streams: 2, Runs: 2, Progress: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	_ = PrintTable(&out, rows)
	t.Logf("\n%s", out.String())
	if len(rows) != 1 {
		t.Fatalf("%d rows", len(rows))
	}
	r := rows[0]
	if !r.Pass || r.Mode != Lone || r.Runs != 2 || r.Streams != 2 || r.SSRCChanges != 0 || r.Discontinuities != 0 ||
		r.GapMs <= 0 || r.GapMs >= float64(LoneRestartBound.Milliseconds()) || r.DetectionMs != -1 {
		t.Errorf("row %+v", r)
	}
	names, err := listNS()
	if err != nil {
		t.Fatal(err)
	}
	own := Prefix + strconv.Itoa(os.Getpid())
	for _, n := range names {
		if strings.HasPrefix(n, own) {
			t.Errorf("namespace %s is left", n)
		}
	}
	if _, err := os.Stat(filepath.Join(os.TempDir(), own)); !os.IsNotExist(err) {
		t.Errorf("state directory left: %v", err)
	}
}

// TestInterrupted: a lab cancelled while its unit runs (what SIGINT and
// SIGTERM do to `appliance lab`) stops the unit and its workers and removes
// its namespaces before it returns.
func TestInterrupted(t *testing.T) {
	needRoot(t)
	bin := buildAppliance(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		rows []Row
		err  error
	}
	done := make(chan result, 1)
	go func() {
		rows, err := Run(ctx, Options{Binary: bin, Scenarios: []string{"lone-restart"}, Runs: 50})
		done <- result{rows, err}
	}()
	ns := Prefix + strconv.Itoa(os.Getpid()) + "-" + string(UnitA)
	var unitPIDs []int
	testutil.Eventually(t, 30*time.Second, "the unit and its workers running in "+ns, func() bool {
		unitPIDs = inNamespace(ns)
		return len(unitPIDs) >= 3 // the unit and two workers
	})
	cancel()
	select {
	case r := <-done:
		if !errors.Is(r.err, context.Canceled) || len(r.rows) != 0 {
			t.Errorf("Run after cancel: %v, %d rows", r.err, len(r.rows))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
	names, _ := listNS()
	for _, n := range names {
		if strings.HasPrefix(n, Prefix+strconv.Itoa(os.Getpid())) {
			t.Errorf("namespace %s is left", n)
		}
	}
	for _, pid := range unitPIDs {
		if syscall.Kill(pid, 0) == nil {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(b), ") Z ") {
				t.Errorf("process %d of the unit outlived the lab: %s", pid, b)
			}
		}
	}
}

// TestHangStopsTheWholeUnit runs the hang fault on a unit alone: with its
// parent and its workers stopped for hangFor, its stream goes dark for that
// long and then resumes with the same SSRC and numbering. (A hang that
// missed the workers, which run in process groups of their own, would show
// no gap at all.) The CPU load of cpu-starvation starts and ends with its
// run.
func TestHangStopsTheWholeUnit(t *testing.T) {
	needRoot(t)
	bin := buildAppliance(t)
	opts, err := Options{Binary: bin, Streams: 1, Runs: 1, StarveFor: 500 * time.Millisecond}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	topo, err := BuildTopology()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topo.Close() })
	r, err := newRig(topo, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)

	hang := Scenario{Name: "hang", inject: injectHang}
	row, err := runScenario(context.Background(), r, hang, Lone, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("hang of a lone unit: %+v", row)
	if row.GapMs < float64(hangFor.Milliseconds()) || row.GapMs > float64((hangFor+time.Second).Milliseconds()) ||
		row.SSRCChanges != 0 || row.Discontinuities != 0 {
		t.Errorf("hang: %+v", row)
	}

	busy := func() int {
		n := 0
		cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, f := range cmdlines {
			if b, _ := os.ReadFile(f); strings.Contains(string(b), "while :; do :; done") {
				n++
			}
		}
		return n
	}
	starve := Scenario{Name: "cpu-starvation", inject: injectStarvation, checks: []check{expect("no takeover", func(t *trial) *bool { return t.takeover }, false), noStranger}}
	row, err = runScenario(context.Background(), r, starve, Lone, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cpu-starvation of a lone unit: %+v", row)
	if !row.Pass || busy() != 0 {
		t.Errorf("cpu-starvation: %+v, %d busy loops left", row, busy())
	}
}
