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
	"syscall"

	"appliance/pairnet"
)

// version is set at build time by the Makefile.
var version = "dev"

// errUsage marks a command line that could not be understood (exit code 2).
var errUsage = errors.New("usage")

// errReported marks a failure whose details were already printed (exit code 1).
var errReported = errors.New("failed")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		os.Exit(2)
	case errors.Is(err, errReported):
		os.Exit(1)
	default:
		fmt.Fprintln(os.Stderr, "appliance:", err)
		os.Exit(1)
	}
}

const usage = `appliance: firmware of a media unit

Usage:
  appliance run [--config FILE] [--listen ADDR]
                                         run the unit (embedded demo config without --config)
  appliance check --config FILE          validate a config file
  appliance reload [--socket PATH | --config FILE] [--json]
                                         apply the unit's config file again, live
  appliance role --stream NAME --role forward|standby [--from SEQ] [--socket PATH]
                                         set a stream's role on a running unit
  appliance handover [--socket PATH] STREAM
                                         hand a stream to the paired unit (planned: nothing lost)
  appliance drill --scenario overheat|power-loss|planned [--stream NAME] [--socket PATH]
                                         run a failover drill on the live pair
  appliance restart [--socket PATH] STREAM
                                         restart one stream's pipeline on a running unit
  appliance token hash [--name NAME] [--generate]
                                         print the status.tokens line for an API token
  appliance witness --listen IP:PORT --key-file FILE
                                         answer as the pair's witness (on a third box)
  appliance lab [--scenario NAME|all] [--streams N] [--json]
                                         build a pair in network namespaces and run failover scenarios (root)
  appliance status [--addr URL] [--json] show what a running unit says
  appliance gen --to HOST:PORT --pps N --duration D [--ssrc X] [--size BYTES]
                                         send a paced RTP test stream
  appliance probe --listen HOST:PORT --duration D [--json]
                                         receive and measure an RTP stream
  appliance version                      print the version
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(ctx, rest, stdout, stderr)
	case "worker":
		return cmdWorker(ctx, rest, stderr)
	case "check":
		return cmdCheck(rest, stdout, stderr)
	case "reload":
		return cmdReload(ctx, rest, stdout, stderr)
	case "role":
		return cmdRole(ctx, rest, stdout, stderr)
	case "handover":
		return cmdHandover(ctx, rest, stdout, stderr)
	case "drill":
		return cmdDrill(ctx, rest, stdout, stderr)
	case "restart":
		return cmdRestart(ctx, rest, stdout, stderr)
	case "token":
		return cmdToken(rest, os.Stdin, stdout, stderr)
	case "witness":
		return cmdWitness(ctx, rest, stderr)
	case "pair-beacon":
		// Started by a paired unit, never by hand (docs/pair-protocol.md).
		return pairnet.ServeBeacon()
	case "lab":
		return cmdLab(ctx, rest, stdout, stderr)
	case "status":
		return cmdStatus(ctx, rest, stdout, stderr)
	case "gen":
		return cmdGen(ctx, rest, stdout, stderr)
	case "probe":
		return cmdProbe(ctx, rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "appliance", version)
		return nil
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "appliance: unknown command %q\n\n%s", cmd, usage)
		return errUsage
	}
}
