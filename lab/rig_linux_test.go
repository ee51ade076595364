package lab

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"appliance/internal/testutil"
)

func needRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("rig test: builds network namespaces")
	}
	testutil.NeedRoot(t, "network namespaces")
	testutil.NeedTools(t, testutil.Tool{Name: "ip", Package: "iproute2"})
}

// reach sends a datagram from one namespace to an address in another and
// says whether it arrived.
func reach(t *testing.T, fromNS string, from netip.Addr, toNS string, to netip.AddrPort) bool {
	t.Helper()
	rc, err := listenUDP(toNS, to)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	sc, err := listenUDP(fromNS, netip.AddrPortFrom(from, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	buf := make([]byte, 64)
	// The first datagram may wait for ARP; a few tries, each with a deadline.
	for i := 0; i < 5; i++ {
		if _, err := sc.WriteToUDPAddrPort([]byte("lab"), to); err != nil {
			continue
		}
		_ = rc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, src, err := rc.ReadFromUDPAddrPort(buf); err == nil && string(buf[:n]) == "lab" && src.Addr().Unmap() == from {
			return true
		}
	}
	return false
}

// TestTopology builds the lab's namespaces, checks every link carries
// traffic where it should, and that nothing is left once it is closed.
func TestTopology(t *testing.T) {
	needRoot(t)
	topo, err := BuildTopology()
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			topo.Close()
		}
	})
	a, b, c := topo.NS(UnitA), topo.NS(UnitB), topo.NS(Client)
	for _, p := range []struct {
		name     string
		fromNS   string
		from     netip.Addr
		toNS     string
		to       netip.AddrPort
		through  string // a link whose loss must cut the path
		linkRole Role
	}{
		{"client to A over the LAN", c, AddrClient, a, netip.AddrPortFrom(AddrA, 5000), "eth0", UnitA},
		{"client to B over the LAN", c, AddrClient, b, netip.AddrPortFrom(AddrB, 5000), "eth0", UnitB},
		{"A to the client", a, AddrA, c, netip.AddrPortFrom(AddrClient, 6000), "eth0", UnitA},
		{"B to A on pair0", b, PairPaths[0][1].Addr(), a, PairPaths[0][0], "pair0", UnitA},
		{"A to B on pair1", a, PairPaths[1][0].Addr(), b, PairPaths[1][1], "pair1", UnitB},
	} {
		if !reach(t, p.fromNS, p.from, p.toNS, p.to) {
			t.Errorf("%s: nothing arrived", p.name)
			continue
		}
		if err := topo.SetLink(p.linkRole, p.through, false); err != nil {
			t.Fatal(err)
		}
		if reach(t, p.fromNS, p.from, p.toNS, p.to) {
			t.Errorf("%s: arrived with %s of %s down", p.name, p.through, p.linkRole)
		}
		if err := topo.SetLink(p.linkRole, p.through, true); err != nil {
			t.Fatal(err)
		}
	}
	// The pair paths go over their own cables, not the LAN: with both
	// cables down, B cannot reach A's pair address.
	for _, l := range []string{"pair0", "pair1"} {
		if err := topo.SetLink(UnitA, l, false); err != nil {
			t.Fatal(err)
		}
	}
	if reach(t, b, PairPaths[0][1].Addr(), a, PairPaths[0][0]) {
		t.Error("pair0's address reachable with both cables down")
	}
	// Units may bind an address they do not hold yet (a VIP).
	for _, ns := range []string{a, b} {
		var v []byte
		if err := inNS(ns, func() (err error) { v, err = os.ReadFile("/proc/sys/net/ipv4/ip_nonlocal_bind"); return }); err != nil || strings.TrimSpace(string(v)) != "1" {
			t.Errorf("ip_nonlocal_bind in %s: %q %v", ns, v, err)
		}
		if conn, err := listenUDP(ns, netip.AddrPortFrom(vipOf(3), 5003)); err != nil {
			t.Errorf("binding a VIP in %s: %v", ns, err)
		} else {
			conn.Close()
		}
	}
	// A virtual IP left on a unit is removed when the lab resets it.
	if err := ip("-n", a, "addr", "add", vipOf(3).String()+"/16", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	r := &rig{topo: topo}
	if err := r.dropVIPs(&unit{ns: a}); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command("ip", "-n", a, "-brief", "addr", "show", "dev", "eth0").Output(); strings.Contains(string(out), vipOf(3).String()) ||
		!strings.Contains(string(out), AddrA.String()+"/16") {
		t.Errorf("eth0 after dropping the VIPs: %s", out)
	}
	var host []byte
	_ = inNS(c, func() (err error) { host, err = os.ReadFile("/proc/sys/net/ipv4/ip_nonlocal_bind"); return })
	if strings.TrimSpace(string(host)) != "0" {
		t.Errorf("ip_nonlocal_bind in the client namespace: %q, want it untouched", host)
	}

	// A process left in a namespace dies with the topology.
	sleeper := exec.Command("sleep", "60")
	if err := inNS(a, sleeper.Start); err != nil {
		t.Fatal(err)
	}
	closed = true
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sleeper.Wait(); err == nil {
		t.Error("the process in the namespace outlived it")
	}
	names, err := listNS()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, topo.ID) {
			t.Errorf("namespace %s is left", n)
		}
	}
}

