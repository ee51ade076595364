package watchdog

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"appliance/internal/testutil"
)

// The boot record on a full disk, on a real file system: a 64 KiB tmpfs
// filled to the last page. Needs root to mount it.

// fullTmpfs mounts a small tmpfs and returns its state directory, a
// function that fills every free page, and one that frees them.
func fullTmpfs(t *testing.T) (stateDir string, fill, free func()) {
	t.Helper()
	testutil.NeedRoot(t, "the full-disk rig mounts a tmpfs")
	root := t.TempDir()
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("cannot mount a tmpfs on %s (%v): the rig needs CAP_SYS_ADMIN", root, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(root, 0); err != nil {
			t.Errorf("unmounting the rig's tmpfs %s: %v", root, err)
		}
	})
	stateDir = filepath.Join(root, "state")
	if err := os.Mkdir(stateDir, stateDirPerm); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(root, "filler")
	fill = func() {
		t.Helper()
		f, err := os.OpenFile(filler, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		page := make([]byte, 4096)
		for i := 0; ; i++ {
			if _, err := f.Write(page); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("filling the tmpfs: %v, want ENOSPC", err)
				}
				break
			}
			if i > 1000 {
				t.Fatal("the 64 KiB tmpfs took 4 MiB without filling up")
			}
		}
		if err := os.WriteFile(filepath.Join(root, "probe"), []byte("x"), 0o640); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("the tmpfs is not full: writing one byte gave %v", err)
		}
		os.Remove(filepath.Join(root, "probe"))
	}
	free = func() {
		t.Helper()
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	}
	return stateDir, fill, free
}

// neverClean fails if boot.json, as it is now, would make the next boot
// call a crash of this run a clean stop.
func neverClean(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, bootFile))
	if err != nil {
		return
	}
	if rec, err := parseBootRecord(b); err == nil && rec.CleanStop {
		t.Fatalf("boot.json still says clean_stop true while the appliance runs: %s", b)
	}
}

// The usual case: the last record was written by this release, padded, so
// the new one goes over it in place and the unit carries on as normal.
func TestBootRecordFullDiskInPlace(t *testing.T) {
	dir, fill, free := fullTmpfs(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if _, err := RecordBoot(dir, 0, false, t0); err != nil {
		t.Fatal(err)
	}
	if err := MarkCleanStop(dir); err != nil {
		t.Fatal(err)
	}
	fill()

	t1 := t0.Add(time.Hour)
	rec, err := RecordBoot(dir, 0, false, t1)
	if err != nil {
		t.Fatalf("RecordBoot on a full disk over a padded record: %v, want the in-place write to succeed", err)
	}
	if want := (BootRecord{BootCount: 2, LastResetReason: ReasonClean, LastBoot: t1}); rec != want {
		t.Fatalf("record %+v, want %+v", rec, want)
	}
	neverClean(t, dir)
	if got := readRecord(t, dir); got != rec {
		t.Fatalf("on disk %+v, want %+v", got, rec)
	}

	// The clean stop and the boot after it work on the full disk too.
	if err := MarkCleanStop(dir); err != nil {
		t.Fatalf("MarkCleanStop on a full disk: %v", err)
	}
	t2 := t1.Add(time.Hour)
	if rec, err = RecordBoot(dir, 0, false, t2); err != nil || rec.BootCount != 3 || rec.LastResetReason != ReasonClean {
		t.Fatalf("third boot on a full disk: %+v, %v", rec, err)
	}
	neverClean(t, dir)

	free()
	if err := SaveBootRecord(dir, rec); err != nil {
		t.Fatalf("SaveBootRecord once there is space: %v", err)
	}
	if got := readRecord(t, dir); got != rec {
		t.Errorf("on disk %+v, want %+v", got, rec)
	}
	checkStateDir(t, dir, false)
}

// No record to overwrite: the boot is counted in memory, reported as
// unwritable, and saved by a retry once there is space.
func TestBootRecordFullDiskNoRecord(t *testing.T) {
	dir, fill, free := fullTmpfs(t)
	fill()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec, err := RecordBoot(dir, 0, false, t0)
	if !errors.Is(err, ErrUnwritable) {
		t.Fatalf("err %v, want ErrUnwritable", err)
	}
	t.Logf("reported: %v", err)
	if want := (BootRecord{BootCount: 1, LastResetReason: ReasonFirstBoot, LastBoot: t0}); rec != want {
		t.Fatalf("record %+v, want %+v", rec, want)
	}
	if err := SaveBootRecord(dir, rec); !errors.Is(err, ErrUnwritable) {
		t.Fatalf("retry on a disk still full: %v, want ErrUnwritable", err)
	}
	free()
	if err := SaveBootRecord(dir, rec); err != nil {
		t.Fatalf("retry once there is space: %v", err)
	}
	if got := readRecord(t, dir); got != rec {
		t.Errorf("on disk %+v, want %+v", got, rec)
	}
	checkStateDir(t, dir, false)
}

// A record too short to take the new one over it (hand-made, or from an
// older release) that says clean_stop true is emptied rather than left to
// lie: the next boot says "unknown", and keeps the empty file aside.
func TestBootRecordFullDiskShortCleanRecord(t *testing.T) {
	dir, fill, free := fullTmpfs(t)
	if err := os.WriteFile(filepath.Join(dir, bootFile), []byte(`{"boot_count":4,"clean_stop":true}`), bootFilePerm); err != nil {
		t.Fatal(err)
	}
	fill()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec, err := RecordBoot(dir, 0, false, t0)
	if !errors.Is(err, ErrUnwritable) {
		t.Fatalf("err %v, want ErrUnwritable", err)
	}
	t.Logf("reported: %v", err)
	if want := (BootRecord{BootCount: 5, LastResetReason: ReasonClean, LastBoot: t0}); rec != want {
		t.Fatalf("record %+v, want %+v", rec, want)
	}
	neverClean(t, dir)

	// The box crashes with the disk still full (emptying the record freed
	// its page: take that too); the next boot is not clean.
	fill()
	t1 := t0.Add(time.Hour)
	rec, err = RecordBoot(dir, 0, false, t1)
	if !errors.Is(err, ErrCorruptState) || !errors.Is(err, ErrUnwritable) {
		t.Fatalf("boot after the crash: %v, want ErrCorruptState and ErrUnwritable", err)
	}
	if rec.LastResetReason != ReasonUnknown || rec.BootCount != 1 {
		t.Fatalf("boot after the crash: %+v, want reason unknown, count 1", rec)
	}
	neverClean(t, dir)

	free()
	if err := SaveBootRecord(dir, rec); err != nil {
		t.Fatal(err)
	}
	if got := readRecord(t, dir); got != rec {
		t.Errorf("on disk %+v, want %+v", got, rec)
	}
	checkStateDir(t, dir, false)
}
