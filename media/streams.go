package media

import (
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"appliance/internal/clock"
)

// StreamStatus is one stream as the API shows it. The JSON names are a contract.
type StreamStatus struct {
	Name string `json:"name"`
	// State is starting, running, idle (no input for a second), restarting
	// (its worker is being replaced), failed (not carried: Error says why)
	// or stopped (the unit gave up).
	State string `json:"state"`
	Role  string `json:"role"` // forward or standby here; the API says active or standby
	// Owner and Epoch are the pair's: the unit that forwards the stream and
	// the epoch of its ownership. Set by the unit, not by media.
	Owner     string         `json:"owner,omitempty"`
	Epoch     uint32         `json:"epoch"`
	Error     string         `json:"error,omitempty"`
	Worker    int            `json:"worker"` // -1 while not placed
	WorkerPID int            `json:"worker_pid"`
	Input     string         `json:"input"`
	Outputs   []OutputStatus `json:"outputs"`
	// LastInput is when the last valid packet arrived, for people to read.
	LastInput  *time.Time `json:"last_input,omitempty"`
	BitrateBps float64    `json:"bitrate_bps"`
	PacketRate float64    `json:"packet_rate"`
	Restarts   int        `json:"restarts"`
	// LastForwardedSeq is the input sequence number of the newest packet
	// the stream has forwarded (since its worker took it).
	LastForwardedSeq *uint16 `json:"last_forwarded_seq,omitempty"`
	RingPackets      int     `json:"ring_packets"` // held for a later "forward from", in standby
	Counters
}

// OutputStatus is one destination of a stream. Counters are totals since
// the unit started.
type OutputStatus struct {
	Address   string  `json:"address"`
	State     string  `json:"state"` // ok, failing (sends fail) or down (no socket; retried)
	Packets   uint64  `json:"packets"`
	Errors    uint64  `json:"errors"`
	LastError string  `json:"last_error,omitempty"`
	FailingS  float64 `json:"failing_s,omitempty"` // how long it has not been ok

	errno    uint32
	badSince time.Duration // monotonic
}

// idleAfter is how long without input before a stream shows as idle.
const idleAfter = time.Second

// stream is the parent's record of one stream.
type stream struct {
	sid     uint32
	name    string
	spec    atomic.Pointer[StreamSpec]
	failure atomic.Pointer[string] // why it is not carried; nil when it is

	// Guarded by Manager.mu.
	input   *os.File
	inputFD int // input's descriptor, for passing to workers
	w       *mworker
	removed bool
	bindAt  time.Duration
	standby atomic.Bool // the role asked for, shown until a worker reports the one it has

	// Guarded by mu: the report path of its worker, and worker starts and exits.
	mu       sync.Mutex
	base     Counters // totals of workers that have exited
	cur      Counters // the live worker's latest report
	outBase  map[netip.AddrPort]outCount
	outCur   []outputReport
	cont     Continuity
	rep      streamReport // the latest, for what is not summed
	up       bool         // a worker is relaying it
	reported bool         // the live worker has reported it at least once
	pid      int
	worker   int
	starts   int
	lastIn   time.Duration // monotonic instant of the last input
	haveIn   bool
	rateAt   time.Duration
	rateOK   bool
	rateB    uint64
	rateP    uint64
	bitrate  float64
	pps      float64

	view atomic.Pointer[streamView]
	prog progressCell // for ProgressOf; written by its worker's connection (start, progress) only
}

type outCount struct{ packets, errors uint64 }

// streamView is what readers see of a stream: published whole by the report
// path, never changed after.
type streamView struct {
	counters Counters
	outputs  []OutputStatus
	up       bool
	reported bool
	starts   int
	pid      int
	worker   int
	role     string
	lastIn   time.Duration
	haveIn   bool
	bitrate  float64
	pps      float64
	lastFwd  uint16
	haveFwd  bool
	ring     int
}

// assign records that a worker process (pid) takes the stream and returns
// the continuity state to hand it.
func (st *stream) assign(pid int, reportInterval, now time.Duration) Continuity {
	st.mu.Lock()
	defer st.mu.Unlock()
	cont := st.cont
	// A dead worker may have sent packets after its last report: if the
	// numbering must move, step past what it could have sent.
	cont.Margin = uint16(min(st.pps*2*reportInterval.Seconds()+1, 1000))
	st.up, st.reported, st.pid = true, false, pid
	st.starts++
	st.publishLocked(now)
	// Until the new worker's first progress, the pair sees what the
	// parent kept: the numbering carries on, nothing forwarded yet.
	pe := progressEntry{SID: st.sid, ContAge: -1, InAge: -1}
	if st.standby.Load() {
		pe.Flags |= progStandby
	}
	if st.cont.Valid {
		pc := peerContinuity(st.cont, clock.Mono())
		pe.Flags |= progContValid
		pe.InSSRC, pe.LastInSeq, pe.SeqOffset, pe.TSOffset, pe.LastOutSeq, pe.LastOutTS =
			pc.InSSRC, pc.LastInSeq, pc.SeqOffset, pc.TSOffset, pc.LastOutSeq, pc.LastOutTS
		if st.cont.At != 0 {
			pe.ContAge = pc.Age
		}
	}
	if st.haveIn {
		pe.InAge = max(now-st.lastIn, 0)
	}
	st.prog.store(&pe, now)
	return cont
}

// setCont makes c the stream's continuity, the one its next worker starts
// from: what it adopted from the peer unit.
func (st *stream) setCont(c Continuity) {
	st.mu.Lock()
	st.cont = c
	st.mu.Unlock()
}

