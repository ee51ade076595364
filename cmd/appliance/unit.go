package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"appliance/config"
	"appliance/internal/clock"
	"appliance/media"
	"appliance/status"
	"appliance/supervisor"
)

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("appliance "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return errUsage
	}
	return nil
}

// loadConfig reads the config file, or the embedded demo when path is empty,
// and prints every problem if there are any.
func loadConfig(path string, stderr io.Writer) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, errReported
	}
	return cfg, nil
}

func cmdCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", stderr)
	path := fs.String("config", "", "config file to check (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *path == "" {
		fmt.Fprintln(stderr, "appliance check: --config FILE is required")
		return errUsage
	}
	cfg, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "ok:", cfg.Summary())
	return nil
}

func cmdWorker(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("worker", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("pid", os.Getpid())
	return media.RunWorker(ctx, log)
}

// rootIntensity is how often the root may restart a whole subtree (say,
// media after its workers crash-looped) before it gives up on the unit. It is
// deliberately slower than a subtree's own rule: giving up at the root means
// the box stops feeding its watchdogs and is reset.
const (
	rootIntensity = 3
	rootPeriod    = 60 * time.Second
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	path := fs.String("config", "", "config file (default: the embedded demo config)")
	listen := fs.String("listen", "", "status API address, overriding status.listen")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Status.Listen = *listen
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this binary to start workers: %w", err)
	}
	u, err := newUnit(cfg, exe, clock.Real(), log)
	if err != nil {
		return err
	}
	return u.run(ctx)
}

// unit is the wired appliance: one instance per `appliance run`.
type unit struct {
	cfg     *config.Config
	log     *slog.Logger
	clk     clock.Clock
	started time.Time
	events  *supervisor.EventLog
	media   *media.Manager
	root    *supervisor.Supervisor
	api     *status.Server

	mu     sync.Mutex
	gaveUp bool
}

func newUnit(cfg *config.Config, exe string, clk clock.Clock, log *slog.Logger) (*unit, error) {
	u := &unit{cfg: cfg, log: log, clk: clk, started: clk.Now(), events: supervisor.NewEventLog(1024)}

	var streams []media.StreamSpec
	for _, s := range cfg.Streams {
		spec := media.StreamSpec{Name: s.Name, Input: s.Input.Addr, ClockRate: s.ClockRate}
		for _, o := range s.Outputs {
			spec.Outputs = append(spec.Outputs, o.Addr)
		}
		if s.Rewrite != nil {
			spec.RewriteSSRC = s.Rewrite.SSRC
		}
		streams = append(streams, spec)
	}
	m, err := media.NewManager(media.Options{
		Streams:        streams,
		Workers:        cfg.Media.Workers,
		HangTimeout:    time.Duration(cfg.Media.HangTimeout),
		ReportInterval: time.Duration(cfg.Media.ReportInterval),
		Command:        []string{exe, "worker"},
		Clock:          clk,
		Logger:         log,
	})
	if err != nil {
		return nil, err
	}
	u.media = m

	api, err := status.Listen(cfg.Status.Listen, u, log)
	if err != nil {
		m.Close()
		return nil, err
	}
	u.api = api

	r := cfg.Media.Restart
	mediaSup := supervisor.New(supervisor.Spec{
		Name:       "media",
		Strategy:   supervisor.OneForOne,
		Intensity:  r.Intensity,
		Period:     time.Duration(r.Period),
		Backoff:    time.Duration(r.Backoff),
		BackoffMax: time.Duration(r.BackoffMax),
		Clock:      clk,
		Events:     u.events.Add,
		Logger:     log,
	}, m.Children()...)

	children := []supervisor.Child{{Name: "media", Service: mediaSup, Restart: supervisor.Permanent, Shutdown: 10 * time.Second}}
	for i, ts := range cfg.TestSources {
		g := &media.Generator{To: ts.To.Addr, PPS: ts.PPS, Size: ts.Size, SSRC: ts.SSRC}
		children = append(children, supervisor.Child{
			Name: fmt.Sprintf("test-source-%d", i), Service: g, Restart: supervisor.Permanent, Shutdown: time.Second,
		})
	}
	u.root = supervisor.New(supervisor.Spec{
		Name: "root", Strategy: supervisor.OneForOne, Intensity: rootIntensity, Period: rootPeriod,
		Clock: clk, Events: u.events.Add, Logger: log,
	}, children...)
	return u, nil
}

// run serves until ctx ends. If the root gives up, the API stays up to say
// so; the unit no longer claims to be healthy.
func (u *unit) run(ctx context.Context) error {
	defer u.media.Close()
	apiCtx, stopAPI := context.WithCancel(context.Background())
	apiDone := make(chan error, 1)
	go func() { apiDone <- u.api.Serve(apiCtx) }()
	u.log.Info("appliance running", "unit", u.cfg.Unit.Name, "version", version,
		"status", "http://"+u.api.Addr().String(), "streams", len(u.cfg.Streams), "workers", u.cfg.Media.Workers)

	rootErr := u.root.Serve(ctx)
	if rootErr != nil && ctx.Err() == nil {
		u.mu.Lock()
		u.gaveUp = true
		u.mu.Unlock()
		u.log.Error("supervision root gave up; the unit is failed until restarted", "err", rootErr)
		<-ctx.Done()
	}
	stopAPI()
	if err := <-apiDone; err != nil {
		return err
	}
	u.log.Info("appliance stopped")
	return nil
}

// Report implements status.Source.
func (u *unit) Report() status.Report {
	u.mu.Lock()
	state := "running"
	if u.gaveUp {
		state = "failed"
	}
	u.mu.Unlock()
	now := u.clk.Now()
	return status.Report{
		Unit: status.Unit{
			Name: u.cfg.Unit.Name, Version: version, Started: u.started,
			UptimeS: now.Sub(u.started).Seconds(), State: state,
		},
		Streams:    u.media.Streams(),
		Supervisor: u.root.Snapshot(),
		Events:     status.SupervisorEvents(u.events.Recent(200)),
	}
}
