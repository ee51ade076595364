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
	"sync"
	"syscall"
	"testing"
	"time"

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
// the sender stamped it (the monotonic time in bytes 16..24 of the payload:
// the fill of the first MPEG-TS packet, which no check reads).
type densitySink struct {
	c    *net.UDPConn
	addr netip.AddrPort
	mu   sync.Mutex
	n    uint64
	lat  []time.Duration
	done chan struct{}
}

func newDensitySink(b *testing.B, capacity int) *densitySink {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	setReceiveBuffer(c, 16<<20)
	s := &densitySink{c: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort(), lat: make([]time.Duration, 0, capacity), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 2048)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			now := clock.Mono()
			s.mu.Lock()
			s.n++
			if n >= 24 && len(s.lat) < cap(s.lat) {
				s.lat = append(s.lat, now-time.Duration(binary.LittleEndian.Uint64(buf[16:24])))
			}
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *densitySink) count() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// pace sends pps packets a second to each address for d, each stream's
// packets spread evenly and the streams' phases spread over the period.
func pace(b *testing.B, to []netip.AddrPort, pps int, d time.Duration) uint64 {
	conns := make([]*net.UDPConn, len(to))
	for i, a := range to {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(a))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	pkt := make([]byte, 1328)
	pkt[0], pkt[1] = 0x80, PayloadTypeMP2T
	for off := 12; off+tsPacketSize <= len(pkt); off += tsPacketSize {
		fillTSPacket(pkt[off:off+tsPacketSize], 0x100, 0)
	}
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
			for ; sent[i] < due; sent[i]++ {
				binary.BigEndian.PutUint16(pkt[2:], seqs[i])
				seqs[i]++
				for j := range 7 {
					pkt[12+tsPacketSize*j+3] = 0x10 | byte(sent[i]*7+uint64(j))&0xf // continuity counters in order
				}
				binary.LittleEndian.PutUint64(pkt[16:24], uint64(clock.Mono()))
				if _, err := c.Write(pkt); err == nil {
					total++
				}
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
	defer sink.c.Close()
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
	defer sink.c.Close()
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
	b.Logf("%d streams × %d pps for %v, 1328-byte MPEG-TS over RTP, loopback", streams, pps, d)
	for i := 0; i < b.N; i++ {
		runs := []densityRun{
			densityPlain(b, streams, pps, d),
			densityWorker(b, streams, pps, d, 0),
			densityWorker(b, streams, pps, d, 500*time.Microsecond),
			densityWorker(b, streams, pps, d, time.Millisecond),
		}
		base := runs[0].perPacket()
		for _, r := range runs {
			b.Logf("%-22s sent %7d received %7d loss %6.3f%%  cpu %8v  %6.2f µs/packet (%.2f× plain)  %.2f cores  latency p50 %v p99 %v",
				r.name, r.sent, r.received, r.loss(), r.cpu.Round(time.Millisecond), float64(r.perPacket())/1e3,
				float64(r.perPacket())/float64(base), r.cpu.Seconds()/d.Seconds(), r.pct(0.5).Round(time.Microsecond), r.pct(0.99).Round(time.Microsecond))
		}
	}
}
