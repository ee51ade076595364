// Command appliance is the firmware of a media unit: it supervises the media
// workers, watches the hardware and serves the unit's status.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"appliance/pairnet"
)

// version is set at build time by the Makefile.
var version = "dev"

// errUsage marks a command line that could not be understood (exit code 2).
var errUsage = errors.New("usage")

// errReported marks a failure whose details were already printed (exit code 1).
var errReported = errors.New("failed")

// errHelp marks a command that printed its usage because it was asked to
// (--help, -h): it does nothing else and exits 0.
var errHelp = errors.New("help")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode is the README's promise: 0 success, 1 a failure (its reason
// printed), 2 a command line that could not be understood.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, errReported):
		return 1
	default:
		fmt.Fprintln(stderr, "appliance:", err)
		return 1
	}
}

// command is one of the appliance's commands. Its synopsis is written once,
// here: the overview, the command's --help and the README's table (checked
// by a test) all show it.
type command struct {
	name     string
	synopsis string // the arguments, as in the README
	what     string // what it does, in one line
	hidden   bool   // started by the unit itself, never by hand
	run      func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands is every command, in the order the overview lists them. A
// function rather than a variable: the commands look themselves up here.
func commands() []command {
	return []command{
		{name: "run", synopsis: "[--config FILE [--unit-config FILE]] [--listen IP:PORT]",
			what: "run the unit; without --config, the embedded demo", run: cmdRun},
		{name: "check", synopsis: "--config FILE [--unit-config FILE]",
			what: "validate a config file: every problem with its line, as run would refuse it", run: cmdCheck},
		{name: "reload", synopsis: "[--socket PATH | --config FILE] [--json]",
			what: "apply the config file of a running unit again, live", run: cmdReload},
		{name: "role", synopsis: "--stream NAME --role forward|standby [--from SEQ] [--socket PATH | --config FILE] [--json]",
			what: "set a stream's role on a running unit", run: cmdRole},
		{name: "handover", synopsis: "[--socket PATH | --config FILE] [--json] STREAM",
			what: "hand a stream to the paired unit, planned: nothing lost", run: cmdHandover},
		{name: "drill", synopsis: "--scenario overheat|power-loss|planned [--stream NAME] [--socket PATH | --config FILE] [--json]",
			what: "run a failover drill on the live pair", run: cmdDrill},
		{name: "restart", synopsis: "[--socket PATH | --config FILE] [--json] STREAM",
			what: "restart one stream's pipeline on its worker (counters, role and numbering kept)", run: cmdRestart},
		{name: "update", synopsis: "[--socket PATH | --config FILE] [--json] FILE|URL",
			what: "update the unit from a signed bundle: the other slot is written, then booted on trial, kept only if healthy", run: cmdUpdate},
		{name: "token", synopsis: "hash [--name NAME] [--generate]",
			what: "print the status.tokens line for an API token (read from stdin, or made with --generate)", run: cmdTokenCommand},
		{name: "witness", synopsis: "--listen IP:PORT --key-file FILE [--state FILE]",
			what: "answer as the pair's witness, on a third box", run: cmdWitness},
		{name: "lab", synopsis: "[--scenario NAME|all] [--mode dual|vip|both] [--streams N] [--runs N] [--pps N] [--json] [--keep]",
			what: "(root) build a pair in network namespaces and run the failover scenarios", run: cmdLab},
		{name: "status", synopsis: "[--addr HOST:PORT] [--json]",
			what: "print what a running unit says", run: cmdStatus},
		{name: "gen", synopsis: "--to HOST:PORT [--pps N] [--duration D] [--ssrc SSRC] [--size BYTES] [--json]",
			what: "send a paced RTP test stream", run: cmdGen},
		{name: "probe", synopsis: "--listen IP:PORT [--duration D] [--clock-rate HZ] [--json]",
			what: "receive and measure an RTP stream", run: cmdProbe},
		{name: "version", what: "print the version", run: cmdVersion},
		{name: "help", synopsis: "[COMMAND]", what: "print this overview, or a command's usage", run: cmdHelp},
		{name: "worker", hidden: true, what: "a media worker: `appliance run` starts it", run: cmdWorker},
		{name: "trial", hidden: true, what: "judge a trial boot of a new slot: appliance-trial.service runs it (docs/image.md)", run: cmdTrial},
		{name: "pair-beacon", hidden: true, what: "a paired unit's heartbeat beacon: `appliance run` starts it (docs/pair-protocol.md)", run: cmdPairBeacon},
	}
}

func lookup(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// overview is what `appliance help` prints.
func overview() string {
	var b strings.Builder
	b.WriteString("appliance: firmware of a media unit\n\nUsage:\n")
	for _, c := range commands() {
		if c.hidden {
			continue
		}
		line := "  appliance " + c.name
		if c.synopsis != "" {
			line += " " + c.synopsis
		}
		fmt.Fprintf(&b, "%s\n      %s\n", line, c.what)
	}
	b.WriteString("\nAddresses are IP:PORT ([2001:db8::1]:5004 for IPv6); --to and --addr also take HOST:PORT.\n" +
		"`appliance COMMAND --help` explains a command's flags.\n" +
		"Exit codes: 0 success, 1 failure (the reason is printed), 2 a command line that could not be understood.\n")
	return b.String()
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, overview())
		return errUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "--help", "-help":
		name = "help"
	case "--version", "-version":
		name = "version"
	}
	c, ok := lookup(name)
	if !ok {
		fmt.Fprintf(stderr, "appliance: unknown command %q\n\n%s", name, overview())
		return errUsage
	}
	err := c.run(ctx, rest, stdout, stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

func cmdHelp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("help", stdout, stderr)
	if err := fs.parseWithArgs(args); err != nil {
		return err
	}
	switch fs.NArg() {
	case 0:
		fmt.Fprint(stdout, overview())
		return nil
	case 1:
		c, ok := lookup(fs.Arg(0))
		if !ok {
			return fs.usageError("unknown command %q; `appliance help` lists them", fs.Arg(0))
		}
		// A command's own --help knows its flags.
		return c.run(ctx, []string{"--help"}, stdout, stderr)
	default:
		return fs.usageError("name one command, e.g. appliance help run")
	}
}

func cmdVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", stdout, stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "appliance", version)
	return nil
}

func cmdPairBeacon(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("pair-beacon", stdout, stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return pairnet.ServeBeacon()
}
