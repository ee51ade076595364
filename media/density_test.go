package media

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"appliance/config"
	"appliance/internal/clock"
)

// The density benchmark: N streams × R packets/s, paced as a unit sees
// them, through one worker (per packet and batched) and through N plain
// relay processes, in the same run. Each relay's CPU comes from its own
// rusage; the sender and the receiver are this process, shared by all.
//
// MEDIA_DENSITY=N×R (such as 64x500) and MEDIA_DENSITY_SECONDS size it; the
// defaults suit a 2-core machine.

type densityRun struct {
	name     string
	sent     uint64
	received uint64
	cpu      time.Duration
	elapsed  time.Duration
	lat      []time.Duration // sender to receiver, per packet received
}

func (r densityRun) perPacket() time.Duration {
	if r.received == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.received)
}

func (r densityRun) loss() float64 {
	if r.sent == 0 {
		return 0
	}
	return 100 * (1 - float64(r.received)/float64(r.sent))
}

func (r densityRun) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	s := slices.Clone(r.lat)
	slices.Sort(s)
	return s[min(int(p*float64(len(s))), len(s)-1)]
}

func densitySize(b *testing.B) (streams, pps int, d time.Duration) {
	streams, pps, d = 64, 500, 3*time.Second
	if v := os.Getenv("MEDIA_DENSITY"); v != "" {
		if _, err := fmt.Sscanf(v, "%dx%d", &streams, &pps); err != nil || streams < 1 || pps < 1 {
			b.Fatalf("MEDIA_DENSITY=%q: want STREAMSxPPS, such as 64x500", v)
		}
	}
	if v := os.Getenv("MEDIA_DENSITY_SECONDS"); v != "" {
		s, err := strconv.Atoi(v)
		if err != nil || s < 1 {
			b.Fatalf("MEDIA_DENSITY_SECONDS=%q: want a whole number of seconds", v)
		}
		d = time.Duration(s) * time.Second
	}
	return streams, pps, d
}

// densitySink counts what reaches it and how long each packet took since
// the sender stamped it (bytes 16..24 of the payload: the fill of the first
// MPEG-TS packet, which no check reads). It stands for a receiver on another
// box: its socket is outside Go's poller and read every millisecond, so a
// relay's send never pays for waking it (a receiver woken per packet would
// charge each relay's sendto a wake-up that a real network does not). The
// time a packet arrived is the kernel's receive stamp, which is on the
// real-time clock only: the sender stamps the same clock.
type densitySink struct {
	fd   int
	addr netip.AddrPort
	mu   sync.Mutex
	n    uint64
	lat  []time.Duration
	stop chan struct{}
	done chan struct{}
}

func newDensitySink(b *testing.B, capacity int) *densitySink {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		b.Fatal(err)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<20)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		b.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		b.Fatal(err)
	}
	s := &densitySink{fd: fd, addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port)),
		lat: make([]time.Duration, 0, capacity), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		const batch = 64
		bufs := make([][]byte, batch)
		oobs := make([][]byte, batch)
		iovs := make([]unix.Iovec, batch)
		msgs := make([]unix.Mmsghdr, batch)
		for k := range batch {
			bufs[k], oobs[k] = make([]byte, 2048), make([]byte, 64)
			iovs[k].Base = &bufs[k][0]
			iovs[k].SetLen(len(bufs[k]))
			msgs[k].Hdr.Iov = &iovs[k]
			msgs[k].Hdr.SetIovlen(1)
		}
		for {
			for {
				for k := range batch {
					msgs[k].Hdr.Control = &oobs[k][0]
					msgs[k].Hdr.SetControllen(len(oobs[k]))
				}
				n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), batch, unix.MSG_DONTWAIT, 0, 0)
				if errno != 0 || n == 0 {
					break
				}
				s.mu.Lock()
				for k := range int(n) {
					s.n++
					at := sinkStamp(oobs[k][:msgs[k].Hdr.Controllen])
					if msgs[k].Len >= 24 && !at.IsZero() && len(s.lat) < cap(s.lat) {
						s.lat = append(s.lat, at.Sub(time.Unix(0, int64(binary.LittleEndian.Uint64(bufs[k][16:24])))))
					}
				}
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return s
}

