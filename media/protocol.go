package media

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// The parent and a worker talk over a stream socket (fd 3 in the worker):
// the control plane, never the packet path. docs/worker-protocol.md is the
// reference; this file is its implementation.
//
// Every message is a frame: a 4-byte big-endian length, then a type byte and
// that many bytes less one of body. Control messages carry JSON; the report
// and the progress frame, the frequent messages, are binary so that a worker
// with a thousand streams costs the parent next to nothing to read. An add message carries
// one input socket per stream as SCM_RIGHTS; descriptors arrive with the
// first bytes of their frame and are taken in order.

// protocolVersion changes whenever a message changes. The parent says it in
// hello and the worker refuses any other.
const protocolVersion = 3

// Frame types.
const (
	msgHello    byte = 'H' // parent → worker, first: helloMsg
	msgAdd      byte = 'A' // parent → worker: addMsg, with one descriptor per stream
	msgUpdate   byte = 'U' // parent → worker: updateMsg
	msgRemove   byte = 'R' // parent → worker: removeMsg
	msgRole     byte = 'O' // parent → worker: roleMsg, any number of streams
	msgReady    byte = 'Y' // worker → parent, answer to hello: readyMsg
	msgAck      byte = 'K' // worker → parent: ackMsg, answer to add, update, remove and role
	msgReport   byte = 'P' // worker → parent: binary report, also the heartbeat
	msgProgress byte = 'G' // worker → parent: binary progress, what changed since the last one
	msgFatal    byte = 'F' // worker → parent, last words before exiting: fatalMsg
	msgHeld     byte = 'D' // worker → parent: heldMsg, streams it stopped forwarding after it was stopped
)

const (
	// maxFrame bounds a frame, so that a corrupt length cannot make either
	// side allocate without limit. A report of 4096 streams with 16 outputs
	// each stays well inside it.
	maxFrame = 16 << 20
	// maxFDsPerFrame keeps add messages under the kernel's limit of 253
	// descriptors per message (SCM_MAX_FD).
	maxFDsPerFrame = 200
	// maxReportStreams and maxOutputs bound what a report may claim.
	maxReportStreams = 8192
	maxOutputs       = 16
)

// Roles of a stream on its worker.
const (
	RoleForward = "forward" // relay every packet to the outputs
	RoleStandby = "standby" // read, count, keep recent packets in a ring; send nothing
)

type helloMsg struct {
	Version            int   `json:"version"`
	Worker             int   `json:"worker"`
	ReportIntervalNs   int64 `json:"report_interval_ns"`
	StandbyRingNs      int64 `json:"standby_ring_ns"`
	ProgressIntervalNs int64 `json:"progress_interval_ns"`
	// BatchWindowNs: 0 reads every packet as it arrives; more, see
	// docs/batching.md.
	BatchWindowNs int64 `json:"batch_window_ns"`
}

type readyMsg struct {
	Version int `json:"version"`
	PID     int `json:"pid"`
}

// streamConfig is what a worker needs to relay one stream; SID names the
// stream in every later message and report.
type streamConfig struct {
	SID         uint32           `json:"sid"`
	Name        string           `json:"name"`
	Outputs     []netip.AddrPort `json:"outputs"`
	ClockRate   int              `json:"clock_rate"`
	RewriteSSRC *uint32          `json:"rewrite_ssrc,omitempty"`
}

type addStream struct {
	streamConfig
	Role       string     `json:"role"`
	Continuity Continuity `json:"continuity"`
}

type addMsg struct {
	ID      uint64      `json:"id"`
	Streams []addStream `json:"streams"` // the frame carries len(Streams) descriptors, in this order
}

type updateMsg struct {
	ID      uint64         `json:"id"`
	Streams []streamConfig `json:"streams"`
}

type removeMsg struct {
	ID   uint64   `json:"id"`
	SIDs []uint32 `json:"sids"`
}

// roleMsg changes the role of any number of streams at once, so that a
// whole unit's streams switch in about the time of one.
type roleMsg struct {
	ID      uint64       `json:"id"`
	Changes []roleChange `json:"changes"`
}

type roleChange struct {
	SID  uint32 `json:"sid"`
	Role string `json:"role"`
	// FromSeq, with role forward: forward from this input sequence number
	// on, replaying what the ring holds from it.
	FromSeq *uint16 `json:"from_seq,omitempty"`
	// Continuity, with role forward: the output numbering the peer unit
	// forwarded with, adopted before forwarding. Its age is turned into an
	// instant on the worker's clock.
	Continuity *PeerContinuity `json:"continuity,omitempty"`
}

type ackMsg struct {
	ID     uint64        `json:"id"`
	Errors []streamError `json:"errors,omitempty"`
	Roles  []roleAck     `json:"roles,omitempty"` // answers to a role message, one per stream changed
}

