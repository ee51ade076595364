package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A config path that names a named pipe must not block the caller: a reload
// that waits for a writer never ends. Only regular files are read.
func TestLoadRefusesWhatIsNotAFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "config.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	for path, what := range map[string]string{
		fifo: "a named pipe (FIFO)",
		dir:  "a directory",
	} {
		done := make(chan error, 1)
		go func() {
			_, err := Load(path)
			done <- err
		}()
		var err error
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("Load(%s) still blocked after 10s", what)
		}
		if !errors.Is(err, ErrNotRegular) {
			t.Errorf("Load(%s) = %v, want ErrNotRegular", what, err)
		}
		if want := "config: " + path + " is " + what + ", not a regular file; give the path of the YAML file itself"; err == nil || err.Error() != want {
			t.Errorf("Load(%s) = %v\nwant %s", what, err, want)
		}
	}
}

// A symbolic link to the file is a regular file as far as the unit cares.
func TestLoadFollowsSymlink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	real := filepath.Join(dir, "real.yaml")
	link := filepath.Join(dir, "link.yaml")
	if err := os.WriteFile(real, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if c, err := LoadEnv(link, Env{NoFileLimit: 1 << 20}); err != nil || c.Unit.Name != "u1" {
		t.Errorf("LoadEnv(link) = %+v, %v", c, err)
	}
	if _, err := LoadEnv(link, Env{NoFileLimit: 10}); err == nil || !strings.HasPrefix(err.Error(), link+":1:1: ") {
		t.Errorf("LoadEnv(link) with a tiny descriptor limit = %v, want a problem reported against %s", err, link)
	}
}

// A key file that is a named pipe must not block a reload either.
func TestKeyFileNotAFile(t *testing.T) {
	t.Parallel()
	fifo := filepath.Join(t.TempDir(), "pair.key")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	cfg := pairFile(t, fifo, "")
	done := make(chan error, 1)
	go func() {
		_, err := Load(cfg)
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Load with a FIFO as key file still blocked after 10s")
	}
	if want := fifo + " is a named pipe (FIFO), not a regular file; give the path of the key file itself"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want %s", err, want)
	}
}
