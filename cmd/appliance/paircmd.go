package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"appliance/config"
	"appliance/control"
	"appliance/failover"
	"appliance/pairnet"
)

func cmdHandover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("handover", stderr)
	socket := controlFlags(fs)
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	// The stream is the one positional argument; flags may come before it.
	var stream string
	if len(args) > 0 && len(args[len(args)-1]) > 0 && args[len(args)-1][0] != '-' {
		stream, args = args[len(args)-1], args[:len(args)-1]
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if stream == "" {
		fmt.Fprintln(stderr, "appliance handover: name the stream: appliance handover [--socket PATH] STREAM")
		return errUsage
	}
	resp, err := callUnit(ctx, socket(), control.Request{Op: control.OpHandover, Stream: stream}, stderr)
	if err != nil {
		return err
	}
	r := resp.Handover
	if *asJSON {
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
	fs := newFlags("drill", stderr)
	socket := controlFlags(fs)
	scenario := fs.String("scenario", "", "overheat, power-loss or planned (required)")
	stream := fs.String("stream", "", "drill one stream only (default: every stream this unit forwards)")
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch *scenario {
	case control.DrillOverheat, control.DrillPowerLoss, control.DrillPlanned:
	default:
		fmt.Fprintln(stderr, "appliance drill: --scenario overheat|power-loss|planned is required")
		return errUsage
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
func cmdWitness(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("witness", stderr)
	listen := fs.String("listen", "", "IP:PORT to answer on (required); the units' pair.witness")
	keyFile := fs.String("key-file", "", "the pair's shared key file, as the units' pair.key_file (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ap, err := parseHostPort("listen", *listen)
	if err != nil || *keyFile == "" {
		fmt.Fprintln(stderr, "appliance witness: --listen IP:PORT and --key-file FILE are required")
		return errUsage
	}
	key, err := config.ReadKey(*keyFile)
	if err != nil {
		fmt.Fprintln(stderr, "appliance witness:", err)
		return errReported
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("pid", os.Getpid())
	log.Info("witness answering", "listen", ap.String())
	return pairnet.ServeWitness(ctx, ap, key, witnessLogic{failover.NewWitness()}, log)
}

// witnessLogic adapts failover's witness to what pairnet serves.
type witnessLogic struct{ w *failover.Witness }

// Ask implements pairnet.WitnessLogic.
func (l witnessLogic) Ask(now time.Duration, r pairnet.WitnessRequest) pairnet.WitnessAnswer {
	a := l.w.Ask(now, failover.WitnessRequest{Unit: r.Unit, Peer: r.Peer, Takeover: r.Takeover,
		HearsPeer: r.HearsPeer, Detect: r.Detect, Heartbeat: r.Heartbeat})
	return pairnet.WitnessAnswer{Lease: a.Lease, Takeover: a.Takeover}
}
