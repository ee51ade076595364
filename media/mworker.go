package media

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"appliance/supervisor"
)

// mworker is the parent's handle on one worker process slot.
type mworker struct {
	m    *Manager
	id   int
	proc *supervisor.Process
	// Between command and attach, which the supervisor calls in that order
	// from one goroutine.
	ctrl *os.File
	tail *tailWriter

	// Guarded by Manager.mu.
	streams map[uint32]*stream
	conn    *wconn // the live process's control connection; nil while none

	// For readers.
	live  atomic.Pointer[wconn]
	count atomic.Int32 // streams assigned
}

func (w *mworker) name() string { return fmt.Sprintf("worker-%d", w.id) }

func (w *mworker) command() (*exec.Cmd, error) {
	if w.ctrl != nil {
		w.ctrl.Close()
		w.ctrl = nil
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	parent, child := os.NewFile(uintptr(fds[0]), "control"), os.NewFile(uintptr(fds[1]), "control-worker")
	argv := w.m.opts.Command
	cmd := exec.Command(argv[0], argv[1:]...)
	if w.m.opts.Argv0 != "" {
		cmd.Args[0] = w.m.opts.Argv0
	}
	// Only the control socket is inherited: input sockets are passed over
	// it, so a start costs no descriptors here.
	cmd.ExtraFiles = []*os.File{child}
	w.tail = &tailWriter{}
	cmd.Stdout = w.m.opts.Stderr
	cmd.Stderr = io.MultiWriter(w.m.opts.Stderr, w.tail)
	cmd.Env = append(os.Environ(), w.m.opts.Env...)
	w.ctrl = parent
	return cmd, nil
}

// attach runs beside a worker process: it hands it its streams, then reads
// its reports (each a heartbeat) and answers until the process exits.
func (w *mworker) attach(ctx context.Context, p *supervisor.Proc) error {
	m := w.m
	ctrl := w.ctrl
	w.ctrl = nil
	if ctrl == nil {
		return errors.New("no control socket")
	}
	fc, err := net.FileConn(ctrl)
	ctrl.Close()
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	conn := fc.(*net.UnixConn)
	defer conn.Close()
	// The process exiting ends the connection; so does ctx.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	wc := &wconn{c: conn, fw: frameWriter{c: conn}, worker: w.name(), pidv: p.PID, pending: map[uint64]waiter{}}
	defer w.detach(wc)
	if err := w.start(wc, p.PID); err != nil {
		// A worker that died at once breaks the pipe before it can be
		// told anything: its exit status and stderr say why.
		select {
		case <-ctx.Done():
			w.explain(ctx, p, wc)
			return nil
		case <-time.After(time.Second):
			return err
		}
	}

	fr := newFrameReader(conn)
	defer fr.closeFDs()
	for {
		typ, body, err := fr.next()
		if err != nil {
			// The worker's end closing (EOF, or a reset when it died with
			// unread data) means it exited: its exit status tells why.
			if ctx.Err() != nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) {
				w.explain(ctx, p, wc)
				return nil
			}
			return fmt.Errorf("control socket: %w", err)
		}
		p.Beat()
		switch typ {
		case msgReport:
			wc.reported(m.mono())
			r, err := decodeReport(body)
			if err != nil {
				return err
			}
			w.apply(wc, &r)
		case msgProgress:
			wc.prog, err = decodeProgress(body, wc.prog[:0])
			if err != nil {
				return err
			}
			w.progress(wc, wc.prog)
		case msgAck:
			var a ackMsg
			if err := json.Unmarshal(body, &a); err != nil {
				return fmt.Errorf("bad acknowledgement from worker: %w", err)
			}
			wc.deliver(m, a)
		case msgReady:
			var r readyMsg
			if err := json.Unmarshal(body, &r); err != nil || r.Version != protocolVersion {
				return fmt.Errorf("worker answered hello with %q: it speaks another protocol; restart the service", body)
			}
		case msgHeld:
			var h heldMsg
			if err := json.Unmarshal(body, &h); err != nil {
				return fmt.Errorf("bad held-streams message from worker: %w", err)
			}
			w.held(wc, h)
		case msgFatal:
			var f fatalMsg
			if json.Unmarshal(body, &f) == nil && f.Error != "" {
				wc.note.Store(&f.Error)
			}
		default:
			return fmt.Errorf("unexpected message type %q from worker", typ)
		}
	}
}

