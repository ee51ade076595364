package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"appliance/config"
	"appliance/internal/clock"
	"appliance/media"
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
	u, err := newUnit(cfg, *path, exe, clock.Real(), log)
	if err != nil {
		return err
	}
	return u.run(ctx)
}
