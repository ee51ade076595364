package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"appliance/lab"
)

// cmdLab runs the pair in network namespaces through the failover
// scenarios and prints a row per scenario; it fails unless every row passes.
func cmdLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// The lab reads its own flags; what it prints about them is sorted
	// here: asked-for usage to stdout, mistakes to stderr.
	var msgs bytes.Buffer
	opts, asJSON, err := lab.ParseArgs(args, &msgs)
	fs := newFlags("lab", stdout, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintf(stdout, "Usage: %s\n\n%s.\n\nFlags:\n%s", fs.synopsis(), fs.cmd.what, labFlags(msgs.String()))
		return errHelp
	case err != nil:
		// What was wrong, without the flag package's list of flags.
		msg, _, _ := strings.Cut(msgs.String(), "Usage of ")
		fmt.Fprint(stderr, msg)
		fs.shortUsage(stderr)
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

// labFlags is the flag package's list of the lab's flags laid out as every
// other command's: --name VALUE, then what it does, on one line.
func labFlags(defaults string) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, line := range strings.Split(defaults, "\n") {
		switch {
		case strings.HasPrefix(line, "  -"):
			name, text, _ := strings.Cut(line[3:], "\t")
			fmt.Fprintf(tw, "  --%s\t%s", name, text)
		case strings.HasPrefix(line, "    \t"):
			fmt.Fprintf(tw, "%s\n", line[5:])
		}
	}
	_ = tw.Flush()
	return b.String()
}
