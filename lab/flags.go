package lab

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// ParseArgs reads the command line of `appliance lab`. It returns
// flag.ErrHelp after printing the usage for -h, and an ErrOptions error
// after printing what was wrong.
func ParseArgs(args []string, stderr io.Writer) (opts Options, asJSON bool, err error) {
	d := Defaults()
	fs := flag.NewFlagSet("appliance lab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenario := fs.String("scenario", "all", "scenario to run, several separated by commas, or all: "+strings.Join(ScenarioNames(), ", "))
	mode := fs.String("mode", Dual, "input mode of the pair scenarios: dual, vip or both")
	fs.IntVar(&opts.Streams, "streams", d.Streams, "streams, half preferring each unit (1-1000)")
	fs.IntVar(&opts.Runs, "runs", d.Runs, "runs of each scenario; rows show the median of the runs")
	fs.IntVar(&opts.PPS, "pps", d.PPS, "packets per second of each stream's source")
	fs.StringVar(&opts.Binary, "binary", d.Binary, "the appliance binary the units run")
	fs.BoolVar(&asJSON, "json", false, "print the rows as JSON")
	fs.BoolVar(&opts.Keep, "keep", false, "keep the units' configs and logs until the next lab run, and print where they are")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return opts, false, err
		}
		return opts, false, fmt.Errorf("%w: %w", ErrOptions, err)
	}
	bad := func(format string, a ...any) (Options, bool, error) {
		err := fmt.Errorf("%w: "+format, append([]any{ErrOptions}, a...)...)
		fmt.Fprintln(stderr, "appliance lab:", err)
		return opts, false, err
	}
	if fs.NArg() > 0 {
		return bad("unexpected argument %q", fs.Arg(0))
	}
	switch *mode {
	case Dual, VIP:
		opts.Modes = []string{*mode}
	case "both":
		opts.Modes = []string{Dual, VIP}
	default:
		return bad("--mode %q: use dual, vip or both", *mode)
	}
	if *scenario != "all" {
		opts.Scenarios = strings.Split(*scenario, ",")
	}
	if opts.Streams < 1 || opts.Runs < 1 || opts.PPS < 1 {
		return bad("--streams, --runs and --pps must be at least 1")
	}
	if _, err := opts.fill(); err != nil {
		err = fmt.Errorf("%w: %w", ErrOptions, err)
		fmt.Fprintln(stderr, "appliance lab:", err)
		return opts, false, err
	}
	return opts, asJSON, nil
}
