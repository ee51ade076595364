package media

import (
	"context"
	"errors"
	"fmt"
)

// Restarted is what Restart did.
type Restarted struct {
	Worker    int // the worker that carries the stream
	WorkerPID int // its process: the one that carried the stream before
	Restarts  int // the stream's restarts so far, this one included
}

// ErrWorkerDown means the stream's worker process is not running: it is
// being replaced, and the stream starts with its successor.
var ErrWorkerDown = errors.New("its worker is being replaced")

// Restart stops one stream's pipeline on its worker and starts it again,
// the way a worker restart would but costing only this stream: the worker
// closes its copy of the input and the stream's outputs, then gets the
// stream again with the state the parent keeps. Its counters, its role and
// its output numbering (SSRC, sequence, timestamp) carry on; its input
// socket stays open, so what arrives meanwhile waits in the kernel. As after
// a worker restart, what the stream counted since its worker's last report
// is not in the totals, and a forwarding stream's output numbering steps
// past what it may have sent since. The worker's other streams are not
// touched.
//
// A stream whose input could not be bound has its input bound again at
// once instead of at the next retry.
func (m *Manager) Restart(ctx context.Context, name string) (Restarted, error) {
	m.ctlMu.Lock()
	defer m.ctlMu.Unlock()
	m.mu.Lock()
	st := m.byName[name]
	if st == nil {
		m.mu.Unlock()
		return Restarted{}, fmt.Errorf("%w: %s", ErrNoStream, name)
	}
	if st.input == nil {
		var waits []waiter
		m.bindLocked(st, &waits)
		m.mu.Unlock()
		m.await(ctx, waits)
		return m.restarted(st)
	}
	w, wc := st.w, st.w.conn
	if wc == nil {
		m.mu.Unlock()
		return Restarted{}, fmt.Errorf("stream %s: %w (%s); it starts again with it", name, ErrWorkerDown, w.name())
	}
	waits, err := wc.sendRemove(m, st)
	m.mu.Unlock()
	if err != nil {
		return Restarted{}, fmt.Errorf("stream %s: %s did not take the restart (%v); a worker that does not read is replaced when it hangs", name, w.name(), err)
	}
	if why := m.await(ctx, waits)[st.sid]; why != "" {
		return Restarted{}, fmt.Errorf("stream %s: %s; a worker that does not answer is replaced when it hangs", name, why)
	}

	m.mu.Lock()
	if w.conn != wc || st.w != w {
		// The worker went away meanwhile; its successor starts the
		// stream with the others.
		m.mu.Unlock()
		return Restarted{}, fmt.Errorf("stream %s: %w (%s exited during the restart); it starts again with it", name, ErrWorkerDown, w.name())
	}
	now := m.mono()
	st.exited(now)
	cont := st.assign(wc.pidv, m.opts.ReportInterval, now)
	waits, err = wc.sendAddsWith(m, []*stream{st}, map[uint32]Continuity{st.sid: cont})
	m.mu.Unlock()
	if err != nil {
		return Restarted{}, fmt.Errorf("stream %s: giving it back to %s: %v; a worker that does not read is replaced when it hangs", name, w.name(), err)
	}
	m.await(ctx, waits)
	m.log.Info("stream restarted", "stream", name, "worker", w.name())
	return m.restarted(st)
}

// restarted answers Restart once the stream's worker has answered: a
// stream it refused, or whose input is still not bound, is not carried.
func (m *Manager) restarted(st *stream) (Restarted, error) {
	if f := st.failure.Load(); f != nil {
		return Restarted{}, fmt.Errorf("stream %s: %w: %s", st.name, ErrNotCarried, *f)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return Restarted{Worker: st.worker, WorkerPID: st.pid, Restarts: max(st.starts-1, 0)}, nil
}
