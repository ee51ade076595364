package media

import (
	"context"
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
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"appliance/health"
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
	// FreeBind binds the input with IP_FREEBIND: to an address the unit
	// does not hold yet, such as the pair's virtual address on the standby
	// unit, which starts receiving once the address moves here.
	FreeBind bool
	// Standby starts a new stream in standby instead of forwarding: a
	// paired unit starts every stream so, and the pair decides. It applies
	// when the stream is added; later changes go through SetRoles.
	Standby bool
	// Group spreads streams over the workers: a new stream goes to the
	// worker with the fewest streams of its group, then the fewest in all.
	// A paired unit groups its streams by the unit that prefers them, so
	// the streams a takeover brings are spread over every worker (and its
	// core) rather than doubling the load of a few.
	Group string
}

// sameRelay reports whether two specs relay alike: an update is needed otherwise.
func (s StreamSpec) sameRelay(o StreamSpec) bool {
	if s.ClockRate != o.ClockRate || !slices.Equal(s.Outputs, o.Outputs) || (s.RewriteSSRC == nil) != (o.RewriteSSRC == nil) {
		return false
	}
	return s.RewriteSSRC == nil || *s.RewriteSSRC == *o.RewriteSSRC
}

// Alarms is where the manager raises and clears its health conditions:
// stream.failed:<stream> and output.failing:<stream>:<address>.
type Alarms interface {
	Set(name string, sev health.Severity, msg string)
	Clear(name string)
}

// Options configures a Manager. The defaults of every setting are the
// config package's; here zero is an error, not a second default.
type Options struct {
	Streams          []StreamSpec
	Workers          int           // worker processes; streams are spread over them
	HangTimeout      time.Duration // a worker silent this long is killed and restarted
	ReportInterval   time.Duration // how often workers report (and so heartbeat)
	StandbyRing      time.Duration // how much recent input a standby stream keeps
	OutputAlarmAfter time.Duration // how long an output fails before its condition is raised
	// ProgressInterval is how often workers send the progress the pair
	// reads (ProgressOf): what each stream last forwarded, its output
	// numbering and its replay ring.
	ProgressInterval time.Duration
	// BatchWindow is the longest a packet may wait in its input so that
	// a worker reads it with others (docs/batching.md); 0: per packet.
	BatchWindow time.Duration
	// Command is the argv that starts a worker: normally this binary with the
	// hidden "worker" subcommand.
	Command []string
	Argv0   string    // what ps shows for a worker instead of Command[0], if set
	Env     []string  // extra environment for workers
	Stderr  io.Writer // where workers' stderr goes; os.Stderr if nil
	Alarms  Alarms    // may be nil
	// OnHeld, if set, hears of streams a worker stopped forwarding
	// because it was stopped and resumed (what queued meanwhile waits in
	// the ring), and decides: Reforward, or leave them in standby. It is
	// called on a worker's report path and must not block. Nil: Reforward
	// at once (a unit alone).
	OnHeld func([]Held)
	Clock  clock.Clock
	Logger *slog.Logger
}

// Held is a stream a resumed worker stopped forwarding, and the input
// sequence number it forwarded last (HasLast false: none yet).
type Held struct {
	Name          string
	LastForwarded uint16
	HasLast       bool
}

// Reforward puts held streams back to forwarding from the packet after
// the last each forwarded, out of the ring.
func (m *Manager) Reforward(held []Held) {
	changes := make([]RoleChange, 0, len(held))
	for _, h := range held {
		c := RoleChange{Name: h.Name, Role: RoleForward}
		if h.HasLast {
			next := h.LastForwarded + 1
			c.From = &next
		}
		changes = append(changes, c)
	}
	for i, o := range m.SetRoles(context.Background(), changes) {
		if o.Err != nil {
			m.log.Warn("forwarding a held stream again", "stream", changes[i].Name, "err", o.Err)
		}
	}
}

// Errors callers branch on.
var (
	ErrNoStream   = errors.New("no such stream")
	ErrNotCarried = errors.New("stream is not carried")
	// ErrWorkerStarting comes with ErrNotCarried from a role change for a
	// stream whose worker is (re)starting: the role is kept, and the
	// stream starts in it.
	ErrWorkerStarting = errors.New("its worker is restarting")
)

// bindRetry is how often an input that could not be bound is tried again.
const bindRetry = 2 * time.Second

// ackTimeout bounds the wait for a worker to confirm a change.
const ackTimeout = 5 * time.Second

