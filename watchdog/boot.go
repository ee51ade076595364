package watchdog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"appliance/internal/atomicfile"
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
// is valid, the bad file is kept beside it, and the count started again, so
// the caller should log it loudly and carry on.
var ErrCorruptState = errors.New("boot record corrupt")

// ErrUnwritable is wrapped by the error RecordBoot, SaveBootRecord and
// MarkCleanStop return when the record could not be saved (a full or
// read-only disk). From RecordBoot the record returned with it is still
// valid and counts this boot; the caller reports it and retries with
// SaveBootRecord until that succeeds.
var ErrUnwritable = errors.New("boot record not saved")

const (
	bootFile     = "boot.json"
	corruptFile  = bootFile + ".corrupt" // kept copies are corruptFile.1 (newest) to .keepCorrupt
	keepCorrupt  = 3
	stateDirPerm = 0o750
	bootFilePerm = 0o640

	// recordSize is the size every record is padded to, so that a later
	// record always fits over an earlier one when the disk is too full for
	// a new file, and one disk sector, which most disks write whole. The
	// longest record is about 200 bytes.
	recordSize = 512
	// maxRecordRead bounds what is read of boot.json: anything larger is
	// not a record, and a bad disk must not make the unit read gigabytes.
	maxRecordRead = 64 << 10
)

// bootMu serialises the boot record functions within the process: the
// keeper's clean stop and the caller's retries of SaveBootRecord may run at
// the same time, and each reads the file before it writes it.
var bootMu sync.Mutex

// RecordBoot counts this boot in stateDir and says why the last one ended.
// bootStatus is the device's WDIOC_GETBOOTSTATUS and counts only if
// haveDevice: CardReset set means the watchdog reset the box. Otherwise the
// previous record's CleanStop decides between "clean" and "unknown". The new
// record, with CleanStop false ("running") until MarkCleanStop, is written
// before RecordBoot returns, so that a crash from here on is never taken for
// a clean stop; call it before the appliance does anything else.
//
// A boot.json that cannot be parsed is moved to boot.json.corrupt.1 (earlier
// copies move up to .2 and .3; the oldest beyond that is dropped) and the
// count restarts at 1; the error then wraps ErrCorruptState. If the new
// record cannot be saved the error wraps ErrUnwritable. With either, the
// record returned is valid and counts this boot. Only when boot.json cannot
// be read at all (an I/O error, a state directory that is not a directory)
// is the record empty and the error wraps neither.
func RecordBoot(stateDir string, bootStatus uint32, haveDevice bool, now time.Time) (BootRecord, error) {
	bootMu.Lock()
	defer bootMu.Unlock()
	removeStaleTemps(stateDir)
	prev, found, bad, err := loadRecord(stateDir)
	if err != nil {
		return BootRecord{}, err
	}
	var warn error
	if bad != nil {
		path := filepath.Join(stateDir, bootFile)
		keep, serr := setAsideCorrupt(stateDir)
		if serr != nil {
			// Writing over the bad file would destroy the only evidence of
			// what happened. Left as it is, it still reads as corrupt next
			// boot (reason unknown), never as a clean stop.
			rec := nextRecord(BootRecord{}, false, true, bootStatus, haveDevice, now)
			return rec, fmt.Errorf("%w: %s: %v; %w: it could not be moved aside (%v), so it is left in place: free space or fix the file system holding %s, the appliance keeps retrying",
				ErrCorruptState, path, bad, ErrUnwritable, serr, stateDir)
		}
		warn = fmt.Errorf("%w: %s: %v; kept it as %s and started the boot count again at 1", ErrCorruptState, path, bad, keep)
	}
	rec := nextRecord(prev, found, bad != nil, bootStatus, haveDevice, now)
	if err := saveRecord(stateDir, rec, found && prev.CleanStop); err != nil {
		if warn != nil {
			return rec, fmt.Errorf("%w; and %w", warn, err)
		}
		return rec, err
	}
	return rec, warn
}

// nextRecord is this boot's record after prev, which was found on disk,
// or corrupt, or neither.
func nextRecord(prev BootRecord, found, corrupt bool, bootStatus uint32, haveDevice bool, now time.Time) BootRecord {
	rec := BootRecord{BootCount: math.MaxInt, LastBoot: now.Round(0)}
	if prev.BootCount < math.MaxInt {
		rec.BootCount = prev.BootCount + 1
	}
	switch {
	case haveDevice && bootStatus&CardReset != 0:
		rec.LastResetReason = ReasonWatchdog
	case found && prev.CleanStop:
		rec.LastResetReason = ReasonClean
	case found || corrupt:
		rec.LastResetReason = ReasonUnknown
	default:
		rec.LastResetReason = ReasonFirstBoot
	}
	return rec
}

