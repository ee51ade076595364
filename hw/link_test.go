package hw

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"appliance/health"
	"appliance/internal/clock"
)

// fakeWatcher is a LinkWatcher whose links the test sets.
type fakeWatcher struct {
	mu         sync.Mutex
	links      map[string]LinkUpdate
	ch         chan<- LinkUpdate
	subscribed chan struct{}
	subErr     error
}

func newFakeWatcher(links ...LinkUpdate) *fakeWatcher {
	f := &fakeWatcher{links: map[string]LinkUpdate{}, subscribed: make(chan struct{})}
	for _, u := range links {
		f.links[u.Name] = u
	}
	return f
}

func (f *fakeWatcher) List() ([]LinkUpdate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []LinkUpdate
	for _, u := range f.links {
		if u.Present {
			out = append(out, u)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (f *fakeWatcher) Subscribe(ctx context.Context, ch chan<- LinkUpdate) error {
	if f.subErr != nil {
		return f.subErr
	}
	f.mu.Lock()
	f.ch = ch
	f.mu.Unlock()
	close(f.subscribed)
	return nil
}

// set changes a link and sends the update; it returns once the monitor has
// taken it. Call sync to know it has also been handled.
func (f *fakeWatcher) set(u LinkUpdate) {
	f.mu.Lock()
	f.links[u.Name] = u
	ch := f.ch
	f.mu.Unlock()
	ch <- u
}

// sync returns once every earlier update has been handled: the monitor's
// channel is unbuffered, so it takes this one only after finishing those.
func (f *fakeWatcher) sync() {
	f.mu.Lock()
	ch := f.ch
	f.mu.Unlock()
	ch <- LinkUpdate{Name: "not-watched"}
}

func linkAs(name, state string) LinkUpdate {
	switch state {
	case "up":
		return LinkUpdate{Name: name, Present: true, AdminUp: true, Carrier: true}
	case "down":
		return LinkUpdate{Name: name, Present: true, AdminUp: true}
	case "admin-down":
		return LinkUpdate{Name: name, Present: true}
	case "gone":
		return LinkUpdate{Name: name}
	}
	panic("unknown link state " + state)
}

// Debounce scripts: each line is "MS VERB", MS milliseconds from the start.
// Verbs up, down, admin-down and gone send an update for eth1; want-ok,
// want-down and want-missing check its conditions; never-down checks that
// link.down was never raised; wall+1h and wall-1h step the wall clock. The debounce is 1 s. The clock runs to each
// line's time, confirming what falls due on the way, as Serve's timer does.
var debounceScripts = []struct{ name, script string }{
	{"flap shorter than debounce raises nothing", `
		0 up
		1000 down
		1999 up
		1999 want-ok
		9000 want-ok
		9000 never-down`},
	{"held down raises at the debounce", `
		0 up
		1000 down
		1999 want-ok
		2000 want-down`},
	{"recovery clears after the debounce", `
		0 up
		1000 down
		2000 want-down
		2500 up
		3499 want-down
		3500 want-ok`},
	{"a bounce during recovery restarts it", `
		0 up
		1000 down
		2000 want-down
		2500 up
		3000 down
		3200 up
		4199 want-down
		4200 want-ok`},
	{"down at start is raised at once", `
		0 down
		0 want-down`},
	{"admin down counts as down", `
		0 up
		100 admin-down
		1100 want-down`},
	{"missing is raised at once and hides down", `
		0 up
		100 gone
		100 want-missing
		5000 want-missing
		5000 never-down
		5100 up
		5100 want-ok
		9000 never-down`},
	{"wall steps neither hasten nor delay a change", `
		0 up
		1000 down
		1000 wall+1h
		1999 want-ok
		2000 want-down
		2500 up
		2500 wall-1h
		3499 want-down
		3500 want-ok`},
	{"comes back down after going missing", `
		0 up
		100 gone
		200 down
		200 want-ok
		1200 want-down`},
}

func TestLinkDebounceScripts(t *testing.T) {
	t.Parallel()
	for _, sc := range debounceScripts {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			m, tr, clk := newTestMonitor(t, Options{Links: []LinkSpec{{"eth1", "media"}}, LinkDebounce: time.Second, LinkWatcher: newFakeWatcher()})
			elapsed := 0
			for _, line := range strings.Split(strings.TrimSpace(sc.script), "\n") {
				f := strings.Fields(line)
				at, err := strconv.Atoi(f[0])
				if len(f) != 2 || err != nil || at < elapsed {
					t.Fatalf("bad script line %q", line)
				}
				// Step through each due time on the way, as the timer would.
				target := clock.FakeMonoStart + time.Duration(at)*time.Millisecond
				for {
					due, ok := m.settle()
					if !ok || due > target {
						break
					}
					clk.Advance(due - clk.Mono())
				}
				clk.Advance(target - clk.Mono())
				m.settle()
				elapsed = at

				a := active(tr)
				switch verb := f[1]; verb {
				case "want-ok":
					if len(a) != 0 {
						t.Fatalf("%s: conditions %v, want none", line, a)
					}
				case "want-down":
					c, ok := a["link.down:eth1"]
					if !ok || c.Severity != health.Critical || !strings.Contains(c.Message, "media link eth1 is down") {
						t.Fatalf("%s: conditions %v, want link.down:eth1", line, a)
					}
				case "want-missing":
					if _, ok := a["link.missing:eth1"]; !ok || len(a) != 1 {
						t.Fatalf("%s: conditions %v, want link.missing:eth1 alone", line, a)
					}
				case "wall+1h", "wall-1h":
					step := time.Hour
					if verb == "wall-1h" {
						step = -step
					}
					clk.StepWall(step)
				case "never-down":
					for _, e := range tr.Events(0) {
						if e.Condition == "link.down:eth1" {
							t.Fatalf("%s: link.down was raised: %+v", line, e)
						}
					}
				default:
					m.mu.Lock()
					m.linkUpdate(clk.Mono(), linkAs("eth1", verb))
					m.mu.Unlock()
				}
			}
		})
	}
}

// Serve on a fake clock: the debounce timer fires without another update.
func TestServeLinkDebounce(t *testing.T) {
	t.Parallel()
	lw := newFakeWatcher(linkAs("eth1", "up"))
	m, tr, clk := newTestMonitor(t, Options{
		Links:        []LinkSpec{{"eth1", "media"}, {"eth2", "pair"}},
		LinkDebounce: time.Second,
		PollInterval: time.Hour, // no polls in the way
		LinkWatcher:  lw,
	})
	events, stop := tr.Subscribe(16)
	defer stop()
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- m.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	}()
	if err := clk.WaitPending(ctx, 1); err != nil { // the poll ticker: the first poll is done
		t.Fatal(err)
	}
	wait := func(cond, kind string) health.Event {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case e := <-events:
				if e.Condition == cond && e.Kind == kind {
					return e
				}
			case <-timeout:
				t.Fatalf("no %s %s", cond, kind)
			}
		}
	}
	// eth2 was never there.
	wait("link.missing:eth2", health.Raised)

	// A flap shorter than the debounce: the timer is armed, then disarmed.
	lw.set(linkAs("eth1", "down"))
	lw.sync()
	if n := clk.Pending(); n != 2 {
		t.Fatalf("pending timers after a change = %d, want ticker and debounce", n)
	}
	clk.Advance(400 * time.Millisecond)
	lw.set(linkAs("eth1", "up"))
	lw.sync()
	if n := clk.Pending(); n != 1 {
		t.Fatalf("pending timers after the flap = %d, want the ticker alone", n)
	}
	clk.Advance(5 * time.Second)
	lw.sync()
	if _, ok := tr.Get("link.down:eth1"); ok {
		t.Fatal("a short flap raised link.down")
	}

	// Held down: raised by the timer at the debounce, with no further update.
	lw.set(linkAs("eth1", "down"))
	lw.sync()
	changed := clk.Now()
	clk.Advance(999 * time.Millisecond)
	lw.sync()
	if _, ok := tr.Get("link.down:eth1"); ok {
		t.Fatal("link.down raised before the debounce")
	}
	clk.Advance(time.Millisecond)
	e := wait("link.down:eth1", health.Raised)
	if d := e.Time.Sub(changed); d != time.Second {
		t.Errorf("raised %v after the change, want 1s", d)
	}
	if !strings.Contains(e.Message, "media link eth1") {
		t.Errorf("message %q does not give the role", e.Message)
	}

	// Back up: cleared after the debounce.
	lw.set(linkAs("eth1", "up"))
	lw.sync()
	clk.Advance(time.Second)
	wait("link.down:eth1", health.Cleared)

	// eth2 appears, and the snapshot shows both.
	lw.set(LinkUpdate{Name: "eth2", Present: true, AdminUp: true, Carrier: true, Stats: &LinkStats{RxErrors: 3, TxDropped: 4}})
	wait("link.missing:eth2", health.Cleared)
	links := m.Snapshot().Links
	if len(links) != 2 || !links[0].Carrier || links[1].Role != "pair" || links[1].RxErrors != 3 || links[1].TxDropped != 4 {
		t.Errorf("snapshot links: %+v", links)
	}
}

