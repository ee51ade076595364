package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// epoch is the origin of the lab's clock: every time the lab records is an
// offset from it on the monotonic clock, so a wall-clock step cannot bend
// a measurement.
var epoch = time.Now()

// Clock reads the lab's monotonic clock.
func Clock() time.Duration { return time.Since(epoch) }

// The source's payload: its own counter, when it sent the packet, and the
// sequence number and timestamp it gave the packet, so a receiver can tell
// the unit's renumbering from loss without knowing the source.
const (
	payloadMin = 8 + 8 + 2 + 4
	rtpHeader  = 12
)

// ErrMalformed means a datagram is not an RTP packet from a lab source.
var ErrMalformed = errors.New("not an RTP packet from a lab source")

// ParsePacket reads one datagram as the lab's receivers see it. It reads
// bytes from the network (whatever a unit sent), so it checks every length.
func ParsePacket(b []byte) (Arrival, error) {
	var a Arrival
	if len(b) < rtpHeader || b[0]>>6 != 2 {
		return a, ErrMalformed
	}
	hl := rtpHeader + 4*int(b[0]&0x0f)
	if b[0]&0x10 != 0 { // header extension: 4 bytes, then its length in words
		if len(b) < hl+4 {
			return a, ErrMalformed
		}
		hl += 4 + 4*int(binary.BigEndian.Uint16(b[hl+2:]))
	}
	if len(b) < hl+payloadMin {
		return a, ErrMalformed
	}
	a.Seq = binary.BigEndian.Uint16(b[2:])
	a.TS = binary.BigEndian.Uint32(b[4:])
	a.SSRC = binary.BigEndian.Uint32(b[8:])
	p := b[hl:]
	a.Counter = binary.BigEndian.Uint64(p)
	a.Sent = time.Duration(binary.BigEndian.Uint64(p[8:]))
	a.SrcSeq = binary.BigEndian.Uint16(p[16:])
	a.SrcTS = binary.BigEndian.Uint32(p[18:])
	return a, nil
}

// putPacket writes the packet numbered counter of a source into buf.
func putPacket(buf []byte, ssrc uint32, seq uint16, ts uint32, counter uint64, sent time.Duration) {
	buf[0], buf[1] = 0x80, 96
	binary.BigEndian.PutUint16(buf[2:], seq)
	binary.BigEndian.PutUint32(buf[4:], ts)
	binary.BigEndian.PutUint32(buf[8:], ssrc)
	p := buf[rtpHeader:]
	binary.BigEndian.PutUint64(p, counter)
	binary.BigEndian.PutUint64(p[8:], uint64(sent))
	binary.BigEndian.PutUint16(p[16:], seq)
	binary.BigEndian.PutUint32(p[18:], ts)
}

// Source is one stream's RTP sender. In dual input mode it sends each
// packet, identical, to both units; in vip mode to the stream's address.
type Source struct {
	SSRC uint32
	Conn *net.UDPConn // created in the client namespace

	to atomic.Pointer[[]netip.AddrPort]

	seq0 uint16
	ts0  uint32
	sent atomic.Uint64
}

// SetTo says where the source sends from its next packet on.
func (s *Source) SetTo(to ...netip.AddrPort) { s.to.Store(&to) }

// Sent is how many packets (counters) the source has sent or is sending:
// the next packet it starts carries this counter.
func (s *Source) Sent() uint64 { return s.sent.Load() }

// Sender paces every source at pps packets per second. Sources are
// stepped together by a few goroutines rather than one timer each, so 200
// streams at 1,000 packets/s cost 1,000 wakeups per goroutine, not 200,000.
type Sender struct {
	Sources []*Source
	PPS     int
	Size    int // datagram size, at least 12 + the payload the lab needs
}

// sourcePriority is the sources' SCHED_FIFO priority: above every ordinary
// thread, below the units' heartbeat threads (pairnet.DefaultRTPriority).
const sourcePriority = 5