// heldMsg names the streams a worker stopped forwarding because it found
// itself resumed after a stop (see workerProc.holdAfterStall).
type heldMsg struct {
	Streams []heldStream `json:"streams"`
}

type heldStream struct {
	SID           uint32  `json:"sid"`
	LastForwarded *uint16 `json:"last_forwarded,omitempty"`
}

type roleAck struct {
	SID           uint32  `json:"sid"`
	LastForwarded *uint16 `json:"last_forwarded,omitempty"` // input sequence number of the last packet forwarded before the change
	Replayed      int     `json:"replayed,omitempty"`       // packets sent from the ring
	FromIgnored   bool    `json:"from_ignored,omitempty"`   // from_seq was too far from the input's numbering to mean anything
}

type streamError struct {
	SID   uint32 `json:"sid"`
	Error string `json:"error"`
}

type fatalMsg struct {
	Error string `json:"error"`
}

// Output states, in reports.
const (
	outOK      uint8 = iota // sending
	outFailing              // the last send failed
	outDown                 // no socket: it could not be set up and is retried
)

var outStateNames = [...]string{outOK: "ok", outFailing: "failing", outDown: "down"}

// report is a worker's periodic account of its streams, as the parent reads it.
type report struct {
	Seq     uint64
	Streams []streamReport
}

type streamReport struct {
	SID        uint32
	Role       uint8 // roleForward or roleStandby
	Counters   Counters
	InAge      time.Duration // since the last input packet, at report time; -1 if none yet
	Continuity Continuity
	LastFwd    uint16
	HaveFwd    bool
	Ring       uint32 // packets held in the replay ring
	Outputs    []outputReport
}

type outputReport struct {
	Packets uint64
	Errors  uint64
	State   uint8
	Errno   uint32        // the last error, 0 if none
	BadFor  time.Duration // how long it has not been ok; 0 when ok
}

// Role codes in reports.
const (
	roleForward uint8 = 0
	roleStandby uint8 = 1
)

// --- framing ---

// frameWriter writes frames on a connection; callers serialize.
type frameWriter struct {
	c   *net.UnixConn
	buf []byte
}

// write sends one frame, with fds attached to its first bytes.
func (fw *frameWriter) write(typ byte, body []byte, fds []int) error {
	n := 1 + len(body)
	if n > maxFrame {
		return fmt.Errorf("frame of %d bytes is over the limit of %d", n, maxFrame)
	}
	fw.buf = binary.BigEndian.AppendUint32(fw.buf[:0], uint32(n))
	fw.buf = append(fw.buf, typ)
	fw.buf = append(fw.buf, body...)
	return fw.raw(fw.buf, fds)
}

// raw sends bytes that already hold whole frames.
func (fw *frameWriter) raw(b []byte, fds []int) error {
	if len(fds) == 0 {
		_, err := fw.c.Write(b)
		return err
	}
	n, _, err := fw.c.WriteMsgUnix(b, unix.UnixRights(fds...), nil)
	if err != nil {
		return err
	}
	if n < len(b) {
		// A stream socket may take part of a large frame; the descriptors
		// went with the first part.
		_, err = fw.c.Write(b[n:])
	}
	return err
}

func (fw *frameWriter) json(typ byte, v any, fds []int) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return fw.write(typ, body, fds)
}

// frameReader reads frames and the descriptors that come with them.
type frameReader struct {
	c    *net.UnixConn
	buf  []byte
	r, w int
	oob  []byte
	fds  []int
}

func newFrameReader(c *net.UnixConn) *frameReader {
	return &frameReader{c: c, buf: make([]byte, 64<<10), oob: make([]byte, unix.CmsgSpace(4*253))}
}

// errTruncatedFDs means the kernel dropped descriptors: a protocol fault.
var errTruncatedFDs = errors.New("descriptors were cut off in transit")

