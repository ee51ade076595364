package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"appliance/config"
	"appliance/control"
	"appliance/failover"
	"appliance/internal/atomicfile"
	"appliance/pairnet"
)

// streamCommand runs a command whose one argument is a stream, sent to the
// unit as op: its flags (the control socket, --json), the stream after
// them, and the call.
func streamCommand(ctx context.Context, name, op string, args []string, stdout, stderr io.Writer) (control.Response, bool, error) {
	fs := newFlags(name, stdout, stderr)
	socket := controlFlags(fs)
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	// The stream is the one positional argument; flags may come before it.
	var stream string
	if len(args) > 0 && len(args[len(args)-1]) > 0 && args[len(args)-1][0] != '-' {
		stream, args = args[len(args)-1], args[:len(args)-1]
	}
	if err := parseFlags(fs, args); err != nil {
		return control.Response{}, false, err
	}
	if stream == "" {
		return control.Response{}, false, fs.usageError("name the stream, e.g. appliance %s cam1", name)
	}
	resp, err := callUnit(ctx, socket(), control.Request{Op: op, Stream: stream}, stderr)
	return resp, *asJSON, err
}

func cmdHandover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	resp, asJSON, err := streamCommand(ctx, "handover", control.OpHandover, args, stdout, stderr)
	if err != nil {
		return err
	}
	r := resp.Handover
	if asJSON {
		return json.NewEncoder(stdout).Encode(r)
	}
	line := fmt.Sprintf("%s: now forwarded by %s (epoch %d)", r.Stream, r.To, r.Epoch)
	if r.Start != nil {
		line += fmt.Sprintf(", from input sequence %d", *r.Start)
	}
	fmt.Fprintln(stdout, line)
	return nil
}

func cmdDrill(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("drill", stdout, stderr)
	socket := controlFlags(fs)
	scenario := fs.String("scenario", "", "`overheat|power-loss|planned` (required)")
	stream := fs.String("stream", "", "drill the stream `NAME` only (default: every stream this unit forwards)")
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch *scenario {
	case control.DrillOverheat, control.DrillPowerLoss, control.DrillPlanned:
	default:
		return fs.usageError("--scenario overheat|power-loss|planned is required")
	}
	resp, err := callUnit(ctx, socket(), control.Request{Op: control.OpDrill, Scenario: *scenario, Stream: *stream}, stderr)
	if err != nil {
		return err
	}
	r := resp.Drill
	if *asJSON {
		return json.NewEncoder(stdout).Encode(r)
	}
	fmt.Fprintf(stdout, "drill %s: %s; %d streams moved to the peer; longest gap %.1f ms; %d lost; %d duplicates\n",
		r.Scenario, r.Result, r.Streams, r.GapMs, r.Lost, r.Duplicates)
	if r.Detail != "" {
		fmt.Fprintln(stdout, "  "+r.Detail)
	}
	if r.Result != "ok" {
		return errReported
	}
	return nil
}

// cmdWitness serves the pair's witness: a third party that decides, when the
// pair link is cut, which unit may take streams over.
func cmdWitness(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("witness", stdout, stderr)
	listen := fs.String("listen", "", "answer on `IP:PORT` (required): the units' pair.witness")
	keyFile := fs.String("key-file", "", "the pair's shared key `FILE`, as the units' pair.key_file (required)")
	state := fs.String("state", "/var/lib/appliance/witness.json", "`FILE` where the witness keeps which units it fenced, across restarts")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	h, err := parseAddr(witnessListen, *listen)
	if err != nil {
		return fs.usageError("%v", err)
	}
	if *keyFile == "" || *state == "" {
		return fs.usageError("--key-file FILE is required, and --state FILE must not be empty")
	}
	ap := netip.AddrPortFrom(h.ip, h.port)
	key, err := config.ReadKey(*keyFile)
	if err != nil {
		fmt.Fprintln(stderr, "appliance witness:", err)
		return errReported
	}
	fenced, err := loadFences(*state)
	if err != nil {
		fmt.Fprintln(stderr, "appliance witness:", err)
		return errReported
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("pid", os.Getpid())
	log.Info("witness answering", "listen", ap.String(), "state", *state, "fenced", fenced)
	l := &witnessLogic{w: failover.RestoreWitness(fenced), path: *state, saved: fenced, log: log}
	err = pairnet.ServeWitness(ctx, ap, key, l, log)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("--listen %v: another process holds it (another witness?); give --listen a free port, and the units' pair.witness the same address", ap)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("--listen %v: this machine has no address %v; give --listen one of its addresses (`ip -brief addr`), the one the units' pair.witness names", ap, ap.Addr())
	}
	return err
}

// witnessLogic adapts failover's witness to what pairnet serves, and keeps
// its fences on disk: a witness that forgot, after a restart, that it let
// one unit take the other's streams could let the other forward them too.
type witnessLogic struct {
	w     *failover.Witness
	path  string
	saved []string
	log   *slog.Logger
}

// Ask implements pairnet.WitnessLogic. A changed fence is on disk before
// the answer that follows from it leaves.
func (l *witnessLogic) Ask(now time.Duration, r pairnet.WitnessRequest) pairnet.WitnessAnswer {
	a := l.w.Ask(now, failover.WitnessRequest{Unit: r.Unit, Peer: r.Peer, Takeover: r.Takeover,
		HearsPeer: r.HearsPeer, Detect: r.Detect, Heartbeat: r.Heartbeat})
	f := l.w.Fenced()
	slices.Sort(f)
	if !slices.Equal(f, l.saved) {
		if err := saveFences(l.path, f); err != nil {
			// Unsaved, the grant must not go out.
			l.log.Error("witness: keeping the fences; this answer grants nothing", "err", err)
			return pairnet.WitnessAnswer{}
		}
		l.saved = f
	}
	return pairnet.WitnessAnswer{Lease: a.Lease, Takeover: a.Takeover}
}

type fenceFile struct {
	Fenced []string `json:"fenced"`
}

func loadFences(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the witness state %s: %w", path, err)
	}
	var f fenceFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("the witness state %s is damaged (%v); if no unit is fenced, remove it", path, err)
	}
	slices.Sort(f.Fenced)
	return f.Fenced, nil
}

// saveFences writes the state atomically: a crash leaves the old file or
// the new one, never half of one.
func saveFences(path string, fenced []string) error {
	b, _ := json.Marshal(fenceFile{Fenced: fenced})
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}