// sinkStamp is the kernel's receive time in a message's control data.
func sinkStamp(oob []byte) time.Time {
	cms, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}
	}
	for _, cm := range cms {
		if cm.Header.Level == unix.SOL_SOCKET && cm.Header.Type == unix.SCM_TIMESTAMPNS && len(cm.Data) >= 16 {
			return time.Unix(int64(binary.NativeEndian.Uint64(cm.Data)), int64(binary.NativeEndian.Uint64(cm.Data[8:])))
		}
	}
	return time.Time{}
}

func (s *densitySink) close() {
	close(s.stop)
	<-s.done
	unix.Close(s.fd)
}

func (s *densitySink) count() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// pace sends pps packets a second to each address for d, each stream's
// packets spread evenly and the streams' phases spread over the period. It
// looks every 100 µs; the packets of a stream that fall due together (more
// than one only above 10,000 packets a second) leave in one UDP GSO send,
// so that one sending core can drive the rates a single stream is tested at.
func pace(b *testing.B, to []netip.AddrPort, pps int, d time.Duration) uint64 {
	// Plain sockets, as the worker's outputs: in Go's poller each send
	// would wake this process's poller thread, load the machine shares.
	conns := make([]int, len(to))
	for i, a := range to {
		fd, err := dialRaw(a)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(fd)
		conns[i] = fd
	}
	const size, burstMax = 1328, 32 // a GSO send carries 64 KB at most
	burst := make([]byte, size*burstMax)
	for k := range burstMax {
		pkt := burst[k*size : (k+1)*size]
		pkt[0], pkt[1] = 0x80, PayloadTypeMP2T
		for off := 12; off+tsPacketSize <= len(pkt); off += tsPacketSize {
			fillTSPacket(pkt[off:off+tsPacketSize], 0x100, 0)
		}
	}
	gso := newGSOSender()
	sent := make([]uint64, len(to))
	seqs := make([]uint16, len(to))
	period := time.Second / time.Duration(pps)
	start := clock.Mono()
	var total uint64
	for {
		el := clock.Mono() - start
		if el >= d {
			return total
		}
		for i, c := range conns {
			phase := period * time.Duration(i) / time.Duration(len(conns))
			if el < phase {
				continue
			}
			due := uint64((el-phase)/period) + 1
			for sent[i] < due {
				k := int(min(due-sent[i], burstMax))
				stamp := uint64(time.Now().UnixNano()) // the sink's clock (densitySink)
				for j := range k {
					pkt := burst[j*size : (j+1)*size]
					binary.BigEndian.PutUint16(pkt[2:], seqs[i])
					seqs[i]++
					for t := range 7 {
						pkt[12+tsPacketSize*t+3] = 0x10 | byte((sent[i]+uint64(j))*7+uint64(t))&0xf // continuity counters in order
					}
					binary.LittleEndian.PutUint64(pkt[16:24], stamp)
				}
				var errno syscall.Errno
				if k == 1 {
					errno = sendRaw(c, burst[:size])
				} else {
					errno = gso.send(c, burst[:k*size], size)
				}
				if errno == 0 {
					total += uint64(k)
				}
				sent[i] += uint64(k)
			}
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// densityInputs binds n inputs the way the parent does.
func densityInputs(b *testing.B, n int) ([]*os.File, []netip.AddrPort) {
	files := make([]*os.File, n)
	addrs := make([]netip.AddrPort, n)
	for i := range n {
		f, err := bindInput(netip.MustParseAddrPort("127.0.0.1:0"), false)
		if err != nil {
			b.Fatal(err)
		}
		c, err := net.FilePacketConn(f)
		if err != nil {
			b.Fatal(err)
		}
		addrs[i] = c.LocalAddr().(*net.UDPAddr).AddrPort()
		c.Close()
		files[i] = f
	}
	return files, addrs
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// densityWorker runs the streams through one worker with the given window.
func densityWorker(b *testing.B, streams, pps int, d, window time.Duration) densityRun {
	in, addrs := densityInputs(b, streams)
	defer closeFiles(in)
	sink := newDensitySink(b, streams*pps*int(d/time.Second+1))
	defer sink.close()
	tw := startTestWorkerWindow(b, 0, window)
	for i, f := range in {
		tw.add(uint32(i), f, []netip.AddrPort{sink.addr}, nil, RoleForward)
	}
	// Reports must be read, or the worker blocks on its control socket.
	stop := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = tw.conn.SetReadDeadline(time.Now().Add(time.Second))
			if _, _, err := tw.fr.next(); err != nil {
				return
			}
		}
	}()
	start := clock.Mono()
	sent := pace(b, addrs, pps, d)
	deadline := time.Now().Add(2 * time.Second)
	for sink.count() < sent && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // a benchmark, not a test: draining
	}
	elapsed := clock.Mono() - start
	close(stop)
	_ = tw.cmd.Process.Signal(syscall.SIGTERM)
	<-readDone
	if err := tw.cmd.Wait(); err != nil {
		b.Fatal(err)
	}
	cpu, _ := usage(tw.cmd.ProcessState)
	name := "worker per packet"
	if window > 0 {
		name = "worker window " + window.String()
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	return densityRun{name: name, sent: sent, received: sink.n, cpu: cpu, elapsed: elapsed, lat: slices.Clone(sink.lat)}
}

// densityPlain runs each stream through its own plain relay process.
func densityPlain(b *testing.B, streams, pps int, d time.Duration) densityRun {
	in, addrs := densityInputs(b, streams)
	defer closeFiles(in)
	sink := newDensitySink(b, streams*pps*int(d/time.Second+1))
	defer sink.close()
	cmds := make([]*exec.Cmd, streams)
	for i, f := range in {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), benchChildEnv+"=plain", "MEDIA_BENCH_DST="+sink.addr.String())
		cmd.ExtraFiles = []*os.File{f}
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if _, err := pipeStart(cmd); err != nil {
			b.Fatal(err)
		}
		cmds[i] = cmd
	}
	start := clock.Mono()
	sent := pace(b, addrs, pps, d)
	var cpu time.Duration
	for _, cmd := range cmds {
		// Each stops after a quiet second.
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
		c, _ := usage(cmd.ProcessState)
		cpu += c
	}
	elapsed := clock.Mono() - start
	sink.mu.Lock()
	defer sink.mu.Unlock()
	return densityRun{name: fmt.Sprintf("%d plain relays", streams), sent: sent, received: sink.n, cpu: cpu, elapsed: elapsed,
		lat: slices.Clone(sink.lat)}
}

