package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"appliance/config"
	"appliance/internal/testutil"
	"appliance/media"
	"appliance/status"
)

// The operator's first commands: every --help prints the usage and does
// nothing else, exit codes are the README's, addresses are written one way,
// hints name the flag that set what failed, and gen and probe fail when
// nothing went through.

// runCLIWithin runs an appliance command that must finish within d, with
// env added to the test's environment.
func runCLIWithin(t *testing.T, d time.Duration, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%v did not finish within %v: it went on to do something\nstdout: %s\nstderr: %s", args, d, out.String(), errb.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String(), errb.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String(), errb.String()
	}
	t.Fatalf("%v: %v", args, err)
	return 0, "", ""
}

// safeFlags are flags given before --help, so that a command that went on
// to run anyway would not touch the demo's ports or any unit.
func safeFlags(t *testing.T, name string) []string {
	t.Helper()
	switch name {
	case "run":
		dir := t.TempDir()
		ports := freeUDPPorts(t, 2)
		cfg := withPrivateState(streamsConfig(1, ports[:1], ports[1:], nil, ""), dir)
		path := filepath.Join(dir, "unit.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"--config", path, "--listen", freeTCPAddr(t)}
	case "status":
		return []string{"--addr", freeTCPAddr(t)}
	case "reload", "handover", "drill", "role":
		return []string{"--socket", filepath.Join(t.TempDir(), "none.sock")}
	}
	return nil
}

// noTools keeps a command that went on past --help from finding any
// program: the lab, for one, stops at once without ip.
var noTools = []string{"PATH=/nonexistent"}

// TestHelpEveryCommand: `COMMAND --help` and `-h` print the command's usage
// (its synopsis and every flag) to stdout, exit 0, and do nothing else: no
// log line, no port, and they return at once. `appliance help COMMAND`
// prints the same.
func TestHelpEveryCommand(t *testing.T) {
	skipShort(t)
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			var first string
			for _, h := range []string{"--help", "-h"} {
				args := append(append([]string{c.name}, safeFlags(t, c.name)...), h)
				code, out, errs := runCLIWithin(t, 10*time.Second, noTools, args...)
				if code != 0 || errs != "" {
					t.Fatalf("%v: exit %d, stderr %q; want 0 and nothing on stderr", args, code, errs)
				}
				want := strings.TrimSpace("Usage: appliance " + c.name + " " + c.synopsis)
				if !strings.HasPrefix(out, want+"\n") {
					t.Fatalf("%v printed:\n%s\nwant it to start with %q", args, out, want)
				}
				for _, l := range strings.Split(out, "\n") {
					if strings.HasPrefix(l, "  -") && !strings.HasPrefix(l, "  --") {
						t.Errorf("%v: flag written with one dash: %q", args, l)
					}
				}
				if first == "" {
					first = out
				}
			}
			code, out, errs := runCLIWithin(t, 10*time.Second, noTools, "help", c.name)
			if code != 0 || out != first || errs != "" {
				t.Errorf("help %s: exit %d, stderr %q, printed:\n%s\nwant exit 0 and what --help printed:\n%s", c.name, code, errs, out, first)
			}
		})
	}
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		code, out, errs := runCLIWithin(t, 10*time.Second, nil, args...)
		if code != 0 || errs != "" {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errs)
		}
		for _, c := range commands() {
			if listed := strings.Contains(out, "  appliance "+c.name); listed == c.hidden {
				t.Errorf("%v: %s listed: %v, hidden: %v", args, c.name, listed, c.hidden)
			}
		}
	}
}

