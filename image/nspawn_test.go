package image

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"appliance/internal/testutil"
)

// The unit file under real systemd: a Debian root file system booted with
// systemd-nspawn, the repository's unit file and binary installed as the
// image installs them.

var containerPackages = []string{"systemd", "systemd-sysv", "dbus", "iproute2"}

const containerConfig = `version: 1
unit: {name: nspawn, state_dir: /var/lib/appliance}
status: {listen: "127.0.0.1:8080"}
media: {workers: 2}
streams:
  - {name: s0, input: "udp://127.0.0.1:5004", outputs: ["udp://127.0.0.1:6004"], rewrite: {ssrc: 0x10}}
  - {name: s1, input: "udp://127.0.0.1:5006", outputs: ["udp://127.0.0.1:6006"]}
test_sources:
  - {to: "udp://127.0.0.1:5004", pps: 100}
  - {to: "udp://127.0.0.1:5006", pps: 100}
watchdog: {device: ""}
`

// container is one booted systemd-nspawn container.
type container struct {
	t       *testing.T
	dir     string
	cmd     *exec.Cmd
	console *testutil.SyncBuffer
	exited  chan error
	leader  int // host PID of the container's systemd
}

func bootContainer(t *testing.T, name string) *container {
	t.Helper()
	needRig(t, testutil.Tool{Name: "systemd-nspawn", Package: "systemd-container"})
	tarball := rootfsTarball(t, containerPackages)
	dir := t.TempDir()
	extract(t, tarball, dir)
	installAppliance(t, dir, containerConfig, "")
	// A persistent journal, so that it can be read after the container is gone.
	if err := os.MkdirAll(filepath.Join(dir, "var/log/journal"), 0o755); err != nil {
		t.Fatal(err)
	}

	c := &container{t: t, dir: dir, console: &testutil.SyncBuffer{}, exited: make(chan error, 1)}
	c.cmd = exec.Command("systemd-nspawn", "-q", "-D", dir, "-M", name, "--register=no", "--keep-unit",
		"--private-network", "-b", "--console=read-only")
	c.cmd.Stdout, c.cmd.Stderr = c.console, c.console
	start := time.Now()
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.exited <- c.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			_ = c.cmd.Process.Signal(syscall.SIGTERM) // nspawn: power the container off
			select {
			case <-c.exited:
			case <-time.After(20 * time.Second):
				_ = c.cmd.Process.Kill()
				<-c.exited
			}
		}
		if t.Failed() {
			t.Logf("container console:\n%s", tail(c.console.String(), 6000))
		}
	})
	testutil.Eventually(t, 30*time.Second, "the container's systemd", func() bool {
		c.leader = findInit(c.cmd.Process.Pid)
		return c.leader != 0
	})
	// "starting" counts: the boot finishes only once the appliance is ready,
	// which is what the tests look at next.
	testutil.Eventually(t, 60*time.Second, "the container's systemd to answer", func() bool {
		out, _ := c.exec("systemctl", "is-system-running")
		s := strings.TrimSpace(out)
		return s == "starting" || s == "running" || s == "degraded"
	})
	t.Logf("container booted in %v", time.Since(start).Round(10*time.Millisecond))
	return c
}

// findInit returns the host PID of the descendant of pid that is PID 1 of
// its own PID namespace.
func findInit(pid int) int {
	queue := children(pid)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) > 2 && f[0] == "NSpid:" && f[len(f)-1] == "1" {
				return p
			}
		}
		queue = append(queue, children(p)...)
	}
	return 0
}

