package health

import "time"

// Level turns a measured value (a temperature, say) into a severity with
// hysteresis: a severity is raised when the value reaches its threshold and
// lowered only once the value is ClearMargin below it, so a value hovering at
// a threshold does not flap.
type Level struct {
	Warn, Crit  float64
	ClearMargin float64
	sev         Severity
}

// Update feeds a new value and returns the resulting severity.
func (l *Level) Update(v float64) Severity {
	raise := OK
	switch {
	case v >= l.Crit:
		raise = Critical
	case v >= l.Warn:
		raise = Warning
	}
	if raise >= l.sev {
		l.sev = raise
		return l.sev
	}
	// Step down only as far as the value is clearly below each threshold.
	for l.sev > raise {
		th := l.Warn
		if l.sev == Critical {
			th = l.Crit
		}
		if v > th-l.ClearMargin {
			break
		}
		l.sev--
	}
	return l.sev
}

// Severity is the current severity.
func (l *Level) Severity() Severity { return l.sev }

// Debounce reports a boolean state (link up, say) only once a change has
// held for Delay: a flap shorter than that is never seen. Time is passed in
// as readings of the caller's monotonic clock (clock.Clock's Mono), so a
// wall-clock step neither confirms a change early nor holds it back.
type Debounce struct {
	Delay time.Duration

	stable    bool
	known     bool
	pending   bool
	candidate bool
	since     time.Duration
}

// Observe feeds the raw state seen at now. It returns the debounced state
// and whether it just changed. The first observation is taken as is.
func (d *Debounce) Observe(now time.Duration, raw bool) (state, changed bool) {
	if !d.known {
		d.stable, d.known = raw, true
		return raw, true
	}
	switch {
	case raw == d.stable:
		d.pending = false
	case !d.pending || d.candidate != raw:
		d.pending, d.candidate, d.since = true, raw, now
	}
	return d.Poll(now)
}

// Poll confirms a pending change whose delay has passed by now.
func (d *Debounce) Poll(now time.Duration) (state, changed bool) {
	if d.pending && now-d.since >= d.Delay {
		d.stable, d.pending = d.candidate, false
		return d.stable, true
	}
	return d.stable, false
}

// Due returns when (on the same clock) a pending change will be confirmed,
// if one is pending.
func (d *Debounce) Due() (time.Duration, bool) {
	return d.since + d.Delay, d.pending
}

// State is the debounced state.
func (d *Debounce) State() bool { return d.stable }
