package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// ControlFD is the descriptor on which a worker finds its control socket.
const ControlFD = 3

// RunWorker is the body of the `appliance worker` process: it reads its
// assignment from the control socket, relays its streams, and reports until
// ctx ends or the parent goes away (the control socket closes), whichever is
// first. A worker keeps no state worth saving: the parent holds the input
// sockets and the continuity state, so killing a worker costs its streams a
// pause, not their packets.
func RunWorker(ctx context.Context, log *slog.Logger) error {
	ctrlFile := os.NewFile(ControlFD, "control")
	if ctrlFile == nil {
		return errors.New("worker: no control socket on fd 3; the worker is started by `appliance run`, not by hand")
	}
	ctrl, err := net.FileConn(ctrlFile)
	ctrlFile.Close()
	if err != nil {
		return fmt.Errorf("worker: control socket: %w", err)
	}
	defer ctrl.Close()

	dec := json.NewDecoder(ctrl)
	var a assignment
	_ = ctrl.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := dec.Decode(&a); err != nil {
		return fmt.Errorf("worker: reading assignment: %w", err)
	}
	_ = ctrl.SetReadDeadline(time.Time{})
	if err := checkAssignment(&a); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	log = log.With("worker", a.Worker)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	streams := make([]*workerStream, 0, len(a.Streams))
	defer func() {
		for _, s := range streams {
			s.close()
		}
	}()
	for _, as := range a.Streams {
		s, err := openWorkerStream(as)
		if err != nil {
			return fmt.Errorf("worker: stream %s: %w", as.Name, err)
		}
		streams = append(streams, s)
	}
	log.Info("worker relaying", "streams", len(streams))

	var wg sync.WaitGroup
	for _, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(ctx)
		}()
	}
	// The parent closing its end (or dying) is the signal to stop.
	go func() {
		var b [1]byte
		_, _ = ctrl.Read(b[:])
		cancel()
	}()

	enc := json.NewEncoder(ctrl)
	tick := time.NewTicker(time.Duration(a.ReportInterval))
	defer tick.Stop()
	var seq uint64
	send := func() error {
		seq++
		r := report{Seq: seq, Streams: make([]streamReport, len(streams))}
		for i, s := range streams {
			c, cont := s.r.snapshot()
			r.Streams[i] = streamReport{Index: s.index, Counters: c, Continuity: cont}
		}
		_ = ctrl.SetWriteDeadline(time.Now().Add(time.Second))
		return enc.Encode(&r)
	}
	if err := send(); err != nil {
		return fmt.Errorf("worker: first report: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			for _, s := range streams {
				s.close()
			}
			wg.Wait()
			_ = send() // the last word, so the parent's counters miss nothing
			return nil
		case <-tick.C:
			if err := send(); err != nil {
				return fmt.Errorf("worker: report: %w", err)
			}
		}
	}
}

type workerStream struct {
	index   int
	name    string
	in      *net.UDPConn
	outs    []*net.UDPConn
	r       *relay
	buf     []byte
	closing sync.Once
}

func openWorkerStream(as assignedStream) (*workerStream, error) {
	f := os.NewFile(uintptr(as.FD), as.Name)
	if f == nil {
		return nil, fmt.Errorf("input fd %d is not open", as.FD)
	}
	pc, err := net.FilePacketConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("input fd %d: %w", as.FD, err)
	}
	in, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("input fd %d is not a UDP socket", as.FD)
	}
	s := &workerStream{index: as.Index, name: as.Name, in: in, buf: make([]byte, readBufSize),
		r: newRelay(as.ClockRate, as.RewriteSSRC, as.Continuity)}
	for _, o := range as.Outputs {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(o))
		if err != nil {
			s.close()
			return nil, fmt.Errorf("output %v: %w", o, err)
		}
		s.outs = append(s.outs, c)
	}
	return s, nil
}

func (s *workerStream) run(ctx context.Context) {
	rd, err := newDatagramReader(s.in, s.buf)
	if err != nil {
		return
	}
	for ctx.Err() == nil {
		n, err := rd.read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		out := s.r.handle(s.buf, n, time.Now().UnixNano())
		if out == nil {
			continue
		}
		failures := 0
		for _, o := range s.outs {
			if writeDatagram(o, out) != nil {
				failures++
			}
		}
		s.r.wroteOut(len(out), len(s.outs), failures)
	}
}

// close stops the stream; the input socket is only this worker's copy, the
// parent keeps its own open.
func (s *workerStream) close() {
	s.closing.Do(func() {
		s.in.Close()
		for _, o := range s.outs {
			o.Close()
		}
	})
}
