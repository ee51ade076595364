package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"appliance/config"
	"appliance/internal/testutil"
	"appliance/media"
	"appliance/status"
)

// bin is the appliance binary the end-to-end tests run, built once.
var bin string

func TestMain(m *testing.M) {
	if spec := os.Getenv(loadgenEnv); spec != "" {
		os.Exit(loadgen(spec))
	}
	dir, err := testutil.BuildDir("appliance-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "appliance")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the appliance for the end-to-end tests: %v\n%s", err, out)
		os.Exit(1)
	}
	code := testutil.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: runs real processes and traffic")
	}
}

// freeUDPPorts returns n loopback UDP ports that were free a moment ago.
func freeUDPPorts(t testing.TB, n int) []int {
	t.Helper()
	var conns []*net.UDPConn
	var ports []int
	for i := 0; i < n; i++ {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		ports = append(ports, c.LocalAddr().(*net.UDPAddr).Port)
	}
	for _, c := range conns {
		c.Close()
	}
	return ports
}

func freeTCPAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type unitProc struct {
	t      testing.TB
	cmd    *exec.Cmd
	api    string
	logs   *testutil.SyncBuffer
	waited chan error
	dir    string // the unit's temporary directory: state, control socket
	config string // its config file
	socket string // its control socket
}

// withPrivateState gives a test unit a state directory and control socket
// of its own in dir, unless the config names them.
func withPrivateState(cfg, dir string) string {
	if !strings.Contains(cfg, "state_dir") {
		cfg = strings.Replace(cfg, "unit: {name: e2e}", fmt.Sprintf("unit: {name: e2e, state_dir: %s}", filepath.Join(dir, "state")), 1)
	}
	if !strings.Contains(cfg, "\ncontrol:") {
		cfg += fmt.Sprintf("control: {socket: %s}\n", filepath.Join(dir, "control.sock"))
	}
	return cfg
}

// startUnit runs `appliance run` on cfg and waits until its API answers and
// every stream has a worker.
func startUnit(t testing.TB, cfg string) *unitProc {
	t.Helper()
	dir := t.TempDir()
	return startUnitIn(t, dir, withPrivateState(cfg, dir))
}

// demoPorts are the ports `make run` holds or sends to on loopback: the
// demo's status page, its stream's input (which its test source feeds) and
// its output. A test that used them would fail, or disturb the demo, while
// make run is up.
var demoPorts = []uint16{8080, 5004, 6004}

// demoPortsIn lists the addresses of a unit run on cfg (and --listen
// listen, if not "") that are demo ports on this machine. A config that
// does not parse is refused before anything binds.
func demoPortsIn(cfg, listen string) []string {
	c, err := config.Parse("test.yaml", []byte(cfg))
	if err != nil {
		return nil
	}
	if listen != "" {
		c.Status.Listen = listen
	}
	var addrs []netip.AddrPort
	if ap, err := netip.ParseAddrPort(c.Status.Listen); err == nil {
		addrs = append(addrs, ap)
	}
	for _, s := range c.Streams {
		addrs = append(addrs, s.Input.Addr)
		for _, o := range s.Outputs {
			addrs = append(addrs, o.Addr)
		}
	}
	for _, ts := range c.TestSources {
		addrs = append(addrs, ts.To.Addr)
	}
	if c.Pair != nil {
		addrs = append(addrs, c.Pair.Witness)
		for _, p := range c.Pair.Paths {
			addrs = append(addrs, p.Local, p.Remote)
		}
	}
	var bad []string
	for _, ap := range addrs {
		a := ap.Addr().Unmap()
		if ap.IsValid() && (a.IsLoopback() || a.IsUnspecified()) && slices.Contains(demoPorts, ap.Port()) {
			bad = append(bad, ap.String())
		}
	}
	return bad
}

// noDemoPorts fails a test whose unit would use the demo's ports: tests
// take free ones (freeUDPPorts, freeTCPAddr), so that make test passes
// while make run is up.
func noDemoPorts(t testing.TB, cfg, listen string) {
	t.Helper()
	if bad := demoPortsIn(cfg, listen); len(bad) > 0 {
		t.Fatalf("the test's config uses %v, the demo's ports (make run holds them): take free ports with freeUDPPorts and freeTCPAddr", bad)
	}
}

// startUnitIn is startUnit with the unit's directory (its config, and
// whatever the config puts there) chosen by the caller.
func startUnitIn(t testing.TB, dir, cfg string) *unitProc {
	t.Helper()
	return startUnitArgs(t, dir, cfg)
}

