// Package clock gives every state machine its time, so tests can drive it with a fake.
package clock

import "time"

// Clock is the source of time for code that must be tested deterministically.
//
// There are two clocks behind it. Mono is the one to measure with: it only
// moves forward, at a steady rate, whatever NTP or an operator does to the
// date. Every age, timeout, deadline and rate is a difference of two Mono
// readings. Now is the wall clock: it may jump by hours in either direction
// (an NTP step at boot is enough), so it is used only for timestamps people
// read and for records kept across boots, never to measure a duration.
type Clock interface {
	// Now returns the wall-clock time.
	Now() time.Time
	// Mono returns the monotonic clock as a duration since an unspecified
	// origin, never zero, so zero can mean "no reading".
	Mono() time.Duration
	// NewTimer and NewTicker wait on the monotonic clock, as time.Timer does.
	NewTimer(d time.Duration) Timer
	NewTicker(d time.Duration) Ticker
}

// Timer is the part of time.Timer that callers use, with the channel as a method.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// Ticker is the part of time.Ticker that callers use, with the channel as a method.
type Ticker interface {
	C() <-chan time.Time
	Stop()
	Reset(d time.Duration)
}

// Real returns the machine's clocks: Mono is the package-level Mono.
func Real() Clock { return realClock{} }

// Mono returns the machine's monotonic clock as a duration. On Linux it is
// CLOCK_MONOTONIC (time since boot, not counting suspend), which has the same
// origin in every process on the machine, so a reading taken in one process
// (a media worker) can be compared with one taken in another (its parent).
// Elsewhere the origin is this process's start, shifted so that no reading is
// zero, and readings must not cross a process boundary.
//
// It costs no system call and does not allocate: it is Go's own monotonic
// reading, shifted once at start-up to CLOCK_MONOTONIC's origin.
func Mono() time.Duration { return monoBase + time.Since(monoStart) }

type realClock struct{}

func (realClock) Now() time.Time                   { return time.Now() }
func (realClock) Mono() time.Duration              { return Mono() }
func (realClock) NewTimer(d time.Duration) Timer   { return realTimer{time.NewTimer(d)} }
func (realClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time   { return r.t.C }
func (r realTicker) Stop()                 { r.t.Stop() }
func (r realTicker) Reset(d time.Duration) { r.t.Reset(d) }