func TestServeSubscribeFails(t *testing.T) {
	t.Parallel()
	lw := newFakeWatcher()
	lw.subErr = errors.New("subscribe to link updates: operation not permitted")
	m, _, _ := newTestMonitor(t, Options{Links: []LinkSpec{{"eth1", "media"}}, LinkWatcher: lw})
	if err := m.Serve(t.Context()); err == nil || !strings.Contains(err.Error(), "not permitted") {
		t.Errorf("Serve = %v, want the subscription error", err)
	}
}

// Without links to watch there is nothing to subscribe to, and Serve polls.
func TestServeWithoutLinks(t *testing.T) {
	t.Parallel()
	lw := newFakeWatcher()
	lw.subErr = errors.New("must not subscribe")
	temps := &fakeTemps{}
	temps.set(nil, Temperature{Sensor: "cpu", Celsius: 50})
	m, tr, clk := newTestMonitor(t, Options{LinkWatcher: lw, Temps: temps, PollInterval: time.Second})
	events, stop := tr.Subscribe(4)
	defer stop()
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- m.Serve(ctx) }()
	if err := clk.WaitPending(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got := m.Snapshot(); got.UpdatedAt != epoch || len(got.Temperatures) != 1 {
		t.Errorf("first snapshot: %+v", got)
	}
	temps.set(nil, Temperature{Sensor: "cpu", Celsius: 99})
	clk.Advance(time.Second)
	select {
	case e := <-events:
		if e.Condition != "temp:cpu" || e.Severity != health.Critical {
			t.Errorf("event %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tick did not poll")
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
}

func TestReadSpeed(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"class/net/fast/speed":    "10000\n",
		"class/net/unknown/speed": "-1\n",
		"class/net/garbage/speed": "abc",
	})
	breakFile(t, root+"/class/net/dir/speed", "dir")
	for name, want := range map[string]int{"fast": 10000, "unknown": 0, "garbage": 0, "dir": 0, "absent": 0, "../net/fast": 0, "": 0} {
		if got := readSpeed(root, name); got != want {
			t.Errorf("readSpeed(%q) = %d, want %d", name, got, want)
		}
	}
}

// A poll lists the links, reads their speed and counters, and finds the
// missing ones.
func TestPollLinks(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	writeTree(t, root, map[string]string{"class/net/eth1/speed": "1000\n"})
	up := linkAs("eth1", "up")
	up.Stats = &LinkStats{RxErrors: 1, TxErrors: 2, RxDropped: 3, TxDropped: 4}
	m, tr, _ := newTestMonitor(t, Options{Sysfs: root, Links: []LinkSpec{{"eth1", "media"}, {"eth9", ""}}, LinkWatcher: newFakeWatcher(up, linkAs("lo", "up"))})
	m.poll(context.Background())
	got := m.Snapshot().Links
	want := []Link{
		{Name: "eth1", Role: "media", Present: true, AdminUp: true, Carrier: true, SpeedMbps: 1000, RxErrors: 1, TxErrors: 2, RxDropped: 3, TxDropped: 4},
		{Name: "eth9"},
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("links %+v, want %+v", got, want)
	}
	if c, ok := tr.Get("link.missing:eth9"); !ok || c.Message != "link eth9 is missing" {
		t.Errorf("link.missing:eth9 = %+v, %v", c, ok)
	}
}