// Manager is the parent side of the media workers. It owns each stream's
// input socket for the stream's whole life, so a worker that crashes leaves
// the stream's packets queued in the kernel for the next worker rather than
// dropped; and it keeps each stream's counters and continuity state, so they
// survive any number of worker restarts.
//
// Three paths meet here and never wait for each other: control (Apply,
// SetRole, worker starts) under mu; each worker's report path, which only
// touches the streams that worker carries; and readers (the API), which take
// no lock at all and read what the report path published.
type Manager struct {
	opts Options
	log  *slog.Logger
	clk  clock.Clock

	ctlMu sync.Mutex // one control operation at a time

	mu      sync.Mutex // the stream table and the workers' assignments
	byName  map[string]*stream
	order   []*stream
	workers []*mworker
	nextSID uint32

	nextReq atomic.Uint64
	table   atomic.Pointer[[]*stream] // in configuration order, for readers
	stopped atomic.Bool

	raised map[string]bool // alarms raised, owned by Serve
}

// NewManager binds every stream's input and spreads the streams over the
// workers. An input that cannot be bound fails that stream only: it is
// tried again every few seconds, and the rest of the unit runs.
func NewManager(o Options) (*Manager, error) {
	switch {
	case o.Workers < 1:
		return nil, fmt.Errorf("media: %d workers; at least 1", o.Workers)
	case o.ReportInterval <= 0 || o.HangTimeout <= 0:
		return nil, fmt.Errorf("media: report interval %v and hang timeout %v must be positive", o.ReportInterval, o.HangTimeout)
	case o.ProgressInterval <= 0:
		return nil, fmt.Errorf("media: progress interval %v must be positive", o.ProgressInterval)
	case o.BatchWindow < 0 || o.BatchWindow > maxBatchWindow:
		return nil, fmt.Errorf("media: batch window %v: want 0 to %v", o.BatchWindow, maxBatchWindow)
	case o.StandbyRing < 0 || o.OutputAlarmAfter < 0:
		return nil, fmt.Errorf("media: standby ring %v and output alarm delay %v must not be negative", o.StandbyRing, o.OutputAlarmAfter)
	case len(o.Command) == 0:
		return nil, errors.New("media: no worker command")
	}
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	m := &Manager{opts: o, log: o.Logger, clk: o.Clock, byName: map[string]*stream{}, raised: map[string]bool{}}
	for w := 0; w < o.Workers; w++ {
		wk := &mworker{m: m, id: w, streams: map[uint32]*stream{}}
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
	m.mu.Lock()
	for _, s := range o.Streams {
		if _, dup := m.byName[s.Name]; dup {
			m.mu.Unlock()
			m.Close()
			return nil, fmt.Errorf("media: stream %s is listed twice", s.Name)
		}
		m.order = append(m.order, m.addLocked(s, nil))
	}
	m.publishLocked()
	m.mu.Unlock()
	return m, nil
}

// bindInput opens a stream's input socket with a receive buffer large enough
// to hold the stream while a worker restarts; with freeBind, on an address
// that need not be the unit's yet.
func bindInput(ap netip.AddrPort, freeBind bool) (*os.File, error) {
	var lc net.ListenConfig
	if freeBind {
		lc.Control = setFreeBind
	}
	pc, err := lc.ListenPacket(context.Background(), "udp", ap.String())
	if err != nil {
		return nil, err
	}
	c := pc.(*net.UDPConn)
	defer c.Close()
	setReceiveBuffer(c, 4<<20)
	// Stamped from the start, so that what queues while a worker restarts
	// keeps its arrival times too (read by batching workers).
	if rc, err := c.SyscallConn(); err == nil {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = enableRxStamps(int(fd)) }); err != nil || serr != nil {
			return nil, fmt.Errorf("receive stamps: %w", errors.Join(err, serr))
		}
	}
	return c.File()
}

// Children returns the supervised children: the stream keeper (input
// retries and alarms), then one child per worker process.
func (m *Manager) Children() []supervisor.Child {
	out := []supervisor.Child{{Name: "streams", Service: supervisor.ServiceFunc(m.Serve), Restart: supervisor.Permanent, Shutdown: time.Second}}
	for _, w := range m.workers {
		out = append(out, supervisor.Child{Name: w.name(), Service: w.proc, Restart: supervisor.Permanent, Shutdown: 2 * time.Second})
	}
	return out
}

// Close releases the input sockets. Call it after the workers have stopped.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, st := range m.byName {
		if st.input != nil {
			st.input.Close()
			st.input = nil
		}
	}
}

// SetStopped marks every stream stopped (true) for good: the supervision
// root gave up, and no worker will come back.
func (m *Manager) SetStopped(stopped bool) { m.stopped.Store(stopped) }

// addLocked creates a stream, binds its input and places it on a worker.
// With waits set, the worker's confirmation is collected there.
func (m *Manager) addLocked(spec StreamSpec, waits *[]waiter) *stream {
	m.nextSID++
	st := &stream{sid: m.nextSID, name: spec.Name, outBase: map[netip.AddrPort]outCount{}}
	st.spec.Store(&spec)
	st.standby.Store(spec.Standby)
	m.byName[spec.Name] = st
	m.bindLocked(st, waits)
	st.mu.Lock()
	st.publishLocked(m.mono())
	st.mu.Unlock()
	return st
}

