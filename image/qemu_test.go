package image

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"appliance/internal/testutil"
)

// The hardware watchdog for real: a Debian disk image with the appliance
// booted in QEMU (software emulation) with an emulated Intel 6300ESB
// watchdog. QEMU resets the guest when the watchdog is not fed in time.

var vmPackages = []string{"systemd", "systemd-sysv", "udev", "kmod", "dbus", "iproute2", "linux-image-amd64", "initramfs-tools"}

const vmConfig = `version: 1
unit: {name: vm, state_dir: /var/lib/appliance}
status: {listen: "0.0.0.0:8080"}
media: {workers: 1}
streams:
  - {name: s0, input: "udp://127.0.0.1:5004", outputs: ["udp://127.0.0.1:6004"], rewrite: {ssrc: 0x10}}
test_sources:
  - {to: "udp://127.0.0.1:5004", pps: 50}
watchdog: {device: /dev/watchdog, timeout: 5s}
`

// In this rig the hardware watchdog alone guards the appliance, so that its
// rung of the ladder is the one exercised: systemd's watchdog would
// otherwise restart the frozen service first (that rung is TestSystemd's).
const vmDropIn = `[Service]
WatchdogSec=0
`

// rig-freeze stops the appliance once, on the first boot, after it has fed
// the watchdog for a while: a hung unit. It says so on the serial console.
const freezeUnit = `[Unit]
Description=rig: freeze the appliance once
After=appliance.service
ConditionPathExists=!/var/lib/rig-froze

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'until systemctl is-active -q appliance; do sleep 0.5; done; sleep 5; touch /var/lib/rig-froze; sync; kill -STOP $(systemctl show -p MainPID --value appliance); echo "rig: appliance frozen" > /dev/console'

[Install]
WantedBy=multi-user.target
`

const networkConfig = `[Match]
Name=en*

[Network]
DHCP=ipv4
`

type apiStatus struct {
	Unit struct {
		State string `json:"state"`
	} `json:"unit"`
	Watchdog struct {
		Device          string  `json:"device"`
		Armed           bool    `json:"armed"`
		TimeoutS        float64 `json:"timeout_s"`
		LastResetReason string  `json:"last_reset_reason"`
		BootCount       int     `json:"boot_count"`
	} `json:"watchdog"`
}

func TestHardwareWatchdogReset(t *testing.T) {
	needRig(t, testutil.Tool{Name: "qemu-system-x86_64", Package: "qemu-system-x86"}, testutil.Tool{Name: "mkfs.ext4", Package: "e2fsprogs"})
	tarball := rootfsTarball(t, vmPackages)
	work := t.TempDir()
	root := filepath.Join(work, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	extract(t, tarball, root)
	installAppliance(t, root, vmConfig, vmDropIn)
	writeFile(t, filepath.Join(root, "etc/systemd/system/rig-freeze.service"), []byte(freezeUnit), 0o644)
	writeFile(t, filepath.Join(root, "etc/systemd/network/10-dhcp.network"), []byte(networkConfig), 0o644)
	writeFile(t, filepath.Join(root, "etc/fstab"), []byte("/dev/vda / ext4 rw,relatime 0 1\n"), 0o644)
	writeFile(t, filepath.Join(root, "etc/hostname"), []byte("appliance-vm\n"), 0o644)
	for link, target := range map[string]string{
		"etc/systemd/system/multi-user.target.wants/rig-freeze.service":       "/etc/systemd/system/rig-freeze.service",
		"etc/systemd/system/multi-user.target.wants/systemd-networkd.service": "/lib/systemd/system/systemd-networkd.service",
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	kernels, _ := filepath.Glob(filepath.Join(root, "boot/vmlinuz-*"))
	initrds, _ := filepath.Glob(filepath.Join(root, "boot/initrd.img-*"))
	if len(kernels) != 1 || len(initrds) != 1 {
		t.Fatalf("want one kernel and one initrd in the image, found %v %v", kernels, initrds)
	}
	disk := filepath.Join(work, "disk.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "root", "-d", root, disk, "2G").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}

	port := freePort(t)
	serial := filepath.Join(work, "serial.log")
	qemu := exec.Command("qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "2",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-kernel", kernels[0], "-initrd", initrds[0],
		"-append", "console=ttyS0 root=/dev/vda rw panic=-1",
		"-drive", "file="+disk+",format=raw,if=virtio",
		// Entropy for the guest: without it, a loaded host once left udev
		// waiting 208 s in getrandom.
		"-device", "virtio-rng-pci",
		"-device", "i6300esb", "-action", "watchdog=reset",
		"-serial", "file:"+serial, "-monitor", "none",
		"-nic", fmt.Sprintf("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:%d-:8080", port))
	var qout testutil.SyncBuffer
	qemu.Stdout, qemu.Stderr = &qout, &qout
	// QEMU goes with the test, even one killed before its cleanup.
	qemu.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- qemu.Wait() }()
	t.Cleanup(func() {
		_ = qemu.Process.Kill()
		<-exited
		if t.Failed() {
			log, _ := os.ReadFile(serial)
			t.Logf("qemu: %s\nserial console:\n%s", qout.String(), tail(string(log), 8000))
		}
	})
	serialLog := func() string { b, _ := os.ReadFile(serial); return string(b) }
	status := func() (apiStatus, bool) {
		var s apiStatus
		return s, getStatus(port, &s) == nil
	}

	// First boot: the appliance owns and feeds the watchdog.
	var first apiStatus
	testutil.Eventually(t, 4*time.Minute, "the appliance API on the first boot", func() bool {
		var ok bool
		first, ok = status()
		return ok && first.Watchdog.Armed
	})
	booted := time.Since(start)
	t.Logf("first boot: API up with the watchdog armed %v after QEMU started; boot_count %d, last reset %q",
		booted.Round(100*time.Millisecond), first.Watchdog.BootCount, first.Watchdog.LastResetReason)
	if first.Watchdog.Device != "/dev/watchdog" || first.Watchdog.TimeoutS != 5 {
		t.Errorf("watchdog status %+v", first.Watchdog)
	}

	// The rig freezes the appliance; nobody feeds the watchdog; QEMU resets.
	var frozeAt time.Time
	testutil.Eventually(t, 2*time.Minute, "the rig to freeze the appliance", func() bool {
		if strings.Contains(serialLog(), "rig: appliance frozen") {
			frozeAt = time.Now()
			return true
		}
		return false
	})
	testutil.Eventually(t, time.Minute, "the watchdog to reset the guest (a second boot on the console)", func() bool {
		return strings.Count(serialLog(), "Linux version") >= 2
	})
	resetAt := time.Since(frozeAt)
	var second apiStatus
	testutil.Eventually(t, 4*time.Minute, "the appliance API on the second boot", func() bool {
		var ok bool
		second, ok = status()
		return ok && second.Watchdog.BootCount > first.Watchdog.BootCount
	})
	t.Logf("freeze to reset: %v (watchdog timeout 5s); freeze to API up again: %v",
		resetAt.Round(100*time.Millisecond), time.Since(frozeAt).Round(100*time.Millisecond))
	if second.Watchdog.LastResetReason != "watchdog" {
		t.Errorf("after the reset: last_reset_reason %q, want watchdog", second.Watchdog.LastResetReason)
	}
	if second.Watchdog.BootCount != first.Watchdog.BootCount+1 {
		t.Errorf("boot_count %d, then %d: want it to grow by one", first.Watchdog.BootCount, second.Watchdog.BootCount)
	}
	t.Logf("second boot: boot_count %d, last_reset_reason %q", second.Watchdog.BootCount, second.Watchdog.LastResetReason)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
