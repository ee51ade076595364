//go:build !linux

package clock

import "time"

// Without a machine-wide monotonic clock to anchor to, readings count from
// this process's start, plus an hour so that none is zero.
var monoStart, monoBase = time.Now(), time.Hour

const monoIsMachineWide = false