// TestExitCodes: every command exits 2 on a flag it does not have and on a
// missing argument, saying what was wrong and how the command is written,
// and 1 on a failure at run time, saying what to check.
func TestExitCodes(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.yaml")
	sock := filepath.Join(dir, "none.sock")
	// A unit's config whose control socket nothing listens on.
	unitCfg := filepath.Join(dir, "unit.yaml")
	if err := os.WriteFile(unitCfg, []byte(withPrivateState("version: 1\nunit: {name: e2e}\n", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	noUnit := "is the unit running"
	type run struct {
		args []string
		env  []string
		code int
		want []string // in stderr
	}
	cases := map[string][]run{
		"run": {
			{args: []string{"--config"}, code: 2, want: []string{"flag needs an argument", "usage: appliance run"}},
			{args: []string{"--config", missing, "--listen", freeTCPAddr(t)}, code: 1, want: []string{missing}},
		},
		"check": {
			{args: nil, code: 2, want: []string{"--config FILE is required", "usage: appliance check --config FILE"}},
			{args: []string{"--config", missing}, code: 1, want: []string{missing}},
		},
		"reload": {
			{args: []string{"--socket"}, code: 2, want: []string{"flag needs an argument"}},
			{args: []string{"--socket", sock}, code: 1, want: []string{noUnit, "the path came from --socket"}},
		},
		"role": {
			{args: []string{"--role", "forward"}, code: 2, want: []string{"--stream NAME and --role forward|standby are required"}},
			{args: []string{"--stream", "s0", "--role", "forward", "--config", unitCfg}, code: 1, want: []string{noUnit, "the path came from control.socket in " + unitCfg}},
		},
		"handover": {
			{args: nil, code: 2, want: []string{"name the stream", "usage: appliance handover"}},
			{args: []string{"--socket", sock, "s0"}, code: 1, want: []string{noUnit}},
		},
		"drill": {
			{args: nil, code: 2, want: []string{"--scenario overheat|power-loss|planned is required"}},
			{args: []string{"--scenario", "planned", "--socket", sock}, code: 1, want: []string{noUnit}},
		},
		"restart": {
			{args: nil, code: 2, want: []string{"name the stream", "usage: appliance restart"}},
			{args: []string{"--socket", sock, "s0"}, code: 1, want: []string{noUnit}},
		},
		"update": {
			{args: nil, code: 2, want: []string{"name the bundle", "usage: appliance update"}},
			{args: []string{"--socket", sock, "/var/tmp/appliance-2.0.bundle"}, code: 1, want: []string{noUnit}},
		},
		"trial": {
			{args: []string{"extra"}, code: 2, want: []string{`unexpected argument "extra"`}},
		},
		"token": {
			{args: nil, code: 2, want: []string{"say what to do: appliance token hash", "usage: appliance token hash"}},
			{args: []string{"hash"}, code: 1, want: []string{"no token on standard input"}},
		},
		"witness": {
			{args: []string{"--key-file", missing}, code: 2, want: []string{"--listen is required", "127.0.0.1:7400"}},
			{args: []string{"--listen", freeTCPAddr(t), "--key-file", missing, "--state", filepath.Join(dir, "w.json")}, code: 1, want: []string{missing}},
		},
		"lab": {
			{args: []string{"--scenario"}, code: 2, want: []string{"flag needs an argument", "usage: appliance lab"}},
			// Without ip, or without root, the lab stops before it makes anything.
			{args: []string{"--scenario", "lone-restart"}, env: noTools, code: 1, want: []string{"appliance lab: the lab needs"}},
		},
		"status": {
			{args: []string{"--addr"}, code: 2, want: []string{"flag needs an argument"}},
			{args: []string{"--addr", freeTCPAddr(t)}, code: 1, want: []string{"no answer from", "connection refused", "is the unit running"}},
		},
		"gen": {
			{args: nil, code: 2, want: []string{"--to is required", "127.0.0.1:5004"}},
			// A link-local address without its interface cannot be sent to;
			// nothing leaves the machine.
			{args: []string{"--to", "[fe80::1]:5004", "--duration", "100ms"}, code: 1, want: []string{"cannot send", "[fe80::1%eth0]:5004"}},
		},
		"probe": {
			{args: nil, code: 2, want: []string{"--listen is required", "127.0.0.1:6004"}},
			{args: []string{"--listen", fmt.Sprintf("127.0.0.1:%d", freeUDPPorts(t, 1)[0]), "--duration", "200ms"}, code: 1, want: []string{"received nothing", "appliance gen --to"}},
		},
		"version": {
			{args: []string{"extra"}, code: 2, want: []string{`unexpected argument "extra"`, "usage: appliance version"}},
		},
		"help": {
			{args: []string{"no-such-command"}, code: 2, want: []string{`unknown command "no-such-command"`}},
		},
		"worker": {
			{args: nil, code: 1, want: []string{"started by `appliance run`, not by hand"}},
		},
		"pair-beacon": {
			{args: []string{"extra"}, code: 2, want: []string{`unexpected argument "extra"`}},
		},
	}
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			runs, ok := cases[c.name]
			if !ok {
				t.Fatalf("no exit-code cases for %s: add them here", c.name)
			}
			runs = append(runs, run{args: []string{"--no-such-flag"}, code: 2,
				want: []string{"flag provided but not defined: -no-such-flag", "usage: appliance " + c.name}})
			for _, r := range runs {
				args := append([]string{c.name}, r.args...)
				code, out, errs := runCLIWithin(t, 20*time.Second, r.env, args...)
				if code != r.code {
					t.Errorf("%v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, r.code, out, errs)
					continue
				}
				for _, w := range r.want {
					if !strings.Contains(errs, w) {
						t.Errorf("%v: stderr lacks %q:\n%s", args, w, errs)
					}
				}
			}
		})
	}
	code, _, errs := runCLIWithin(t, 10*time.Second, nil, "no-such-command")
	if code != 2 || !strings.Contains(errs, `unknown command "no-such-command"`) {
		t.Errorf("an unknown command: exit %d: %s", code, errs)
	}
}

// TestParseAddr: one form for every address flag, and errors that show it.
func TestParseAddr(t *testing.T) {
	t.Parallel()
	cases := []struct {
		f    addrFlag
		in   string
		want string // the address as parsed, or "" for an error
		err  string // in the error
	}{
		{runListen, "127.0.0.1:8081", "127.0.0.1:8081", ""},
		{runListen, "0.0.0.0:8081", "0.0.0.0:8081", ""},
		{runListen, "[::1]:8081", "[::1]:8081", ""},
		{runListen, "localhost:8081", "", `--listen takes an IP address, not a name; write it as IP:PORT, e.g. 127.0.0.1:8081 (0.0.0.0:8081 for every address)`},
		{runListen, ":8081", "", "no IP before the port"},
		{runListen, "127.0.0.1", "", "no port"},
		{runListen, "127.0.0.1:http", "", "the port is a number from 1 to 65535"},
		{runListen, "127.0.0.1:0", "", "the port is a number"},
		{runListen, "127.0.0.1:65536", "", "the port is a number"},
		{runListen, "udp://127.0.0.1:8081", "", "udp:// does not go here"},
		{runListen, "", "", "--listen is required"},
		{probeListen, "udp://127.0.0.1:6005", "127.0.0.1:6005", ""},
		{probeListen, "::1:6005", "", "brackets"},
		{probeListen, "[::1]", "", "no port"},
		{probeListen, "localhost:6005", "", "e.g. 127.0.0.1:6005"},
		{witnessListen, "192.0.2.1:7401", "192.0.2.1:7401", ""},
		{genTo, "127.0.0.1:5005", "127.0.0.1:5005", ""},
		{genTo, "localhost:5005", "localhost:5005", ""},
		{genTo, "unit-a.example.net:5005", "unit-a.example.net:5005", ""},
		{genTo, "udp://localhost:5005", "localhost:5005", ""},
		{genTo, "http://localhost:5005", "", "http:// does not go here"},
		{genTo, "bad_name:5005", "", "neither an IP address nor a host name"},
		{genTo, "-x:5005", "", "neither an IP address nor a host name"},
		{statusAddr, "127.0.0.1:8080", "127.0.0.1:8080", ""},
		{statusAddr, "http://127.0.0.1:8080", "127.0.0.1:8080", ""},
		{statusAddr, "https://unit-a:8443/", "unit-a:8443", ""},
		{statusAddr, "http://127.0.0.1:8080/api/v1/status", "", "not IP:PORT or HOST:PORT"},
		{statusAddr, "127.0.0.1", "", "no port; write it as IP:PORT or HOST:PORT, e.g. 127.0.0.1:8080 or unit-a.example.net:8080"},
	}
	for _, tc := range cases {
		h, err := parseAddr(tc.f, tc.in)
		switch {
		case tc.want != "" && (err != nil || h.String() != tc.want):
			t.Errorf("--%s %q: %v, %v; want %s", tc.f.name, tc.in, h, err, tc.want)
		case tc.want == "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("--%s %q: %v, %v; want an error with %q", tc.f.name, tc.in, h, err, tc.err)
		}
	}
}

// FuzzParseAddr: any value is refused with a message or read as an
// address whose written form reads back the same.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"127.0.0.1:5004", "[::1]:8080", "localhost:1", "udp://10.0.0.1:99", "https://a.b:8443/", ":0", "[fe80::1%eth0]:5004", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, fl := range []addrFlag{runListen, probeListen, genTo, statusAddr} {
			h, err := parseAddr(fl, s)
			if err != nil {
				if err.Error() == "" {
					t.Fatalf("--%s %q: empty error", fl.name, s)
				}
				continue
			}
			if h.port == 0 || (!h.ip.IsValid() && (!fl.host || h.host == "")) {
				t.Fatalf("--%s %q: accepted as %+v", fl.name, s, h)
			}
			again, err := parseAddr(fl, h.String())
			if err != nil || again.String() != h.String() {
				t.Fatalf("--%s %q: read as %s, which reads back as %s, %v", fl.name, s, h, again, err)
			}
		}
	})
}