// TestCleanLeftovers: what a killed run left (namespaces with processes
// in them, a state directory) is removed by the next one; a live run's
// is not.
func TestCleanLeftovers(t *testing.T) {
	needRoot(t)
	const deadPID = "999999999" // above any pid_max
	dead := Prefix + deadPID + "-a"
	live := Prefix + "1-a" // PID 1 is alive
	for _, n := range []string{dead, live} {
		if err := ip("netns", "add", n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ip("netns", "del", n) })
	}
	dir := filepath.Join(os.TempDir(), Prefix+deadPID)
	if err := os.MkdirAll(filepath.Join(dir, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sleeper := exec.Command("sleep", "60")
	if err := inNS(dead, sleeper.Start); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sleeper.Wait() }()

	removed, err := CleanLeftovers()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(removed, dead) || !slices.Contains(removed, dir) || slices.Contains(removed, live) {
		t.Errorf("removed %v", removed)
	}
	names, _ := listNS()
	if slices.Contains(names, dead) || !slices.Contains(names, live) {
		t.Errorf("namespaces after cleaning: %v", names)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state directory: %v", err)
	}
	select {
	case err := <-waited:
		if ws, ok := sleeper.ProcessState.Sys().(syscall.WaitStatus); err == nil || !ok || ws.Signal() != syscall.SIGKILL {
			t.Errorf("the leftover process ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the leftover process is still running")
	}
}

// TestTraffic: sources in the client namespace reach a receiver through a
// plain relay in a unit namespace, and every packet is accounted for.
func TestTraffic(t *testing.T) {
	needRoot(t)
	topo, err := BuildTopology()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topo.Close() })
	const streams = 3
	in := make([]*net.UDPConn, streams)
	for i := range in {
		if in[i], err = listenUDP(topo.NS(UnitA), netip.AddrPortFrom(AddrA, uint16(InputPort+i))); err != nil {
			t.Fatal(err)
		}
		defer in[i].Close()
		go func(i int) {
			buf := make([]byte, 2048)
			for {
				n, err := in[i].Read(buf)
				if err != nil {
					return
				}
				_, _ = in[i].WriteToUDPAddrPort(buf[:n], netip.AddrPortFrom(AddrClient, uint16(OutputPort+i)))
			}
		}(i)
	}
	r := &rig{opts: Options{Streams: streams, PPS: 1000, Size: 200}, topo: topo}
	r.a = &unit{spec: unitSpec{Addr: AddrA, Mode: Lone}}
	r.b = &unit{spec: unitSpec{Addr: AddrB, Mode: Lone}}
	if err := r.startTraffic(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stopTraffic)
	r.aim(Lone)
	testutil.Eventually(t, 5*time.Second, "packets through the relay", func() bool {
		return r.sources[streams-1].Sent() > 50
	})
	for _, rc := range r.receivers {
		rc.Record()
	}
	from, first := Clock(), r.sources[0].Sent()
	if err := pause(context.Background(), 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	end, to := r.sources[0].Sent(), Clock()
	testutil.Eventually(t, 2*time.Second, "the last packet of the window", func() bool {
		r.receivers[0].mu.Lock()
		defer r.receivers[0].mu.Unlock()
		for _, a := range r.receivers[0].log {
			if a.Counter == end-1 {
				return true
			}
		}
		return false
	})
	got := Analyze(r.receivers[0].Stop(), Window{FirstCounter: first, EndCounter: end, From: from, To: to})
	t.Logf("%d packets in the window: %+v", end-first, got)
	if end-first < 400 || got.Received != int(end-first) || got.Lost != 0 || got.Dups != 0 || got.Discontinuities != 0 ||
		got.SSRCChanges != 0 || got.Gap > 100*time.Millisecond || len(got.Senders) != 1 || got.Senders[0] != AddrA {
		t.Errorf("relay of %d packets: %+v", end-first, got)
	}
}
