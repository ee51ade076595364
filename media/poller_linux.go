package media

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"appliance/internal/clock"
)

// poller serves every input of a batching worker (media.batch_window > 0)
// from one goroutine on its own OS thread, with one epoll set:
//
//  1. take the inputs that have datagrams queued (epoll, no wait);
//  2. for each, under its stream's lock, read what queued in batches of
//     batchMax with recvmmsg and relay it, exactly as the per-packet path
//     relays each datagram (handleBatchLocked);
//  3. sleep to the next multiple of the window on the monotonic clock,
//     without waking for the datagrams that arrive meanwhile.
//
// When no input has anything at step 1, it waits in epoll until one has, and
// serves it at once: an idle worker sleeps, and the first packet after a
// silence waits for nothing. So at most one wake-up per window serves the
// whole worker, however many streams it carries.
//
// The inputs are plain descriptors outside Go's poller: a socket in Go's
// poller wakes the poller's thread for every datagram that arrives, which is
// the cost this exists to avoid.
type poller struct {
	w      *workerProc
	window time.Duration
	epfd   int
	stopFD int // an eventfd in the set: written to stop the loop
	done   chan struct{}

	// Used by the loop only.
	events []unix.EpollEvent
	ready  []*wstream

	closeOnce sync.Once
}

// pollBatches is how many batches the loop reads from one input in a pass
// before it serves the next: a resumed unit's backlog does not keep the
// other streams waiting, and the loop goes round again without sleeping.
const pollBatches = 4

// eventStream marks an epoll event as an input's (its Fd field is the
// stream's id); the stop descriptor's events carry 0.
const eventStream = 1

func newPoller(w *workerProc, window time.Duration) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("worker: epoll: %w", err)
	}
	stopFD, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("worker: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, stopFD, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(epfd)
		unix.Close(stopFD)
		return nil, fmt.Errorf("worker: epoll: %w", err)
	}
	return &poller{w: w, window: window, epfd: epfd, stopFD: stopFD, done: make(chan struct{}),
		events: make([]unix.EpollEvent, 1024)}, nil
}

// add puts a stream's input in the set (level-triggered: an input left with
// datagrams is found again at the next pass). Called with s.mu held.
func (p *poller) add(s *wstream) error {
	if s.fd < 0 {
		return nil // closed already (the worker is stopping)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(s.sid), Pad: eventStream}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
		return fmt.Errorf("stream %s: epoll: %w", s.name, err)
	}
	return nil
}

// remove takes an input out of the set. It must come before the descriptor
// is closed: the parent holds the same socket, so closing this copy alone
// would leave it in the set.
func (p *poller) remove(fd int) {
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

// run is the loop. Its goroutine keeps its OS thread: the sleeps and the
// waits are plain system calls, with no scheduler work between two passes.
// (A worker forks nothing, so the thread may end with the loop.)
func (p *poller) run() {
	runtime.LockOSThread()
	defer close(p.done)
	for {
		n, err := p.wait(0)
		if err == nil && n == 0 {
			n, err = p.wait(-1)
		}
		if err != nil {
			p.w.fatal(err)
			return
		}
		backlog, stop := p.serve(n)
		if stop {
			return
		}
		// A full event list may have left ready inputs out: go round
		// again at once, as for a backlog.
		if !backlog && n < len(p.events) {
			sleepMono(p.window - clock.Mono()%p.window)
		}
	}
}

func (p *poller) wait(msec int) (int, error) {
	for {
		n, err := unix.EpollWait(p.epfd, p.events, msec)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("worker: epoll wait: %w", err)
		}
		return n, nil
	}
}

// serve relays what the first n events' inputs hold. It reports whether an
// input still had datagrams after its share (go round again at once), and
// whether the loop is to stop.
func (p *poller) serve(n int) (backlog, stop bool) {
	p.w.mu.Lock()
	for _, e := range p.events[:n] {
		if e.Pad != eventStream {
			stop = true
			continue
		}
		if s := p.w.streams[uint32(e.Fd)]; s != nil {
			p.ready = append(p.ready, s)
		}
	}
	p.w.mu.Unlock()
	if stop {
		clear(p.ready)
		p.ready = p.ready[:0]
		return false, true
	}
	rtOff := realtimeOffset()
	for _, s := range p.ready {
		s.mu.Lock()
		if s.serveLocked(pollBatches, rtOff) {
			backlog = true
		}
		s.mu.Unlock()
	}
	clear(p.ready) // keep no stream alive
	p.ready = p.ready[:0]
	return backlog, false
}

// close stops the loop and waits for it to end.
func (p *poller) close() {
	p.closeOnce.Do(func() {
		one := [8]byte{1}
		_, _ = unix.Write(p.stopFD, one[:])
		<-p.done
		unix.Close(p.epfd)
		unix.Close(p.stopFD)
	})
}

// sleepMono sleeps d on the monotonic clock as one system call.
func sleepMono(d time.Duration) {
	if d <= 0 {
		return
	}
	ts := unix.NsecToTimespec(int64(d))
	// An interrupted sleep (a signal to the thread) ends early: the next
	// pass comes a little sooner, which is harmless.
	_ = unix.Nanosleep(&ts, nil)
}
