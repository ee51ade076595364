package update

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rig is a unit's layout in files: a file stands in for each slot's
// partition, a directory for the boot partition.
type rig struct {
	l   Layout
	dir string
}

const slotSize = 1 << 20

func newRig(t *testing.T, running string) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{dir: dir, l: Layout{Boot: filepath.Join(dir, "boot"), Cmdline: filepath.Join(dir, "cmdline"), State: filepath.Join(dir, "state"),
		Devices:  map[string]string{"a": filepath.Join(dir, "root-a"), "b": filepath.Join(dir, "root-b")},
		PartUUID: map[string]string{"a": "uuid-a", "b": "uuid-b"}}}
	for _, s := range Slots {
		if err := os.WriteFile(r.l.Devices[s], bytes.Repeat([]byte(s), slotSize), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{r.l.entriesDir(), r.l.State} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r.write(t, r.l.Cmdline, "initrd=x root=PARTUUID=uuid-"+running+" ro appliance.slot="+running+"\n")
	r.write(t, filepath.Join(r.l.entriesDir(), EntryName(running, -1)),
		string(EntryBody(running, "1.0", 1, "root=PARTUUID=uuid-"+running+" ro console=ttyS0 appliance.slot="+running)))
	return r
}

func (r *rig) write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// bundle writes a bundle of a root image of n bytes of c and returns its path.
func (r *rig) bundle(t *testing.T, version string, c byte, n int, key ed25519.PrivateKey) string {
	t.Helper()
	files := map[string]string{}
	for name, body := range map[string][]byte{"rootfs": bytes.Repeat([]byte{c}, n), "vmlinuz": []byte("kernel " + version), "initrd": []byte("initrd " + version)} {
		files[name] = filepath.Join(r.dir, version+"."+name)
		if err := os.WriteFile(files[name], body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(r.dir, version+".bundle")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := WriteBundle(f, version, []string{"rootfs", "vmlinuz", "initrd"}, files, key); err != nil {
		t.Fatal(err)
	}
	return path
}

// snapshot is every byte of the slots and the boot partition.
func (r *rig) snapshot(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, root := range []string{r.l.Boot, r.l.Devices["a"], r.l.Devices["b"]} {
		err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err != nil || fi.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			out[p] = string(b)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func (r *rig) update(t *testing.T, bundle string) (Entry, error) {
	t.Helper()
	src, err := SourceFor(bundle)
	if err != nil {
		t.Fatal(err)
	}
	_, signed, err := Check(context.Background(), src, pub(), r.l, nil)
	if err != nil {
		return Entry{}, err
	}
	return Write(context.Background(), src, pub(), r.l, signed, nil)
}

func TestUpdateWritesTheOtherSlotAndItsEntryLast(t *testing.T) {
	r := newRig(t, "a")
	e, err := r.update(t, r.bundle(t, "2.0", 'N', 4096, testKey))
	if err != nil {
		t.Fatal(err)
	}
	if e.File != "appliance-b+1.conf" || e.Generation != 2 || e.Version != "2.0" {
		t.Errorf("entry %+v: want appliance-b+1.conf, generation 2, version 2.0", e)
	}
	dev, _ := os.ReadFile(r.l.Devices["b"])
	if !bytes.Equal(dev[:4096], bytes.Repeat([]byte("N"), 4096)) || dev[4096] != 'b' || len(dev) != slotSize {
		t.Errorf("slot b: the root image is not at its start, or the partition changed size")
	}
	if a, _ := os.ReadFile(r.l.Devices["a"]); !bytes.Equal(a, bytes.Repeat([]byte("a"), slotSize)) {
		t.Errorf("the running slot a was written")
	}
	if k, _ := os.ReadFile(filepath.Join(r.l.Boot, "b", "vmlinuz")); string(k) != "kernel 2.0" {
		t.Errorf("b/vmlinuz = %q", k)
	}
	entries, err := r.l.Entries()
	if err != nil {
		t.Fatal(err)
	}
	b := entries["b"]
	if !b.Counted || b.Left != 1 || b.Bad() || !strings.Contains(b.Options, "root=PARTUUID=uuid-b") || !strings.Contains(b.Options, "appliance.slot=b") ||
		!strings.Contains(b.Options, "console=ttyS0") {
		t.Errorf("slot b's entry %+v: want one try, the running entry's options for slot b", b)
	}
	if left, _ := filepath.Glob(filepath.Join(r.l.Boot, "*", "*.new")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if left, _ := filepath.Glob(filepath.Join(r.l.entriesDir(), ".*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// The trial booted (systemd-boot took a try) and was healthy: blessed.
	if err := os.Rename(filepath.Join(r.l.entriesDir(), b.File), filepath.Join(r.l.entriesDir(), "appliance-b+0-1.conf")); err != nil {
		t.Fatal(err)
	}
	r.write(t, r.l.Cmdline, "root=PARTUUID=uuid-b appliance.slot=b")
	entries, _ = r.l.Entries()
	if err := r.l.Bless(entries["b"]); err != nil {
		t.Fatal(err)
	}
	entries, _ = r.l.Entries()
	if e := entries["b"]; e.File != "appliance-b.conf" || !e.Committed() {
		t.Errorf("after Bless: %+v, want appliance-b.conf", e)
	}

	// The next update writes slot a, whose old entry goes first, then its
	// old kernel and initrd (and what an interrupted write left).
	if err := os.MkdirAll(filepath.Join(r.l.Boot, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.write(t, filepath.Join(r.l.Boot, "a", "initrd.img.new"), "left by a power cut")
	r.write(t, filepath.Join(r.l.Boot, "a", "initrd.img"), "the old initrd")
	e, err = r.update(t, r.bundle(t, "3.0", 'M', 100, testKey))
	if err != nil {
		t.Fatal(err)
	}
	if e.File != "appliance-a+1.conf" || e.Generation != 3 {
		t.Errorf("entry %+v: want appliance-a+1.conf, generation 3", e)
	}
	if _, err := os.Stat(filepath.Join(r.l.entriesDir(), "appliance-a.conf")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("slot a's old entry is still there: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(r.l.Boot, "a", "initrd.img")); string(b) != "initrd 3.0" {
		t.Errorf("a/initrd.img = %q, want the new one", b)
	}
	if left, _ := filepath.Glob(filepath.Join(r.l.Boot, "*", "*.new")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// Every refusal comes before any write: the slots and the boot partition
// are byte for byte as before.
func TestUpdateRefusedBeforeAnyWrite(t *testing.T) {
	r := newRig(t, "a")
	good := r.bundle(t, "2.0", 'N', 4096, testKey)
	data, _ := os.ReadFile(good)
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	lastByte := append([]byte{}, data...)
	lastByte[len(lastByte)-1] ^= 1
	firstPart := append([]byte{}, data...)
	firstPart[len(data)-4096-len("kernel 2.0")-len("initrd 2.0")] ^= 1
	variants := map[string][]byte{
		"the last byte of the last part": lastByte,
		"the first byte of the root":     firstPart,
		"cut short":                      data[:len(data)-1],
		"a byte more":                    append(append([]byte{}, data...), 0),
		"not a bundle":                   []byte("hello"),
	}
	want := map[string]string{
		"the last byte of the last part": "part initrd: SHA-256",
		"the first byte of the root":     "part rootfs: SHA-256",
		"cut short":                      "cut short",
		"a byte more":                    "data after the last part",
		"not a bundle":                   "not an update bundle",
	}
	before := r.snapshot(t)
	for name, b := range variants {
		p := filepath.Join(r.dir, "bad.bundle")
		r.write(t, p, string(b))
		if _, err := r.update(t, p); err == nil || !strings.Contains(err.Error(), want[name]) {
			t.Errorf("%s: %v, want an error saying %q", name, err, want[name])
		}
	}
	if _, err := r.update(t, r.bundle(t, "2.1", 'N', 4096, other)); !errors.Is(err, ErrSignature) {
		t.Errorf("signed by another key: %v, want ErrSignature", err)
	}
	if _, err := r.update(t, r.bundle(t, "2.2", 'N', slotSize+1, testKey)); err == nil || !strings.Contains(err.Error(), "larger disk") {
		t.Errorf("a root image larger than the slot: %v", err)
	}
	after := r.snapshot(t)
	for p, b := range before {
		if after[p] != b {
			t.Errorf("%s was written by a refused update", p)
		}
	}
	if len(after) != len(before) {
		t.Errorf("files before %d, after %d: a refused update wrote one", len(before), len(after))
	}
}

// A bundle that changes between the check and the write writes nothing of
// its own: the write pass reads the manifest again and compares.
func TestUpdateBundleChangedAfterCheck(t *testing.T) {
	r := newRig(t, "a")
	src, _ := SourceFor(r.bundle(t, "2.0", 'N', 4096, testKey))
	_, signed, err := Check(context.Background(), src, pub(), r.l, nil)
	if err != nil {
		t.Fatal(err)
	}
	src, _ = SourceFor(r.bundle(t, "2.0x", 'X', 4096, testKey))
	if _, err := Write(context.Background(), src, pub(), r.l, signed, nil); err == nil || !strings.Contains(err.Error(), "changed between") {
		t.Errorf("a bundle swapped after its check: %v", err)
	}
	// Changed in a part: the write pass's own hash stops it before the entry.
	bad, _ := os.ReadFile(r.bundle(t, "2.0", 'N', 4096, testKey))
	bad[len(bad)-1] ^= 1
	p := filepath.Join(r.dir, "bad.bundle")
	r.write(t, p, string(bad))
	src, _ = SourceFor(p)
	if _, err := Write(context.Background(), src, pub(), r.l, signed, nil); !errors.Is(err, ErrHash) {
		t.Errorf("a part changed after the check: %v, want ErrHash", err)
	}
	entries, _ := r.l.Entries()
	if _, ok := entries["b"]; ok {
		t.Errorf("slot b has an entry after a failed write: %+v", entries["b"])
	}
}

func TestEntryNames(t *testing.T) {
	for name, want := range map[string]Entry{
		"appliance-a.conf":        {Slot: "a", File: "appliance-a.conf"},
		"appliance-b+1.conf":      {Slot: "b", File: "appliance-b+1.conf", Counted: true, Left: 1},
		"appliance-b+0-1.conf":    {Slot: "b", File: "appliance-b+0-1.conf", Counted: true, Done: 1},
		"appliance-a+2-13.conf":   {Slot: "a", File: "appliance-a+2-13.conf", Counted: true, Left: 2, Done: 13},
		"appliance-c.conf":        {},
		"appliance-a.conf.new":    {},
		".appliance-a+1.conf.new": {},
		"other.conf":              {},
		"appliance-a+x.conf":      {},
	} {
		got, ok := ParseEntryName(name)
		if ok != (want.Slot != "") || got != want {
			t.Errorf("%s: %+v %v, want %+v", name, got, ok, want)
		}
	}
	if e, _ := ParseEntryName("appliance-b+0-1.conf"); !e.Bad() || e.Committed() {
		t.Errorf("+0-1 is bad: %+v", e)
	}
	if EntryName("b", Tries) != "appliance-b+1.conf" || EntryName("a", -1) != "appliance-a.conf" {
		t.Errorf("EntryName: %s %s", EntryName("b", Tries), EntryName("a", -1))
	}
}

func TestResolve(t *testing.T) {
	now := time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC)
	trial := Record{Version: "2.0", Slot: "b", From: "a", FromVersion: "1.0", Outcome: Trial}
	committedB := map[string]Entry{"a": {Slot: "a"}, "b": {Slot: "b"}}
	onTrial := map[string]Entry{"a": {Slot: "a"}, "b": {Slot: "b", Counted: true, Done: 1}}
	pending := map[string]Entry{"a": {Slot: "a"}, "b": {Slot: "b", Counted: true, Left: 1}}
	note := TrialNote{Slot: "b", Version: "2.0", Note: "appliance.service failed (failed), result exit-code, exit status 1"}
	for _, tc := range []struct {
		name     string
		rec      Record
		running  string
		entries  map[string]Entry
		note     bool
		outcome  string
		changed  bool
		judge    bool
		inReason string
	}{
		{"trial running", trial, "b", onTrial, false, Trial, false, true, ""},
		{"committed", trial, "b", committedB, false, Committed, true, false, ""},
		{"written, not yet booted", trial, "a", pending, false, Trial, false, false, ""},
		{"rolled back, with the trial's note", trial, "a", onTrial, true, RolledBack, true, false, "exit status 1"},
		{"rolled back, nothing heard", trial, "a", onTrial, false, RolledBack, true, false, "nothing was heard"},
		{"interrupted", Record{Slot: "b", From: "a", Outcome: Writing}, "a", map[string]Entry{"a": {Slot: "a"}}, false, Interrupted, true, false, "while slot b was being written"},
		{"restarted while checking", Record{Slot: "b", From: "a", Outcome: Checking}, "a", map[string]Entry{"a": {Slot: "a"}}, false, Failed, true, false, "while the bundle was being checked"},
		{"settled", Record{Slot: "b", From: "a", Outcome: Committed}, "b", committedB, false, Committed, false, false, ""},
	} {
		got, changed, judge := Resolve(tc.rec, tc.running, tc.entries, note, tc.note, now)
		if got.Outcome != tc.outcome || changed != tc.changed || judge != tc.judge || !strings.Contains(got.Reason, tc.inReason) {
			t.Errorf("%s: %+v changed %v judge %v, want %s changed %v judge %v, reason with %q", tc.name, got, changed, judge, tc.outcome, tc.changed, tc.judge, tc.inReason)
		}
		if changed && !got.Finished.Equal(now) {
			t.Errorf("%s: finished %v", tc.name, got.Finished)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, ok, err := ReadRecord(dir); ok || err != nil {
		t.Fatalf("no record: %v %v", ok, err)
	}
	r := Record{Version: "2.0", Slot: "b", From: "a", Outcome: RolledBack, Reason: "why", Started: time.Unix(1, 0).UTC()}
	if err := WriteRecord(dir, r); err != nil {
		t.Fatal(err)
	}
	got, ok, err := ReadRecord(dir)
	if !ok || err != nil || got != r {
		t.Errorf("read back %+v %v %v, want %+v", got, ok, err, r)
	}
	if err := os.WriteFile(filepath.Join(dir, RecordFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := ReadRecord(dir); ok || err == nil {
		t.Errorf("a damaged record: %v %v, want an error", ok, err)
	}
}

// FuzzReadHeader: a bundle's header and parts are outside bytes.
func FuzzReadHeader(f *testing.F) {
	dir := f.TempDir()
	files := map[string]string{}
	for _, name := range []string{"rootfs", "vmlinuz", "initrd"} {
		files[name] = filepath.Join(dir, name)
		if err := os.WriteFile(files[name], []byte(name), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	var good bytes.Buffer
	if err := WriteBundle(&good, "1.0", []string{"rootfs", "vmlinuz", "initrd"}, files, testKey); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:40])
	f.Add([]byte(magic + "\x00\x00\x00\x02{}"))
	f.Add([]byte(magic + "\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		m, _, err := ReadHeader(r, pub())
		if err != nil {
			return
		}
		if m.Check() != nil {
			t.Fatalf("ReadHeader passed a manifest Check refuses: %+v", m)
		}
		_ = CheckParts(r, m, nil)
	})
}

func FuzzEntry(f *testing.F) {
	f.Add("appliance-b+1.conf", string(EntryBody("b", "1.0", 2, "root=PARTUUID=x appliance.slot=b")))
	f.Add("appliance-a.conf", "version x-1\n")
	f.Fuzz(func(t *testing.T, name, body string) {
		e, ok := ParseEntryName(name)
		if !ok {
			return
		}
		if err := ParseEntry(&e, []byte(body)); err == nil && e.Version == "" {
			t.Fatalf("an entry without a version passed: %+v", e)
		}
	})
}
