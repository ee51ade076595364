package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"appliance/internal/clock"
)

// ControlFD is the descriptor on which a worker finds its control socket.
const ControlFD = 3

// RunWorker is the body of the `appliance worker` process. It reads its
// streams from the control socket, relays them, applies the changes the
// parent sends (add, update, remove, role), and reports until ctx ends or
// the parent goes away (the control socket closes), whichever is first.
//
// A worker keeps no state worth saving: the parent holds the input sockets
// and the continuity state, so killing a worker costs its streams a pause,
// not their packets. A fault it cannot carry on from is sent to the parent
// as its last word, so the reason is in the API and not only on stderr.
func RunWorker(ctx context.Context, log *slog.Logger) error {
	ctrlFile := os.NewFile(ControlFD, "control")
	if ctrlFile == nil {
		return errors.New("worker: no control socket on fd 3; the worker is started by `appliance run`, not by hand")
	}
	fc, err := net.FileConn(ctrlFile)
	ctrlFile.Close()
	if err != nil {
		return fmt.Errorf("worker: control socket on fd 3: %w; the worker is started by `appliance run`, not by hand", err)
	}
	ctrl, ok := fc.(*net.UnixConn)
	if !ok {
		fc.Close()
		return errors.New("worker: fd 3 is not a unix socket; the worker is started by `appliance run`, not by hand")
	}
	defer ctrl.Close()

	w := &workerProc{ctrl: ctrl, fw: frameWriter{c: ctrl}, fr: newFrameReader(ctrl), streams: map[uint32]*wstream{}}
	if err := w.run(ctx, log); err != nil {
		w.fatal(err)
		return err
	}
	return nil
}

type workerProc struct {
	ctrl  *net.UnixConn
	fr    *frameReader // read by the control loop only
	hello helloMsg
	log   *slog.Logger

	wmu sync.Mutex // serializes writes on ctrl
	fw  frameWriter

	// poll serves the inputs when the worker batches (batch_window > 0).
	poll *poller

	mu      sync.Mutex // guards streams and list (not the streams' own state)
	streams map[uint32]*wstream
	list    []*wstream // the same streams, to walk without allocating

	// passMu makes each pass over the streams (a report or a progress
	// frame) and the writing of its frame one step, and a role change and
	// its acknowledgement another: so a frame that saw a stream before a
	// role change reaches the parent before the change's acknowledgement,
	// never after it.
	passMu   sync.Mutex
	rep      reportEncoder
	prog     progressEncoder
	progList []*wstream

	// The stall check (stallAfter): when the main loop last ticked (Mono
	// ns), whether it is holding the streams now, and how many held
	// streams the parent has not been told of.
	alive       atomic.Int64
	holding     atomic.Bool
	pendingHeld atomic.Int64
}

func (w *workerProc) run(ctx context.Context, log *slog.Logger) error {
	_ = w.ctrl.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, body, err := w.fr.next()
	if err != nil {
		return fmt.Errorf("worker: reading hello: %w", err)
	}
	_ = w.ctrl.SetReadDeadline(time.Time{})
	if typ != msgHello {
		return fmt.Errorf("worker: first message is %q, want hello", typ)
	}
	if err := json.Unmarshal(body, &w.hello); err != nil {
		return fmt.Errorf("worker: hello: %w", err)
	}
	if err := checkHello(&w.hello); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	w.log = log.With("worker", w.hello.Worker)
	if err := w.send(msgReady, readyMsg{Version: protocolVersion, PID: os.Getpid()}, nil); err != nil {
		return fmt.Errorf("worker: answering hello: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if window := time.Duration(w.hello.BatchWindowNs); window > 0 {
		if w.poll, err = newPoller(w, window); err != nil {
			return err
		}
		go w.poll.run()
		defer w.poll.close() // after closeAll: the streams leave the set first
	}
	defer w.closeAll()
	// Alive from before the first add: a stream that finds packets queued
	// (a worker restarted with a backlog) must not take a zero for a stall
	// and hold.
	w.alive.Store(int64(clock.Mono()))
	ctlErr := make(chan error, 1)
	go func() {
		ctlErr <- w.control() // before cancel: the loop below must find it
		cancel()
	}()

	tick := time.NewTicker(time.Duration(w.hello.ReportIntervalNs))
	defer tick.Stop()
	prog := time.NewTicker(time.Duration(w.hello.ProgressIntervalNs))
	defer prog.Stop()
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			w.closeAll()
			// The last word, so the parent's counters miss nothing; bounded,
			// in case the parent is not reading.
			_ = w.ctrl.SetWriteDeadline(time.Now().Add(2 * time.Second))
			seq++
			_ = w.report(seq)
			select {
			case err := <-ctlErr:
				return err
			default:
				return nil
			}
		case <-tick.C:
			seq++
			if err := w.report(seq); err != nil {
				return fmt.Errorf("worker: report: %w", err)
			}
		case <-prog.C:
			now := clock.Mono()
			if stall := now-time.Duration(w.alive.Load()) > stallAfter; stall || w.pendingHeld.Load() > 0 {
				if err := w.holdAfterStall(stall); err != nil {
					return fmt.Errorf("worker: reporting held streams: %w", err)
				}
			}
			w.alive.Store(int64(now))
			if err := w.progress(); err != nil {
				return fmt.Errorf("worker: progress: %w", err)
			}
		}
	}
}

