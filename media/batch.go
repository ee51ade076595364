package media

import (
	"time"

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
// datagrams are left. The poller calls it, holding the lock.
func (s *wstream) serveLocked(batches int) bool {
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
		s.handleBatchLocked(n, time.Now())
		if n < len(s.brd.bufs) {
			return false
		}
	}
	return true
}

// maxStampAge bounds how long ago a datagram of a batch may be taken to
// have arrived: a stamp further back than this, or in the future (the
// real-time clock was set), counts as arrived at the read.
const maxStampAge = 10 * time.Second

// arrival turns a datagram's kernel stamp (real-time clock) into the
// monotonic clock the jitter gauge keeps, from the time of the read: read is the
// read's time.Now (both clocks), mono the same instant as clock.Mono. The
// kernel stamps only on the real-time clock; the difference of two
// real-time readings a few milliseconds apart is used, never kept.
func arrival(stamp int64, read time.Time, mono time.Duration) time.Duration {
	if stamp == 0 {
		return mono
	}
	age := time.Duration(read.UnixNano() - stamp)
	if age < 0 || age > maxStampAge {
		return mono
	}
	return mono - age
}

// handleBatchLocked handles the first n datagrams of the batch, in arrival
// order, and sends what they forward. read is when the batch was read; the
// jitter gauge takes each datagram's own arrival (handleArrived).
func (s *wstream) handleBatchLocked(n int, read time.Time) {
	now := clock.Mono()
	if !s.r.standby && s.w.stalled(now) {
		s.holdLocked()
	}
	if n == 1 {
		// Nothing to gather (the common case at a few hundred packets a
		// second): as the per-packet path, with no copy.
		if out := s.r.handleArrived(s.brd.bufs[0], s.brd.lens[0], now, arrival(s.brd.stamps[0], read, now)); out != nil {
			s.sendLocked(out, now)
		}
		return
	}
	// What is forwarded is copied out back to back (a rewrite may have put
	// it in the relay's scratch buffer, which the next datagram reuses), so
	// that runs of equal sizes can leave in one GSO send per output.
	s.fwd, s.fwdOff = s.fwd[:0], 0
	for i := range n {
		out := s.r.handleArrived(s.brd.bufs[i], s.brd.lens[i], now, arrival(s.brd.stamps[i], read, now))
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
