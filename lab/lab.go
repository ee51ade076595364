package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Options says what the lab runs. The zero value of a field means its
// default (see Defaults).
type Options struct {
	// Binary is the appliance binary the units, the witness and handover
	// run; "/proc/self/exe" when the lab is the appliance itself.
	Binary    string
	Scenarios []string // names from Scenarios(); empty means all
	Modes     []string // Dual and/or VIP for the pair scenarios
	Streams   int
	Runs      int
	PPS       int // each source's packets per second
	Size      int // datagram size in bytes
	// Before and After are how long each run records before the fault and
	// after the pair has done what the scenario waits for.
	Before, After time.Duration
	// ReadyTimeout bounds the wait for both units to be up with every
	// stream owned once, before each run.
	ReadyTimeout time.Duration
	StarveFor    time.Duration // cpu-starvation's load
	// Keep leaves the units' configs and logs in place at the end (the
	// directory is printed), to see why a scenario failed.
	Keep bool
	// Progress, if set, gets a line per run as the lab goes.
	Progress io.Writer
}

// Defaults are the options a bare `appliance lab` runs with.
func Defaults() Options {
	return Options{
		Binary: "/proc/self/exe", Modes: []string{Dual}, Streams: 1, Runs: 1, PPS: 1000, Size: 200,
		Before: time.Second, After: 1500 * time.Millisecond, ReadyTimeout: 30 * time.Second, StarveFor: 60 * time.Second,
	}
}

// ErrOptions means the options (or the command line) cannot be run.
var ErrOptions = errors.New("lab options")

// ErrUnknownScenario means a scenario name is not one of Scenarios(). It
// is an ErrOptions too.
var ErrUnknownScenario = errors.New("unknown scenario")

// withDefaults fills zero fields and checks the rest.
func (o Options) withDefaults() (Options, error) {
	o, err := o.fill()
	if err != nil {
		return o, fmt.Errorf("%w: %w", ErrOptions, err)
	}
	return o, nil
}

func (o Options) fill() (Options, error) {
	d := Defaults()
	if o.Binary == "" {
		o.Binary = d.Binary
	}
	if len(o.Modes) == 0 {
		o.Modes = d.Modes
	}
	for _, m := range o.Modes {
		if m != Dual && m != VIP {
			return o, fmt.Errorf("mode %q: use %s or %s", m, Dual, VIP)
		}
	}
	for _, f := range []struct {
		v *int
		d int
	}{{&o.Streams, d.Streams}, {&o.Runs, d.Runs}, {&o.PPS, d.PPS}, {&o.Size, d.Size}} {
		if *f.v == 0 {
			*f.v = f.d
		}
	}
	for _, f := range []struct {
		v *time.Duration
		d time.Duration
	}{{&o.Before, d.Before}, {&o.After, d.After}, {&o.ReadyTimeout, d.ReadyTimeout}, {&o.StarveFor, d.StarveFor}} {
		if *f.v == 0 {
			*f.v = f.d
		}
	}
	// Ports 5000+ and 6000+ must not overlap, and VIPs stay in 198.18.100.0-198.18.255.255.
	if o.Streams < 1 || o.Streams > 1000 {
		return o, fmt.Errorf("streams %d: use 1 to 1000", o.Streams)
	}
	if o.Runs < 1 || o.PPS < 1 || o.PPS > 100000 {
		return o, fmt.Errorf("runs %d, %d packets/s: want at least one run and 1 to 100000 packets/s", o.Runs, o.PPS)
	}
	names := ScenarioNames()
	for _, s := range o.Scenarios {
		if !slices.Contains(names, s) {
			return o, fmt.Errorf("%w %q: use one of %s, or all", ErrUnknownScenario, s, strings.Join(names, ", "))
		}
	}
	return o, nil
}

// Run builds the topology, runs the chosen scenarios and removes
// everything it made before it returns, also when ctx is cancelled (an
// interrupt): then it returns the rows finished so far with ctx's error.
// It first removes what earlier runs that were killed left behind.
// labProcs is the least GOMAXPROCS the lab runs with.
const labProcs = 8

func Run(ctx context.Context, opts Options) ([]Row, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	if _, err := lookPath("ip"); err != nil {
		return nil, ErrNoIP
	}
	// The sources' real-time threads need a P after each system call:
	// spare ones let them find it while the units' load keeps this
	// process's ordinary threads, and the Ps they hold, off the CPU.
	if n := runtime.GOMAXPROCS(0); n < labProcs {
		runtime.GOMAXPROCS(labProcs)
		defer runtime.GOMAXPROCS(n)
	}
	if removed, err := CleanLeftovers(); err != nil {
		return nil, fmt.Errorf("removing what an earlier lab run left: %w", err)
	} else if len(removed) > 0 {
		fmt.Fprintf(progress, "removed what an earlier run left: %s\n", strings.Join(removed, ", "))
	}
	topo, err := BuildTopology()
	if err != nil {
		return nil, err
	}
	defer topo.Close()
	r, err := newRig(topo, opts)
	if err != nil {
		return nil, err
	}
	defer r.close()

	var rows []Row
	for _, sc := range Scenarios() {
		if len(opts.Scenarios) > 0 && !slices.Contains(opts.Scenarios, sc.Name) {
			continue
		}
		modes := opts.Modes
		if !sc.Pair {
			modes = []string{Lone}
		}
		for _, mode := range modes {
			row, err := runScenario(ctx, r, sc, mode, progress)
			if ctx.Err() != nil {
				return rows, ctx.Err()
			}
			if err != nil {
				row = failedRow(sc, mode, opts.Streams, opts.Runs, err)
			}
			fmt.Fprintf(progress, "%s (%s): %s\n", sc.Name, mode, verdict(row))
			rows = append(rows, row)
		}
	}
	return rows, nil
}

func runScenario(ctx context.Context, r *rig, sc Scenario, mode string, progress io.Writer) (Row, error) {
	var runs []*trial
	for i := 0; i < r.opts.Runs; i++ {
		if err := r.reset(ctx, mode, sc.Witness); err != nil {
			return Row{}, fmt.Errorf("run %d: preparing the units: %w", i+1, err)
		}
		if sc.setup != nil {
			if err := sc.setup(ctx, r); err != nil {
				return Row{}, fmt.Errorf("run %d: setting the scene: %w", i+1, r.withLogs(err))
			}
		}
		t, err := r.measure(ctx, sc.inject)
		if err != nil {
			return Row{}, fmt.Errorf("run %d: %w", i+1, err)
		}
		w := worst(t)
		det := "-"
		if w.Detection >= 0 {
			det = w.Detection.Round(time.Microsecond).String()
		}
		gap := fmt.Sprintf("gap %v", w.Gap.Round(time.Microsecond))
		if len(t.results) > 1 {
			gap = fmt.Sprintf("gap median %v, worst %v", median(streamGaps(t)).Round(time.Microsecond), w.Gap.Round(time.Microsecond))
		}
		fmt.Fprintf(progress, "  %s (%s) run %d: detection %s, %s (from %v after the fault, sent %v apart), lost %d, duplicates %d\n", sc.Name, mode, i+1,
			det, gap, w.GapAt.Round(time.Millisecond), w.GapSent.Round(time.Millisecond), w.Lost, w.Dups)
		runs = append(runs, t)
	}
	return summarize(sc, mode, r.opts.Streams, runs), nil
}

func verdict(r Row) string {
	if r.Pass {
		return "pass"
	}
	return "FAIL: " + r.Why
}
