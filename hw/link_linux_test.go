package hw

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"appliance/health"
	"appliance/internal/clock"
	"appliance/internal/testutil"
)

// newNetns returns a new network namespace, closed when the test ends. The
// namespace is made on a thread of its own that is put back, or, if that
// fails, never used again (a goroutine that exits locked takes its thread).
func newNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	type result struct {
		ns  netns.NsHandle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			done <- result{err: err}
			return
		}
		if err := netns.Set(orig); err != nil {
			ns.Close()
			done <- result{err: err}
			return // still locked: the thread goes with the goroutine
		}
		runtime.UnlockOSThread()
		done <- result{ns: ns}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("new network namespace: %v", r.err)
	}
	t.Cleanup(func() { r.ns.Close() })
	return r.ns
}

// A veth pair in a namespace of its own: the peer going down takes the
// carrier of the watched end, which the monitor must see through netlink
// updates (polls are an hour apart) and raise after the debounce.
func TestNetlinkLinkDown(t *testing.T) {
	testutil.NeedRoot(t, "network namespaces")
	ns := newNetns(t)
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "hwa0"}, PeerName: "hwb0"}); err != nil {
		t.Fatalf("add veth pair: %v", err)
	}
	a, err := h.LinkByName("hwa0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.LinkByName("hwb0")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []netlink.Link{a, b} {
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}

	const debounce = 200 * time.Millisecond
	tr := health.NewTracker(clock.Real(), quiet())
	events, stop := tr.Subscribe(64)
	defer stop()
	m := NewMonitor(Options{
		Sysfs:        t.TempDir(),
		Links:        []LinkSpec{{"hwa0", "media"}},
		LinkDebounce: debounce,
		PollInterval: time.Hour,
		LinkWatcher:  NewLinkWatcher(ns),
		Health:       tr,
		Logger:       quiet(),
	})
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- m.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve = %v", err)
		}
	}()

	testutil.Eventually(t, 5*time.Second, "hwa0 up without conditions", func() bool {
		_, down := tr.Get("link.down:hwa0")
		_, missing := tr.Get("link.missing:hwa0")
		l := m.Snapshot().Links
		return !down && !missing && len(l) == 1 && l[0].Carrier
	})
	drain(events)

	changed := time.Now()
	if err := h.LinkSetDown(b); err != nil {
		t.Fatal(err)
	}
	e := waitEvent(t, events, "link.down:hwa0", health.Raised)
	took := e.Time.Sub(changed)
	t.Logf("link.down:hwa0 raised %v after the peer went down (debounce %v)", took, debounce)
	if took < debounce || took > debounce+100*time.Millisecond {
		t.Errorf("raised after %v, want within [%v, %v]", took, debounce, debounce+100*time.Millisecond)
	}

	changed = time.Now()
	if err := h.LinkSetUp(b); err != nil {
		t.Fatal(err)
	}
	e = waitEvent(t, events, "link.down:hwa0", health.Cleared)
	t.Logf("link.down:hwa0 cleared %v after the peer came up", e.Time.Sub(changed))

	// Deleting one end deletes the pair: RTM_DELLINK makes it missing.
	if err := h.LinkDel(b); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, "link.missing:hwa0", health.Raised)
	if _, down := tr.Get("link.down:hwa0"); down {
		t.Error("a missing link is also reported down")
	}
}

func TestNetlinkList(t *testing.T) {
	testutil.NeedRoot(t, "network namespaces")
	ns := newNetns(t)
	links, err := NewLinkWatcher(ns).List()
	if err != nil {
		t.Fatal(err)
	}
	// A new namespace has lo alone, and down.
	if len(links) != 1 || links[0].Name != "lo" || links[0].AdminUp || !links[0].Present || links[0].Stats == nil {
		t.Errorf("links in a new namespace: %+v", links)
	}
}

func waitEvent(t *testing.T, events <-chan health.Event, cond, kind string) health.Event {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e := <-events:
			if e.Condition == cond && e.Kind == kind {
				return e
			}
		case <-timeout:
			t.Fatalf("no %s %s within 5s", cond, kind)
			return health.Event{}
		}
	}
}

func drain(events <-chan health.Event) {
	for {
		select {
		case <-events:
		default:
			return
		}
	}
}