// bindLocked binds the input and places the stream, or records why not.
func (m *Manager) bindLocked(st *stream, waits *[]waiter) {
	spec := st.spec.Load()
	f, err := bindInput(spec.Input, spec.FreeBind)
	if err != nil {
		why := fmt.Sprintf("input udp://%v cannot be bound: %v; free the port or fix the input address (retried every %v)", spec.Input, err, bindRetry)
		if old := st.failure.Load(); old == nil || *old != why {
			m.log.Error("stream not carried", "stream", st.name, "reason", why)
		}
		st.failure.Store(&why)
		st.bindAt = m.mono() + bindRetry
		return
	}
	if st.failure.Load() != nil {
		m.log.Info("stream input bound", "stream", st.name, "input", spec.Input)
	}
	st.failure.Store(nil)
	st.input = f
	// Read once, now: Fd puts the file in blocking mode, and the flag is
	// shared with every copy a worker holds, so it must never be called
	// while a worker reads the socket.
	st.inputFD = int(f.Fd())
	w := m.leastLoaded(spec.Group)
	w.streams[st.sid] = st
	w.count.Store(int32(len(w.streams)))
	st.w = w
	st.mu.Lock()
	st.worker = w.id
	st.mu.Unlock()
	if wc := w.conn; wc != nil {
		wc.own(w.streams)
		ws, err := wc.sendAdds(m, []*stream{st})
		if err != nil {
			m.log.Warn("sending a stream to its worker", "stream", st.name, "worker", w.name(), "err", err)
		}
		if waits != nil {
			*waits = append(*waits, ws...)
		}
	}
}

// leastLoaded is the worker with the fewest streams of group, then the
// fewest streams, then the lowest number.
func (m *Manager) leastLoaded(group string) *mworker {
	var best *mworker
	bestIn := 0
	for _, w := range m.workers {
		in := 0
		for _, st := range w.streams {
			if st.spec.Load().Group == group {
				in++
			}
		}
		if best == nil || in < bestIn || (in == bestIn && len(w.streams) < len(best.streams)) {
			best, bestIn = w, in
		}
	}
	return best
}

func (m *Manager) publishLocked() {
	t := slices.Clone(m.order)
	m.table.Store(&t)
}

// ApplyResult says what Apply did, by stream name.
type ApplyResult struct {
	Added     []string `json:"added"`
	Removed   []string `json:"removed"`
	Changed   []string `json:"changed"`
	Unchanged []string `json:"unchanged"`
	// Failed names the streams that are configured but not carried, with why.
	Failed map[string]string `json:"failed,omitempty"`
}

// Apply makes the running streams those of specs: new streams get their
// input bound here and are handed to the least-loaded worker; removed
// streams are released, and their ports are free when Apply returns;
// changed outputs, rewrite or clock rate change in place; a changed input
// address or FreeBind replaces the stream. Streams that did not change are not touched.
func (m *Manager) Apply(ctx context.Context, specs []StreamSpec) (ApplyResult, error) {
	m.ctlMu.Lock()
	defer m.ctlMu.Unlock()
	res := ApplyResult{Added: []string{}, Removed: []string{}, Changed: []string{}, Unchanged: []string{}}
	want := make(map[string]StreamSpec, len(specs))
	for _, s := range specs {
		if _, dup := want[s.Name]; dup {
			return res, fmt.Errorf("stream %s is listed twice", s.Name)
		}
		want[s.Name] = s
	}

	// Removals and updates first, so that a stream that moves its input
	// or a new one that takes a removed one's port can bind it.
	var waits []waiter
	replaced := map[string]bool{}
	m.mu.Lock()
	for _, st := range m.order {
		cur := st.spec.Load()
		d, keep := want[st.name]
		switch {
		case !keep || d.Input != cur.Input || d.FreeBind != cur.FreeBind:
			waits = append(waits, m.removeLocked(st)...)
			if keep {
				replaced[st.name] = true
			} else {
				res.Removed = append(res.Removed, st.name)
			}
		case !d.sameRelay(*cur):
			st.spec.Store(&d)
			if st.w != nil && st.w.conn != nil {
				ws, err := st.w.conn.sendUpdate(m, st)
				if err != nil {
					m.log.Warn("sending a change to a worker", "stream", st.name, "err", err)
				}
				waits = append(waits, ws...)
			}
			res.Changed = append(res.Changed, st.name)
		default:
			res.Unchanged = append(res.Unchanged, st.name)
		}
	}
	m.mu.Unlock()
	failed := m.await(ctx, waits)

	waits = waits[:0]
	m.mu.Lock()
	order := make([]*stream, 0, len(specs))
	for _, s := range specs {
		st := m.byName[s.Name]
		if st == nil {
			st = m.addLocked(s, &waits)
			if replaced[s.Name] {
				res.Changed = append(res.Changed, s.Name)
			} else {
				res.Added = append(res.Added, s.Name)
			}
		}
		order = append(order, st)
	}
	m.order = order
	m.publishLocked()
	m.mu.Unlock()
	for sid, why := range m.await(ctx, waits) {
		failed[sid] = why
	}

	for _, st := range *m.table.Load() {
		why := failed[st.sid]
		if f := st.failure.Load(); f != nil {
			why = *f
		}
		if why != "" {
			if res.Failed == nil {
				res.Failed = map[string]string{}
			}
			res.Failed[st.name] = why
		}
	}
	return res, nil
}

