package media

import (
	"time"

	"golang.org/x/sys/unix"

	"appliance/internal/clock"
)

// maxBatchWindow bounds media.batch_window: the most a packet may wait in
// its input to be read with others (docs/batching.md).
const maxBatchWindow = 2 * time.Millisecond

// batchMax is how many datagrams a stream reads in one system call. A full
// batch is read again at once, so a backlog (a unit resumed after a stop)
// goes this many at a time with no wait between.
const batchMax = 16

// serveLocked reads what queued in the stream's input, up to batches
// batches of batchMax, and relays it (handleBatchLocked). It reports whether
// datagrams are left. The poller calls it, holding the lock; rtOff is the
// real-time clock's lead on the monotonic one, read once per pass
// (realtimeOffset).
func (s *wstream) serveLocked(batches int, rtOff time.Duration) bool {
	for range batches {
		if s.fd < 0 {
			return false // removed
		}
		n, err := s.brd.read(s.fd)
		if err != nil || n == 0 {
			// Nothing queued; or an error of the socket itself, which
			// the next pass finds again if it lasts.
			return false
		}
		s.handleBatchLocked(n, rtOff)
		if n < len(s.brd.bufs) {
			return false
		}
	}
	return true
}

// maxStampAge bounds how long ago a datagram of a batch may be taken to
// have arrived: a stamp further back than this, or after the read (the
// real-time clock was set), counts as arrived at the read.
const maxStampAge = 10 * time.Second

// realtimeOffset is how far the real-time clock is ahead of the monotonic
// clock (clock.Mono), now. The kernel stamps a datagram's arrival only on
// the real-time clock; this turns a stamp into the monotonic clock. Read
// once per pass of the poller (a system call), it is exact unless the
// real-time clock is set during the pass (arrival bounds the damage).
func realtimeOffset() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_REALTIME, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano()) - clock.Mono()
}

// arrival is when a datagram stamped stamp (real-time ns; 0 for none)
// arrived, on the monotonic clock, given the offset and the read's time.
func arrival(stamp int64, rtOff, now time.Duration) time.Duration {
	if stamp == 0 || rtOff == 0 {
		return now
	}
	at := time.Duration(stamp) - rtOff
	if at > now || now-at > maxStampAge {
		return now
	}
	return at
}

// handleBatchLocked handles the first n datagrams of the batch, in arrival
// order, and sends what they forward. The jitter gauge takes each
// datagram's own arrival (handleArrived); everything else the read's time.
func (s *wstream) handleBatchLocked(n int, rtOff time.Duration) {
	now := clock.Mono()
	if !s.r.standby && s.w.stalled(now) {
		s.holdLocked()
	}
	if n == 1 {
		// Nothing to gather (the common case at a few hundred packets a
		// second): as the per-packet path, with no copy.
		if out := s.r.handleArrived(s.brd.bufs[0], s.brd.lens[0], now, arrival(s.brd.stamps[0], rtOff, now)); out != nil {
			s.sendLocked(out, now)
		}
		return
	}
	// What is forwarded is copied out back to back (a rewrite may have put
	// it in the relay's scratch buffer, which the next datagram reuses), so
	// that runs of equal sizes can leave in one GSO send per output.
	s.fwd, s.fwdOff = s.fwd[:0], 0
	for i := range n {
		out := s.r.handleArrived(s.brd.bufs[i], s.brd.lens[i], now, arrival(s.brd.stamps[i], rtOff, now))
		if out == nil {
			continue
		}
		copy(s.fwdBuf[s.fwdOff:], out)
		s.fwd = append(s.fwd, len(out))
		s.fwdOff += len(out)
	}
	s.sendForwardedLocked(now)
}

// sendForwardedLocked sends the datagrams handleBatchLocked kept, in order:
// a run of two or more of one size in one GSO send per output, the others
// one by one. The counters are the same as sendLocked's for each datagram.
func (s *wstream) sendForwardedLocked(now time.Duration) {
	off := 0
	for i := 0; i < len(s.fwd); {
		size, j := s.fwd[i], i+1
		for j < len(s.fwd) && s.fwd[j] == size {
			j++
		}
		count := j - i
		if count == 1 {
			s.sendLocked(s.fwdBuf[off:off+size], now)
		} else {
			run := s.fwdBuf[off : off+count*size]
			var failures [batchMax]uint8
			for _, o := range s.outs {
				failed := o.sendRun(s.gso, run, size, count, now)
				for k := range count {
					failures[k] += uint8(failed >> k & 1)
				}
			}
			for k := range count {
				s.r.wroteOut(size, len(s.outs), int(failures[k]))
			}
		}
		off += count * size
		i = j
	}
}
