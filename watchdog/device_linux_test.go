package watchdog

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOpenMissing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "watchdog")
	_, err := Open(path)
	if !errors.Is(err, ErrNoDevice) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err %v, want ErrNoDevice and fs.ErrNotExist", err)
	}
	want := "no watchdog device at " + path + ` (is the driver loaded? set watchdog.device to "" for none)`
	if err == nil || err.Error() != want {
		t.Errorf("message %q\n          want %q", err, want)
	}
}

func TestOpenNotAWatchdog(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "regular")
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, os.DevNull} {
		_, err := Open(p)
		if !errors.Is(err, ErrNotWatchdog) || !errors.Is(err, unix.ENOTTY) {
			t.Errorf("Open(%s): %v, want ErrNotWatchdog and ENOTTY", p, err)
		}
		if err != nil && !strings.Contains(err.Error(), p+" is not a watchdog device") {
			t.Errorf("Open(%s): message %q does not say what is wrong", p, err)
		}
	}
	if b, _ := os.ReadFile(path); string(b) != "x" {
		t.Errorf("Open changed the file: %q", b)
	}
}

func TestOpenErrorMessages(t *testing.T) {
	t.Parallel()
	err := openError("/dev/watchdog", unix.EBUSY)
	want := `/dev/watchdog is busy: another process holds it (systemd's RuntimeWatchdogSec= in /etc/systemd/system.conf opens it); set RuntimeWatchdogSec=0 or set watchdog.device to ""`
	if err.Error() != want || !errors.Is(err, ErrBusy) || !errors.Is(err, unix.EBUSY) {
		t.Errorf("EBUSY: %v", err)
	}
	if err := openError("/dev/watchdog", unix.EACCES); !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "udev") {
		t.Errorf("EACCES: %v", err)
	}
	if err := openError("/dev/watchdog", unix.EIO); !errors.Is(err, unix.EIO) {
		t.Errorf("EIO: %v", err)
	}
}

func TestLinuxDeviceClosed(t *testing.T) {
	t.Parallel()
	d := &linuxDevice{path: "/dev/watchdog", fd: -1}
	if err := d.Keepalive(); !errors.Is(err, ErrClosed) {
		t.Errorf("Keepalive on a closed device: %v", err)
	}
	if err := d.Disarm(); !errors.Is(err, ErrClosed) {
		t.Errorf("Disarm on a closed device: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	copy(d.info.Identity[:], "i6300ESB timer")
	if id, _ := d.Identity(); id != "i6300ESB timer" {
		t.Errorf("identity %q", id)
	}
}
