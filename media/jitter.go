package media

// Jitter is the RFC 3550 (section 6.4.1) interarrival jitter estimate of one stream.
type Jitter struct {
	clockRate  float64
	started    bool
	lastArrive int64  // nanoseconds
	lastTS     uint32 // RTP timestamp of that packet
	j          float64
}

// NewJitter returns an estimator for an RTP clock of rate Hz.
func NewJitter(rate int) Jitter { return Jitter{clockRate: float64(rate)} }

// Observe feeds one packet: its arrival time in nanoseconds and its RTP timestamp.
// Only in-order packets should be fed; a late one would be counted as jitter.
func (j *Jitter) Observe(arriveNs int64, ts uint32) {
	if !j.started || j.clockRate == 0 {
		j.started, j.lastArrive, j.lastTS = true, arriveNs, ts
		return
	}
	arrival := float64(arriveNs-j.lastArrive) * j.clockRate / 1e9
	d := arrival - float64(int32(ts-j.lastTS))
	if d < 0 {
		d = -d
	}
	j.j += (d - j.j) / 16
	j.lastArrive, j.lastTS = arriveNs, ts
}

// Reset forgets the previous packet, for a new numbering or source.
func (j *Jitter) Reset() { j.started = false }

// Millis returns the current estimate in milliseconds.
func (j *Jitter) Millis() float64 {
	if j.clockRate == 0 {
		return 0
	}
	return j.j / j.clockRate * 1000
}
