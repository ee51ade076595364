package clock

import "time"

var tmpBase = time.Now()

// Mono is a stand-in until the monotonic clock lands (TMPMERGE).
func Mono() time.Duration { return time.Since(tmpBase) + time.Hour }