// TestAddressesOneWay: the commands take IP:PORT, and where a name makes
// sense HOST:PORT: status asks a unit at IP:PORT, HOST:PORT or a pasted
// URL; gen sends to localhost as to 127.0.0.1; the flags that listen refuse
// a name with the IP form of the same port.
func TestAddressesOneWay(t *testing.T) {
	skipShort(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/status" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(status.Report{Unit: status.Unit{Name: "addr-test", State: "running"}})
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	for _, addr := range []string{
		fmt.Sprintf("127.0.0.1:%d", port),
		fmt.Sprintf("localhost:%d", port),
		fmt.Sprintf("http://127.0.0.1:%d/", port),
	} {
		code, out, errs := runCLIWithin(t, 10*time.Second, nil, "status", "--addr", addr)
		if code != 0 || !strings.Contains(out, "unit addr-test") {
			t.Errorf("status --addr %s: exit %d\nstdout: %s\nstderr: %s", addr, code, out, errs)
		}
	}

	rxPort := freeUDPPorts(t, 1)[0]
	r := newRx(t, rxPort)
	for _, to := range []string{fmt.Sprintf("localhost:%d", rxPort), fmt.Sprintf("udp://127.0.0.1:%d", rxPort)} {
		before, _ := r.got()
		code, out, errs := runCLIWithin(t, 10*time.Second, nil, "gen", "--to", to, "--pps", "100", "--duration", "100ms", "--json")
		var res media.GenResult
		if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Sent == 0 {
			t.Fatalf("gen --to %s: exit %d\nstdout: %s\nstderr: %s", to, code, out, errs)
		}
		testutil.Eventually(t, 5*time.Second, fmt.Sprintf("the %d packets gen sent to %s on 127.0.0.1:%d", res.Sent, to, rxPort), func() bool {
			n, _ := r.got()
			return n >= before+int(res.Sent)
		})
	}

	free := freeUDPPorts(t, 1)[0]
	for _, args := range [][]string{
		{"probe", "--listen", fmt.Sprintf("localhost:%d", free)},
		{"run", "--listen", fmt.Sprintf("localhost:%d", free)},
		{"witness", "--listen", fmt.Sprintf("localhost:%d", free), "--key-file", "k"},
	} {
		code, _, errs := runCLIWithin(t, 10*time.Second, nil, args...)
		if want := fmt.Sprintf("127.0.0.1:%d", free); code != 2 || !strings.Contains(errs, "takes an IP address") || !strings.Contains(errs, want) {
			t.Errorf("%v: exit %d, want 2 and a message showing %s:\n%s", args, code, want, errs)
		}
	}
}

// TestListenHint: a status address that cannot be bound is reported with
// where it came from: --listen when the flag set it, status.listen and the
// file when the config did.
func TestListenHint(t *testing.T) {
	skipShort(t)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	busy := held.Addr().String()
	dir := t.TempDir()
	ports := freeUDPPorts(t, 2)
	cfg := withPrivateState(streamsConfig(1, ports[:1], ports[1:], nil, fmt.Sprintf("status: {listen: %q}\n", busy)), dir)
	noDemoPorts(t, cfg, "")
	path := filepath.Join(dir, "unit.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	code, _, errs := runCLIWithin(t, 20*time.Second, nil, "run", "--config", path, "--listen", busy)
	if code != 1 || !strings.Contains(errs, "--listen "+busy+": address already in use") || !strings.Contains(errs, "give --listen a free address") || strings.Contains(errs, "status.listen") {
		t.Errorf("run --listen %s (busy): exit %d; want 1 and a hint naming --listen, not status.listen:\n%s", busy, code, errs)
	}
	code, _, errs = runCLIWithin(t, 20*time.Second, nil, "run", "--config", path)
	if code != 1 || !strings.Contains(errs, "status.listen "+busy+" in "+path) {
		t.Errorf("run with status.listen %s (busy): exit %d; want 1 and a hint naming status.listen:\n%s", busy, code, errs)
	}
}

// TestListenHintWords: each source of the status address gets its own
// advice; the demo's can only be moved with --listen.
func TestListenHintWords(t *testing.T) {
	t.Parallel()
	le := &status.ListenError{Addr: "127.0.0.1:8080", Err: &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}}
	for _, tc := range []struct {
		path, listen string
		want, not    string
	}{
		{"", "127.0.0.1:8080", "--listen 127.0.0.1:8080: address already in use (another unit? `appliance status --addr 127.0.0.1:8080` asks it); give --listen a free address, e.g. --listen 127.0.0.1:8081", "status.listen"},
		{"", "", "the demo's status address 127.0.0.1:8080: address already in use", "set status.listen"},
		{"", "", "appliance run --listen 127.0.0.1:8081", "set status.listen"},
		{"/etc/appliance.yaml", "", "status.listen 127.0.0.1:8080 in /etc/appliance.yaml: address already in use", "give --listen"},
	} {
		err := listenHint(fmt.Errorf("wrapped: %w", le), tc.path, tc.listen)
		if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), tc.not) {
			t.Errorf("config %q, --listen %q: %v; want %q and not %q", tc.path, tc.listen, err, tc.want, tc.not)
		}
	}
	other := errors.New("control: another unit")
	if err := listenHint(other, "", "x"); err != other {
		t.Errorf("another error was changed: %v", err)
	}
}