// control applies the parent's messages until the socket closes. Only a
// fault in the protocol itself is an error: a stream that cannot be added is
// refused in the acknowledgement and the worker carries on.
func (w *workerProc) control() error {
	defer w.fr.closeFDs()
	for {
		typ, body, err := w.fr.next()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || isEOF(err) {
				return nil // the parent is gone or stopping us
			}
			return fmt.Errorf("worker: control socket: %w", err)
		}
		var ack ackMsg
		switch typ {
		case msgAdd:
			var m addMsg
			if err := json.Unmarshal(body, &m); err != nil {
				return fmt.Errorf("worker: add: %w", err)
			}
			fds, err := w.fr.takeFDs(len(m.Streams))
			if err != nil {
				return fmt.Errorf("worker: add: %w", err)
			}
			ack = ackMsg{ID: m.ID}
			for i, as := range m.Streams {
				if err := w.add(as, fds[i]); err != nil {
					ack.Errors = append(ack.Errors, streamError{SID: as.SID, Error: err.Error()})
				}
			}
		case msgUpdate:
			var m updateMsg
			if err := json.Unmarshal(body, &m); err != nil {
				return fmt.Errorf("worker: update: %w", err)
			}
			ack = ackMsg{ID: m.ID}
			for _, sc := range m.Streams {
				if err := w.update(sc); err != nil {
					ack.Errors = append(ack.Errors, streamError{SID: sc.SID, Error: err.Error()})
				}
			}
		case msgRemove:
			var m removeMsg
			if err := json.Unmarshal(body, &m); err != nil {
				return fmt.Errorf("worker: remove: %w", err)
			}
			for _, sid := range m.SIDs {
				w.remove(sid)
			}
			ack = ackMsg{ID: m.ID}
		case msgRole:
			var m roleMsg
			if err := json.Unmarshal(body, &m); err != nil {
				return fmt.Errorf("worker: role: %w", err)
			}
			// The progress the change made goes just before its
			// acknowledgement: once the parent has the answer, ProgressOf
			// shows the new role.
			w.passMu.Lock()
			ack = w.roles(m)
			err := w.sendProgressLocked()
			if err == nil {
				err = w.send(msgAck, ack, nil)
			}
			w.passMu.Unlock()
			if err != nil {
				return fmt.Errorf("worker: acknowledging: %w", err)
			}
			continue
		default:
			return fmt.Errorf("worker: unexpected message type %q", typ)
		}
		if err := w.send(msgAck, ack, nil); err != nil {
			return fmt.Errorf("worker: acknowledging: %w", err)
		}
	}
}

func isEOF(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET)
}

func (w *workerProc) send(typ byte, v any, fds []int) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return w.fw.json(typ, v, fds)
}

// fatal tells the parent why this worker is about to exit.
func (w *workerProc) fatal(err error) {
	_ = w.ctrl.SetWriteDeadline(time.Now().Add(time.Second))
	_ = w.send(msgFatal, fatalMsg{Error: err.Error()}, nil)
}

