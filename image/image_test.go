package image

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"appliance/internal/testutil"
)

// The image itself: image/build.sh (what `make image` runs) builds the disk,
// and QEMU boots it the way a unit boots: UEFI firmware (OVMF), systemd-boot,
// slot A read-only, the data partition, the emulated i6300esb watchdog.

const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// imageTools are the programs image/build.sh and the boot need.
var imageTools = []testutil.Tool{
	{Name: "qemu-system-x86_64", Package: "qemu-system-x86"},
	{Name: "mkfs.ext4", Package: "e2fsprogs"},
	{Name: "debugfs", Package: "e2fsprogs"},
	{Name: "mkfs.vfat", Package: "dosfstools"},
	{Name: "mcopy", Package: "mtools"},
	{Name: "sfdisk", Package: "fdisk"},
}

// buildImage runs image/build.sh into a temporary directory and returns the
// image; with $APPLIANCE_IMAGE set (`make image-test`), it returns that
// image, built by `make image`, instead.
func buildImage(t *testing.T, version string) string {
	t.Helper()
	if img := os.Getenv("APPLIANCE_IMAGE"); img != "" {
		if _, err := os.Stat(img); err != nil {
			t.Fatalf("APPLIANCE_IMAGE: %v (run make image first)", err)
		}
		return img
	}
	for _, f := range []struct{ path, pkg string }{
		{ovmfCode, "ovmf"},
		{"/usr/lib/systemd/boot/efi/systemd-bootx64.efi", "systemd-boot-efi"},
	} {
		if _, err := os.Stat(f.path); err != nil {
			t.Fatalf("%s is missing: apt-get install -y --no-install-recommends %s", f.path, f.pkg)
		}
	}
	img := filepath.Join(t.TempDir(), "appliance.img")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(repoRoot(t), "image/build.sh"), img)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "VERSION="+version)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("image/build.sh: %v\n%s", err, tail(out.String(), 4000))
	}
	t.Logf("image built in %v: %s", time.Since(start).Round(time.Second), strings.TrimSpace(lastLine(out.String())))
	return img
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// vm is the image booted in QEMU, its API forwarded to a host port.
type vm struct {
	port   int
	serial string
}

// bootImage boots a copy of img. extra are more QEMU arguments.
func bootImage(t *testing.T, img string, extra ...string) *vm {
	t.Helper()
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if out, err := exec.Command("cp", "--sparse=always", img, disk).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	vars := filepath.Join(dir, "vars.fd")
	if out, err := exec.Command("cp", ovmfVars, vars).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	v := &vm{port: freePort(t), serial: filepath.Join(dir, "serial.log")}
	args := []string{"-accel", "tcg", "-m", "1024", "-smp", "2",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-drive", "if=pflash,format=raw,readonly=on,file=" + ovmfCode,
		"-drive", "if=pflash,format=raw,file=" + vars,
		"-drive", "file=" + disk + ",format=raw,if=virtio",
		// Entropy for the guest: without it, a loaded host once left udev
		// waiting 208 s in getrandom.
		"-device", "virtio-rng-pci",
		"-device", "i6300esb", "-action", "watchdog=reset",
		"-serial", "file:" + v.serial, "-monitor", "none",
		"-nic", fmt.Sprintf("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:%d-:8080", v.port)}
	qemu := exec.Command("qemu-system-x86_64", append(args, extra...)...)
	var qout testutil.SyncBuffer
	qemu.Stdout, qemu.Stderr = &qout, &qout
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- qemu.Wait() }()
	t.Cleanup(func() {
		_ = qemu.Process.Kill()
		<-exited
		if t.Failed() {
			log, _ := os.ReadFile(v.serial)
			t.Logf("qemu: %s\nserial console:\n%s", qout.String(), tail(string(log), 8000))
		}
	})
	return v
}

type imageStatus struct {
	Unit struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		State   string `json:"state"`
	} `json:"unit"`
	Watchdog struct {
		Identity  string `json:"identity"`
		Armed     bool   `json:"armed"`
		BootCount int    `json:"boot_count"`
	} `json:"watchdog"`
}

// ready waits for the API to answer with the unit running and the watchdog armed.
func (v *vm) ready(t *testing.T) imageStatus {
	t.Helper()
	var s imageStatus
	start := time.Now()
	testutil.Eventually(t, 5*time.Minute, "the appliance API from the booted image", func() bool {
		c := http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/status", v.port))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		s = imageStatus{}
		return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&s) == nil &&
			s.Unit.State == "running" && s.Watchdog.Armed
	})
	t.Logf("API up, unit running, watchdog armed: %v after QEMU started", time.Since(start).Round(100*time.Millisecond))
	return s
}

func TestImageBoots(t *testing.T) {
	needRig(t, imageTools...)
	version := "image-test"
	img := buildImage(t, version)
	if os.Getenv("APPLIANCE_IMAGE") != "" {
		version = "" // whatever make image was given
	}

	t.Run("default config", func(t *testing.T) {
		s := bootImage(t, img).ready(t)
		if s.Unit.Name != "appliance" || (version != "" && s.Unit.Version != version) {
			t.Errorf("unit %q version %q, want the image's default unit %q at version %q", s.Unit.Name, s.Unit.Version, "appliance", version)
		}
		if s.Watchdog.Identity != "i6300ESB timer" || s.Watchdog.BootCount != 1 {
			t.Errorf("watchdog %+v: want the i6300ESB armed on the first boot", s.Watchdog)
		}
	})

	// The same image as another unit: its config arrives as a system
	// credential (SMBIOS type 11) on the first boot.
	t.Run("unit config from a credential", func(t *testing.T) {
		cfg, err := os.ReadFile(filepath.Join(repoRoot(t), "image/appliance.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		cfg = bytes.Replace(cfg, []byte("name: appliance"), []byte("name: edge-b"), 1)
		cred := "io.systemd.credential.binary:appliance.config=" + base64.StdEncoding.EncodeToString(cfg)
		s := bootImage(t, img, "-smbios", "type=11,value="+cred).ready(t)
		if s.Unit.Name != "edge-b" {
			t.Errorf("unit %q: want edge-b, from the credential", s.Unit.Name)
		}
	})
}
