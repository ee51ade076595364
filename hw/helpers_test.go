package hw

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"appliance/health"
	"appliance/internal/clock"
)

var epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// writeTree writes files (path under root -> contents) into root.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, v := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// breakFile makes path unreadable even for root: a directory where a file
// should be, or a symlink to nowhere.
func breakFile(t *testing.T, path, how string) {
	t.Helper()
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	var err error
	switch how {
	case "dir":
		err = os.Mkdir(path, 0o755)
	case "dangling":
		err = os.Symlink(filepath.Join(filepath.Dir(path), "nowhere"), path)
	case "missing":
	default:
		t.Fatalf("breakFile: unknown way %q", how)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// active returns the tracker's conditions by name.
func active(tr *health.Tracker) map[string]health.Condition {
	out := map[string]health.Condition{}
	for _, c := range tr.Active() {
		out[c.Name] = c
	}
	return out
}

// newTestMonitor returns a monitor on a fake clock and an empty sysfs, with
// load reading stubbed out, for driving poll and the link steps directly.
func newTestMonitor(t *testing.T, o Options) (*Monitor, *health.Tracker, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(epoch)
	tr := health.NewTracker(clk, quiet())
	if o.Sysfs == "" {
		// An empty sysfs still has the class directory every kernel has.
		o.Sysfs = t.TempDir()
		if err := os.Mkdir(filepath.Join(o.Sysfs, "class"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	o.Health, o.Clock, o.Logger = tr, clk, quiet()
	if o.ClearMarginC == 0 {
		o.ClearMarginC = 5
	}
	m := NewMonitor(o)
	m.load = func(context.Context) Load { return Load{} }
	return m, tr, clk
}

// fakeTemps is a TempReader the test sets.
type fakeTemps struct {
	mu    sync.Mutex
	temps []Temperature
	err   error
}

func (f *fakeTemps) set(err error, temps ...Temperature) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.temps, f.err = temps, err
}

func (f *fakeTemps) Temperatures(context.Context) ([]Temperature, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Temperature(nil), f.temps...), f.err
}
