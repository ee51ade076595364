package update

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Slots are "a" and "b". Each has a root partition, a directory on the
// boot partition (/a, /b: its kernel and initrd) and a boot entry,
// loader/entries/appliance-SLOT[+LEFT[-DONE]].conf, read by systemd-boot.
// The counter in the name is systemd-boot's automatic boot assessment: an
// entry with LEFT tries is booted and renamed with one try fewer; an entry
// with 0 left is "bad" and sorted last, so the other slot boots. No
// counter: the slot is committed.
var Slots = []string{"a", "b"}

// Tries is how many boots a new slot is given to prove itself. One: a
// trial boot that fails for any reason (a power cut included) goes back to
// the old slot; the update can then be run again.
const Tries = 1

// Layout is where a unit keeps its slots. The image's is in
// cmd/appliance; tests use files and temporary directories.
type Layout struct {
	Boot     string            // the boot partition, mounted (/boot)
	Devices  map[string]string // slot -> its root partition (/dev/disk/by-partlabel/root-a)
	PartUUID map[string]string // slot -> its partition's GUID, for root=PARTUUID=
	Cmdline  string            // /proc/cmdline: appliance.slot= says which slot runs
	State    string            // the data partition's state directory (the update record)
}

// Entry is one slot's boot entry.
type Entry struct {
	Slot string
	File string // the file name in loader/entries
	// Counted: the entry is on trial; Left tries remain, Done were used.
	Counted    bool
	Left, Done int
	Generation int    // the entries' order: the highest good one boots
	Version    string // the image version it boots
	Options    string // its kernel command line
}

// Committed is true for an entry without a boot counter.
func (e Entry) Committed() bool { return !e.Counted }

// Bad is true for an entry whose tries are used up: systemd-boot boots it
// only when nothing else is left.
func (e Entry) Bad() bool { return e.Counted && e.Left == 0 }

var entryName = regexp.MustCompile(`^appliance-([ab])(?:\+([0-9]{1,3})(?:-([0-9]{1,3}))?)?\.conf$`)

// EntryName is the file name of slot's entry with tries left (and none
// used), or without a counter when tries < 0.
func EntryName(slot string, tries int) string {
	if tries < 0 {
		return "appliance-" + slot + ".conf"
	}
	return fmt.Sprintf("appliance-%s+%d.conf", slot, tries)
}

// ParseEntryName reads a boot entry's file name; ok is false for a file
// that is not a slot's entry.
func ParseEntryName(name string) (e Entry, ok bool) {
	m := entryName.FindStringSubmatch(name)
	if m == nil {
		return Entry{}, false
	}
	e = Entry{Slot: m[1], File: name}
	if m[2] != "" {
		e.Counted = true
		e.Left, _ = strconv.Atoi(m[2])
		if m[3] != "" {
			e.Done, _ = strconv.Atoi(m[3])
		}
	}
	return e, true
}

// maxEntry bounds an entry file read from the boot partition.
const maxEntry = 8 << 10

// ParseEntry reads an entry's body: version "GENERATION-VERSION" and options.
func ParseEntry(e *Entry, body []byte) error {
	if len(body) > maxEntry {
		return fmt.Errorf("%s: %d bytes, more than %d: not an entry the appliance wrote", e.File, len(body), maxEntry)
	}
	for _, line := range strings.Split(string(body), "\n") {
		key, val, _ := strings.Cut(strings.TrimSpace(line), " ")
		val = strings.TrimSpace(val)
		switch key {
		case "version":
			gen, ver, ok := strings.Cut(val, "-")
			n, err := strconv.Atoi(gen)
			if !ok || err != nil || n < 0 {
				return fmt.Errorf("%s: version %q: want GENERATION-VERSION", e.File, val)
			}
			e.Generation, e.Version = n, ver
		case "options":
			e.Options = val
		}
	}
	if e.Version == "" {
		return fmt.Errorf("%s: no version line", e.File)
	}
	return nil
}

// EntryBody is the boot entry for slot at generation gen.
func EntryBody(slot, version string, gen int, options string) []byte {
	return []byte(fmt.Sprintf(`title appliance %s (slot %s)
sort-key appliance
version %d-%s
linux /%s/vmlinuz
initrd /%s/initrd.img
options %s
`, version, strings.ToUpper(slot), gen, version, slot, slot, options))
}

func (l Layout) entriesDir() string { return filepath.Join(l.Boot, "loader", "entries") }

// Entries reads the slots' boot entries, by slot. A slot may have none
// (never written, or being written).
func (l Layout) Entries() (map[string]Entry, error) {
	des, err := os.ReadDir(l.entriesDir())
	if err != nil {
		return nil, fmt.Errorf("boot entries: %w (is the boot partition mounted at %s?)", err, l.Boot)
	}
	out := map[string]Entry{}
	for _, de := range des {
		e, ok := ParseEntryName(de.Name())
		if !ok {
			continue
		}
		body, err := os.ReadFile(filepath.Join(l.entriesDir(), de.Name()))
		if err != nil {
			return nil, err
		}
		if err := ParseEntry(&e, body); err != nil {
			return nil, err
		}
		if old, dup := out[e.Slot]; dup {
			return nil, fmt.Errorf("boot entries: slot %s has two, %s and %s: remove the one that is not booted", e.Slot, old.File, e.File)
		}
		out[e.Slot] = e
	}
	return out, nil
}

// Running is the slot the unit booted, from appliance.slot= on the kernel
// command line.
func (l Layout) Running() (string, error) {
	b, err := os.ReadFile(l.Cmdline)
	if err != nil {
		return "", err
	}
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, "appliance.slot="); ok && slices.Contains(Slots, v) {
			return v, nil
		}
	}
	return "", errors.New("the kernel command line names no appliance.slot: this unit was not booted from an appliance image's entry")
}

// Other is the slot that is not s.
func Other(s string) string {
	if s == "a" {
		return "b"
	}
	return "a"
}

// Bless commits the running slot after a healthy trial boot: its entry
// loses its counter, so systemd-boot boots it from now on (it has the
// highest generation). It is what systemd-bless-boot does, done by the
// appliance, which is the one that knows the unit is healthy.
func (l Layout) Bless(e Entry) error {
	if !e.Counted {
		return nil
	}
	dir := l.entriesDir()
	if err := os.Rename(filepath.Join(dir, e.File), filepath.Join(dir, EntryName(e.Slot, -1))); err != nil {
		return fmt.Errorf("committing slot %s: %w", e.Slot, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
