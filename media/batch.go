package media

import (
	"errors"
	"net"
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

// runBatched is the stream's loop when the worker batches its reads: it
// reads what queued in one recvmmsg, handles it all under one hold of the
// lock, exactly as run handles one packet, then sleeps to the next multiple
// of the window. Every stream of the worker sleeps to the same instants, so
// one wake-up of the process serves all the streams that have packets.
func (s *wstream) runBatched(window time.Duration) {
	defer close(s.done)
	for {
		n, err := s.brd.read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		now := clock.Mono()
		s.mu.Lock()
		s.handleBatchLocked(n, now)
		s.mu.Unlock()
		if n < len(s.brd.bufs) {
			time.Sleep(window - clock.Mono()%window)
		}
	}
}

// handleBatchLocked handles the first n datagrams of the batch, in arrival
// order, all taken to have arrived at now, and sends what they forward.
func (s *wstream) handleBatchLocked(n int, now time.Duration) {
	if !s.r.standby && s.w.stalled(now) {
		s.holdLocked()
	}
	// What is forwarded is copied out back to back (a rewrite may have put
	// it in the relay's scratch buffer, which the next datagram reuses), so
	// that runs of equal sizes can leave in one GSO send per output.
	s.fwd, s.fwdOff = s.fwd[:0], 0
	for i := range n {
		out := s.r.handle(s.brd.bufs[i], s.brd.lens[i], now)
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
