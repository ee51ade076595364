package lab

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestRunNeedsRoot: without root the lab says what it needs and makes
// nothing. Run as root, the test runs itself again as nobody.
func TestRunNeedsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		_, err := Run(context.Background(), Options{Scenarios: []string{"lone-restart"}})
		if !errors.Is(err, ErrNotRoot) || !strings.Contains(err.Error(), "run it with sudo") {
			t.Fatalf("without root: %v", err)
		}
		return
	}
	if testing.Short() {
		t.Skip("runs the test binary again as nobody")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// nobody needs to reach the copy: the test's directory and its parent.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "lab.test")
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	cmd := exec.Command(bin, "-test.run", "^TestRunNeedsRoot$", "-test.count", "1", "-test.v")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestRunNeedsRoot") {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
}
