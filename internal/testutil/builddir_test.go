package testutil

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A dead run's build directory is removed by the next run; a live run's,
// and one that only looks alike, are not.
func TestBuildDir(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	const prefix = "appliance-buildtest"
	dead := filepath.Join(tmp, prefix+"-999999999-1") // above any pid_max
	live := filepath.Join(tmp, prefix+"-1-2")         // PID 1 is alive
	other := filepath.Join(tmp, prefix+"-x-3")
	for _, d := range []string{dead, live, other} {
		if err := os.MkdirAll(filepath.Join(d, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := BuildDir(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(dir), prefix+"-"+strconv.Itoa(os.Getpid())+"-") || filepath.Dir(dir) != tmp {
		t.Errorf("BuildDir made %s: want %s/%s-PID-...", dir, tmp, prefix)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("a dead run's directory is left: %v", err)
	}
	for _, d := range []string{live, other, dir} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s was removed: %v", d, err)
		}
	}
}