// exec runs a command inside the container.
func (c *container) exec(args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(c.leader), "-a", "--"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// prop reads a property of the appliance unit.
func (c *container) prop(name string) string {
	out, _ := c.exec("systemctl", "show", "-p", name, "--value", "appliance.service")
	return strings.TrimSpace(out)
}

// workers lists the PIDs (in the container) of appliance worker processes.
func (c *container) workers() []string {
	out, _ := c.exec("sh", "-c", `for p in /proc/[0-9]*; do if [ "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" = "/usr/bin/appliance worker " ]; then echo ${p#/proc/}; fi; done`)
	return strings.Fields(out)
}

func (c *container) journal() string {
	out, _ := c.exec("journalctl", "-u", "appliance.service", "--no-pager", "-o", "short-monotonic")
	return out
}

func TestSystemd(t *testing.T) {
	c := bootContainer(t, "appliance-rig")

	t.Run("ready", func(t *testing.T) {
		// Type=notify: active only once the appliance said READY=1.
		testutil.Eventually(t, 30*time.Second, "appliance.service active", func() bool { return c.prop("ActiveState") == "active" })
		if st := c.prop("StatusText"); st == "" {
			t.Error("no STATUS= text from the appliance")
		} else {
			t.Logf("systemctl status text: %q", st)
		}
		out, err := c.exec("/usr/bin/appliance", "status", "--json")
		if err != nil || !strings.Contains(out, `"state": "running"`) {
			t.Fatalf("status API in the container: %v\n%s", err, out)
		}
		if user, _ := c.exec("sh", "-c", "stat -c %U /proc/$(systemctl show -p MainPID --value appliance)"); strings.TrimSpace(user) != "appliance" {
			t.Errorf("runs as %q, want the appliance user", strings.TrimSpace(user))
		}
		if n := len(c.workers()); n != 2 {
			t.Errorf("%d worker processes, want 2", n)
		}
	})

	t.Run("reload", func(t *testing.T) {
		pid := c.prop("MainPID")
		cfgPath := filepath.Join(c.dir, "etc/appliance/appliance.yaml")
		added := strings.Replace(containerConfig, "test_sources:", `  - {name: s2, input: "udp://127.0.0.1:5008", outputs: ["udp://127.0.0.1:6008"]}
test_sources:`, 1)
		if err := os.WriteFile(cfgPath, []byte(added), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := c.exec("systemctl", "reload", "appliance.service"); err != nil {
			t.Fatalf("systemctl reload: %v %s", err, out)
		}
		if c.prop("MainPID") != pid || c.prop("ActiveState") != "active" {
			t.Errorf("reload changed the process or its state: pid %s, %s", c.prop("MainPID"), c.prop("ActiveState"))
		}
		testutil.Eventually(t, 10*time.Second, "the reload in the journal", func() bool {
			return strings.Contains(c.journal(), "reload applied") && strings.Contains(c.journal(), "added=[s2]")
		})
		if out, _ := c.exec("appliance", "status"); !strings.Contains(out, "s2 ") {
			t.Errorf("s2 is not running after the reload:\n%s", out)
		}

		// A broken file: the reload fails, says why, and changes nothing.
		if err := os.WriteFile(cfgPath, []byte(added+"colour: red\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := c.exec("systemctl", "reload", "appliance.service"); err == nil {
			t.Errorf("systemctl reload of a broken file succeeded: %s", out)
		}
		testutil.Eventually(t, 10*time.Second, "the refused reload in the journal", func() bool {
			return strings.Contains(c.journal(), `unknown key \"colour\"`) || strings.Contains(c.journal(), `unknown key "colour"`)
		})
		if c.prop("MainPID") != pid || c.prop("ActiveState") != "active" {
			t.Errorf("a broken reload changed the process or its state: pid %s, %s", c.prop("MainPID"), c.prop("ActiveState"))
		}
		if err := os.WriteFile(cfgPath, []byte(containerConfig), 0o644); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("hang", func(t *testing.T) {
		pid := c.prop("MainPID")
		restarts := c.prop("NRestarts")
		stoppedAt := time.Now()
		if out, err := c.exec("sh", "-c", "kill -STOP "+pid); err != nil {
			t.Fatalf("kill -STOP: %v %s", err, out)
		}
		// WatchdogSec=5s, RestartSec=1s: systemd should have a new
		// appliance up within about 6 s of the last ping.
		testutil.Eventually(t, 30*time.Second, "systemd to replace the stopped appliance", func() bool {
			p := c.prop("MainPID")
			return p != pid && p != "0" && c.prop("ActiveState") == "active"
		})
		took := time.Since(stoppedAt)
		t.Logf("SIGSTOP to a new, ready appliance: %v (WatchdogSec=5s + RestartSec=1s)", took.Round(10*time.Millisecond))
		if took > 5*time.Second+1*time.Second+5*time.Second {
			t.Errorf("took %v, far beyond WatchdogSec plus RestartSec", took)
		}
		if r := c.prop("NRestarts"); r == restarts {
			t.Errorf("NRestarts still %s", r)
		}
		if j := c.journal(); !strings.Contains(j, "Watchdog timeout") {
			t.Errorf("journal does not show a watchdog timeout:\n%s", tail(j, 3000))
		}
	})

	t.Run("stop", func(t *testing.T) {
		testutil.Eventually(t, 10*time.Second, "two workers", func() bool { return len(c.workers()) == 2 })
		if out, err := c.exec("systemctl", "stop", "appliance.service"); err != nil {
			t.Fatalf("systemctl stop: %v %s", err, out)
		}
		if st := c.prop("ActiveState"); st != "inactive" {
			t.Errorf("state %s after stop", st)
		}
		if w := c.workers(); len(w) != 0 {
			t.Errorf("workers still running after systemctl stop: %v", w)
		}
	})
}

// TestStartLimit: an appliance that cannot start (here, a broken config)
// is restarted until the start limit is hit, and then the start limit
// action reboots the unit: systemd-nspawn exits with 133 for a reboot.
func TestStartLimit(t *testing.T) {
	c := bootContainer(t, "appliance-limit")
	testutil.Eventually(t, 30*time.Second, "appliance.service active", func() bool { return c.prop("ActiveState") == "active" })
	writeFile(t, filepath.Join(c.dir, "etc/appliance/appliance.yaml"), []byte("version: 1\nunit: {name: x}\nmedia: {workers: zero}\n"), 0o644)
	start := time.Now()
	if out, err := c.exec("systemctl", "restart", "--no-block", "appliance.service"); err != nil {
		t.Fatalf("restart: %v %s", err, out)
	}
	select {
	case err := <-c.exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 133 {
			t.Fatalf("nspawn exited with %v, want 133 (the container rebooted)", err)
		}
		c.exited <- err
	case <-time.After(60 * time.Second):
		t.Fatal("the start limit action did not fire within 60 s")
	}
	t.Logf("crash loop to reboot: %v", time.Since(start).Round(10*time.Millisecond))
	out, err := exec.Command("journalctl", "-D", filepath.Join(c.dir, "var/log/journal"), "--no-pager",
		"-u", "appliance.service").CombinedOutput()
	if err != nil {
		t.Fatalf("reading the container's journal: %v\n%s", err, out)
	}
	journal := string(out)
	if !strings.Contains(journal, "Start request repeated too quickly") {
		t.Errorf("the journal does not show the start limit:\n%s", tail(journal, 3000))
	}
	if n := strings.Count(journal, "Failed with result 'exit-code'"); n < 5 {
		t.Errorf("%d failed starts before the limit, want 5 (StartLimitBurst)", n)
	}
	if !strings.Contains(journal, "problems") && !strings.Contains(journal, "whole number") {
		t.Errorf("the journal does not say why the appliance could not start:\n%s", tail(journal, 3000))
	}
}
