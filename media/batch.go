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
// order, all taken to have arrived at now.
func (s *wstream) handleBatchLocked(n int, now time.Duration) {
	if !s.r.standby && s.w.stalled(now) {
		s.holdLocked()
	}
	for i := range n {
		if out := s.r.handle(s.brd.bufs[i], s.brd.lens[i], now); out != nil {
			s.sendLocked(out, now)
		}
	}
}