// start sends hello and every stream the worker carries, under the
// manager's lock so that no change can slip between.
func (w *mworker) start(wc *wconn, pid int) error {
	m := w.m
	m.mu.Lock()
	defer m.mu.Unlock()
	wc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	defer wc.c.SetWriteDeadline(time.Time{})
	hello := helloMsg{Version: protocolVersion, Worker: w.id, ReportIntervalNs: int64(m.opts.ReportInterval),
		StandbyRingNs: int64(m.opts.StandbyRing), ProgressIntervalNs: int64(m.opts.ProgressInterval),
		BatchWindowNs: int64(m.opts.BatchWindow)}
	if err := wc.send(msgHello, hello, nil); err != nil {
		return fmt.Errorf("sending hello: %w", err)
	}
	var streams []*stream
	for _, st := range w.streams {
		if st.input != nil {
			streams = append(streams, st)
		}
	}
	slices.SortFunc(streams, func(a, b *stream) int { return int(a.sid) - int(b.sid) })
	now := m.mono()
	conts := make(map[uint32]Continuity, len(streams))
	for _, st := range streams {
		conts[st.sid] = st.assign(pid, m.opts.ReportInterval, now)
	}
	wc.own(w.streams)
	w.conn = wc
	w.live.Store(wc)
	if _, err := wc.sendAddsWith(m, streams, conts); err != nil {
		return fmt.Errorf("sending streams: %w", err)
	}
	return nil
}

// held hands on what a worker resumed after a stop stopped forwarding:
// to OnHeld, or, without one, straight back to forwarding from where each
// stream left off. Never on the report path itself: a role change waits
// for an acknowledgement that this path reads.
func (w *mworker) held(wc *wconn, h heldMsg) {
	owned := wc.owned.Load()
	if owned == nil {
		return
	}
	var out []Held
	for _, hs := range h.Streams {
		st := (*owned)[hs.SID]
		if st == nil {
			continue
		}
		st.standby.Store(true)
		hd := Held{Name: st.name}
		if hs.LastForwarded != nil {
			hd.LastForwarded, hd.HasLast = *hs.LastForwarded, true
		}
		out = append(out, hd)
	}
	if len(out) == 0 {
		return
	}
	m := w.m
	m.log.Warn("a worker resumed after a stop: its streams hold what queued meanwhile until confirmed", "worker", wc.worker, "streams", len(out))
	if m.opts.OnHeld != nil {
		m.opts.OnHeld(out)
		return
	}
	go m.Reforward(out)
}

// detach folds the counters of a worker that exited into the totals.
func (w *mworker) detach(wc *wconn) {
	m := w.m
	m.mu.Lock()
	if w.conn == wc {
		w.conn = nil
		w.live.Store(nil)
	}
	now := m.mono()
	for _, st := range w.streams {
		st.exited(now)
	}
	m.mu.Unlock()
	wc.close()
}

// explain finds out why a worker that closed its end exited, once it has:
// its last word if it sent one, else the first line of a Go panic or fatal
// error on its stderr.
func (w *mworker) explain(ctx context.Context, p *supervisor.Proc, wc *wconn) {
	<-ctx.Done() // the process has exited: its stderr is all in
	if note := wc.note.Load(); note != nil {
		p.SetExitNote(*note)
		return
	}
	if note := w.tail.summary(); note != "" {
		p.SetExitNote(note)
	}
}

// apply takes one report: the report path, apart from control and readers.
func (w *mworker) apply(wc *wconn, r *report) {
	owned := *wc.owned.Load()
	now := w.m.mono()
	for i := range r.Streams {
		sr := &r.Streams[i]
		// A stream removed a moment ago may still be in a report the
		// worker wrote before it read the removal.
		if st := owned[sr.SID]; st != nil {
			st.update(sr, now)
		}
	}
}

// progress takes one progress frame: the report path, like apply.
func (w *mworker) progress(wc *wconn, entries []progressEntry) {
	owned := *wc.owned.Load()
	now := w.m.mono()
	for i := range entries {
		if st := owned[entries[i].SID]; st != nil {
			st.prog.store(&entries[i], now)
		}
	}
}

