package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"appliance/config"
	"appliance/control"
	"appliance/internal/clock"
	"appliance/media"
	"appliance/status"
)

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

func cmdCheck(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", stdout, stderr)
	path := fs.String("config", "", "check the config `FILE` (required)")
	unitPath := fs.String("unit-config", "", "check the unit's own config `FILE` too, as run --unit-config would take it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *path == "" {
		return fs.usageError("--config FILE is required")
	}
	if *unitPath == "" {
		cfg, err := loadConfig(*path, stderr)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, "ok:", cfg.Summary())
		return nil
	}
	// Run would start on the default rather than refuse a bad unit config;
	// check says so and fails, so that the file is fixed before it is used.
	c, err := loadChoice(*path, *unitPath, stderr)
	if err != nil {
		return err
	}
	if c.Fallback() {
		fmt.Fprintln(stderr, c.UnitErr)
		fmt.Fprintf(stderr, "%s cannot be used: run --unit-config would start on %s instead and carry none of this unit's streams\n", *unitPath, *path)
		return errReported
	}
	if c.Path != *unitPath {
		fmt.Fprintf(stdout, "ok: no %s; run uses %s: %s\n", *unitPath, c.Path, c.Config.Summary())
		return nil
	}
	fmt.Fprintln(stdout, "ok:", c.Config.Summary())
	return nil
}

// loadChoice chooses between the default config and the unit's own
// (config.LoadUnit), and prints the default's problems if it has any.
func loadChoice(path, unitPath string, stderr io.Writer) (config.Choice, error) {
	c, err := config.LoadUnit(path, unitPath, machineEnv())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return c, errReported
	}
	return c, nil
}

func cmdWorker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("worker", stdout, stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("pid", os.Getpid())
	return media.RunWorker(ctx, log)
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", stdout, stderr)
	path := fs.String("config", "", "run the config `FILE` (default: the embedded demo)")
	unitPath := fs.String("unit-config", "", "the unit's own config `FILE`, used instead of --config when present; when it cannot be used the unit runs on --config and says why")
	listen := fs.String("listen", "", "the status page and API on `IP:PORT`, instead of status.listen")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *listen != "" {
		h, err := parseAddr(runListen, *listen)
		if err == nil {
			*listen = h.String()
			// The same rules as status.listen in the config.
			err = config.ValidateListen(*listen)
		}
		if err != nil {
			return fs.usageError("%v", err)
		}
	}
	if *unitPath != "" && *path == "" {
		return fs.usageError("--unit-config FILE needs --config FILE: the default it falls back on")
	}
	choice := config.Choice{Path: *path}
	if *unitPath == "" {
		cfg, err := loadConfig(*path, stderr)
		if err != nil {
			return err
		}
		choice.Config = cfg
	} else {
		c, err := loadChoice(*path, *unitPath, stderr)
		if err != nil {
			return err
		}
		choice = c
	}
	cfg := choice.Config
	if *listen != "" {
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
	u, err := newUnit(cfg, configFiles{path: *path, unit: *unitPath}, "/proc/self/exe", argv0, clock.Real(), log)
	if err != nil {
		return listenHint(err, choice.Path, *listen)
	}
	u.unitConfigChosen(choice)
	return u.run(ctx)
}

// listenHint rewrites a status address that could not be bound to name
// where the address came from: --listen, the embedded demo (which only
// --listen can move), or the config file's status.listen.
func listenHint(err error, path, listen string) error {
	var le *status.ListenError
	if !errors.As(err, &le) {
		return err
	}
	busy := ""
	if errors.Is(le.Err, syscall.EADDRINUSE) {
		busy = fmt.Sprintf(" (another unit? `appliance status --addr %s` asks it)", le.Addr)
	}
	switch {
	case listen != "":
		return fmt.Errorf("--listen %s: %s%s; give --listen a free address, e.g. --listen %s", le.Addr, netReason(le.Err), busy, nextPort(le.Addr))
	case path == "":
		return fmt.Errorf("the demo's status address %s: %s%s; run the demo on another with --listen, e.g. appliance run --listen %s", le.Addr, netReason(le.Err), busy, nextPort(le.Addr))
	default:
		return fmt.Errorf("status.listen %s in %s: %s%s; set status.listen to a free address, or override it with --listen", le.Addr, path, netReason(le.Err), busy)
	}
}

// nextPort is addr with the port after its own, for examples.
func nextPort(addr string) string {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Port() == 65535 {
		return "127.0.0.1:8081"
	}
	return netip.AddrPortFrom(ap.Addr(), ap.Port()+1).String()
}

// spareProcs is how many Ps a paired unit's parent has beyond one per core.
const spareProcs = 4

// defaultControlSocket is where `reload` and `role` look without --socket
// or --config: the default of control.socket.
var defaultControlSocket = config.Defaults().Control.Socket

// unitSocket is a unit's control socket and where its path came from, for
// the hint when no unit answers there.
type unitSocket struct {
	path string
	from string // "--socket", "control.socket in FILE", or "the default ..." and why
}

// controlFlags adds --socket and --config, which say where the unit listens.
func controlFlags(fs *flagSet) func() unitSocket {
	sock := fs.String("socket", "", "the unit's control socket at `PATH` (default: control.socket of --config, else "+defaultControlSocket+")")
	cfgPath := fs.String("config", "", "the unit's config `FILE`, where its control socket is named")
	return func() unitSocket {
		if *sock != "" {
			return unitSocket{*sock, "--socket"}
		}
		why := "the default (no --socket or --config given)"
		if *cfgPath != "" {
			// A file with problems falls back to the default socket; the
			// unit then reports the problems itself.
			// Parse, not Load: an operator who may use the socket need
			// not be able to read the pair's key file.
			data, err := os.ReadFile(*cfgPath)
			if err == nil {
				var cfg *config.Config
				if cfg, err = config.Parse(*cfgPath, data); err == nil {
					return unitSocket{cfg.Control.Socket, "control.socket in " + *cfgPath}
				}
			}
			why = fmt.Sprintf("the default (--config %s could not be read: %v)", *cfgPath, err)
		}
		return unitSocket{defaultControlSocket, why}
	}
}

func callUnit(ctx context.Context, sock unitSocket, req control.Request, stderr io.Writer) (control.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	resp, err := control.Call(ctx, sock.path, req)
	if errors.Is(err, control.ErrNoUnit) {
		hint := "the path came from " + sock.from
		if strings.HasPrefix(sock.from, "the default") {
			hint += fmt.Sprintf("; name the unit's with --socket PATH or --config FILE (the demo's is --socket %s, in the directory make run runs in)", config.Default().Control.Socket)
		}
		return resp, fmt.Errorf("%w; %s", err, hint)
	}
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
	fs := newFlags("reload", stdout, stderr)
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
	fs := newFlags("role", stdout, stderr)
	socket := controlFlags(fs)
	stream := fs.String("stream", "", "the stream's `NAME` (required)")
	role := fs.String("role", "", "`forward|standby` (required)")
	from := fs.Int("from", -1, "with --role forward: start at this input sequence number (`SEQ`), replaying what standby kept")
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *stream == "" || (*role != media.RoleForward && *role != media.RoleStandby) {
		return fs.usageError("--stream NAME and --role forward|standby are required")
	}
	req := control.Request{Op: control.OpRole, Stream: *stream, Role: *role}
	if *from >= 0 {
		if *from > 65535 || *role != media.RoleForward {
			return fs.usageError("--from is a sequence number (0-65535) and goes with --role forward")
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
