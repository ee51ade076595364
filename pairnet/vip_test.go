package pairnet

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"appliance/internal/testutil"
)

// segment is two network namespaces joined by a veth pair: unit A on
// "va" (198.18.0.1/24) and a neighbour B on "vb" (198.18.0.2/24).
type segment struct {
	a, b   netns.NsHandle
	ha, hb *netlink.Handle
	va, vb netlink.Link
}

func newSegment(t *testing.T) *segment {
	t.Helper()
	testutil.NeedRoot(t, "virtual addresses need network namespaces, CAP_NET_ADMIN and CAP_NET_RAW")
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	defer netns.Set(orig)
	s := &segment{}
	if s.a, err = netns.New(); err != nil {
		t.Skipf("cannot create a network namespace here (%v): run the tests as root outside a restricted container", err)
	}
	if s.b, err = netns.New(); err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.a.Close(); s.b.Close() })
	if s.ha, err = netlink.NewHandleAt(s.a); err != nil {
		t.Fatal(err)
	}
	if s.hb, err = netlink.NewHandleAt(s.b); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.ha.Close(); s.hb.Close() })
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "va"}, PeerName: "vb", PeerNamespace: netlink.NsFd(s.b)}
	if err := s.ha.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	if s.va, err = s.ha.LinkByName("va"); err != nil {
		t.Fatal(err)
	}
	if s.vb, err = s.hb.LinkByName("vb"); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		h    *netlink.Handle
		l    netlink.Link
		addr string
	}{{s.ha, s.va, "198.18.0.1/24"}, {s.hb, s.vb, "198.18.0.2/24"}} {
		a, _ := netlink.ParseAddr(x.addr)
		if err := x.h.AddrAdd(x.l, a); err != nil {
			t.Fatal(err)
		}
		if err := x.h.LinkSetUp(x.l); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// in runs f with the calling thread in namespace ns.
func in(t *testing.T, ns netns.NsHandle, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic("cannot return the thread to its namespace: " + err.Error())
		}
	}()
	f()
}

func hasAddr(t *testing.T, h *netlink.Handle, l netlink.Link, p netip.Prefix) bool {
	t.Helper()
	addrs, err := h.AddrList(l, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IP.Equal(p.Addr().AsSlice()) {
			return true
		}
	}
	return false
}

