package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"appliance/internal/clock"
	"appliance/supervisor"
)

// StreamSpec is one stream as the manager needs it.
type StreamSpec struct {
	Name        string
	Input       netip.AddrPort
	Outputs     []netip.AddrPort
	ClockRate   int
	RewriteSSRC *uint32
}

// Options configures a Manager.
type Options struct {
	Streams        []StreamSpec
	Workers        int           // worker processes; streams are spread over them
	HangTimeout    time.Duration // a worker silent this long is killed and restarted
	ReportInterval time.Duration // how often workers report (and so heartbeat)
	// Command is the argv that starts a worker: normally this binary with the
	// hidden "worker" subcommand.
	Command []string
	Env     []string // extra environment for workers
	Clock   clock.Clock
	Logger  *slog.Logger
}

// Manager is the parent side of the media workers. It owns each stream's
// input socket for its whole life, so a worker that crashes leaves the
// stream's packets queued in the kernel for the next worker rather than
// dropped; and it keeps each stream's counters and continuity state, so they
// survive any number of worker restarts.
type Manager struct {
	opts    Options
	log     *slog.Logger
	clk     clock.Clock
	inputs  []*os.File
	workers []*worker

	mu      sync.Mutex
	streams []*streamState
}

type streamState struct {
	spec     StreamSpec
	worker   int
	base     Counters // totals of workers that have exited
	cur      Counters // the live worker's latest report
	cont     Continuity
	up       bool // a worker is relaying it
	reported bool // the live worker has reported at least once
	pid      int
	starts   int
	// rate over roughly a second, from the reports
	rateAt      time.Time
	rateBytes   uint64
	ratePackets uint64
	bitrate     float64
	pps         float64
}

// NewManager binds every stream's input. An input that cannot be bound is an
// error naming the stream: nothing is started.
func NewManager(o Options) (*Manager, error) {
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Workers < 1 {
		o.Workers = 1
	}
	if o.ReportInterval <= 0 {
		o.ReportInterval = 100 * time.Millisecond
	}
	if len(o.Command) == 0 {
		return nil, errors.New("media: no worker command")
	}
	m := &Manager{opts: o, log: o.Logger, clk: o.Clock}
	for i, s := range o.Streams {
		f, err := bindInput(s.Input)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("stream %s: input udp://%v: %w", s.Name, s.Input, err)
		}
		m.inputs = append(m.inputs, f)
		m.streams = append(m.streams, &streamState{spec: s, worker: i % o.Workers})
	}
	n := min(o.Workers, len(o.Streams))
	for w := 0; w < n; w++ {
		wk := &worker{m: m, id: w}
		for i, st := range m.streams {
			if st.worker == w {
				wk.streams = append(wk.streams, i)
			}
		}
		wk.proc = &supervisor.Process{
			Name:        wk.name(),
			Command:     wk.command,
			Attach:      wk.attach,
			HangTimeout: o.HangTimeout,
			Clock:       o.Clock,
			Logger:      o.Logger,
		}
		m.workers = append(m.workers, wk)
	}
	return m, nil
}

// bindInput opens a stream's input socket with a receive buffer large enough
// to hold the stream while a worker restarts.
func bindInput(ap netip.AddrPort) (*os.File, error) {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	setReceiveBuffer(c, 4<<20)
	return c.File()
}

// Children returns one supervised child per worker process, in order.
func (m *Manager) Children() []supervisor.Child {
	out := make([]supervisor.Child, 0, len(m.workers))
	for _, w := range m.workers {
		out = append(out, supervisor.Child{Name: w.name(), Service: w.proc, Restart: supervisor.Permanent, Shutdown: 2 * time.Second})
	}
	return out
}

// Close releases the input sockets. Call it after the workers have stopped.
func (m *Manager) Close() {
	for _, f := range m.inputs {
		f.Close()
	}
	m.inputs = nil
}

// StreamStatus is one stream as the API shows it. The JSON names are a contract.
type StreamStatus struct {
	Name       string   `json:"name"`
	State      string   `json:"state"` // starting, running, idle (no input), restarting
	Worker     int      `json:"worker"`
	WorkerPID  int      `json:"worker_pid"`
	Input      string   `json:"input"`
	Outputs    []string `json:"outputs"`
	BitrateBps float64  `json:"bitrate_bps"`
	PacketRate float64  `json:"packet_rate"`
	Restarts   int      `json:"restarts"`
	Counters
}

// idleAfter is how long without input before a stream shows as idle.
const idleAfter = time.Second

