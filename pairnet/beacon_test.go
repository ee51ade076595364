package pairnet

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"appliance/internal/testutil"
)

// The test binary doubles as the beacon when started as one.
func TestMain(m *testing.M) {
	if os.Getenv("PAIRNET_TEST_BEACON") == "1" {
		if err := ServeBeacon(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(testutil.Main(m))
}

func testBeacon() *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PAIRNET_TEST_BEACON=1")
	cmd.Stderr = os.Stderr
	return cmd
}

// stallingRecorder is a recorder whose Tick blocks while stall is set, as
// a loop the runtime holds off.
type stallingRecorder struct {
	recorder
	stall   atomic.Bool
	stalled atomic.Bool
}

func (r *stallingRecorder) Tick(now time.Duration) {
	r.recorder.Tick(now)
	for r.stall.Load() {
		r.stalled.Store(true)
		time.Sleep(time.Millisecond) // the simulated hold-off itself, not a wait for an event
	}
	r.stalled.Store(false)
}

// TestBeaconCoversAHeldOffLoop: while A's loop is held off, B goes on
// hearing A's table, with fresh counters the replay rules accept, until
// the grace ends; then B hears nothing until A's loop beats again. A muted
// node's beacon is silent too.
func TestBeaconCoversAHeldOffLoop(t *testing.T) {
	t.Parallel()
	ad := freeAddrs(t, 4)
	oa := options([]Path{{ad[0], ad[1]}, {ad[2], ad[3]}})
	oa.Beacon, oa.BeaconGrace = testBeacon, 400*time.Millisecond
	na, err := Open(oa)
	if err != nil {
		t.Fatal(err)
	}
	ob := options([]Path{{ad[1], ad[0]}, {ad[3], ad[2]}})
	ob.Self, ob.Peer = "b", "a"
	nb, err := Open(ob)
	if err != nil {
		t.Fatal(err)
	}
	m := fullMessage()
	ra := &stallingRecorder{recorder: recorder{node: na, sendWith: m}}
	rb := &recorder{node: nb, sendWith: m}
	run(t, na, ra)
	run(t, nb, rb)
	// Cleanups run last first: a failure releases A's loop before run's
	// cleanup waits for it to return.
	t.Cleanup(func() { ra.stall.Store(false) })
	testutil.Eventually(t, 5*time.Second, "the beacon running and both nodes live", func() bool {
		s := na.Stats()
		return s.Beacon.Running && s.Paths[0].Received > 0 && nb.Stats().Paths[1].Received > 0
	})
	if b := na.Stats().Beacon; b.Beats != 0 {
		// A loop on time is never covered for; one late beat on a busy
		// test machine can be.
		t.Logf("the beacon covered %d beats of a loop not held off", b.Beats)
	}

	// Held off: B keeps hearing the whole table (on both paths), and none
	// of it is refused.
	ra.stall.Store(true)
	testutil.Eventually(t, 5*time.Second, "A's loop held off", ra.stalled.Load)
	held := time.Now()
	base := nb.Stats()
	testutil.Eventually(t, 5*time.Second, "B hearing A while A's loop is held off", func() bool {
		s := nb.Stats()
		return s.Paths[0].Received >= base.Paths[0].Received+5 && s.Paths[1].Received >= base.Paths[1].Received+5
	})
	refused := func(c Counters) uint64 { return c.Replayed + c.Stale + c.Forged + c.Garbage + c.Version }
	for i, p := range nb.Stats().Paths {
		if refused(p.Counters) != refused(base.Paths[i].Counters) {
			t.Fatalf("B refused the beacon's messages on path %d: %+v, before the hold-off %+v", i, p.Counters, base.Paths[i].Counters)
		}
	}
	got := rb.snapshot()
	last := got[len(got)-1].m
	if len(last.Entries) != len(m.Entries) || last.Entries[0] != m.Entries[0] || last.State != m.State {
		t.Fatalf("B heard %d entries, state %v; A's table has %d, state %v", len(last.Entries), last.State, len(m.Entries), m.State)
	}
	if b := na.Stats().Beacon; b.Beats == 0 || b.Sent < 2*b.Beats {
		t.Fatalf("beacon stats %+v: want beats covered, a message per path each", b)
	}

	// After the grace: silence, so a control plane that hangs is seen.
	testutil.Eventually(t, 5*time.Second, "the grace over", func() bool { return time.Since(held) > oa.BeaconGrace+100*time.Millisecond })
	quiet := nb.Stats().Paths[0].Received
	testutil.Eventually(t, 5*time.Second, "B's last-heard age past the detection time", func() bool {
		return nb.Stats().Paths[0].LastHeard > 5*beat
	})
	if r := nb.Stats().Paths[0].Received; r != quiet {
		t.Fatalf("B heard %d messages after the grace ended", r-quiet)
	}

	// Back: the loop beats, B hears it again.
	ra.stall.Store(false)
	testutil.Eventually(t, 5*time.Second, "B hearing A's loop again", func() bool {
		return nb.Stats().Paths[0].Received > quiet+3
	})

	// Muted: the loop's sends and the beacon's stop, even while held off.
	na.SetMuted(true)
	ra.stall.Store(true)
	testutil.Eventually(t, 5*time.Second, "A's loop held off again", ra.stalled.Load)
	testutil.Eventually(t, 5*time.Second, "B hearing nothing", func() bool {
		return nb.Stats().Paths[0].LastHeard > 5*beat
	})
	muted := nb.Stats().Paths[0].Received
	beats := na.Stats().Beacon.Beats
	testutil.Eventually(t, 5*time.Second, "B still hearing nothing", func() bool {
		return nb.Stats().Paths[0].LastHeard > 20*beat
	})
	if r, b := nb.Stats().Paths[0].Received, na.Stats().Beacon.Beats; r != muted || b != beats {
		t.Fatalf("muted: B heard %d more, the beacon covered %d more", r-muted, b-beats)
	}
	ra.stall.Store(false)
	na.SetMuted(false)
	testutil.Eventually(t, 5*time.Second, "B hearing A once unmuted", func() bool {
		return nb.Stats().Paths[0].Received > muted
	})
}

// TestBeaconRefusesToRunByHand: started without its shared memory, it
// says what it is for.
func TestBeaconRefusesToRunByHand(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PAIRNET_TEST_BEACON=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("the beacon ran without its shared memory")
	}
	if !strings.Contains(string(out), "started by the appliance") {
		t.Fatalf("output %q does not say how it is started", out)
	}
}
