package watchdog

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRecordBoot(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	type boot struct {
		status     uint32
		haveDevice bool
		cleanStop  bool // MarkCleanStop before the next boot
		wantReason string
	}
	for _, tc := range []struct {
		name  string
		boots []boot
	}{
		{"first boot", []boot{{0, true, false, ReasonFirstBoot}}},
		{"clean stop", []boot{{0, true, true, ReasonFirstBoot}, {0, true, false, ReasonClean}}},
		{"no clean stop", []boot{{0, true, false, ReasonFirstBoot}, {0, true, false, ReasonUnknown}}},
		{"watchdog", []boot{{0, true, false, ReasonFirstBoot}, {CardReset, true, false, ReasonWatchdog}}},
		{"watchdog beats a clean stop", []boot{{0, true, true, ReasonFirstBoot}, {CardReset | 0x1, true, false, ReasonWatchdog}}},
		{"watchdog on the first boot", []boot{{CardReset, true, false, ReasonWatchdog}}},
		{"boot status without a device is ignored", []boot{{0, false, false, ReasonFirstBoot}, {CardReset, false, false, ReasonUnknown}}},
		{"a loop", []boot{{0, true, true, ReasonFirstBoot}, {0, true, false, ReasonClean}, {CardReset, true, false, ReasonWatchdog}, {0, true, false, ReasonUnknown}, {0, true, true, ReasonUnknown}, {0, true, false, ReasonClean}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "state", "appliance") // created by RecordBoot
			for i, b := range tc.boots {
				now := t0.Add(time.Duration(i) * time.Minute)
				rec, err := RecordBoot(dir, b.status, b.haveDevice, now)
				if err != nil {
					t.Fatalf("boot %d: %v", i+1, err)
				}
				want := BootRecord{BootCount: i + 1, LastResetReason: b.wantReason, LastBoot: now}
				if rec != want {
					t.Fatalf("boot %d: %+v, want %+v", i+1, rec, want)
				}
				if onDisk := readRecord(t, dir); !onDisk.LastBoot.Equal(now) || onDisk.BootCount != i+1 || onDisk.CleanStop {
					t.Fatalf("boot %d on disk: %+v", i+1, onDisk)
				}
				if b.cleanStop {
					if err := MarkCleanStop(dir); err != nil {
						t.Fatal(err)
					}
					if onDisk := readRecord(t, dir); !onDisk.CleanStop || onDisk.BootCount != i+1 {
						t.Fatalf("after MarkCleanStop: %+v", onDisk)
					}
				}
			}
			checkStateDir(t, dir, true)
		})
	}
}

// checkStateDir checks what atomic writes leave behind: only boot.json,
// 0640, no temporary files, in a 0750 directory if RecordBoot created it.
func checkStateDir(t *testing.T, dir string, created bool) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if created && fi.Mode().Perm() != 0o750 {
		t.Errorf("state dir mode %v, want 0750", fi.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch e.Name() {
		case bootFile:
			info, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			if info.Mode().Perm() != 0o640 {
				t.Errorf("%s mode %v, want 0640", e.Name(), info.Mode().Perm())
			}
		case corruptFile:
		default:
			t.Errorf("left behind in the state dir: %s", e.Name())
		}
	}
}

func TestRecordBootCorrupt(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{
		"",
		"{",
		"\x00\x00\x00\x00", // a power loss on a file system that does not order writes
		`{"boot_count": -1}`,
		`{"last_reset_reason": "clean"}`,
		`{"boot_count": 3} {"boot_count": 4}`,
		`{"boot_count": "three"}`,
		`[1,2,3]`,
	} {
		t.Run(strings.ToValidUTF8(bad, "?"), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, bootFile), []byte(bad), 0o640); err != nil {
				t.Fatal(err)
			}
			if err := MarkCleanStop(dir); !errors.Is(err, ErrCorruptState) {
				t.Errorf("MarkCleanStop on a corrupt record: %v, want ErrCorruptState", err)
			}
			now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			rec, err := RecordBoot(dir, 0, true, now)
			if !errors.Is(err, ErrCorruptState) {
				t.Fatalf("err %v, want one wrapping ErrCorruptState", err)
			}
			if !strings.Contains(err.Error(), corruptFile) {
				t.Errorf("the warning does not say where the bad file went: %v", err)
			}
			if want := (BootRecord{BootCount: 1, LastResetReason: ReasonUnknown, LastBoot: now}); rec != want {
				t.Errorf("record %+v, want %+v", rec, want)
			}
			kept, err := os.ReadFile(filepath.Join(dir, corruptFile))
			if err != nil || string(kept) != bad {
				t.Errorf("corrupt copy %q, %v; want the original bytes", kept, err)
			}
			if onDisk := readRecord(t, dir); onDisk.BootCount != 1 {
				t.Errorf("on disk %+v", onDisk)
			}
			// The next boot goes on from the fresh record.
			if rec, err := RecordBoot(dir, 0, true, now); err != nil || rec.BootCount != 2 {
				t.Errorf("next boot: %+v, %v", rec, err)
			}
			checkStateDir(t, dir, false)
		})
	}
}

func TestRecordBootKeepsUnknownFields(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	newer := `{"boot_count": 41, "clean_stop": true, "from_a_newer_release": {"x": 1}}`
	if err := os.WriteFile(filepath.Join(dir, bootFile), []byte(newer), 0o640); err != nil {
		t.Fatal(err)
	}
	rec, err := RecordBoot(dir, 0, false, time.Unix(0, 0))
	if err != nil || rec.BootCount != 42 || rec.LastResetReason != ReasonClean {
		t.Errorf("%+v, %v: want the count kept across a downgrade", rec, err)
	}
}

func TestMarkCleanStopWithoutRecord(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "new")
	if err := MarkCleanStop(dir); err != nil {
		t.Fatal(err)
	}
	rec, err := RecordBoot(dir, 0, true, time.Unix(0, 0))
	if err != nil || rec.BootCount != 1 || rec.LastResetReason != ReasonClean {
		t.Errorf("%+v, %v", rec, err)
	}
	checkStateDir(t, dir, true)
}

func TestRecordBootUnreadableStateDir(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := RecordBoot(file, 0, true, time.Unix(0, 0)); err == nil || errors.Is(err, ErrCorruptState) {
		t.Errorf("state dir is a file: %v, want a hard error", err)
	}
}