// Streams returns every stream's status, in configuration order.
func (m *Manager) Streams() []StreamStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clk.Now()
	out := make([]StreamStatus, 0, len(m.streams))
	for _, st := range m.streams {
		c := st.base
		c.Add(st.cur)
		s := StreamStatus{
			Name: st.spec.Name, Worker: st.worker, Input: "udp://" + st.spec.Input.String(),
			Counters: c, Restarts: max(st.starts-1, 0),
		}
		for _, o := range st.spec.Outputs {
			s.Outputs = append(s.Outputs, "udp://"+o.String())
		}
		switch {
		case !st.up && st.starts > 0:
			s.State = "restarting"
		case !st.up || !st.reported:
			s.State = "starting"
		case c.LastInUnixNano == 0 || now.Sub(time.Unix(0, c.LastInUnixNano)) > idleAfter:
			s.State = "idle"
		default:
			s.State = "running"
		}
		if st.up {
			s.WorkerPID = st.pid
			if s.State == "running" {
				s.BitrateBps, s.PacketRate = st.bitrate, st.pps
			}
		}
		if s.Outputs == nil {
			s.Outputs = []string{}
		}
		out = append(out, s)
	}
	return out
}

// worker is the parent's handle on one worker process.
type worker struct {
	m       *Manager
	id      int
	streams []int // indexes into m.streams
	proc    *supervisor.Process
	// ctrl is the parent's end of the control socket of the process being
	// started: made by command, taken by attach (the supervisor calls them in
	// that order, from one goroutine).
	ctrl *os.File
}

func (w *worker) name() string { return fmt.Sprintf("worker-%d", w.id) }

func (w *worker) command() (*exec.Cmd, error) {
	if w.ctrl != nil {
		w.ctrl.Close()
		w.ctrl = nil
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	parent, child := os.NewFile(uintptr(fds[0]), "control"), os.NewFile(uintptr(fds[1]), "control-worker")
	files := []*os.File{child}
	for _, i := range w.streams {
		// The supervisor closes what it passed once the child has it, so the
		// child gets a duplicate: the original stays with the manager.
		fd, err := unix.FcntlInt(w.m.inputs[i].Fd(), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			parent.Close()
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("stream %s: duplicating input: %w", w.m.streams[i].spec.Name, err)
		}
		files = append(files, os.NewFile(uintptr(fd), w.m.streams[i].spec.Name))
	}
	argv := w.m.opts.Command
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.ExtraFiles = files
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Env = append(os.Environ(), w.m.opts.Env...)
	w.ctrl = parent
	return cmd, nil
}

func (w *worker) attach(ctx context.Context, p *supervisor.Proc) error {
	ctrl := w.ctrl
	w.ctrl = nil
	if ctrl == nil {
		return errors.New("no control socket")
	}
	conn, err := net.FileConn(ctrl)
	ctrl.Close()
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	a, owned := w.assign(p.PID)
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := json.NewEncoder(conn).Encode(&a); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("sending assignment: %w", err)
	}
	defer w.exited()

	dec := json.NewDecoder(conn)
	for {
		r, err := decodeReport(dec, owned)
		if err != nil {
			// The worker's end closing (EOF, or a reset when it died with
			// unread data) means it exited: its exit status tells why.
			if ctx.Err() != nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) {
				return nil
			}
			return err
		}
		p.Beat()
		w.apply(r)
	}
}

// assign builds the assignment for a fresh worker process from the static
// spec and the latest continuity state.
func (w *worker) assign(pid int) (assignment, map[int]bool) {
	m := w.m
	m.mu.Lock()
	defer m.mu.Unlock()
	a := assignment{Worker: w.id, ReportInterval: int64(m.opts.ReportInterval)}
	owned := make(map[int]bool, len(w.streams))
	for k, i := range w.streams {
		st := m.streams[i]
		cont := st.cont
		// A dead worker may have sent packets after its last report: if the
		// numbering must move, step past what it could have sent.
		cont.Margin = uint16(min(math.Ceil(st.pps*2*m.opts.ReportInterval.Seconds())+1, 1000))
		a.Streams = append(a.Streams, assignedStream{
			Index: i, Name: st.spec.Name, FD: ControlFD + 1 + k, Outputs: st.spec.Outputs,
			ClockRate: st.spec.ClockRate, RewriteSSRC: st.spec.RewriteSSRC, Continuity: cont,
		})
		owned[i] = true
		st.up, st.reported, st.pid = true, false, pid
		st.starts++
	}
	return a, owned
}

func (w *worker) apply(r report) {
	m := w.m
	now := m.clk.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, sr := range r.Streams {
		st := m.streams[sr.Index]
		st.cur, st.cont, st.reported = sr.Counters, sr.Continuity, true
		bytes, packets := st.base.BytesIn+st.cur.BytesIn, st.base.PacketsIn+st.cur.PacketsIn
		if st.rateAt.IsZero() {
			st.rateAt, st.rateBytes, st.ratePackets = now, bytes, packets
		} else if dt := now.Sub(st.rateAt).Seconds(); dt >= 1 {
			st.bitrate = float64(bytes-st.rateBytes) * 8 / dt
			st.pps = float64(packets-st.ratePackets) / dt
			st.rateAt, st.rateBytes, st.ratePackets = now, bytes, packets
		}
	}
}

// exited folds the dead worker's last counters into the totals.
func (w *worker) exited() {
	m := w.m
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, i := range w.streams {
		st := m.streams[i]
		st.base.Add(st.cur)
		st.cur = Counters{}
		st.up, st.reported, st.pid = false, false, 0
	}
}
