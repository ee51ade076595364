package watchdog

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
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
// 0640, padded to recordSize, and kept corrupt copies, no temporary files,
// in a 0750 directory if RecordBoot created it.
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
			if info.Size() != recordSize {
				t.Errorf("%s is %d bytes, want it padded to %d", e.Name(), info.Size(), recordSize)
			}
		case corruptFile + ".1", corruptFile + ".2", corruptFile + ".3":
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
			if !strings.Contains(err.Error(), filepath.Join(dir, corruptFile+".1")) {
				t.Errorf("the warning does not say where the bad file went: %v", err)
			}
			if want := (BootRecord{BootCount: 1, LastResetReason: ReasonUnknown, LastBoot: now}); rec != want {
				t.Errorf("record %+v, want %+v", rec, want)
			}
			kept, err := os.ReadFile(filepath.Join(dir, corruptFile+".1"))
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
	rec, err := RecordBoot(file, 0, true, time.Unix(0, 0))
	if err == nil || errors.Is(err, ErrCorruptState) || errors.Is(err, ErrUnwritable) || rec != (BootRecord{}) {
		t.Errorf("state dir is a file: %+v, %v; want no record and a hard error", rec, err)
	}
	if err != nil && !strings.Contains(err.Error(), file) {
		t.Errorf("the error does not name the state directory: %v", err)
	}
}

func writeBootFile(t *testing.T, dir, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, bootFile), []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
}

func TestRecordBootSaturates(t *testing.T) {
	t.Parallel()
	for _, prev := range []int{math.MaxInt - 1, math.MaxInt} {
		t.Run(strconv.Itoa(prev), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeBootFile(t, dir, fmt.Sprintf(`{"boot_count": %d, "clean_stop": true}`, prev))
			for i := range 2 {
				rec, err := RecordBoot(dir, 0, false, time.Unix(0, 0))
				if err != nil || rec.BootCount != math.MaxInt {
					t.Fatalf("boot %d after %d: %+v, %v; want the count to stay at MaxInt", i+1, prev, rec, err)
				}
				if onDisk := readRecord(t, dir); onDisk.BootCount != math.MaxInt {
					t.Fatalf("on disk: %+v", onDisk)
				}
			}
			if err := MarkCleanStop(dir); err != nil {
				t.Fatal(err)
			}
			checkStateDir(t, dir, false)
		})
	}
}

// Each damaged record is kept, newest as .1, and only the fourth oldest is dropped.
func TestRecordBootKeepsCorruptCopies(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	bad := []string{"first{", "second{", "third{", "fourth{", "fifth{"}
	for i, b := range bad {
		writeBootFile(t, dir, b)
		_, err := RecordBoot(dir, 0, false, now)
		if !errors.Is(err, ErrCorruptState) || errors.Is(err, ErrUnwritable) {
			t.Fatalf("corruption %d: %v, want ErrCorruptState only", i+1, err)
		}
		if want := filepath.Join(dir, corruptFile+".1"); !strings.Contains(err.Error(), want) {
			t.Errorf("corruption %d: %q does not say it was kept as %s", i+1, err, want)
		}
		for n := 1; n <= keepCorrupt+1; n++ {
			got, err := os.ReadFile(corruptCopy(dir, n))
			want := ""
			if n <= keepCorrupt && i+1-n >= 0 {
				want = bad[i+1-n]
			}
			if want == "" && !errors.Is(err, os.ErrNotExist) || want != "" && string(got) != want {
				t.Errorf("after corruption %d: copy %d = %q, %v; want %q", i+1, n, got, err, want)
			}
		}
	}
	checkStateDir(t, dir, false)
}

// A bad record that cannot be moved aside is left as it is: the boot is
// still counted, and the file still reads as corrupt, never as clean.
func TestRecordBootCorruptCannotSetAside(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeBootFile(t, dir, `{"boot_count": 5, "clean_stop": tru`)
	// Moving .2 up to .3 fails while .3 is a directory that is not empty.
	if err := os.WriteFile(corruptCopy(dir, 2), []byte("older{"), 0o640); err != nil {
		t.Fatal(err)
	}
	block := filepath.Join(corruptCopy(dir, 3), "x")
	if err := os.MkdirAll(block, 0o750); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec, err := RecordBoot(dir, 0, false, now)
	if !errors.Is(err, ErrCorruptState) || !errors.Is(err, ErrUnwritable) {
		t.Fatalf("err %v, want ErrCorruptState and ErrUnwritable", err)
	}
	if want := (BootRecord{BootCount: 1, LastResetReason: ReasonUnknown, LastBoot: now}); rec != want {
		t.Errorf("record %+v, want %+v", rec, want)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, bootFile)); string(b) != `{"boot_count": 5, "clean_stop": tru` {
		t.Errorf("the bad record was not left as it was: %q", b)
	}
	if err := SaveBootRecord(dir, rec); !errors.Is(err, ErrUnwritable) {
		t.Errorf("retry while it still cannot be moved aside: %v, want ErrUnwritable", err)
	}
	if err := os.RemoveAll(corruptCopy(dir, 3)); err != nil {
		t.Fatal(err)
	}
	if err := SaveBootRecord(dir, rec); err != nil {
		t.Fatalf("retry once it can: %v", err)
	}
	if onDisk := readRecord(t, dir); onDisk != rec {
		t.Errorf("on disk %+v, want %+v", onDisk, rec)
	}
	for n, want := range map[int]string{1: `{"boot_count": 5, "clean_stop": tru`, 2: "", 3: "older{"} {
		if got, _ := os.ReadFile(corruptCopy(dir, n)); string(got) != want {
			t.Errorf("copy %d = %q, want %q", n, got, want)
		}
	}
}