// wconn is the control connection of one live worker process.
type wconn struct {
	c      *net.UnixConn
	worker string
	pidv   int

	// The report path's timing, for Workers: monotonic nanoseconds.
	lastReport atomic.Int64
	maxGap     atomic.Int64
	owned      atomic.Pointer[map[uint32]*stream] // for the report path
	note       atomic.Pointer[string]             // the worker's last word
	prog       []progressEntry                    // the report path's, reused

	wmu sync.Mutex // serializes writes
	fw  frameWriter

	pmu     sync.Mutex
	pending map[uint64]waiter
	closed  bool
}

// waiter receives a worker's acknowledgement; the channel closes without
// one if the worker goes away first.
type waiter struct {
	ch     chan ackMsg
	typ    byte // the message acknowledged
	sids   []uint32
	worker string
	// adopt is the continuity a role message asked streams to adopt:
	// recorded again as the stream's own when the worker confirms, after
	// any report the worker wrote before the change.
	adopt map[uint32]Continuity
}

func (wc *wconn) reported(now time.Duration) {
	if last := wc.lastReport.Swap(int64(now)); last != 0 && int64(now)-last > wc.maxGap.Load() {
		wc.maxGap.Store(int64(now) - last)
	}
}

// own publishes the streams the report path may attribute reports to.
func (wc *wconn) own(streams map[uint32]*stream) {
	o := make(map[uint32]*stream, len(streams))
	for sid, st := range streams {
		o[sid] = st
	}
	wc.owned.Store(&o)
}

func (wc *wconn) send(typ byte, v any, fds []int) error {
	wc.wmu.Lock()
	defer wc.wmu.Unlock()
	return wc.fw.json(typ, v, fds)
}

// expect registers a waiter for request id.
func (wc *wconn) expect(id uint64, typ byte, sids []uint32, adopt map[uint32]Continuity) (waiter, bool) {
	w := waiter{ch: make(chan ackMsg, 1), typ: typ, sids: sids, worker: wc.worker, adopt: adopt}
	wc.pmu.Lock()
	defer wc.pmu.Unlock()
	if wc.closed {
		close(w.ch)
		return w, false
	}
	wc.pending[id] = w
	return w, true
}

func (wc *wconn) deliver(m *Manager, a ackMsg) {
	wc.pmu.Lock()
	w, ok := wc.pending[a.ID]
	delete(wc.pending, a.ID)
	wc.pmu.Unlock()
	refused := map[uint32]string{}
	for _, e := range a.Errors {
		m.log.Warn("worker refused a change", "worker", wc.worker, "sid", e.SID, "err", e.Error)
		refused[e.SID] = e.Error
	}
	if !ok {
		return
	}
	if w.typ == msgRole {
		owned := *wc.owned.Load()
		for sid, k := range w.adopt {
			if _, bad := refused[sid]; !bad && owned[sid] != nil {
				owned[sid].setCont(k)
			}
		}
	}
	if w.typ == msgAdd {
		// A stream the worker would not take is not carried: it says so,
		// and raises its condition, until a worker takes it.
		owned := *wc.owned.Load()
		for _, sid := range w.sids {
			st := owned[sid]
			if st == nil {
				continue
			}
			if why, bad := refused[sid]; bad {
				msg := fmt.Sprintf("%s refused it: %s", wc.worker, why)
				st.failure.Store(&msg)
			} else {
				st.failure.Store(nil)
			}
		}
	}
	w.ch <- a
}

func (wc *wconn) close() {
	wc.pmu.Lock()
	defer wc.pmu.Unlock()
	if wc.closed {
		return
	}
	wc.closed = true
	for id, w := range wc.pending {
		close(w.ch)
		delete(wc.pending, id)
	}
}

// request sends one message that the worker acknowledges.
func (wc *wconn) request(m *Manager, typ byte, id uint64, v any, fds []int, sids []uint32, adopt map[uint32]Continuity) (waiter, error) {
	w, ok := wc.expect(id, typ, sids, adopt)
	if !ok {
		return w, nil
	}
	wc.c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	err := wc.send(typ, v, fds)
	wc.c.SetWriteDeadline(time.Time{})
	if err != nil {
		wc.pmu.Lock()
		delete(wc.pending, id)
		wc.pmu.Unlock()
		close(w.ch)
		// A worker that does not read its control socket is broken: the
		// hang detection or its exit takes it from here.
		return w, err
	}
	return w, nil
}

