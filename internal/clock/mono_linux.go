package clock

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// monoBase is CLOCK_MONOTONIC at the moment monoStart stands for. Go's own
// monotonic reading (behind time.Since) is CLOCK_MONOTONIC on Linux, so the
// two advance together and Mono needs no system call.
var monoStart, monoBase = readMono()

const monoIsMachineWide = true

// readMono reads CLOCK_MONOTONIC between two readings of Go's clock and
// anchors it at their midpoint. The tightest of a few tries wins: the first
// may pay for faulting in the vDSO page, or be preempted.
func readMono() (time.Time, time.Duration) {
	var (
		start time.Time
		base  time.Duration
		gap   time.Duration = -1
	)
	for range 5 {
		var ts unix.Timespec
		t0 := time.Now()
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			// The Go runtime itself runs on CLOCK_MONOTONIC: this cannot
			// fail on a kernel Go runs on at all.
			panic(fmt.Sprintf("clock: reading CLOCK_MONOTONIC: %v", err))
		}
		d := time.Since(t0)
		if gap < 0 || d < gap {
			start, base, gap = t0.Add(d/2), time.Duration(ts.Nano()), d
		}
	}
	return start, base
}
