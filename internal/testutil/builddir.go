package testutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// BuildDir makes a directory in the system's temporary directory for what a
// test run builds once for all its tests (the appliance binary, about 12 MB;
// a disk image), named PREFIX-PID-RANDOM. The run removes its own at the end
// (from TestMain); a run killed first (a -timeout panic, a signal) cannot,
// so BuildDir also removes the PREFIX-PID-* directories of runs that are no
// longer alive.
func BuildDir(prefix string) (string, error) {
	tmp := os.TempDir()
	old, _ := filepath.Glob(filepath.Join(tmp, prefix+"-*-*"))
	for _, dir := range old {
		pidText, _, ok := strings.Cut(strings.TrimPrefix(filepath.Base(dir), prefix+"-"), "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			os.RemoveAll(dir)
		}
	}
	return os.MkdirTemp(tmp, fmt.Sprintf("%s-%d-", prefix, os.Getpid()))
}
