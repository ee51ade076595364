package status

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// capListener holds at most cap accepted connections at once. Accept waits
// for a free slot before it asks the kernel for the next connection, so
// clients beyond the cap wait in the kernel's accept backlog and hold no
// descriptor of this process: descriptors are what a worker restart needs
// (pipes, sockets), and API clients must never take them.
//
// An idle keep-alive connection is the cheapest one to give up: when every
// slot is taken and a client is waiting in the backlog, the connection idle
// longest is closed (its client reconnects when it next asks), so a handful
// of idle pollers cannot lock out the next request, /healthz included, for
// a whole idle timeout. A connection that has said nothing for silentGrace
// since it was accepted is shed the same way: a client that connects and
// never asks must not hold a slot for the whole header timeout (a thousand
// of them would lock the API out for over a minute). Nothing is closed
// while nobody waits.
type capListener struct {
	net.Listener
	backlog *backlog      // nil where the backlog cannot be watched
	blind   atomic.Bool   // watching the backlog failed: wait for slots without shedding
	slots   chan struct{} // one token per held connection
	done    chan struct{} // closed by Close; wakes an Accept waiting for a slot
	once    sync.Once

	mu      sync.Mutex
	idle    map[*capConn]uint64    // idle connections, by when they went idle (a sequence)
	silent  map[*capConn]time.Time // accepted, no request yet, by when accepted
	seq     uint64
	wake    chan struct{} // a connection went idle: a waiting Accept may shed it
	waiting int           // Accept calls with a client waiting and no slot
	peak    int           // most connections held at once
}

func newCapListener(inner net.Listener, max int) (*capListener, error) {
	b, err := watchBacklog(inner)
	if err != nil {
		return nil, err
	}
	return &capListener{
		Listener: inner,
		backlog:  b,
		slots:    make(chan struct{}, max),
		done:     make(chan struct{}),
		idle:     make(map[*capConn]uint64),
		silent:   make(map[*capConn]time.Time),
		wake:     make(chan struct{}, 1),
	}, nil
}

func (l *capListener) Accept() (net.Conn, error) {
	if err := l.acquire(); err != nil {
		return nil, err
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	cc := &capConn{Conn: c, l: l}
	l.mu.Lock()
	l.silent[cc] = time.Now()
	l.mu.Unlock()
	return cc, nil
}

// silentGrace is how long an accepted connection may say nothing before it
// can be shed for a waiting client: an honest client sends its request
// right after it connects.
const silentGrace = time.Second

// acquire takes a slot, making room by shedding an idle connection when a
// client is waiting for one.
func (l *capListener) acquire() error {
	for {
		if l.trySlot() {
			return nil
		}
		if l.backlog != nil && !l.blind.Load() {
			if err := l.backlog.wait(); err != nil {
				if l.isClosed() {
					return net.ErrClosed
				}
				// The API must go on without shedding rather than stop.
				l.blind.Store(true)
				continue
			}
			if l.trySlot() {
				return nil
			}
			if l.shedIdle() {
				continue // its Close gave its slot back
			}
		}
		// Every held connection is busy: wait for one to end or go idle,
		// or for a silent one to have been silent long enough.
		l.addWaiting(1)
		recheck := time.NewTimer(silentGrace / 4)
		select {
		case l.slots <- struct{}{}:
			recheck.Stop()
			l.addWaiting(-1)
			l.notePeak()
			return nil
		case <-l.wake:
		case <-recheck.C:
		case <-l.done:
		}
		recheck.Stop()
		l.addWaiting(-1)
		if l.isClosed() {
			return net.ErrClosed
		}
	}
}

func (l *capListener) trySlot() bool {
	select {
	case l.slots <- struct{}{}:
		l.notePeak()
		return true
	default:
		return false
	}
}

func (l *capListener) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *capListener) notePeak() {
	l.mu.Lock()
	l.peak = max(l.peak, len(l.slots))
	l.mu.Unlock()
}

func (l *capListener) addWaiting(n int) {
	l.mu.Lock()
	l.waiting += n
	l.mu.Unlock()
}

// shedIdle closes the connection that has been idle longest, if any. A
// request that arrives on it at this very moment is lost with it; HTTP
// clients retry an idempotent request that fails on a reused connection.
func (l *capListener) shedIdle() bool {
	l.mu.Lock()
	var oldest *capConn
	for c, at := range l.idle {
		if oldest == nil || at < l.idle[oldest] {
			oldest = c
		}
	}
	delete(l.idle, oldest)
	if oldest == nil {
		// No idle one: the one silent longest, if past its grace.
		var since time.Time
		for c, at := range l.silent {
			if time.Since(at) >= silentGrace && (oldest == nil || at.Before(since)) {
				oldest, since = c, at
			}
		}
		delete(l.silent, oldest)
	}
	l.mu.Unlock()
	if oldest == nil {
		return false
	}
	_ = oldest.Close()
	return true
}

// setIdle records whether c waits for its next request; the server's
// ConnState hook calls it. Either way, c has spoken: it is not silent.
func (l *capListener) setIdle(c *capConn, idle bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.silent, c)
	if !idle || c.closed {
		delete(l.idle, c)
		return
	}
	l.seq++
	l.idle[c] = l.seq
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *capListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		if l.backlog != nil {
			_ = l.backlog.close()
		}
	})
	return l.Listener.Close()
}

// held is how many accepted connections are open now.
func (l *capListener) held() int { return len(l.slots) }

// stats reports the most connections held at once, and how many Accept
// calls have a client waiting and no slot to take it.
func (l *capListener) stats() (peak, waiting int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.peak, l.waiting
}

// capConn gives its slot back when closed, once, however many times the
// server and the shedder close it.
type capConn struct {
	net.Conn
	l      *capListener
	once   sync.Once
	closed bool // under l.mu: a late idle report must not make a closed connection sheddable
}

func (c *capConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		c.closed = true
		delete(c.l.idle, c)
		delete(c.l.silent, c)
		c.l.mu.Unlock()
		<-c.l.slots
	})
	return err
}