// BenchmarkDensity: per round, the plain relays, then one worker per
// packet, then batched at 500µs and 1ms. Reported per configuration: CPU
// per packet relayed, cores used over the sending time, loss, and the
// latency from the sender to the receiver (p50, p99). The idle second the
// plain relays wait before they stop, and the worker's start and reports,
// count against them.
func BenchmarkDensity(b *testing.B) {
	streams, pps, d := densitySize(b)
	windows := densityWindows(b)
	b.Logf("%d streams × %d pps for %v, 1328-byte MPEG-TS over RTP, loopback", streams, pps, d)
	for i := 0; i < b.N; i++ {
		runs := []densityRun{densityPlain(b, streams, pps, d)}
		for _, w := range windows {
			runs = append(runs, densityWorker(b, streams, pps, d, w))
		}
		base := runs[0].perPacket()
		for _, r := range runs {
			b.Logf("%-22s sent %7d received %7d loss %6.3f%%  cpu %8v  %6.2f µs/packet (%.2f× plain)  %.2f cores  latency p50 %v p99 %v",
				r.name, r.sent, r.received, r.loss(), r.cpu.Round(time.Millisecond), float64(r.perPacket())/1e3,
				float64(r.perPacket())/float64(base), r.cpu.Seconds()/d.Seconds(), r.pct(0.5).Round(time.Microsecond), r.pct(0.99).Round(time.Microsecond))
		}
	}
}

