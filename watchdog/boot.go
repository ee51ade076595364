package watchdog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// BootRecord is what the unit remembers across boots, in <state dir>/boot.json.
type BootRecord struct {
	BootCount       int       `json:"boot_count"`
	LastResetReason string    `json:"last_reset_reason"`
	LastBoot        time.Time `json:"last_boot"`
	// CleanStop is false while the appliance runs and set by a deliberate
	// stop, so the next boot can tell an orderly stop from a power loss.
	CleanStop bool `json:"clean_stop"`
}

// Reasons for the last reset, in BootRecord.LastResetReason.
const (
	ReasonWatchdog  = "watchdog"   // the hardware watchdog reset the box
	ReasonClean     = "clean"      // the appliance stopped deliberately before this boot
	ReasonUnknown   = "unknown"    // power loss, a kill, a crash of the box, or a lost record
	ReasonFirstBoot = "first boot" // no record yet
)

// ErrCorruptState is wrapped by the error RecordBoot returns when boot.json
// could not be parsed. That error is a warning: the record returned with it
// is valid and saved, the bad file is kept beside it, and the count started
// again, so the caller should log it loudly and carry on.
var ErrCorruptState = errors.New("boot record corrupt")

const (
	bootFile     = "boot.json"
	corruptFile  = bootFile + ".corrupt"
	stateDirPerm = 0o750
	bootFilePerm = 0o640
)

// RecordBoot counts this boot in stateDir and says why the last one ended.
// bootStatus is the device's WDIOC_GETBOOTSTATUS and counts only if
// haveDevice: CardReset set means the watchdog reset the box. Otherwise the
// previous record's CleanStop decides between "clean" and "unknown". The new
// record, with CleanStop false until MarkCleanStop, is written before
// RecordBoot returns.
//
// A boot.json that cannot be parsed is renamed to boot.json.corrupt and the
// count restarts at 1; the error then wraps ErrCorruptState and the record is
// still good. Any other error means nothing was recorded.
func RecordBoot(stateDir string, bootStatus uint32, haveDevice bool, now time.Time) (BootRecord, error) {
	if err := os.MkdirAll(stateDir, stateDirPerm); err != nil {
		return BootRecord{}, fmt.Errorf("creating the state directory: %w", err)
	}
	path := filepath.Join(stateDir, bootFile)
	prev, found, corrupt := BootRecord{}, false, error(nil)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return BootRecord{}, fmt.Errorf("reading the boot record: %w", err)
	default:
		if prev, err = parseBootRecord(data); err != nil {
			keep := filepath.Join(stateDir, corruptFile)
			if rerr := os.Rename(path, keep); rerr != nil {
				return BootRecord{}, fmt.Errorf("boot record %s is corrupt (%v) and could not be set aside: %w", path, err, rerr)
			}
			corrupt = fmt.Errorf("%w: %s: %v; kept it as %s and started the boot count again at 1", ErrCorruptState, path, err, keep)
			prev = BootRecord{}
		} else {
			found = true
		}
	}

	rec := BootRecord{BootCount: prev.BootCount + 1, LastBoot: now.Round(0)}
	switch {
	case haveDevice && bootStatus&CardReset != 0:
		rec.LastResetReason = ReasonWatchdog
	case found && prev.CleanStop:
		rec.LastResetReason = ReasonClean
	case found || corrupt != nil:
		rec.LastResetReason = ReasonUnknown
	default:
		rec.LastResetReason = ReasonFirstBoot
	}
	if err := writeBootRecord(stateDir, rec); err != nil {
		return BootRecord{}, err
	}
	return rec, corrupt
}

// MarkCleanStop records that the appliance is stopping deliberately. With no
// record yet it writes one; a corrupt one is left for RecordBoot to set aside.
func MarkCleanStop(stateDir string) error {
	path := filepath.Join(stateDir, bootFile)
	var rec BootRecord
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(stateDir, stateDirPerm); err != nil {
			return fmt.Errorf("creating the state directory: %w", err)
		}
	case err != nil:
		return fmt.Errorf("reading the boot record: %w", err)
	default:
		if rec, err = parseBootRecord(data); err != nil {
			return fmt.Errorf("marking a clean stop: %w: %s: %v", ErrCorruptState, path, err)
		}
	}
	rec.CleanStop = true
	return writeBootRecord(stateDir, rec)
}

// parseBootRecord decodes boot.json: one JSON object with a boot count that
// is present and not negative. Unknown fields are ignored so that a
// downgrade does not throw the count away.
func parseBootRecord(data []byte) (BootRecord, error) {
	var raw struct {
		BootCount       *int      `json:"boot_count"`
		LastResetReason string    `json:"last_reset_reason"`
		LastBoot        time.Time `json:"last_boot"`
		CleanStop       bool      `json:"clean_stop"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return BootRecord{}, fmt.Errorf("not a JSON object: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return BootRecord{}, errors.New("data after the JSON object")
	}
	if raw.BootCount == nil {
		return BootRecord{}, errors.New("boot_count is missing")
	}
	if *raw.BootCount < 0 {
		return BootRecord{}, fmt.Errorf("boot_count %d is negative", *raw.BootCount)
	}
	return BootRecord{
		BootCount:       *raw.BootCount,
		LastResetReason: raw.LastResetReason,
		LastBoot:        raw.LastBoot,
		CleanStop:       raw.CleanStop,
	}, nil
}

func writeBootRecord(dir string, rec BootRecord) error {
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the boot record: %w", err)
	}
	if err := writeFileAtomic(dir, bootFile, append(data, '\n'), bootFilePerm); err != nil {
		return fmt.Errorf("writing the boot record: %w", err)
	}
	return nil
}

// writeFileAtomic replaces dir/name so that after a power loss at any moment
// the file is either the old one or the new one: a temporary file in the same
// directory is written and synced, renamed over the old one, and the
// directory synced so that the rename itself is durable.
func writeFileAtomic(dir, name string, data []byte, perm fs.FileMode) (err error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
