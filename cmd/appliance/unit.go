package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"appliance/config"
	"appliance/control"
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
	cfg, err := config.LoadEnv(path, machineEnv())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, errReported
	}
	return cfg, nil
}

// machineEnv is what the config is checked against besides itself: this
// machine's addresses (an output to one of them may loop back into an
// input) and the open-file limit the unit would run with. `check` and `run`
// use the same, so check refuses what run would.
func machineEnv() config.Env {
	var env config.Env
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				env.LocalAddrs = append(env.LocalAddrs, p.Addr().Unmap())
			}
		}
	}
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil && lim.Max != unix.RLIM_INFINITY {
		env.NoFileLimit = lim.Max
	}
	return env
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
		if err := config.ValidateListen(*listen); err != nil {
			fmt.Fprintf(stderr, "appliance run: --listen: %v\n", err)
			return errUsage
		}
		cfg.Status.Listen = *listen
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if cfg.Pair != nil {
		// The heartbeat loop runs on a real-time thread, but after every
		// system call it needs one of the runtime's Ps to go on. With only
		// one per core, the Ps can all be held by threads a busy machine
		// has preempted, and the heartbeat waits for them: spare Ps (idle
		// ones cost nothing) keep one free for it.
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + spareProcs)
	}
	// Workers are this very binary, even if the file is replaced under a
	// running unit (an update): they always speak the parent's protocol.
	// ps shows them under the binary's name.
	argv0, err := os.Executable()
	if err != nil {
		argv0 = os.Args[0]
	}
	u, err := newUnit(cfg, *path, "/proc/self/exe", argv0, clock.Real(), log)
	if err != nil {
		return err
	}
	return u.run(ctx)
}

// spareProcs is how many Ps a paired unit's parent has beyond one per core.
const spareProcs = 4

// defaultControlSocket is where `reload` and `role` look without --socket
// or --config: the default of control.socket.
var defaultControlSocket = config.Defaults().Control.Socket

// controlFlags adds --socket and --config, which say where the unit listens.
func controlFlags(fs *flag.FlagSet) func() string {
	sock := fs.String("socket", "", "the unit's control socket (default: control.socket of --config, else "+defaultControlSocket+")")
	cfgPath := fs.String("config", "", "the unit's config file, to find its control socket")
	return func() string {
		if *sock != "" {
			return *sock
		}
		if *cfgPath != "" {
			// A file with problems falls back to the default socket; the
			// unit then reports the problems itself.
			// Parse, not Load: an operator who may use the socket need
			// not be able to read the pair's key file.
			if data, err := os.ReadFile(*cfgPath); err == nil {
				if cfg, err := config.Parse(*cfgPath, data); err == nil {
					return cfg.Control.Socket
				}
			}
		}
		return defaultControlSocket
	}
}

func callUnit(ctx context.Context, path string, req control.Request, stderr io.Writer) (control.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	resp, err := control.Call(ctx, path, req)
	if err != nil {
		return resp, err
	}
	if !resp.OK {
		fmt.Fprintln(stderr, resp.Error)
		return resp, errReported
	}
	return resp, nil
}

func cmdReload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reload", stderr)
	socket := controlFlags(fs)
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	resp, err := callUnit(ctx, socket(), control.Request{Op: control.OpReload}, stderr)
	if err != nil {
		return err
	}
	r := resp.Reload
	if *asJSON {
		return json.NewEncoder(stdout).Encode(r)
	}
	fmt.Fprintf(stdout, "reloaded: %d added, %d removed, %d changed, %d unchanged\n", len(r.Added), len(r.Removed), len(r.Changed), len(r.Unchanged))
	for _, l := range []struct {
		what  string
		names []string
	}{{"added", r.Added}, {"removed", r.Removed}, {"changed", r.Changed}} {
		if len(l.names) > 0 {
			fmt.Fprintf(stdout, "  %s: %s\n", l.what, strings.Join(l.names, ", "))
		}
	}
	for _, name := range sortedKeys(r.Failed) {
		fmt.Fprintf(stdout, "  not carried: %s: %s\n", name, r.Failed[name])
	}
	if len(r.RestartNeeded) > 0 {
		fmt.Fprintf(stdout, "  restart the service to apply: %s\n", strings.Join(r.RestartNeeded, ", "))
	}
	return nil
}

func cmdRole(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("role", stderr)
	socket := controlFlags(fs)
	stream := fs.String("stream", "", "the stream (required)")
	role := fs.String("role", "", "forward or standby (required)")
	from := fs.Int("from", -1, "with --role forward: start at this input sequence number, replaying what standby kept")
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *stream == "" || (*role != media.RoleForward && *role != media.RoleStandby) {
		fmt.Fprintln(stderr, "appliance role: --stream NAME and --role forward|standby are required")
		return errUsage
	}
	req := control.Request{Op: control.OpRole, Stream: *stream, Role: *role}
	if *from >= 0 {
		if *from > 65535 || *role != media.RoleForward {
			fmt.Fprintln(stderr, "appliance role: --from is a sequence number (0-65535) and goes with --role forward")
			return errUsage
		}
		s := uint16(*from)
		req.FromSeq = &s
	}
	resp, err := callUnit(ctx, socket(), req, stderr)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(resp.Role)
	}
	line := fmt.Sprintf("%s: %s", *stream, *role)
	if lf := resp.Role.LastForwarded; lf != nil {
		line += fmt.Sprintf("; last forwarded input sequence %d", *lf)
	}
	if resp.Role.Replayed > 0 {
		line += fmt.Sprintf("; replayed %d packets", resp.Role.Replayed)
	}
	fmt.Fprintln(stdout, line)
	return nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