// TestGenEverySendFailed: a run that sent nothing because every send failed
// is a failure that says what to check; one with some sends through is not.
func TestGenEverySendFailed(t *testing.T) {
	t.Parallel()
	to := netip.MustParseAddrPort("192.0.2.10:5004")
	err := genOutcome(media.GenResult{Errors: 20, LastError: "write: network is unreachable"}, to)
	if err == nil || !strings.Contains(err.Error(), "every one of 20 sends to 192.0.2.10:5004 failed (the last: write: network is unreachable)") ||
		!strings.Contains(err.Error(), "ip route get 192.0.2.10") {
		t.Errorf("every send failed: %v", err)
	}
	if err := genOutcome(media.GenResult{Sent: 1, Errors: 19}, to); err != nil {
		t.Errorf("one send through: %v", err)
	}
	if err := genOutcome(media.GenResult{}, to); err != nil {
		t.Errorf("interrupted before the first send: %v", err)
	}
}

// TestProbeNothingStillReports: a probe that received nothing prints its
// (empty) measurement for scripts, then fails.
func TestProbeNothingStillReports(t *testing.T) {
	skipShort(t)
	port := freeUDPPorts(t, 1)[0]
	code, out, errs := runCLIWithin(t, 10*time.Second, nil, "probe", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--duration", "200ms", "--json")
	var res media.ProbeResult
	if code != 1 || json.Unmarshal([]byte(out), &res) != nil || res.Received != 0 {
		t.Fatalf("exit %d, stdout %q; want 1 and the JSON result", code, out)
	}
	if want := fmt.Sprintf("received nothing on 127.0.0.1:%d in 200ms", port); !strings.Contains(errs, want) {
		t.Errorf("stderr lacks %q:\n%s", want, errs)
	}
}

// TestProbeBusyPort names --listen when another process holds the port.
func TestProbeBusyPort(t *testing.T) {
	skipShort(t)
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	code, _, errs := runCLIWithin(t, 10*time.Second, nil, "probe", "--listen", c.LocalAddr().String(), "--duration", "1s")
	if code != 1 || !strings.Contains(errs, "--listen "+c.LocalAddr().String()+": another process receives on it") {
		t.Errorf("exit %d: %s", code, errs)
	}
}

// TestReadmeCommands: the README's command table shows every command as its
// usage does.
func TestReadmeCommands(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, c := range commands() {
		// Markdown tables escape the | of alternatives.
		row := "| `" + strings.ReplaceAll(strings.TrimSpace("appliance "+c.name+" "+c.synopsis), "|", `\|`) + "` |"
		if listed := strings.Contains(readme, row); listed == c.hidden {
			t.Errorf("README: row %s listed %v; the command is hidden: %v", row, listed, c.hidden)
		}
	}
}

// TestNoConfigIsTheDemo: run without --config runs the embedded demo (which
// TestDefaultConfig runs, on free ports).
func TestNoConfigIsTheDemo(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig("", io.Discard)
	if err != nil || !reflect.DeepEqual(cfg, config.Default()) {
		t.Fatalf("loadConfig without a path: %v; want the embedded demo", err)
	}
}

// TestDemoPortsGuard: the guard every unit a test starts goes through
// catches each of the demo's addresses.
func TestDemoPortsGuard(t *testing.T) {
	t.Parallel()
	got := demoPortsIn(string(config.DefaultYAML()), "")
	want := []string{"127.0.0.1:8080", "127.0.0.1:5004", "127.0.0.1:6004", "127.0.0.1:5004"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the demo config: %v, want %v", got, want)
	}
	if got := demoPortsIn("version: 1\nunit: {name: x}\n", ""); len(got) != 1 {
		t.Errorf("a config without a status section (the default status.listen): %v, want it", got)
	}
	if got := demoPortsIn("version: 1\nunit: {name: x}\n", "127.0.0.1:18080"); len(got) != 0 {
		t.Errorf("the same with --listen elsewhere: %v, want none", got)
	}
	if got := demoPortsIn("version: 1\nunit: {name: x}\nstatus: {listen: \"0.0.0.0:8080\"}\nstreams:\n  - {name: a, input: \"udp://0.0.0.0:15004\", outputs: [\"udp://[::1]:6004\"]}\n", ""); len(got) != 2 {
		t.Errorf("the wildcard and IPv6 loopback: %v, want both", got)
	}
	if got := demoPortsIn("version: 1\nunit: {name: x}\nstatus: {listen: \"127.0.0.1:18080\"}\nstreams:\n  - {name: a, input: \"udp://127.0.0.1:15004\", outputs: [\"udp://192.0.2.1:6004\"]}\n", ""); len(got) != 0 {
		t.Errorf("other ports, and another machine's 6004: %v, want none", got)
	}
}
