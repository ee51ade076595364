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
	show := lab.PrintTable
	if asJSON {
		show = lab.PrintJSON
	}
	if perr := show(stdout, rows); perr != nil {
		return perr
	}
	if err != nil {
		// Only an interrupt ends a run that has rows: say what is left.
		fmt.Fprintf(stderr, "appliance lab: interrupted (%v) after %d rows; its namespaces, units and files are removed\n", err, len(rows))
		return errReported
	}
	if !lab.AllPass(rows) {
		return errReported
	}
	return nil
}
