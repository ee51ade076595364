package status

import "time"

// Slots is the unit's A/B root slots as the update sees them
// (docs/image.md, "Update and rollback").
type Slots struct {
	Running string `json:"running"` // the slot this boot runs from: a or b
	Slots   []Slot `json:"slots"`   // a, then b
	// Update is the update under way, absent when there is none.
	Update *UpdateProgress `json:"update,omitempty"`
	// LastUpdate is how the last update ended (or where it is), kept on
	// the data partition across boots; absent before the first.
	LastUpdate *LastUpdate `json:"last_update,omitempty"`
	// Error says why the slots could not be read, if they could not.
	Error string `json:"error,omitempty"`
}

// Slot is one root slot.
type Slot struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"` // the image version its boot entry boots; empty: no entry
	Running bool   `json:"running"`
	// Committed: its entry has no boot counter, it boots for good. A
	// written slot not yet committed is on trial: TriesLeft boots remain
	// (0 on the trial boot itself, the running slot); Bad: none remain
	// and it does not run, and systemd-boot boots it only if nothing else
	// is left.
	Committed  bool `json:"committed"`
	TriesLeft  *int `json:"tries_left,omitempty"`
	Bad        bool `json:"bad,omitempty"`
	Generation int  `json:"generation,omitempty"` // the highest good entry boots
}

// UpdateProgress is an update under way.
type UpdateProgress struct {
	Bundle string `json:"bundle"`
	// State is checking (the signature, then every part's hash: nothing
	// is written yet), handover (a paired unit hands its streams to the
	// peer), writing, or rebooting.
	State      string    `json:"state"`
	Version    string    `json:"version,omitempty"`
	Slot       string    `json:"slot"`
	DoneBytes  int64     `json:"done_bytes"`
	TotalBytes int64     `json:"total_bytes"`
	Started    time.Time `json:"started"`
}

// LastUpdate is the last update's outcome: writing, trial, committed,
// rolled-back (with why), interrupted (the unit restarted while writing)
// or failed (refused, or the write failed: with why).
type LastUpdate struct {
	Version     string     `json:"version,omitempty"`
	Slot        string     `json:"slot"`
	From        string     `json:"from"`
	FromVersion string     `json:"from_version,omitempty"`
	Outcome     string     `json:"outcome"`
	Reason      string     `json:"reason,omitempty"`
	Started     time.Time  `json:"started"`
	Finished    *time.Time `json:"finished,omitempty"`
}