func (w *workerProc) add(as addStream, fd int) error {
	if err := checkStream(&as.streamConfig); err != nil {
		unix.Close(fd)
		return err
	}
	if as.Role != RoleForward && as.Role != RoleStandby {
		unix.Close(fd)
		return fmt.Errorf("stream %s: role %q", as.Name, as.Role)
	}
	w.mu.Lock()
	_, dup := w.streams[as.SID]
	w.mu.Unlock()
	if dup {
		unix.Close(fd)
		return fmt.Errorf("stream %s: id %d is already here", as.Name, as.SID)
	}
	s, err := openWorkerStream(as, fd, time.Duration(w.hello.StandbyRingNs), time.Duration(w.hello.BatchWindowNs))
	if err != nil {
		return err
	}
	s.w = w
	w.mu.Lock()
	w.streams[as.SID] = s
	w.list = append(w.list, s)
	w.mu.Unlock()
	if s.window > 0 {
		s.mu.Lock() // close may come at once, from closeAll
		err := w.poll.add(s)
		s.mu.Unlock()
		if err != nil {
			w.remove(as.SID)
			return err
		}
	} else {
		go s.run()
	}
	return nil
}

func (w *workerProc) stream(sid uint32) *wstream {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.streams[sid]
}

func (w *workerProc) update(sc streamConfig) error {
	if err := checkStream(&sc); err != nil {
		return err
	}
	s := w.stream(sc.SID)
	if s == nil {
		return fmt.Errorf("stream %s: id %d is not here", sc.Name, sc.SID)
	}
	now := clock.Mono()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setOutputs(sc.Outputs, now)
	s.r.setRewrite(sc.RewriteSSRC)
	s.r.setClockRate(sc.ClockRate)
	return nil
}

// remove stops a stream and returns once its input is closed here, so that
// when the parent closes its own copy the port is free at once.
func (w *workerProc) remove(sid uint32) {
	w.mu.Lock()
	s := w.streams[sid]
	delete(w.streams, sid)
	if i := slices.Index(w.list, s); s != nil && i >= 0 {
		w.list = slices.Delete(w.list, i, i+1)
	}
	w.mu.Unlock()
	if s != nil {
		s.mu.Lock()
		if s.held && !s.heldSent {
			s.heldSent = true // gone: nothing to report
			w.pendingHeld.Add(-1)
		}
		s.mu.Unlock()
		s.close()
	}
}

// stallAfter is how long the worker's own ticks may stop before it takes
// itself for resumed after a stop (SIGSTOP of the unit, a paused machine):
// then its forwarding streams hold what queued in their sockets, in the
// ring, until the parent confirms them. Forwarding it blindly would send
// the peer's packets a second time if the peer took over meanwhile.
//
// Half a second: a worker starved by a saturated machine misses ticks for
// up to a few hundred milliseconds, and holding then would only delay its
// streams; a unit stopped for less forwards that much twice at most.
const stallAfter = 500 * time.Millisecond

// stalled says whether a stream about to forward must hold instead: the
// worker is reporting a stall, or its ticks stopped (it was stopped, and
// the tick that finds out has not run yet).
func (w *workerProc) stalled(now time.Duration) bool {
	return w.holding.Load() || now-time.Duration(w.alive.Load()) > stallAfter
}

// holdAfterStall holds every forwarding stream after a stall (all), and
// tells the parent which streams are held, with what each forwarded last.
// It runs in the worker's main loop, which sets holding first, so a
// stream goroutine that runs before it, or during it, holds too; without
// all, it only reports the streams that held by themselves.
func (w *workerProc) holdAfterStall(all bool) error {
	if all {
		w.holding.Store(true)
		defer w.holding.Store(false)
	}
	w.mu.Lock()
	list := slices.Clone(w.list)
	w.mu.Unlock()
	var msg heldMsg
	for _, s := range list {
		s.mu.Lock()
		if all {
			s.holdLocked()
		}
		if s.held && !s.heldSent {
			s.heldSent = true
			w.pendingHeld.Add(-1)
			h := heldStream{SID: s.sid}
			if s.heldOK {
				v := s.heldLast
				h.LastForwarded = &v
			}
			msg.Streams = append(msg.Streams, h)
		}
		s.mu.Unlock()
	}
	if len(msg.Streams) == 0 {
		return nil
	}
	return w.send(msgHeld, msg, nil)
}

// roles applies a role message, stream by stream.
func (w *workerProc) roles(m roleMsg) ackMsg {
	ack := ackMsg{ID: m.ID}
	for _, c := range m.Changes {
		ra, err := w.role(c)
		if err != nil {
			ack.Errors = append(ack.Errors, streamError{SID: c.SID, Error: err.Error()})
			continue
		}
		ack.Roles = append(ack.Roles, ra)
	}
	return ack
}

