package update

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
)

// Check is an update's first pass, before anything is written: the
// bundle's signature against pub, that it fits the slot that is not
// running, then every part's size and SHA-256, reading the whole bundle.
// It returns the manifest and its signed bytes, which Write wants.
func Check(ctx context.Context, src Source, pub ed25519.PublicKey, l Layout, progress func(int64)) (Manifest, []byte, error) {
	running, err := l.Running()
	if err != nil {
		return Manifest{}, nil, err
	}
	target := Other(running)
	rc, err := src.Open(ctx)
	if err != nil {
		return Manifest{}, nil, fmt.Errorf("reading the bundle: %w", err)
	}
	defer rc.Close()
	m, signed, err := ReadHeader(rc, pub)
	if err != nil {
		return Manifest{}, nil, err
	}
	if err := fits(l, target, m); err != nil {
		return Manifest{}, nil, err
	}
	if err := CheckParts(rc, m, progress); err != nil {
		return Manifest{}, nil, fmt.Errorf("%w; nothing was written", err)
	}
	return m, signed, nil
}

// fits checks that the root image fits the target slot's partition, and
// that the partition is not the running root.
func fits(l Layout, target string, m Manifest) error {
	dev := l.Devices[target]
	f, err := os.Open(dev)
	if err != nil {
		return fmt.Errorf("slot %s: %w", target, err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("slot %s: %w", target, err)
	}
	for _, p := range m.Parts {
		if p.Name == "rootfs" && p.Size > size {
			return fmt.Errorf("the root image is %d bytes, slot %s's partition %d: the bundle is for a larger disk layout; nothing was written", p.Size, target, size)
		}
	}
	if mounted(f) {
		return fmt.Errorf("slot %s (%s) is the mounted root: the kernel command line and the mounts disagree; nothing was written", target, dev)
	}
	return nil
}

// mounted is true when f is the block device / is on.
func mounted(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeDevice == 0 {
		return false
	}
	var root syscall.Stat_t
	if syscall.Stat("/", &root) != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Rdev == root.Dev
}

// Write is an update's second pass: it reads the bundle again (it must be
// the one Check read: the same signed manifest) and writes the slot that
// is not running: first its boot entry goes, so that a half-written slot
// can never be booted; then the root image, hashed again as it is written,
// and synced; the kernel and initrd to the slot's directory on the boot
// partition; and last the slot's new entry, with a boot counter and the
// highest generation, so that the next boot tries it once. A power cut at
// any point before that last rename leaves the running slot the only one
// to boot.
func Write(ctx context.Context, src Source, pub ed25519.PublicKey, l Layout, signed []byte, progress func(int64)) (Entry, error) {
	running, err := l.Running()
	if err != nil {
		return Entry{}, err
	}
	target := Other(running)
	entries, err := l.Entries()
	if err != nil {
		return Entry{}, err
	}
	cur, ok := entries[running]
	if !ok {
		return Entry{}, fmt.Errorf("slot %s runs but has no boot entry in %s: nothing was written", running, l.entriesDir())
	}
	rc, err := src.Open(ctx)
	if err != nil {
		return Entry{}, fmt.Errorf("reading the bundle again: %w", err)
	}
	defer rc.Close()
	m, again, err := ReadHeader(rc, pub)
	if err != nil {
		return Entry{}, err
	}
	if !bytes.Equal(signed, again) {
		return Entry{}, errors.New("the bundle changed between its check and its write: nothing was written; run the update again")
	}

	if old, ok := entries[target]; ok {
		if err := os.Remove(filepath.Join(l.entriesDir(), old.File)); err != nil {
			return Entry{}, fmt.Errorf("removing slot %s's old entry: %w", target, err)
		}
		if err := syncDir(l.entriesDir()); err != nil {
			return Entry{}, err
		}
	}
	// Its kernel and initrd go too, now that nothing boots them: the boot
	// partition holds two slots' worth, not three.
	for _, name := range []string{"vmlinuz", "initrd.img", "vmlinuz.new", "initrd.img.new"} {
		if err := os.Remove(filepath.Join(l.Boot, target, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return Entry{}, fmt.Errorf("removing slot %s's old %s: %w", target, name, err)
		}
	}
	for _, p := range m.Parts {
		var err error
		switch p.Name {
		case "rootfs":
			err = writeDevice(l.Devices[target], rc, p, progress)
		case "vmlinuz":
			err = writeBootFile(filepath.Join(l.Boot, target), "vmlinuz", rc, p, progress)
		case "initrd":
			err = writeBootFile(filepath.Join(l.Boot, target), "initrd.img", rc, p, progress)
		}
		if err != nil {
			return Entry{}, fmt.Errorf("writing slot %s: %w; slot %s still runs and stays the one that boots", target, err, running)
		}
	}
	gen := cur.Generation
	for _, e := range entries {
		gen = max(gen, e.Generation)
	}
	opts, err := slotOptions(cur.Options, target, l.PartUUID[target])
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Slot: target, File: EntryName(target, Tries), Counted: true, Left: Tries,
		Generation: gen + 1, Version: m.Version, Options: opts}
	if err := writeBoot(l.entriesDir(), e.File, bytes.NewReader(EntryBody(target, m.Version, e.Generation, opts))); err != nil {
		return Entry{}, fmt.Errorf("writing slot %s's boot entry: %w", target, err)
	}
	return e, nil
}

var (
	rootOpt = regexp.MustCompile(`(^|\s)root=\S+`)
	slotOpt = regexp.MustCompile(`(^|\s)appliance\.slot=\S+`)
)

// slotOptions is the running entry's kernel command line for the other slot.
func slotOptions(opts, slot, partuuid string) (string, error) {
	if partuuid == "" {
		return "", fmt.Errorf("slot %s: its partition's GUID is unknown: nothing was written", slot)
	}
	if !rootOpt.MatchString(opts) || !slotOpt.MatchString(opts) {
		return "", fmt.Errorf("the running entry's options %q carry no root= and appliance.slot=: nothing was written", opts)
	}
	opts = rootOpt.ReplaceAllString(opts, "${1}root=PARTUUID="+partuuid)
	return slotOpt.ReplaceAllString(opts, "${1}appliance.slot="+slot), nil
}

func writeDevice(dev string, r io.Reader, p Part, progress func(int64)) error {
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := copyPart(f, r, p, progress); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeBootFile writes part p as dir/name, through a temporary file
// renamed into place once complete and synced.
func writeBootFile(dir, name string, r io.Reader, p Part, progress func(int64)) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return replaceFile(dir, name+".new", name, func(w io.Writer) error { return copyPart(w, r, p, progress) })
}

// writeBoot writes a small file on the boot partition: a temporary file,
// synced, renamed into place. (FAT keeps no modes: no chmod.)
func writeBoot(dir, name string, r io.Reader) error {
	return replaceFile(dir, "."+name+".new", name, func(w io.Writer) error {
		_, err := io.Copy(w, r)
		return err
	})
}

// replaceFile writes dir/name through dir/tmp: filled by write, synced,
// renamed into place, the directory synced. On failure the temporary file
// is removed and dir/name is as it was.
func replaceFile(dir, tmp, name string, write func(io.Writer) error) error {
	path := filepath.Join(dir, tmp)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(path, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(path)
		return err
	}
	return syncDir(dir)
}
