package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"appliance/internal/testutil"
)

// The rigs here boot the real unit file and binary: under systemd in a
// container (systemd-nspawn) and under a real, emulated hardware watchdog
// (QEMU). They need root; .ci/run installs mmdebstrap, systemd-container and
// QEMU. Root file systems are built once and cached (see rigCache).

// needRig skips a rig test with -short, without root, or without its
// tools (mmdebstrap builds every rig's root file system).
func needRig(t *testing.T, tools ...testutil.Tool) {
	t.Helper()
	if testing.Short() {
		t.Skip("rig test: skipped with -short")
	}
	testutil.NeedRoot(t, "boots systemd in a container and a VM")
	testutil.NeedTools(t, append(tools, testutil.Tool{Name: "mmdebstrap", Package: "mmdebstrap"})...)
}

func TestMain(m *testing.M) {
	code := testutil.Main(m)
	// What the run built: the binary (about 12 MB) and the image (about
	// 660 MB), otherwise left in /tmp.
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

// repoRoot is the repository's top directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// applianceBinary builds the appliance once per test run, static, as
// `make build` does.
func applianceBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := testutil.BuildDir("appliance-rig-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "appliance")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version=rig", "-o", binPath, "./cmd/appliance")
		cmd.Dir = repoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// rigCache is where built root file systems are kept between runs:
// $APPLIANCE_RIG_CACHE, or /var/cache/appliance-rigs.
func rigCache(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("APPLIANCE_RIG_CACHE")
	if dir == "" {
		dir = "/var/cache/appliance-rigs"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// rootfsTarball returns a cached tarball of a Debian bookworm root file
// system with the given packages, building it with mmdebstrap on first use.
// A lock keeps concurrent test processes from building the same one twice.
func rootfsTarball(t *testing.T, include []string, extra ...string) string {
	t.Helper()
	key := sha256.Sum256([]byte(strings.Join(include, ",") + "|" + strings.Join(extra, " ")))
	cache := rigCache(t)
	tarball := filepath.Join(cache, "bookworm-"+hex.EncodeToString(key[:6])+".tar")
	lock, err := os.OpenFile(tarball+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tarball); err == nil {
		return tarball
	}
	start := time.Now()
	args := append([]string{"--variant=minbase", "--format=tar", "--include=" + strings.Join(include, ",")}, extra...)
	args = append(args, "bookworm", tarball+".tmp")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		os.Remove(tarball + ".tmp")
		t.Fatalf("mmdebstrap: %v\n%s", err, tail(out.String(), 4000))
	}
	if err := os.Rename(tarball+".tmp", tarball); err != nil {
		t.Fatal(err)
	}
	t.Logf("built root file system %s in %v (cached for later runs)", filepath.Base(tarball), time.Since(start).Round(time.Second))
	return tarball
}

// extract unpacks a tarball into a fresh directory.
func extract(t *testing.T, tarball, dir string) {
	t.Helper()
	if out, err := exec.Command("tar", "-xf", tarball, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
}

// installAppliance puts the binary, unit file, sysusers entry, udev rule and
// config into a root file system, enabled, as the image build does.
func installAppliance(t *testing.T, root, config string, dropIn string) {
	t.Helper()
	repo := repoRoot(t)
	files := []struct {
		src, dst string
		mode     os.FileMode
	}{
		{applianceBinary(t), "usr/bin/appliance", 0o755},
		{filepath.Join(repo, "image/appliance.service"), "etc/systemd/system/appliance.service", 0o644},
		{filepath.Join(repo, "image/appliance.sysusers"), "usr/lib/sysusers.d/appliance.conf", 0o644},
		{filepath.Join(repo, "image/60-appliance-watchdog.rules"), "usr/lib/udev/rules.d/60-appliance-watchdog.rules", 0o644},
	}
	for _, f := range files {
		data, err := os.ReadFile(f.src)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(root, f.dst), data, f.mode)
	}
	writeFile(t, filepath.Join(root, "etc/appliance/appliance.yaml"), []byte(config), 0o644)
	if dropIn != "" {
		writeFile(t, filepath.Join(root, "etc/systemd/system/appliance.service.d/rig.conf"), []byte(dropIn), 0o644)
	}
	wants := filepath.Join(root, "etc/systemd/system/multi-user.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/systemd/system/appliance.service", filepath.Join(wants, "appliance.service")); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// children returns the PIDs of the children of pid, from /proc.
func children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

func init() {
	// Rig tests shell out a lot; give them both cores' worth of threads.
	runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), 2))
}