// startUnitArgs is startUnitIn with more arguments to `appliance run`.
func startUnitArgs(t testing.TB, dir, cfg string, args ...string) *unitProc {
	t.Helper()
	path := filepath.Join(dir, "unit.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	api := freeTCPAddr(t)
	noDemoPorts(t, cfg, api)
	u := &unitProc{t: t, api: "http://" + api, logs: &testutil.SyncBuffer{}, waited: make(chan error, 1),
		dir: dir, config: path, socket: filepath.Join(dir, "control.sock")}
	u.cmd = exec.Command(bin, append([]string{"run", "--config", path, "--listen", api}, args...)...)
	u.cmd.Stdout, u.cmd.Stderr = u.logs, u.logs
	u.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { u.waited <- u.cmd.Wait() }()
	t.Cleanup(func() {
		u.stop()
		if t.Failed() {
			t.Logf("appliance output:\n%s", u.logs.String())
		}
	})
	testutil.Eventually(t, 15*time.Second, "the unit's API and workers", func() bool {
		rep, err := u.report()
		if err != nil {
			return false
		}
		for _, s := range rep.Streams {
			if s.WorkerPID == 0 || s.State == "starting" {
				return false
			}
		}
		return true
	})
	return u
}

func (u *unitProc) report() (status.Report, error) {
	var rep status.Report
	resp, err := http.Get(u.api + "/api/v1/status")
	if err != nil {
		return rep, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return rep, fmt.Errorf("status %s", resp.Status)
	}
	return rep, json.NewDecoder(resp.Body).Decode(&rep)
}

func (u *unitProc) mustReport() status.Report {
	u.t.Helper()
	rep, err := u.report()
	if err != nil {
		u.t.Fatalf("status API: %v", err)
	}
	return rep
}

func (u *unitProc) stream(name string) media.StreamStatus {
	u.t.Helper()
	for _, s := range u.mustReport().Streams {
		if s.Name == name {
			return s
		}
	}
	u.t.Fatalf("no stream %q in the API", name)
	return media.StreamStatus{}
}

// stop sends SIGTERM and waits; the whole group is killed if it lingers.
func (u *unitProc) stop() {
	if u.cmd.Process == nil {
		return
	}
	_ = u.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-u.waited:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-u.cmd.Process.Pid, syscall.SIGKILL)
		<-u.waited
	}
	u.cmd.Process = nil
}

// runJSON runs an appliance subcommand that prints one JSON object.
type jsonProc struct {
	cmd   *exec.Cmd
	out   bytes.Buffer
	errb  *testutil.SyncBuffer
	done  chan error
	ready chan struct{}
}

func startJSON(t *testing.T, readyLine string, args ...string) *jsonProc {
	t.Helper()
	return startJSONArgs(t, readyLine, append([]string{bin}, args...))
}

// startJSONArgs runs argv (an appliance command, maybe behind a wrapper
// such as ip netns exec) that prints one JSON object.
func startJSONArgs(t *testing.T, readyLine string, argv []string) *jsonProc {
	t.Helper()
	args := argv[1:]
	p := &jsonProc{cmd: exec.Command(argv[0], args...), errb: &testutil.SyncBuffer{}, done: make(chan error, 1), ready: make(chan struct{})}
	p.cmd.Stdout = &p.out
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(p.errb, line)
			if readyLine != "" && strings.Contains(line, readyLine) {
				once.Do(func() { close(p.ready) })
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() { _ = p.cmd.Process.Kill() })
	if readyLine != "" {
		select {
		case <-p.ready:
		case <-time.After(10 * time.Second):
			t.Fatalf("%v did not say %q: %s", args, readyLine, p.errb.String())
		}
	}
	return p
}

func (p *jsonProc) wait(t *testing.T, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("%v: %v\n%s", p.cmd.Args, err, p.errb.String())
		}
	case <-ctx.Done():
		t.Fatalf("%v did not finish", p.cmd.Args)
	}
	if err := json.Unmarshal(p.out.Bytes(), v); err != nil {
		t.Fatalf("%v printed %q: %v", p.cmd.Args, p.out.String(), err)
	}
}

func startProbe(t *testing.T, port int, d time.Duration) *jsonProc {
	return startJSON(t, "listening", "probe", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--duration", d.String(), "--json")
}

func startGen(t *testing.T, port, pps int, d time.Duration, ssrc uint32) *jsonProc {
	return startJSON(t, "", "gen", "--to", fmt.Sprintf("127.0.0.1:%d", port), "--pps", fmt.Sprint(pps),
		"--duration", d.String(), "--ssrc", fmt.Sprint(ssrc), "--json")
}

func errorsAs(err error, target **exec.ExitError) bool {
	ee, ok := err.(*exec.ExitError)
	if ok {
		*target = ee
	}
	return ok
}

func mkfifo(path string) error { return syscall.Mkfifo(path, 0o600) }
