package update

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"appliance/internal/atomicfile"
)

// Outcomes of an update, as the record and the API say them.
const (
	Checking    = "checking"    // the bundle is being checked: nothing written yet
	Writing     = "writing"     // the slot is being written
	Trial       = "trial"       // written; the next boot tries it
	Committed   = "committed"   // it booted healthy and is the slot that boots
	RolledBack  = "rolled-back" // its trial failed; the old slot runs again
	Interrupted = "interrupted" // the unit restarted while the slot was written
	Failed      = "failed"      // refused or not written; the old slot runs on
)

// RecordFile and TrialFile are in the state directory (the data partition).
const (
	RecordFile = "update.json"
	// TrialFile is what the trial boot saw of the appliance (written by
	// `appliance trial`, which judges the boot): the why of a rollback.
	TrialFile = "update-trial.json"
)

// Record is the last update's outcome, kept on the data partition across
// boots and slots.
type Record struct {
	Version     string    `json:"version"`      // the bundle's image version
	Slot        string    `json:"slot"`         // the slot it was written to
	From        string    `json:"from"`         // the slot that ran when it was written
	FromVersion string    `json:"from_version"` // and its version
	Outcome     string    `json:"outcome"`
	Reason      string    `json:"reason,omitempty"` // why it failed or was rolled back
	Started     time.Time `json:"started"`
	Finished    time.Time `json:"finished,omitzero"`
}

// TrialNote is the last thing the trial boot saw.
type TrialNote struct {
	Slot    string    `json:"slot"`
	Version string    `json:"version"`
	Note    string    `json:"note"`
	Time    time.Time `json:"time"`
}

// maxRecord bounds the record files read from the data partition.
const maxRecord = 64 << 10

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if len(b) > maxRecord {
		return fmt.Errorf("%s: %d bytes: not a record the appliance wrote", path, len(b))
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// ReadRecord reads the record; ok is false when there is none (no update
// yet). A damaged record is an error: it is replaced by the next update.
func ReadRecord(dir string) (r Record, ok bool, err error) {
	err = readJSON(filepath.Join(dir, RecordFile), &r)
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, false, nil
	}
	return r, err == nil, err
}

// WriteRecord replaces the record, atomically.
func WriteRecord(dir string, r Record) error {
	b, _ := json.MarshalIndent(r, "", "  ")
	return atomicfile.Write(filepath.Join(dir, RecordFile), append(b, '\n'), 0o640)
}

// ReadTrialNote reads what the last trial boot saw; ok is false if nothing.
func ReadTrialNote(dir string) (n TrialNote, ok bool) {
	return n, readJSON(filepath.Join(dir, TrialFile), &n) == nil
}

// WriteTrialNote replaces the trial boot's note, atomically.
func WriteTrialNote(dir string, n TrialNote) error {
	b, _ := json.MarshalIndent(n, "", "  ")
	return atomicfile.Write(filepath.Join(dir, TrialFile), append(b, '\n'), 0o640)
}

// Resolve settles the record at the appliance's start, from the slot that
// runs and the boot entries: a trial that booted back into the old slot
// was rolled back (with what the trial boot saw, if anything); a write the
// unit did not live through was interrupted; a trial slot running without
// its counter was committed. It returns the record, whether it changed,
// and whether this boot is a trial of the record's slot still to be judged.
func Resolve(r Record, running string, entries map[string]Entry, note TrialNote, haveNote bool, now time.Time) (Record, bool, bool) {
	switch r.Outcome {
	case Checking:
		r.Outcome, r.Finished = Failed, now
		r.Reason = "the appliance restarted while the bundle was being checked; nothing was written; run the update again"
		return r, true, false
	case Writing:
		if running == r.Slot { // cannot happen: the entry comes last
			return r, false, false
		}
		r.Outcome, r.Finished = Interrupted, now
		r.Reason = fmt.Sprintf("the unit restarted while slot %s was being written (a power cut or a reset); slot %s ran on as before; run the update again", r.Slot, running)
		return r, true, false
	case Trial:
		e, ok := entries[r.Slot]
		if running == r.Slot && ok {
			if e.Counted {
				return r, false, true // on trial now: the appliance judges it
			}
			r.Outcome, r.Finished, r.Reason = Committed, now, ""
			return r, true, false
		}
		if running != r.Slot {
			if ok && e.Counted && e.Left > 0 {
				return r, false, false // written, not yet tried: the next boot tries it
			}
			r.Outcome, r.Finished = RolledBack, now
			why := "nothing was heard from the trial boot: it reset, or its appliance never ran"
			if haveNote && note.Slot == r.Slot && note.Version == r.Version && note.Note != "" {
				why = note.Note
			}
			r.Reason = fmt.Sprintf("slot %s (%s) was not healthy in its trial boot, so slot %s (%s) boots again: %s", r.Slot, r.Version, running, r.FromVersion, why)
			return r, true, false
		}
	}
	return r, false, false
}