func (w *workerProc) role(c roleChange) (roleAck, error) {
	ra := roleAck{SID: c.SID}
	s := w.stream(c.SID)
	if s == nil {
		return ra, fmt.Errorf("stream id %d is not here", c.SID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.progDirty = true
	if s.held && !s.heldSent {
		w.pendingHeld.Add(-1) // the parent decides now: nothing to report
	}
	s.held, s.heldSent = false, false
	switch c.Role {
	case RoleStandby:
		if c.FromSeq != nil || c.Continuity != nil {
			return ra, errors.New("a starting sequence number or a continuity goes with role forward only")
		}
		if seq, ok := s.r.setStandby(time.Duration(w.hello.StandbyRingNs)); ok {
			ra.LastForwarded = &seq
		}
	case RoleForward:
		if s.r.haveFwd {
			seq := s.r.lastFwd
			ra.LastForwarded = &seq
		}
		now := clock.Mono()
		adopted := c.Continuity != nil && c.Continuity.Valid
		if adopted {
			s.r.adopt(c.Continuity.continuity(now))
		}
		ra.Replayed, ra.FromIgnored = s.r.startForward(c.FromSeq, adopted, func(b []byte) { s.sendLocked(b, now) })
	default:
		return ra, fmt.Errorf("role %q: want forward or standby", c.Role)
	}
	return ra, nil
}

func (w *workerProc) closeAll() {
	w.mu.Lock()
	all := make([]*wstream, 0, len(w.streams))
	for _, s := range w.streams {
		all = append(all, s)
	}
	w.mu.Unlock()
	for _, s := range all {
		s.close()
	}
}

// progress sends a progress frame, if any stream's progress changed.
func (w *workerProc) progress() error {
	w.passMu.Lock()
	defer w.passMu.Unlock()
	return w.sendProgressLocked()
}

func (w *workerProc) sendProgressLocked() error {
	frame := w.progressFrame(clock.Mono())
	if frame == nil {
		return nil
	}
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return w.fw.raw(frame, nil)
}

// report sends one report frame. Down outputs are retried on the same beat.
func (w *workerProc) report(seq uint64) error {
	w.passMu.Lock()
	defer w.passMu.Unlock()
	e := &w.rep
	w.mu.Lock()
	all := make([]*wstream, 0, len(w.streams))
	for _, s := range w.streams {
		all = append(all, s)
	}
	w.mu.Unlock()
	slices.SortFunc(all, func(a, b *wstream) int { return int(a.sid) - int(b.sid) })

	now := clock.Mono()
	e.begin(seq, len(all))
	var sr streamReport
	for _, s := range all {
		s.mu.Lock()
		for _, o := range s.outs {
			o.maintain(now)
		}
		st := s.r.state()
		sr = streamReport{SID: s.sid, Counters: st.c, Continuity: st.cont, LastFwd: st.lastFwd, HaveFwd: st.haveFwd,
			Ring: uint32(st.ring), InAge: -1, Outputs: sr.Outputs[:0]}
		if st.standby {
			sr.Role = roleStandby
		}
		if st.haveIn {
			sr.InAge = max(now-st.lastIn, 0)
		}
		for _, o := range s.outs {
			sr.Outputs = append(sr.Outputs, o.report(now))
		}
		s.mu.Unlock()
		e.stream(&sr)
	}
	frame := e.end()
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return w.fw.raw(frame, nil)
}

// wstream is one stream in a worker. Its goroutine reads the input and,
// holding mu for each packet, checks, rewrites and sends it; the control
// loop and the reporter take mu only briefly.
type wstream struct {
	sid  uint32
	name string
	in   *net.UDPConn
	rd   *datagramReader // per packet (window 0)
	buf  []byte
	// In batches (window > 0): the input is a plain descriptor, read by
	// the worker's poller under mu; -1 once the stream is closed.
	fd  int
	brd *batchReader
	// What a batch forwards, back to back in fwdBuf, fwd the sizes, and
	// the GSO sender for runs of one size (window > 0).
	fwdBuf []byte
	fwd    []int
	fwdOff int
	gso    *gsoSender
	// window is media.batch_window: 0 reads each packet as it arrives.
	window time.Duration
	done   chan struct{}

	w    *workerProc
	mu   sync.Mutex
	r    *relay
	outs []*output
	// held: forwarding stopped after a stall (holdLocked) until the
	// parent's next role change; heldLast/heldOK is what it forwarded last.
	held, heldOK, heldSent bool
	heldLast               uint16
	// What the last progress frame said of the stream (see progressFrame).
	progLast  progState
	progSent  bool   // progLast was sent
	progDirty bool   // a role change: look again even without a packet
	progIn    uint64 // packets in when last looked at
}

func openWorkerStream(as addStream, fd int, ring, window time.Duration) (*wstream, error) {
	s := &wstream{sid: as.SID, name: as.Name, fd: -1, window: window, done: make(chan struct{}),
		r: newRelay(as.ClockRate, as.RewriteSSRC, as.Continuity), progDirty: true}
	if window > 0 {
		// Batched: the poller reads the descriptor as it is.
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			unix.Close(fd)
			return nil, fmt.Errorf("stream %s: input descriptor %d is not an open socket", as.Name, fd)
		}
		if t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || t != unix.SOCK_DGRAM {
			unix.Close(fd)
			return nil, fmt.Errorf("stream %s: input is not a UDP socket", as.Name)
		}
		// Receive stamps were asked for when the parent bound it (bindInput).
		s.fd = fd
		close(s.done)
		s.brd = newBatchReader(batchMax, readBufSize)
		s.fwdBuf, s.fwd, s.gso = make([]byte, batchMax*readBufSize), make([]int, 0, batchMax), newGSOSender()
	} else {
		f := os.NewFile(uintptr(fd), as.Name)
		if f == nil {
			return nil, fmt.Errorf("stream %s: input descriptor %d is not open", as.Name, fd)
		}
		pc, err := net.FilePacketConn(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("stream %s: input: %w", as.Name, err)
		}
		in, ok := pc.(*net.UDPConn)
		if !ok {
			pc.Close()
			return nil, fmt.Errorf("stream %s: input is not a UDP socket", as.Name)
		}
		s.in = in
		s.buf = make([]byte, readBufSize)
		if s.rd, err = newDatagramReader(in, s.buf); err != nil {
			in.Close()
			return nil, fmt.Errorf("stream %s: input: %w", as.Name, err)
		}
	}
	if as.Role == RoleStandby {
		s.r.setStandby(ring)
	}
	s.setOutputs(as.Outputs, clock.Mono())
	return s, nil
}

// setOutputs changes the destinations in place: outputs that stay keep their
// socket and counters. Called with mu held (or before the stream runs).
func (s *wstream) setOutputs(addrs []netip.AddrPort, now time.Duration) {
	keep := make([]*output, 0, len(addrs))
	for _, a := range addrs {
		i := slices.IndexFunc(s.outs, func(o *output) bool { return o != nil && o.addr == a })
		if i >= 0 {
			keep = append(keep, s.outs[i])
			s.outs[i] = nil
			continue
		}
		keep = append(keep, newOutput(a, now))
	}
	for _, o := range s.outs {
		if o != nil {
			o.close()
		}
	}
	s.outs = keep
}

func (s *wstream) run() {
	defer close(s.done)
	for {
		n, err := s.rd.read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		now := clock.Mono()
		s.mu.Lock()
		if !s.r.standby && s.w.stalled(now) {
			s.holdLocked()
		}
		if out := s.r.handle(s.buf, n, now); out != nil {
			s.sendLocked(out, now)
		}
		s.mu.Unlock()
	}
}

// holdLocked stops a forwarding stream after a stall: its input goes to
// the ring, as a standby's does, until the parent confirms it.
func (s *wstream) holdLocked() {
	if s.r.standby || !s.r.haveFwd {
		// Standby already; or nothing forwarded yet, so no point to go
		// on from: it keeps forwarding.
		return
	}
	last, ok := s.r.setStandby(time.Duration(s.w.hello.StandbyRingNs))
	s.held, s.heldOK, s.heldLast, s.heldSent = true, ok, last, false
	s.progDirty = true
	s.w.pendingHeld.Add(1)
}

// sendLocked forwards one packet to every output.
func (s *wstream) sendLocked(b []byte, now time.Duration) {
	failures := 0
	for _, o := range s.outs {
		if !o.send(b, now) {
			failures++
		}
	}
	s.r.wroteOut(len(b), len(s.outs), failures)
}

// close stops the stream and waits until its goroutine has let go of the
// input, so the descriptor is really closed when close returns. The input is
// only this worker's copy: the parent keeps its own until it removes the stream.
func (s *wstream) close() {
	if s.in != nil {
		s.in.Close()
	}
	<-s.done
	s.mu.Lock()
	if s.fd >= 0 {
		if s.w != nil && s.w.poll != nil {
			s.w.poll.remove(s.fd)
		}
		unix.Close(s.fd)
		s.fd = -1
	}
	for _, o := range s.outs {
		o.close()
	}
	s.mu.Unlock()
}
