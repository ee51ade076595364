package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"appliance/control"
)

func cmdRestart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	resp, asJSON, err := streamCommand(ctx, "restart", control.OpRestart, args, stdout, stderr)
	if err != nil {
		return err
	}
	r := resp.Restart
	if asJSON {
		return json.NewEncoder(stdout).Encode(r)
	}
	fmt.Fprintf(stdout, "%s: restarted on worker-%d (pid %d), %d restarts so far\n", r.Stream, r.Worker, r.WorkerPID, r.Restarts)
	return nil
}
