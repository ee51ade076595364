package clock

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Mono is CLOCK_MONOTONIC, read without a system call.
func TestMonoIsClockMonotonic(t *testing.T) {
	t.Parallel()
	var before, after unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &before); err != nil {
		t.Fatal(err)
	}
	m := Mono()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &after); err != nil {
		t.Fatal(err)
	}
	lo, hi := time.Duration(before.Nano()), time.Duration(after.Nano())
	if m < lo-time.Microsecond || m > hi+time.Microsecond {
		t.Errorf("Mono() = %v, CLOCK_MONOTONIC read %v before and %v after", m, lo, hi)
	}
}
