package media

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"appliance/internal/testutil"
)

func statusByName(m *Manager) map[string]StreamStatus {
	out := map[string]StreamStatus{}
	for _, s := range m.Streams() {
		out[s.Name] = s
	}
	return out
}

// TestRestartOneStream: restarting a stream costs that stream a restart and
// nothing else: the worker process and its other stream carry on, the
// stream's counters and output numbering continue, and packets that arrive
// while it restarts wait in its input.
func TestRestartOneStream(t *testing.T) {
	outA, outB := newPacketSink(t), newSink(t)
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	ssrc := uint32(0x1234)
	m := runManager(t, Options{Workers: 1, Streams: []StreamSpec{
		{Name: "a", Input: lo, Outputs: []netip.AddrPort{outA.addr}, ClockRate: 90000, RewriteSSRC: &ssrc},
		{Name: "b", Input: lo, Outputs: []netip.AddrPort{outB.addr}, ClockRate: 90000},
	}})
	sendA, sendB := newFeedSender(t, inputAddr(t, m, "a")), newFeedSender(t, inputAddr(t, m, "b"))
	sendA.send(t, 10)
	sendB.send(t, 10)
	before := outA.take(t, 10)
	outB.take(t, 10)
	testutil.Eventually(t, 5*time.Second, "both streams to report 10 packets", func() bool {
		st := statusByName(m)
		return st["a"].PacketsIn == 10 && st["b"].PacketsIn == 10
	})
	pid := statusByName(m)["a"].WorkerPID

	r, err := m.Restart(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if r != (Restarted{Worker: 0, WorkerPID: pid, Restarts: 1}) {
		t.Errorf("restart answered %+v; want worker 0, pid %d, 1 restart", r, pid)
	}
	sendA.send(t, 10)
	sendB.send(t, 10)
	after := outA.take(t, 10)
	outB.take(t, 10)
	last := before[len(before)-1]
	for i, p := range after {
		if p.SSRC != ssrc {
			t.Fatalf("after the restart packet %d has SSRC %#x, want %#x", i, p.SSRC, ssrc)
		}
		if i > 0 && p.SequenceNumber != after[i-1].SequenceNumber+1 {
			t.Fatalf("after the restart sequence numbers %d then %d", after[i-1].SequenceNumber, p.SequenceNumber)
		}
	}
	if step := after[0].SequenceNumber - last.SequenceNumber; step == 0 || step > 1000 {
		t.Errorf("the output numbering went from %d to %d across the restart; want it to carry on", last.SequenceNumber, after[0].SequenceNumber)
	}
	testutil.Eventually(t, 5*time.Second, "the counters to carry on", func() bool {
		st := statusByName(m)
		return st["a"].PacketsIn == 20 && st["a"].PacketsOut == 20 && st["b"].PacketsIn == 20
	})
	st := statusByName(m)
	if st["a"].Restarts != 1 || st["b"].Restarts != 0 || st["b"].WorkerPID != pid || st["a"].WorkerPID != pid {
		t.Errorf("a: %d restarts, pid %d; b: %d restarts, pid %d; want only a restarted, one worker %d",
			st["a"].Restarts, st["a"].WorkerPID, st["b"].Restarts, st["b"].WorkerPID, pid)
	}

	if _, err := m.Restart(context.Background(), "nope"); !errors.Is(err, ErrNoStream) {
		t.Errorf("restarting an unknown stream: %v, want ErrNoStream", err)
	}
}

// TestRestartBindsAFailedInput: restarting a stream whose input could not
// be bound tries the input again at once and says why when it still fails.
func TestRestartBindsAFailedInput(t *testing.T) {
	out := newSink(t)
	busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := busy.LocalAddr().(*net.UDPAddr).AddrPort()
	m := runManager(t, Options{Workers: 1, Streams: []StreamSpec{
		{Name: "ok", Input: netip.MustParseAddrPort("127.0.0.1:0"), Outputs: []netip.AddrPort{out.addr}, ClockRate: 90000},
	}})
	if _, err := m.Apply(context.Background(), append(specsOf(m), StreamSpec{Name: "late", Input: addr, Outputs: []netip.AddrPort{out.addr}, ClockRate: 90000})); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Restart(context.Background(), "late"); !errors.Is(err, ErrNotCarried) {
		t.Errorf("restarting a stream whose input is taken: %v, want ErrNotCarried", err)
	}
	busy.Close()
	r, err := m.Restart(context.Background(), "late")
	if err != nil {
		t.Fatalf("restarting it once its port is free: %v", err)
	}
	if r.WorkerPID == 0 || r.WorkerPID != statusByName(m)["ok"].WorkerPID {
		t.Errorf("restart answered %+v; want the running worker", r)
	}
}
