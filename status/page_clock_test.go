package status

import (
	"time"

	"appliance/internal/clock"
)

// Servers in this package's tests get a clock that moves only when a test
// moves it, so the page's sampling never runs behind a test's back (tests
// that count Report calls would see it). Page tests move theirs.
func init() {
	pageClock = func() clock.Clock { return clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) }
}