// Run sends until ctx ends.
func (s *Sender) Run(ctx context.Context) error {
	if s.PPS <= 0 || s.Size < rtpHeader+payloadMin || s.Size > 1400 {
		return fmt.Errorf("lab sender: %d packets/s of %d bytes: need a positive rate and %d to 1400 bytes", s.PPS, s.Size, rtpHeader+payloadMin)
	}
	for i, src := range s.Sources {
		src.seq0 = uint16(i * 7919)
		src.ts0 = uint32(i) * 104729
	}
	const shardSize = 50
	var wg sync.WaitGroup
	for lo := 0; lo < len(s.Sources); lo += shardSize {
		shard := s.Sources[lo:min(lo+shardSize, len(s.Sources))]
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A real encoder is another machine: the units' load must not
			// delay it. Below the units' heartbeat threads; without the
			// privilege, the source runs as it is and its lateness shows
			// in each run's "sent apart".
			// The thread is never unlocked: it ends with the goroutine,
			// so no other goroutine runs at this priority.
			runtime.LockOSThread()
			_ = unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: sourcePriority}, 0)
			s.pace(ctx, shard)
		}()
	}
	wg.Wait()
	return nil
}

func (s *Sender) pace(ctx context.Context, shard []*Source) {
	buf := make([]byte, s.Size)
	tsStep := uint32(90000 / s.PPS)
	interval := time.Second / time.Duration(s.PPS)
	start := Clock()
	for ctx.Err() == nil {
		now := Clock()
		due := uint64((now - start) / interval)
		for _, src := range shard {
			// A late wakeup sends what is due at once, so the rate holds
			// and the receiver sees the lateness as a burst, not as loss.
			for n := src.sent.Load(); n <= due; n = src.sent.Load() {
				// Counted before it leaves: whoever reads Sent() and then
				// starts recording misses none of the packets from there on.
				src.sent.Store(n + 1)
				putPacket(buf, src.SSRC, src.seq0+uint16(n), src.ts0+uint32(n)*tsStep, n, now)
				var to []netip.AddrPort
				if p := src.to.Load(); p != nil {
					to = *p
				}
				for _, to := range to {
					// A refused send (no neighbour for a VIP nobody holds
					// yet) is a lost packet, which the receiver counts.
					_, _ = src.Conn.WriteToUDPAddrPort(buf, to)
				}
			}
		}
		// The thread sleeps in the kernel, not on a Go timer: a timer
		// fires only when some ordinary thread of this process runs, which
		// the units' load can delay (ctx is seen within one interval).
		next := start + time.Duration(due+1)*interval
		if d := next - Clock(); d > 0 {
			ts := unix.NsecToTimespec(int64(d))
			_ = unix.Nanosleep(&ts, nil)
		}
	}
}

// Receiver records every packet that reaches one stream's output.
type Receiver struct {
	Conn *net.UDPConn // created in the client namespace

	mu        sync.Mutex
	recording bool
	log       []Arrival
	malformed uint64
}

// Run reads until the connection is closed. Each packet's arrival is when
// the kernel received it (SO_TIMESTAMPNS), not when this process got round
// to reading it: on a loaded machine the lab's own scheduling would
// otherwise add to the gaps it measures, or hide them.
func (r *Receiver) Run() {
	kernel := enableRxTimestamps(r.Conn)
	buf := make([]byte, 2048)
	oob := make([]byte, 128)
	for {
		n, oobn, _, from, err := r.Conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		at := Clock()
		if kernel {
			at = kernelArrival(oob[:oobn], at)
		}
		a, err := ParsePacket(buf[:n])
		r.mu.Lock()
		if err != nil {
			r.malformed++
		} else if r.recording {
			a.At, a.From = at, from.Addr().Unmap()
			r.log = append(r.log, a)
		}
		r.mu.Unlock()
	}
}

// enableRxTimestamps asks the kernel to stamp every datagram c receives.
func enableRxTimestamps(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil || serr != nil {
		return false
	}
	return true
}

// kernelArrival turns the kernel's receive stamp in oob (wall clock) into
// the lab's clock, given now read just after the datagram was: now less
// how long the datagram waited to be read. Without a usable stamp, now.
func kernelArrival(oob []byte, now time.Duration) time.Duration {
	wall := time.Now()
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return now
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SO_TIMESTAMPNS && l >= unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{}))) {
			ts := (*unix.Timespec)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
			waited := wall.Sub(time.Unix(ts.Sec, ts.Nsec))
			if waited < 0 || waited > 10*time.Second {
				return now // the wall clock stepped: not comparable
			}
			return now - waited
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return now
}

// Record forgets what was recorded and starts recording afresh.
func (r *Receiver) Record() {
	r.mu.Lock()
	r.recording, r.log = true, r.log[:0]
	r.mu.Unlock()
}

// Stop stops recording and returns the log.
func (r *Receiver) Stop() []Arrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recording = false
	return append([]Arrival(nil), r.log...)
}