// next returns the next frame. The body is valid until the following call.
func (fr *frameReader) next() (byte, []byte, error) {
	for {
		if avail := fr.w - fr.r; avail >= 4 {
			n := int(binary.BigEndian.Uint32(fr.buf[fr.r:]))
			if n < 1 || n > maxFrame {
				return 0, nil, fmt.Errorf("frame length %d out of range", n)
			}
			if avail >= 4+n {
				typ, body := fr.buf[fr.r+4], fr.buf[fr.r+5:fr.r+4+n]
				fr.r += 4 + n
				return typ, body, nil
			}
			if 4+n > len(fr.buf)-fr.r {
				fr.make(4 + n)
			}
		} else if fr.r > 0 && len(fr.buf)-fr.w < 4 {
			fr.make(4)
		}
		nr, noob, flags, _, err := fr.c.ReadMsgUnix(fr.buf[fr.w:], fr.oob)
		if noob > 0 {
			if perr := fr.takeRights(fr.oob[:noob]); perr != nil {
				return 0, nil, perr
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return 0, nil, errTruncatedFDs
		}
		fr.w += nr
		if err != nil {
			return 0, nil, err
		}
		if nr == 0 && noob == 0 {
			return 0, nil, io.EOF
		}
	}
}

// make moves the unread bytes to the front, growing the buffer to hold need.
func (fr *frameReader) make(need int) {
	unread := fr.buf[fr.r:fr.w]
	if need > len(fr.buf) {
		nb := make([]byte, need)
		copy(nb, unread)
		fr.buf = nb
	} else {
		copy(fr.buf, unread)
	}
	fr.r, fr.w = 0, len(unread)
}

func (fr *frameReader) takeRights(oob []byte) error {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("control message: %w", err)
	}
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		fr.fds = append(fr.fds, fds...)
	}
	return nil
}

// takeFDs removes the first n received descriptors.
func (fr *frameReader) takeFDs(n int) ([]int, error) {
	if n > len(fr.fds) {
		return nil, fmt.Errorf("message wants %d descriptors, %d arrived", n, len(fr.fds))
	}
	out := append([]int(nil), fr.fds[:n]...)
	fr.fds = fr.fds[n:]
	return out, nil
}

// closeFDs closes descriptors nobody took.
func (fr *frameReader) closeFDs() {
	for _, fd := range fr.fds {
		unix.Close(fd)
	}
	fr.fds = nil
}

// --- the binary report ---

// reportEncoder appends a report frame to a reused buffer.
type reportEncoder struct {
	b []byte
}

func (e *reportEncoder) begin(seq uint64, streams int) {
	e.b = append(e.b[:0], 0, 0, 0, 0, msgReport)
	e.u64(seq)
	e.u32(uint32(streams))
}

// end fills in the frame length and returns the frame.
func (e *reportEncoder) end() []byte {
	binary.BigEndian.PutUint32(e.b, uint32(len(e.b)-4))
	return e.b
}

func (e *reportEncoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *reportEncoder) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *reportEncoder) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *reportEncoder) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }
func (e *reportEncoder) i64(v int64)  { e.u64(uint64(v)) }
func (e *reportEncoder) f64(v float64) {
	e.u64(math.Float64bits(v))
}

func (e *reportEncoder) stream(sr *streamReport) {
	e.u32(sr.SID)
	e.u8(sr.Role)
	var flags uint8
	if sr.Continuity.Valid {
		flags |= 1
	}
	if sr.HaveFwd {
		flags |= 2
	}
	e.u8(flags)
	e.u8(uint8(len(sr.Outputs)))
	c := &sr.Counters
	for _, v := range [...]uint64{c.PacketsIn, c.BytesIn, c.PacketsOut, c.BytesOut, c.OutErrors, uint64(c.Lost),
		c.Duplicates, c.Reordered, c.Discontinuities, c.SSRCChanges, c.CCErrors, c.TSSyncErrors, c.Malformed,
		c.MalformedShort, c.MalformedVer, c.MalformedHeader, c.MalformedBig, c.Replayed, c.Skipped, c.FromIgnored} {
		e.u64(v)
	}
	e.f64(c.JitterMs)
	e.i64(int64(sr.InAge))
	k := &sr.Continuity
	e.u32(k.InSSRC)
	e.u16(k.LastInSeq)
	e.u16(k.SeqOffset)
	e.u32(k.TSOffset)
	e.u16(k.LastOutSeq)
	e.u32(k.LastOutTS)
	e.i64(int64(k.At))
	e.u16(sr.LastFwd)
	e.u32(sr.Ring)
	for i := range sr.Outputs {
		o := &sr.Outputs[i]
		e.u64(o.Packets)
		e.u64(o.Errors)
		e.u8(o.State)
		e.u32(o.Errno)
		e.i64(int64(o.BadFor))
	}
}

// reportDecoder reads what reportEncoder wrote; the first short read sets err.
type reportDecoder struct {
	b   []byte
	err error
}

func (d *reportDecoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.err = io.ErrUnexpectedEOF
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *reportDecoder) u8() uint8 {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *reportDecoder) u16() uint16 {
	if v := d.take(2); v != nil {
		return binary.LittleEndian.Uint16(v)
	}
	return 0
}

func (d *reportDecoder) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (d *reportDecoder) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