// exited folds a dead worker's last counters into the totals.
func (st *stream) exited(now time.Duration) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.up {
		return
	}
	st.base.Add(st.cur)
	st.cur = Counters{}
	spec := st.spec.Load()
	for i, o := range st.outCur {
		if i < len(spec.Outputs) {
			c := st.outBase[spec.Outputs[i]]
			c.packets += o.Packets
			c.errors += o.Errors
			st.outBase[spec.Outputs[i]] = c
		}
	}
	st.outCur = nil
	st.up, st.reported, st.pid = false, false, 0
	st.publishLocked(now)
}

// update takes one report of the stream, received at now.
func (st *stream) update(sr *streamReport, now time.Duration) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.up {
		return
	}
	changed := !st.reported || sr.Counters != st.cur || sr.Role != st.rep.Role || sr.Ring != st.rep.Ring ||
		sr.LastFwd != st.rep.LastFwd || sr.HaveFwd != st.rep.HaveFwd || !slices.Equal(sr.Outputs, st.outCur)
	st.cur, st.cont, st.reported = sr.Counters, sr.Continuity, true
	if sr.InAge >= 0 {
		st.lastIn, st.haveIn = now-sr.InAge, true
	}
	st.rep = *sr
	st.rep.Outputs = nil
	if changed {
		st.outCur = slices.Clone(sr.Outputs)
	}
	bytes, packets := st.base.BytesIn+st.cur.BytesIn, st.base.PacketsIn+st.cur.PacketsIn
	if !st.rateOK {
		st.rateAt, st.rateB, st.rateP, st.rateOK = now, bytes, packets, true
	} else if dt := (now - st.rateAt).Seconds(); dt >= 1 {
		br, pps := float64(bytes-st.rateB)*8/dt, float64(packets-st.rateP)/dt
		changed = changed || br != st.bitrate || pps != st.pps
		st.bitrate, st.pps = br, pps
		st.rateAt, st.rateB, st.rateP = now, bytes, packets
	}
	if changed {
		st.publishLocked(now)
	}
}

// publishLocked builds a new view for readers.
func (st *stream) publishLocked(now time.Duration) {
	spec := st.spec.Load()
	v := &streamView{counters: st.base, up: st.up, reported: st.reported, starts: st.starts, pid: st.pid,
		worker: st.worker, lastIn: st.lastIn, haveIn: st.haveIn, bitrate: st.bitrate, pps: st.pps}
	v.counters.Add(st.cur)
	v.role = RoleForward
	if st.standby.Load() {
		v.role = RoleStandby
	}
	if st.up && st.reported {
		v.role = RoleForward
		if st.rep.Role == roleStandby {
			v.role = RoleStandby
		}
		v.lastFwd, v.haveFwd, v.ring = st.rep.LastFwd, st.rep.HaveFwd, int(st.rep.Ring)
	}
	v.outputs = make([]OutputStatus, len(spec.Outputs))
	for i, a := range spec.Outputs {
		base := st.outBase[a]
		o := OutputStatus{Address: "udp://" + a.String(), State: "ok", Packets: base.packets, Errors: base.errors}
		if st.up && i < len(st.outCur) {
			r := st.outCur[i]
			o.Packets += r.Packets
			o.Errors += r.Errors
			o.State = outStateNames[r.State]
			o.errno = r.Errno
			o.LastError = errorText(r.Errno)
			if r.State != outOK {
				o.badSince = now - r.BadFor
			}
		}
		v.outputs[i] = o
	}
	st.view.Store(v)
}

// status renders the stream for the API at now (monotonic) and wall.
func (st *stream) status(m *Manager, now time.Duration, wall time.Time) StreamStatus {
	spec := st.spec.Load()
	v := st.view.Load()
	s := StreamStatus{Name: st.name, Input: "udp://" + spec.Input.String(), Worker: v.worker,
		Counters: v.counters, Restarts: max(v.starts-1, 0), Role: v.role, RingPackets: v.ring}
	s.Outputs = make([]OutputStatus, len(v.outputs))
	for i, o := range v.outputs {
		if o.State != "ok" && v.up {
			o.FailingS = (now - o.badSince).Seconds()
		}
		s.Outputs[i] = o
	}
	if v.haveIn {
		t := wall.Add(v.lastIn - now)
		s.LastInput = &t
	}
	if v.haveFwd {
		seq := v.lastFwd
		s.LastForwardedSeq = &seq
	}
	failure := st.failure.Load()
	switch {
	case failure != nil:
		s.State, s.Error, s.Worker = "failed", *failure, -1
	case m.stopped.Load():
		s.State = "stopped"
	case !v.up && v.starts > 0:
		s.State = "restarting"
	case !v.up || !v.reported:
		s.State = "starting"
	case !v.haveIn || now-v.lastIn > idleAfter:
		s.State = "idle"
	default:
		s.State = "running"
	}
	if v.up && s.State != "stopped" {
		s.WorkerPID = v.pid
	}
	if s.State == "running" {
		s.BitrateBps, s.PacketRate = v.bitrate, v.pps
	}
	return s
}

// Streams returns every stream's status, in configuration order. It takes
// no lock: it reads what the report path published.
func (m *Manager) Streams() []StreamStatus {
	t := m.table.Load()
	now, wall := m.mono(), m.clk.Now()
	out := make([]StreamStatus, 0, len(*t))
	for _, st := range *t {
		out = append(out, st.status(m, now, wall))
	}
	return out
}