// SaveBootRecord writes rec, the record RecordBoot returned with an error
// wrapping ErrUnwritable, once the disk lets it. Call it again while it
// returns an error wrapping ErrUnwritable. A clean stop already recorded for
// the same boot is kept, so a late retry cannot undo MarkCleanStop; a corrupt
// boot.json is kept aside first, as RecordBoot does.
func SaveBootRecord(stateDir string, rec BootRecord) error {
	bootMu.Lock()
	defer bootMu.Unlock()
	cur, found, bad, err := loadRecord(stateDir)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnwritable, err)
	}
	if bad != nil {
		if _, err := setAsideCorrupt(stateDir); err != nil {
			return fmt.Errorf("%w: %s is corrupt (%v) and could not be moved aside: %v; free space or fix the file system holding %s",
				ErrUnwritable, filepath.Join(stateDir, bootFile), bad, err, stateDir)
		}
	}
	if found && cur.CleanStop && cur.BootCount == rec.BootCount && cur.LastBoot.Equal(rec.LastBoot) {
		rec.CleanStop = true
	}
	return saveRecord(stateDir, rec, found && cur.CleanStop)
}

// MarkCleanStop records that the appliance is stopping deliberately. With no
// record yet it writes one; a corrupt one is left for RecordBoot to set aside.
func MarkCleanStop(stateDir string) error {
	bootMu.Lock()
	defer bootMu.Unlock()
	rec, _, bad, err := loadRecord(stateDir)
	if err != nil {
		return err
	}
	if bad != nil {
		return fmt.Errorf("marking a clean stop: %w: %s: %v", ErrCorruptState, filepath.Join(stateDir, bootFile), bad)
	}
	rec.CleanStop = true
	return saveRecord(stateDir, rec, false)
}

// loadRecord reads stateDir/boot.json. A missing file is found == false; a
// file that is not a record comes back as bad; err is for a file that could
// not be read at all.
func loadRecord(stateDir string) (rec BootRecord, found bool, bad, err error) {
	path := filepath.Join(stateDir, bootFile)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return BootRecord{}, false, nil, nil
	}
	if err != nil {
		return BootRecord{}, false, nil, fmt.Errorf("reading the boot record: %w; check the state directory %s (unit: state_dir)", err, stateDir)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRecordRead+1))
	if err != nil {
		return BootRecord{}, false, nil, fmt.Errorf("reading the boot record %s: %w; check the disk", path, err)
	}
	if len(data) > maxRecordRead {
		return BootRecord{}, false, fmt.Errorf("larger than %d bytes", maxRecordRead), nil
	}
	if rec, err = parseBootRecord(data); err != nil {
		return BootRecord{}, false, err, nil
	}
	return rec, true, nil, nil
}

