//go:build race

package failover

// raceEnabled shortens the simulation under the race detector, which slows
// it tenfold; the schedules are the same, only fewer.
const raceEnabled = true
