package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"appliance/control"
)

func cmdRestart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("restart", stdout, stderr)
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
		return fs.usageError("name the stream, e.g. appliance restart cam1")
	}
	resp, err := callUnit(ctx, socket(), control.Request{Op: control.OpRestart, Stream: stream}, stderr)
	if err != nil {
		return err
	}
	r := resp.Restart
	if *asJSON {
		return json.NewEncoder(stdout).Encode(r)
	}
	fmt.Fprintf(stdout, "%s: restarted on worker-%d (pid %d), %d restarts so far\n", r.Stream, r.Worker, r.WorkerPID, r.Restarts)
	return nil
}