// decodeReport reads a report body. It checks structure and bounds only;
// which streams a report may name is the caller's business.
func decodeReport(body []byte) (report, error) {
	d := &reportDecoder{b: body}
	r := report{Seq: d.u64()}
	n := d.u32()
	if d.err == nil && n > maxReportStreams {
		return r, fmt.Errorf("bad report from worker: %d streams, at most %d", n, maxReportStreams)
	}
	// Each stream takes at least 208 bytes: a count the body cannot hold is
	// a lie, refused before allocating for it.
	if d.err == nil && uint64(n)*208 > uint64(len(d.b)) {
		return r, fmt.Errorf("bad report from worker: %d streams in %d bytes", n, len(d.b))
	}
	r.Streams = make([]streamReport, 0, n)
	for i := uint32(0); i < n && d.err == nil; i++ {
		var sr streamReport
		sr.SID = d.u32()
		sr.Role = d.u8()
		flags := d.u8()
		nout := int(d.u8())
		if sr.Role > roleStandby || nout > maxOutputs {
			return r, fmt.Errorf("bad report from worker: stream %d: role %d, %d outputs", sr.SID, sr.Role, nout)
		}
		c := &sr.Counters
		for _, p := range [...]*uint64{&c.PacketsIn, &c.BytesIn, &c.PacketsOut, &c.BytesOut, &c.OutErrors, nil,
			&c.Duplicates, &c.Reordered, &c.Discontinuities, &c.SSRCChanges, &c.CCErrors, &c.TSSyncErrors, &c.Malformed,
			&c.MalformedShort, &c.MalformedVer, &c.MalformedHeader, &c.MalformedBig, &c.Replayed, &c.Skipped, &c.FromIgnored} {
			v := d.u64()
			if p == nil {
				c.Lost = int64(v)
				continue
			}
			*p = v
		}
		c.JitterMs = math.Float64frombits(d.u64())
		if c.Lost < 0 || math.IsNaN(c.JitterMs) || math.IsInf(c.JitterMs, 0) || c.JitterMs < 0 {
			return r, fmt.Errorf("bad report from worker: stream %d: lost %d, jitter %v", sr.SID, c.Lost, c.JitterMs)
		}
		sr.InAge = time.Duration(d.u64())
		k := &sr.Continuity
		k.Valid = flags&1 != 0
		k.InSSRC = d.u32()
		k.LastInSeq = d.u16()
		k.SeqOffset = d.u16()
		k.TSOffset = d.u32()
		k.LastOutSeq = d.u16()
		k.LastOutTS = d.u32()
		k.At = time.Duration(d.u64())
		sr.HaveFwd = flags&2 != 0
		sr.LastFwd = d.u16()
		sr.Ring = d.u32()
		if nout > 0 {
			sr.Outputs = make([]outputReport, nout)
		}
		for j := range sr.Outputs {
			o := &sr.Outputs[j]
			o.Packets = d.u64()
			o.Errors = d.u64()
			o.State = d.u8()
			o.Errno = d.u32()
			o.BadFor = time.Duration(d.u64())
			if o.State > outDown {
				return r, fmt.Errorf("bad report from worker: stream %d: output state %d", sr.SID, o.State)
			}
		}
		r.Streams = append(r.Streams, sr)
	}
	if d.err != nil {
		return r, fmt.Errorf("bad report from worker: %w", d.err)
	}
	if len(d.b) != 0 {
		return r, fmt.Errorf("bad report from worker: %d bytes after the last stream", len(d.b))
	}
	return r, nil
}

// checkHello validates what a worker was told before it acts on it.
func checkHello(h *helloMsg) error {
	if h.Version != protocolVersion {
		return fmt.Errorf("the parent speaks worker protocol %d, this worker %d: the binary changed under a running unit; restart the service", h.Version, protocolVersion)
	}
	if h.ReportIntervalNs <= 0 {
		return fmt.Errorf("hello: report interval %d", h.ReportIntervalNs)
	}
	if h.StandbyRingNs < 0 {
		return fmt.Errorf("hello: standby ring %d", h.StandbyRingNs)
	}
	if h.ProgressIntervalNs <= 0 {
		return fmt.Errorf("hello: progress interval %d", h.ProgressIntervalNs)
	}
	if h.BatchWindowNs < 0 || h.BatchWindowNs > int64(maxBatchWindow) {
		return fmt.Errorf("hello: batch window %d", h.BatchWindowNs)
	}
	return nil
}

// checkStream validates one stream's configuration.
func checkStream(s *streamConfig) error {
	if len(s.Outputs) == 0 || len(s.Outputs) > maxOutputs {
		return fmt.Errorf("stream %s: %d outputs, want 1 to %d", s.Name, len(s.Outputs), maxOutputs)
	}
	for _, o := range s.Outputs {
		if !o.IsValid() || o.Port() == 0 {
			return fmt.Errorf("stream %s: output %v", s.Name, o)
		}
	}
	if s.ClockRate <= 0 {
		return fmt.Errorf("stream %s: clock rate %d", s.Name, s.ClockRate)
	}
	return nil
}