func TestSaveBootRecord(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := BootRecord{BootCount: 8, LastResetReason: ReasonWatchdog, LastBoot: t0}
	for _, tc := range []struct {
		name      string
		onDisk    string // "" for no file
		wantClean bool
	}{
		{"no record yet", "", false},
		{"the previous boot stopped cleanly", `{"boot_count": 7, "clean_stop": true}`, false},
		{"this boot already stopped cleanly", `{"boot_count": 8, "last_boot": "2026-01-02T03:04:05Z", "clean_stop": true}`, true},
		{"corrupt", `{"boot_count": 8, "clean`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "state")
			if tc.onDisk != "" {
				if err := os.Mkdir(dir, 0o750); err != nil {
					t.Fatal(err)
				}
				writeBootFile(t, dir, tc.onDisk)
			}
			if err := SaveBootRecord(dir, rec); err != nil {
				t.Fatal(err)
			}
			want := rec
			want.CleanStop = tc.wantClean
			if got := readRecord(t, dir); got != want {
				t.Errorf("on disk %+v, want %+v", got, want)
			}
			checkStateDir(t, dir, tc.onDisk == "")
		})
	}
}

// The fallback for a full disk: the record goes over the old file's bytes,
// whatever size an earlier release left it, in the richest form that fits.
func TestOverwriteInPlace(t *testing.T) {
	t.Parallel()
	rec := BootRecord{BootCount: 12, LastResetReason: ReasonClean, LastBoot: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}
	for _, tc := range []struct {
		name     string
		size     int
		wantSize int64 // -1: refused, file unchanged
		wantForm string
	}{
		{"padded", recordSize, recordSize, "indented"},
		{"longer", 3000, recordSize, "indented"},
		{"just the indented form", 153, 153, "indented"},
		{"compact with its check", 152, 152, "compact"},
		{"as an older release wrote it", 127, 127, "plain"},
		{"just the plain form", 110, 110, "plain"},
		{"too short", 109, -1, ""},
		{"empty", 0, -1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), bootFile)
			old := strings.Repeat("x", tc.size)
			if err := os.WriteFile(path, []byte(old), 0o640); err != nil {
				t.Fatal(err)
			}
			err := overwriteInPlace(path, rec)
			b, rerr := os.ReadFile(path)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if tc.wantSize < 0 {
				if !errors.Is(err, errNoRoom) || string(b) != old {
					t.Errorf("err %v, file %q; want errNoRoom and the file untouched", err, b)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(b)) != tc.wantSize {
				t.Errorf("%d bytes, want %d", len(b), tc.wantSize)
			}
			form := "plain"
			switch {
			case strings.Contains(string(b), "\n  \"check_v1\""):
				form = "indented"
			case strings.Contains(string(b), `"check_v1"`):
				form = "compact"
			}
			if form != tc.wantForm {
				t.Errorf("written %s, want %s: %q", form, tc.wantForm, b)
			}
			if got, err := parseBootRecord(b); err != nil || got != rec {
				t.Errorf("read back %+v, %v; want %+v", got, err, rec)
			}
		})
	}
}

// A write over the old record that lands only in part, at any byte, in
// either order, reads as the old record, the new one, or corrupt: never as
// a mix, which could carry the old clean_stop under the new count.
func TestTornRecord(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		old, new BootRecord
	}{
		{"boot after a clean stop", BootRecord{12, ReasonWatchdog, t0, true}, BootRecord{13, ReasonClean, t0.Add(time.Hour), false}},
		{"count gains a digit", BootRecord{99, ReasonClean, t0, true}, BootRecord{100, ReasonClean, t0.Add(time.Hour), false}},
		{"saturated count", BootRecord{math.MaxInt, ReasonClean, t0, true}, BootRecord{math.MaxInt, ReasonClean, t0, false}},
		{"clean stop", BootRecord{13, ReasonClean, t0, false}, BootRecord{13, ReasonClean, t0, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			old, err := encodeRecord(tc.old, recordSize)
			if err != nil {
				t.Fatal(err)
			}
			nw, err := encodeRecord(tc.new, recordSize)
			if err != nil {
				t.Fatal(err)
			}
			for k := 0; k <= recordSize; k++ {
				for _, mix := range [][]byte{
					append(append([]byte{}, nw[:k]...), old[k:]...),
					append(append([]byte{}, old[:k]...), nw[k:]...),
				} {
					got, err := parseBootRecord(mix)
					if err == nil && got != tc.old && got != tc.new {
						t.Fatalf("torn at byte %d reads as %+v, neither record:\n%s", k, got, mix)
					}
				}
			}
		})
	}
}

// recordSize must hold the longest record this release can write, or the
// in-place fallback would not always fit over an earlier record.
func TestLongestRecordFits(t *testing.T) {
	t.Parallel()
	longest := BootRecord{
		BootCount:       math.MaxInt,
		LastResetReason: ReasonFirstBoot,
		LastBoot:        time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", -(23*3600+59*60))),
		CleanStop:       true,
	}
	data, err := encodeRecord(longest, recordSize)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "  \"boot_count\"") {
		t.Errorf("the longest record is not written indented:\n%s", data)
	}
	if got, err := parseBootRecord(data); err != nil || got.BootCount != longest.BootCount || !got.LastBoot.Equal(longest.LastBoot) {
		t.Errorf("read back %+v, %v", got, err)
	}
}

func TestRecordBootRemovesStaleTemps(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stale := filepath.Join(dir, "."+bootFile+".tmp-123")
	if err := os.WriteFile(stale, []byte("half a rec"), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := RecordBoot(dir, 0, false, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a temporary file left by a power loss is still there: %v", err)
	}
	checkStateDir(t, dir, false)
}