// TestVIPMovesNeighbour: B has a neighbour entry for the virtual address
// at another unit's MAC; A adds the address and announces it, and B's
// entry moves to A's MAC (as it does with the default arp_accept=0, which
// updates entries but creates none).
func TestVIPMovesNeighbour(t *testing.T) {
	s := newSegment(t)
	vip := netip.MustParsePrefix("198.18.0.100/24")
	oldMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	if err := s.hb.NeighAdd(&netlink.Neigh{
		LinkIndex: s.vb.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_STALE,
		IP: vip.Addr().AsSlice(), HardwareAddr: oldMAC,
	}); err != nil {
		t.Fatal(err)
	}
	in(t, s.a, func() {
		for range 2 { // the second time it is already there
			if err := AddVIP("va", vip); err != nil {
				t.Fatal(err)
			}
		}
		if err := Announce("va", vip.Addr(), 3, 20*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	})
	if !hasAddr(t, s.ha, s.va, vip) {
		t.Fatal("AddVIP returned but the address is not on the interface")
	}
	want := s.va.Attrs().HardwareAddr
	testutil.Eventually(t, 5*time.Second, "the neighbour's entry moved to A's MAC", func() bool {
		ns, err := s.hb.NeighList(s.vb.Attrs().Index, unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			if n.IP.Equal(vip.Addr().AsSlice()) {
				return bytes.Equal(n.HardwareAddr, want)
			}
		}
		return false
	})
	in(t, s.a, func() {
		for range 2 { // the second time it is already gone
			if err := DelVIP("va", vip); err != nil {
				t.Fatal(err)
			}
		}
		if err := DelVIP("no-such-if", vip); err != nil {
			t.Fatalf("removing from a missing interface: %v", err)
		}
	})
	if hasAddr(t, s.ha, s.va, vip) {
		t.Fatal("DelVIP returned but the address is still on the interface")
	}
}

func TestVIPErrors(t *testing.T) {
	s := newSegment(t)
	in(t, s.a, func() {
		if err := AddVIP("no-such-if", netip.MustParsePrefix("198.18.0.100/32")); err == nil {
			t.Error("AddVIP on a missing interface succeeded")
		}
		if err := Announce("va", netip.MustParseAddr("2001:db8::1"), 1, 0); err == nil {
			t.Error("Announce of an IPv6 address succeeded")
		}
		if err := Announce("lo", netip.MustParseAddr("198.18.0.100"), 1, 0); err == nil {
			t.Error("Announce on an interface without a MAC succeeded")
		}
	})
}

// TestVIPsMoveManyNeighbours: the cache adds and announces many addresses
// on one link and one socket, each neighbour entry moves to A's MAC, and
// a closed cache opens what it needs again.
func TestVIPsMoveManyNeighbours(t *testing.T) {
	s := newSegment(t)
	oldMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	var vips []netip.Prefix
	for i := range 20 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(100 + i)}), 24)
		vips = append(vips, p)
		if err := s.hb.NeighAdd(&netlink.Neigh{
			LinkIndex: s.vb.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_STALE,
			IP: p.Addr().AsSlice(), HardwareAddr: oldMAC,
		}); err != nil {
			t.Fatal(err)
		}
	}
	v := NewVIPs()
	defer v.Close()
	in(t, s.a, func() {
		for i, p := range vips {
			if err := v.Add("va", p); err != nil {
				t.Fatal(err)
			}
			if i == len(vips)/2 {
				v.Close() // the rest reopen what they need
			}
			if err := v.Announce("va", p.Addr()); err != nil {
				t.Fatal(err)
			}
		}
		if err := v.Add("no-such-if", vips[0]); err == nil {
			t.Error("adding on a missing interface succeeded")
		}
		if err := v.Announce("lo", vips[0].Addr()); err == nil {
			t.Error("announcing on an interface without a MAC succeeded")
		}
	})
	want := s.va.Attrs().HardwareAddr
	testutil.Eventually(t, 5*time.Second, "every neighbour entry moved to A's MAC", func() bool {
		ns, err := s.hb.NeighList(s.vb.Attrs().Index, unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		moved := 0
		for _, n := range ns {
			for _, p := range vips {
				if n.IP.Equal(p.Addr().AsSlice()) && bytes.Equal(n.HardwareAddr, want) {
					moved++
				}
			}
		}
		return moved == len(vips)
	})
	in(t, s.a, func() {
		for _, p := range vips {
			for range 2 { // the second time it is already gone
				if err := v.Del("va", p); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
	for _, p := range vips {
		if hasAddr(t, s.ha, s.va, p) {
			t.Fatalf("%v is still on the interface", p)
		}
	}
}

// TestVIPsAddAll: one write adds many addresses, as AddAll's single
// requests would (prefix, broadcast), an address already there is no
// error, and a missing interface fails every one.
func TestVIPsAddAll(t *testing.T) {
	s := newSegment(t)
	var ps []netip.Prefix
	for i := range 60 {
		bits := 32
		if i%2 == 0 {
			bits = 24
		}
		ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(100 + i)}), bits))
	}
	v := NewVIPs()
	defer v.Close()
	in(t, s.a, func() {
		if err := v.Add("va", ps[7]); err != nil { // there before
			t.Fatal(err)
		}
		for i, err := range v.AddAll("va", ps) {
			if err != nil {
				t.Errorf("%v: %v", ps[i], err)
			}
		}
		for _, err := range v.AddAll("no-such-if", ps[:3]) {
			if err == nil {
				t.Error("adding on a missing interface succeeded")
			}
		}
		if errs := v.AddAll("va", nil); len(errs) != 0 {
			t.Errorf("nothing to add: %v", errs)
		}
	})
	addrs, err := s.ha.AddrList(s.va, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	got := map[netip.Addr]netlink.Addr{}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		got[ip.Unmap()] = a
	}
	for _, p := range ps {
		a, ok := got[p.Addr()]
		if !ok {
			t.Errorf("%v is not on the interface", p)
			continue
		}
		if ones, _ := a.Mask.Size(); ones != p.Bits() {
			t.Errorf("%v added as /%d", p, ones)
		}
		if p.Bits() == 24 && !a.Broadcast.Equal(net.IPv4(198, 18, 0, 255)) {
			t.Errorf("%v has broadcast %v, want 198.18.0.255", p, a.Broadcast)
		}
	}
}

// TestTakeRealtime: the calling goroutine's thread runs at SCHED_FIFO at
// the priority asked, and no goroutine after it does: the thread ends with
// the goroutine (or, on the process's main thread, is kept out of use).
func TestTakeRealtime(t *testing.T) {
	done := make(chan struct{})
	var ok bool
	var got *unix.SchedAttr
	go func() {
		defer close(done)
		ok = TakeRealtime(3)
		got, _ = unix.SchedGetAttr(0, 0)
	}()
	<-done
	if !ok {
		if os.Geteuid() == 0 {
			t.Fatal("refused real-time priority as root")
		}
		t.Skip("no real-time priority for this user; run the tests as root")
	}
	if got == nil || got.Policy != unix.SCHED_FIFO || got.Priority != 3 {
		t.Fatalf("the thread runs at %+v, want SCHED_FIFO 3", got)
	}
	for range 50 {
		policy := make(chan uint32)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			a, err := unix.SchedGetAttr(0, 0)
			if err != nil {
				t.Error(err)
				policy <- 0
				return
			}
			policy <- a.Policy
		}()
		if p := <-policy; p == unix.SCHED_FIFO {
			t.Fatal("a later goroutine ran at SCHED_FIFO")
		}
	}
}