// removeLocked takes a stream off its worker and closes the parent's copy of
// its input. The waiters say when the worker has closed its copy too.
func (m *Manager) removeLocked(st *stream) []waiter {
	var waits []waiter
	delete(m.byName, st.name)
	st.removed = true
	if w := st.w; w != nil {
		delete(w.streams, st.sid)
		w.count.Store(int32(len(w.streams)))
		st.w = nil
		if wc := w.conn; wc != nil {
			wc.own(w.streams)
			ws, err := wc.sendRemove(m, st)
			if err != nil {
				m.log.Warn("removing a stream from its worker", "stream", st.name, "err", err)
			}
			waits = ws
		}
	}
	if st.input != nil {
		st.input.Close()
		st.input = nil
	}
	return waits
}

// await waits for the workers' confirmations and returns the refusals by stream.
func (m *Manager) await(ctx context.Context, waits []waiter) map[uint32]string {
	failed := map[uint32]string{}
	if len(waits) == 0 {
		return failed
	}
	ctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	for _, w := range waits {
		select {
		case ack, ok := <-w.ch:
			if !ok {
				continue // the worker died; its successor starts from the table
			}
			for _, e := range ack.Errors {
				failed[e.SID] = e.Error
			}
		case <-ctx.Done():
			for _, sid := range w.sids {
				failed[sid] = fmt.Sprintf("%s did not confirm within %v", w.worker, ackTimeout)
			}
		}
	}
	return failed
}

// Serve keeps the streams: it binds inputs that could not be bound before,
// and raises and clears the stream and output conditions. It is a child of
// the media supervisor.
func (m *Manager) Serve(ctx context.Context) error {
	t := m.clk.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	defer m.clearAlarms()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
			m.retryBinds()
			m.alarms()
		}
	}
}

func (m *Manager) retryBinds() {
	now := m.mono()
	m.ctlMu.Lock()
	defer m.ctlMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, st := range m.order {
		if st.input == nil && !st.removed && now >= st.bindAt {
			m.bindLocked(st, nil)
		}
	}
}

func (m *Manager) alarms() {
	if m.opts.Alarms == nil {
		return
	}
	want := map[string]bool{}
	now := m.mono()
	for _, st := range *m.table.Load() {
		if f := st.failure.Load(); f != nil {
			name := health.StreamFailed.For(st.name)
			want[name] = true
			m.opts.Alarms.Set(name, health.Critical, fmt.Sprintf("stream %s is not carried: %s", st.name, *f))
			continue
		}
		v := st.view.Load()
		if v == nil || !v.up {
			continue
		}
		for _, o := range v.outputs {
			if o.State == "ok" || now-o.badSince < m.opts.OutputAlarmAfter {
				continue
			}
			name := health.OutputFailing.For(st.name, o.Address[len("udp://"):])
			want[name] = true
			m.opts.Alarms.Set(name, health.Warning, fmt.Sprintf("stream %s: output %s is %s: %s%s",
				st.name, o.Address, o.State, o.LastError, outputHint(o)))
		}
	}
	for name := range m.raised {
		if !want[name] {
			m.opts.Alarms.Clear(name)
		}
	}
	m.raised = want
}

func (m *Manager) clearAlarms() {
	if m.opts.Alarms == nil {
		return
	}
	for name := range m.raised {
		m.opts.Alarms.Clear(name)
	}
	m.raised = map[string]bool{}
}

func outputHint(o OutputStatus) string {
	host := o.Address[len("udp://"):]
	if ap, err := netip.ParseAddrPort(host); err == nil {
		host = ap.Addr().String()
	}
	switch syscall.Errno(o.errno) {
	case unix.ENETUNREACH, unix.EHOSTUNREACH:
		return fmt.Sprintf("; check the route (ip route get %s); the other outputs and streams carry on", host)
	case unix.EPERM, unix.EACCES:
		return "; check the firewall rules for this destination"
	}
	return ""
}

// mono reads the monotonic clock.
func (m *Manager) mono() time.Duration { return m.clk.Mono() }