// BenchmarkStreamRate: the highest rate one stream carries at under 0.1 %
// loss, through a plain relay, a worker per packet and a worker at the
// default window (media.batch_window), in the same run. Each rate of the
// ladder runs MEDIA_RATE_SECONDS (default 1) through a fresh relay; a
// relay's ladder stops at its first rate over the loss bound.
func BenchmarkStreamRate(b *testing.B) {
	d := time.Second
	if v := os.Getenv("MEDIA_RATE_SECONDS"); v != "" {
		s, err := strconv.Atoi(v)
		if err != nil || s < 1 {
			b.Fatalf("MEDIA_RATE_SECONDS=%q: want a whole number of seconds", v)
		}
		d = time.Duration(s) * time.Second
	}
	ladder := []int{10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000, 120_000, 150_000, 180_000, 220_000, 260_000}
	window := defaultBatchWindow(b)
	kinds := []struct {
		name string
		run  func(pps int) densityRun
	}{
		{"plain relay", func(pps int) densityRun { return densityPlain(b, 1, pps, d) }},
		{"worker per packet", func(pps int) densityRun { return densityWorker(b, 1, pps, d, 0) }},
		{"worker window " + window.String(), func(pps int) densityRun { return densityWorker(b, 1, pps, d, window) }},
	}
	for i := 0; i < b.N; i++ {
		best := make([]int, len(kinds))
		for k, kind := range kinds {
			for _, pps := range ladder {
				r := kind.run(pps)
				b.Logf("%-22s %7d pps: sent %8d received %8d loss %6.3f%%  %6.2f µs/packet  latency p50 %v p99 %v",
					kind.name, pps, r.sent, r.received, r.loss(), float64(r.perPacket())/1e3,
					r.pct(0.5).Round(time.Microsecond), r.pct(0.99).Round(time.Microsecond))
				if r.loss() >= 0.1 {
					break
				}
				best[k] = pps
			}
		}
		for k, kind := range kinds {
			b.Logf("highest rate under 0.1%% loss: %-22s %7d pps (%.2f× the plain relay)", kind.name, best[k], float64(best[k])/float64(max(best[0], 1)))
		}
	}
}

// defaultBatchWindow is media.batch_window's default (config owns it), or
// MEDIA_WINDOW for a run.
func defaultBatchWindow(b *testing.B) time.Duration {
	w := time.Duration(config.Defaults().Media.BatchWindow)
	if v := os.Getenv("MEDIA_WINDOW"); v != "" {
		var err error
		if w, err = time.ParseDuration(v); err != nil || w <= 0 || w > maxBatchWindow {
			b.Fatalf("MEDIA_WINDOW=%q: want a duration above 0 and at most %v", v, maxBatchWindow)
		}
	}
	if w <= 0 {
		b.Fatal("media.batch_window's default is 0 (per packet): set MEDIA_WINDOW to the window to measure")
	}
	return w
}

// densityWindows are the worker's windows BenchmarkDensity runs:
// MEDIA_DENSITY_WINDOWS (such as "0,500us,2ms"), or per packet, the default
// window and the largest.
func densityWindows(b *testing.B) []time.Duration {
	v := os.Getenv("MEDIA_DENSITY_WINDOWS")
	if v == "" {
		return []time.Duration{0, defaultBatchWindow(b), maxBatchWindow}
	}
	var ws []time.Duration
	for _, f := range strings.Split(v, ",") {
		w, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || w < 0 || w > maxBatchWindow {
			b.Fatalf("MEDIA_DENSITY_WINDOWS=%q: want durations from 0 to %v, separated by commas", v, maxBatchWindow)
		}
		ws = append(ws, w)
	}
	return ws
}
