package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"appliance/lab"
)

// cmdLab runs the pair in network namespaces through the failover
// scenarios and prints a row per scenario; it fails unless every row passes.
func cmdLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, asJSON, err := lab.ParseArgs(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return nil
	case err != nil:
		return errUsage
	}
	if !asJSON {
		opts.Progress = stderr
	}
	rows, err := lab.Run(ctx, opts)
	if err != nil && rows == nil && ctx.Err() == nil {
		fmt.Fprintln(stderr, "appliance lab:", err)
		return errReported
	}
	print := lab.PrintTable
	if asJSON {
		print = lab.PrintJSON
	}
	if perr := print(stdout, rows); perr != nil {
		return perr
	}
	if err != nil {
		fmt.Fprintf(stderr, "appliance lab: stopped: %v; its namespaces and units are removed\n", err)
		return errReported
	}
	if !lab.AllPass(rows) {
		return errReported
	}
	return nil
}