// parseBootRecord decodes boot.json: one JSON object with a boot count that
// is present and not negative, and nothing but white space after it (the
// padding). Unknown fields are ignored so that a downgrade does not throw
// the count away. A record with a check_v1 must match it; one without (from
// an older release) is taken as it is.
func parseBootRecord(data []byte) (BootRecord, error) {
	var raw struct {
		BootCount       *int      `json:"boot_count"`
		LastResetReason string    `json:"last_reset_reason"`
		LastBoot        time.Time `json:"last_boot"`
		CleanStop       bool      `json:"clean_stop"`
		Check           *string   `json:"check_v1"`
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
	rec := BootRecord{
		BootCount:       *raw.BootCount,
		LastResetReason: raw.LastResetReason,
		LastBoot:        raw.LastBoot,
		CleanStop:       raw.CleanStop,
	}
	if raw.Check != nil {
		want, err := recordCheck(rec)
		if err != nil {
			return BootRecord{}, err
		}
		if *raw.Check != want {
			return BootRecord{}, errors.New("check_v1 does not match the record: a write was torn, or the file was edited by hand (remove check_v1 when editing it)")
		}
	}
	return rec, nil
}

// diskRecord is a BootRecord as written, with a check of its fields.
//
// The check is what makes an in-place write safe. Sixteen bytes of a new
// record over an old one can leave the old clean_stop true beneath the new
// count, and that mix is valid JSON; with the check it is corrupt instead.
// It covers the four fields only, so a newer release that adds fields must
// write a check of its own under another name, which this one ignores.
type diskRecord struct {
	BootRecord
	Check string `json:"check_v1"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recordCheck is the CRC-32C of rec's compact JSON, in hex.
func recordCheck(rec BootRecord) (string, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return "", fmt.Errorf("encoding the boot record: %w", err)
	}
	return fmt.Sprintf("%08x", crc32.Checksum(b, castagnoli)), nil
}

var errNoRoom = errors.New("the record does not fit")

// encodeRecord encodes rec padded with white space to exactly size bytes,
// in the first form that fits: indented with its check, for people; compact
// with its check; compact without, as older releases wrote it, which is
// only needed to go over their shorter records on a full disk. None fitting
// is errNoRoom.
func encodeRecord(rec BootRecord, size int) ([]byte, error) {
	check, err := recordCheck(rec)
	if err != nil {
		return nil, err
	}
	d := diskRecord{rec, check}
	indented, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	// Neither can fail where MarshalIndent did not.
	compact, _ := json.Marshal(d)
	plain, _ := json.Marshal(rec)
	for _, form := range [][]byte{indented, compact, plain} {
		if len(form) >= size {
			continue // and one byte for the newline
		}
		data := make([]byte, size)
		copy(data, form)
		for i := len(form); i < size-1; i++ {
			data[i] = ' '
		}
		data[len(form)] = '\n'
		data[size-1] = '\n'
		return data, nil
	}
	return nil, fmt.Errorf("%w in %d bytes", errNoRoom, size)
}

// saveRecord writes rec as stateDir/boot.json. staleClean says the record
// now on disk claims a clean stop, so that leaving it there would make the
// next boot call a crash clean.
func saveRecord(stateDir string, rec BootRecord, staleClean bool) error {
	data, err := encodeRecord(rec, recordSize)
	if errors.Is(err, errNoRoom) {
		// Only a record this release did not write (a hand edit, a long
		// reason from a newer release, kept by MarkCleanStop) is this long.
		// Write it unpadded: it is still a record.
		data, err = encodeRecord(rec, maxRecordRead)
	}
	if err != nil {
		return fmt.Errorf("encoding the boot record: %w", err)
	}
	if err := os.MkdirAll(stateDir, stateDirPerm); err != nil {
		return fmt.Errorf("%w: creating the state directory: %v; make %s writable", ErrUnwritable, err, stateDir)
	}
	path := filepath.Join(stateDir, bootFile)
	aerr := atomicfile.Write(filepath.Join(stateDir, bootFile), data, bootFilePerm)
	if aerr == nil {
		return nil
	}
	// A full disk refuses the new file the atomic write needs, but the old
	// record's blocks are already allocated. Overwriting them in place is
	// not atomic: a power loss in the middle can leave a mix of the two.
	// That is still the better choice. The padded record is one 512-byte
	// sector, which most disks write whole; where one is torn anyway the
	// mix fails its check and reads as corrupt, so the next boot says
	// "unknown". The old record left as it is would say "clean" after this
	// run crashes.
	ierr := overwriteInPlace(path, rec)
	if ierr == nil {
		return nil
	}
	if errors.Is(ierr, fs.ErrNotExist) {
		ierr = errors.New("there is no earlier record to overwrite")
	}
	if staleClean && !rec.CleanStop {
		// Nothing could be written, and what is there would lie. Emptying
		// the file needs no space: it then reads as corrupt, reason
		// unknown. The count on disk is lost unless a retry succeeds.
		if terr := os.Truncate(path, 0); terr == nil {
			return fmt.Errorf("%w: writing %s: %v; overwriting it in place: %v; emptied it so that it cannot claim a clean stop: free space on the file system holding %s, the appliance keeps retrying",
				ErrUnwritable, path, aerr, ierr, stateDir)
		}
	}
	return fmt.Errorf("%w: writing %s: %v; overwriting it in place: %v; free space on the file system holding %s or make it writable, the appliance keeps retrying",
		ErrUnwritable, path, aerr, ierr, stateDir)
}

// overwriteInPlace writes rec over the existing file at path without
// allocating anything: the new record is padded to the file's own size (or
// recordSize, and the file cut to that, if it is larger) and written from
// the start.
func overwriteInPlace(path string, rec BootRecord) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0) // no O_CREATE: a new file needs space
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := min(fi.Size(), recordSize)
	data, err := encodeRecord(rec, int(size))
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		return err
	}
	if fi.Size() > size {
		// What is left of a longer file would read as data after the record.
		if err := f.Truncate(size); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// setAsideCorrupt moves a bad boot.json to boot.json.corrupt.1, after moving
// the earlier copies up one number and dropping the one beyond keepCorrupt,
// and returns where it went. A crash part way through loses at most the
// oldest copy.
func setAsideCorrupt(stateDir string) (string, error) {
	for i := keepCorrupt - 1; i >= 1; i-- {
		err := os.Rename(corruptCopy(stateDir, i), corruptCopy(stateDir, i+1))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	keep := corruptCopy(stateDir, 1)
	if err := os.Rename(filepath.Join(stateDir, bootFile), keep); err != nil {
		return "", err
	}
	return keep, atomicfile.SyncDir(stateDir)
}

func corruptCopy(stateDir string, n int) string {
	return filepath.Join(stateDir, corruptFile+"."+strconv.Itoa(n))
}

// removeStaleTemps removes temporary files a power loss left in the middle
// of an atomic write: on a full disk they may hold the space the next one
// needs. Only RecordBoot calls it, before anything else in the process can
// be writing one.
func removeStaleTemps(stateDir string) {
	stale, _ := filepath.Glob(filepath.Join(globQuote(stateDir), "."+bootFile+".tmp-*"))
	for _, p := range stale {
		os.Remove(p)
	}
}

// globQuote quotes the glob metacharacters in a literal path.
func globQuote(p string) string {
	var b []byte
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '*', '?', '[', '\\':
			b = append(b, '\\')
		}
		b = append(b, p[i])
	}
	return string(b)
}