func (wc *wconn) sendAdds(m *Manager, streams []*stream) ([]waiter, error) {
	return wc.sendAddsWith(m, streams, nil)
}

// sendAddsWith hands streams to the worker, in batches that stay under the
// kernel's limit of descriptors per message. Called with Manager.mu held.
func (wc *wconn) sendAddsWith(m *Manager, streams []*stream, conts map[uint32]Continuity) ([]waiter, error) {
	var waits []waiter
	for len(streams) > 0 {
		batch := streams[:min(len(streams), maxFDsPerFrame)]
		streams = streams[len(batch):]
		msg := addMsg{ID: m.nextReq.Add(1)}
		fds := make([]int, 0, len(batch))
		sids := make([]uint32, 0, len(batch))
		for _, st := range batch {
			spec := st.spec.Load()
			role := RoleForward
			if st.standby.Load() {
				role = RoleStandby
			}
			msg.Streams = append(msg.Streams, addStream{streamConfig: configOf(st.sid, spec), Role: role, Continuity: conts[st.sid]})
			fds = append(fds, st.inputFD)
			sids = append(sids, st.sid)
			if conts == nil {
				st.assign(wc.pidv, m.opts.ReportInterval, m.mono())
			}
		}
		w, err := wc.request(m, msgAdd, msg.ID, msg, fds, sids, nil)
		if err != nil {
			return waits, err
		}
		waits = append(waits, w)
	}
	return waits, nil
}

func configOf(sid uint32, spec *StreamSpec) streamConfig {
	return streamConfig{SID: sid, Name: spec.Name, Outputs: spec.Outputs, ClockRate: spec.ClockRate, RewriteSSRC: spec.RewriteSSRC}
}

func (wc *wconn) sendUpdate(m *Manager, st *stream) ([]waiter, error) {
	msg := updateMsg{ID: m.nextReq.Add(1), Streams: []streamConfig{configOf(st.sid, st.spec.Load())}}
	w, err := wc.request(m, msgUpdate, msg.ID, msg, nil, []uint32{st.sid}, nil)
	return []waiter{w}, err
}

func (wc *wconn) sendRemove(m *Manager, st *stream) ([]waiter, error) {
	msg := removeMsg{ID: m.nextReq.Add(1), SIDs: []uint32{st.sid}}
	w, err := wc.request(m, msgRemove, msg.ID, msg, nil, []uint32{st.sid}, nil)
	return []waiter{w}, err
}

// tailWriter keeps the end of a worker's stderr, to say why it died.
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 8 << 10

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailSize {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailSize:]...)
	}
	return len(p), nil
}

// summary is the line that best says why the process died: a Go panic or
// fatal error if there is one.
func (t *tailWriter) summary() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, line := range bytes.Split(t.buf, []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if strings.HasPrefix(s, "panic: ") || strings.HasPrefix(s, "fatal error: ") {
			return s
		}
	}
	return ""
}

// WorkerStatus is one worker process as the API shows it: how regularly its
// reports, which are its heartbeats, arrive.
type WorkerStatus struct {
	Name    string `json:"name"`
	PID     int    `json:"pid"`
	Streams int    `json:"streams"`
	// LastReportMs is the age of its last report; MaxReportGapMs the
	// longest time between two reports since the process started. Reports
	// are due every media.report_interval; a gap near media.hang_timeout
	// means the worker, or the parent's reading of it, is starved.
	LastReportMs   float64 `json:"last_report_ms"`
	MaxReportGapMs float64 `json:"max_report_gap_ms"`
}

// Workers returns every worker slot's status, without taking a lock.
func (m *Manager) Workers() []WorkerStatus {
	now := m.mono()
	out := make([]WorkerStatus, 0, len(m.workers))
	for _, w := range m.workers {
		ws := WorkerStatus{Name: w.name(), Streams: int(w.count.Load())}
		if wc := w.live.Load(); wc != nil {
			ws.PID = wc.pidv
			if last := time.Duration(wc.lastReport.Load()); last != 0 {
				ws.LastReportMs = float64(now-last) / 1e6
			}
			ws.MaxReportGapMs = float64(wc.maxGap.Load()) / 1e6
		}
		out = append(out, ws)
	}
	return out
}
