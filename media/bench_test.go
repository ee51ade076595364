package media

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime/pprof"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"appliance/internal/testutil"
)

// The relay benchmark runs each relay as a child process (this test binary
// re-executed), so that its CPU time can be measured on its own: the real
// worker (RunWorker, the same code `appliance worker` runs) and, as the
// baseline, a plain Go relay doing one ReadFromUDP and one WriteToUDP per
// packet. The figure is packets relayed per second of the child's CPU time.

const benchChildEnv = "MEDIA_BENCH_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(benchChildEnv) {
	case "":
		os.Exit(testutil.Main(m))
	case "worker":
		ctx, stop := signalContext()
		defer stop()
		// MEDIA_BENCH_CPUPROFILE=FILE: where a benchmark's worker writes
		// its CPU profile (the last worker started wins).
		if f := os.Getenv("MEDIA_BENCH_CPUPROFILE"); f != "" {
			if out, err := os.Create(f); err == nil {
				_ = pprof.StartCPUProfile(out)
			}
		}
		err := RunWorker(ctx, slog.New(slog.DiscardHandler))
		pprof.StopCPUProfile()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	case "plain":
		os.Exit(plainRelay())
	}
}

func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signalNotify(ch)
	go func() { <-ch; cancel() }()
	return ctx, cancel
}

// plainRelay is the baseline: the simplest correct Go relay. Input is fd 3,
// the destination comes in the environment; it stops after a quiet second
// and prints how many packets it relayed.
func plainRelay() int {
	pc, err := net.FilePacketConn(os.NewFile(3, "in"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	in := pc.(*net.UDPConn)
	out, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dst, err := net.ResolveUDPAddr("udp", os.Getenv("MEDIA_BENCH_DST"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	buf := make([]byte, 2048)
	n := 0
	for {
		_ = in.SetReadDeadline(time.Now().Add(time.Second))
		k, _, err := in.ReadFromUDP(buf)
		if err != nil {
			break
		}
		if _, err := out.WriteToUDP(buf[:k], dst); err == nil {
			n++
		}
	}
	fmt.Println(n)
	return 0
}

type relayRun struct {
	relayed uint64
	cpu     time.Duration
	maxRSS  int64 // KiB
}

func (r relayRun) perCore() float64 { return float64(r.relayed) / r.cpu.Seconds() }

// blast sends count datagrams of size bytes to addr as fast as it can.
func blast(tb testing.TB, addr netip.AddrPort, count, size int) {
	tb.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, size)
	payload := buf[12:]
	for off := 0; off+tsPacketSize <= len(payload); off += tsPacketSize {
		fillTSPacket(payload[off:off+tsPacketSize], 0x100, 0)
	}
	buf[0], buf[1] = 0x80, PayloadTypeMP2T
	for i := 0; i < count; i++ {
		buf[2], buf[3] = byte(i>>8), byte(i)
		_, _ = c.Write(buf)
	}
}

// benchInput binds a relay input and a sink nobody reads (the kernel drops
// what overflows it, at no cost to the relay).
func benchInput(tb testing.TB) (in *os.File, inAddr, sink netip.AddrPort, closeAll func()) {
	tb.Helper()
	ic, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	setReceiveBuffer(ic, 4<<20)
	sc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	f, err := ic.File()
	if err != nil {
		tb.Fatal(err)
	}
	return f, ic.LocalAddr().(*net.UDPAddr).AddrPort(), sc.LocalAddr().(*net.UDPAddr).AddrPort(),
		func() { f.Close(); ic.Close(); sc.Close() }
}

func usage(ps *os.ProcessState) (time.Duration, int64) {
	ru := ps.SysUsage().(*syscall.Rusage)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Maxrss
}

func runPlain(tb testing.TB, count, size int) relayRun {
	in, inAddr, sink, closeAll := benchInput(tb)
	defer closeAll()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchChildEnv+"=plain", "MEDIA_BENCH_DST="+sink.String())
	cmd.ExtraFiles = []*os.File{in}
	out, err := pipeStart(cmd)
	if err != nil {
		tb.Fatal(err)
	}
	blast(tb, inAddr, count, size)
	if err := cmd.Wait(); err != nil {
		tb.Fatal(err)
	}
	n, err := strconv.ParseUint(string(trimNL(out.Bytes())), 10, 64)
	if err != nil {
		tb.Fatalf("plain relay said %q", out.String())
	}
	cpu, rss := usage(cmd.ProcessState)
	return relayRun{relayed: n, cpu: cpu, maxRSS: rss}
}

func runWorker(tb testing.TB, count, size int) relayRun {
	in, inAddr, sink, closeAll := benchInput(tb)
	defer closeAll()
	tw := startTestWorker(tb, 0)
	ssrc := uint32(0x1234)
	tw.add(0, in, []netip.AddrPort{sink}, &ssrc, RoleForward)
	blast(tb, inAddr, count, size)
	// Wait until the worker has drained its input: reports a few intervals
	// apart with the same count.
	var last, prev uint64
	for i := 0; ; i++ {
		last = tw.stream(0).Counters.PacketsOut
		if i > 0 && last == prev {
			break
		}
		prev = last
		for j := 0; j < 4; j++ {
			tw.report()
		}
	}
	_ = tw.cmd.Process.Signal(syscall.SIGTERM)
	for {
		_ = tw.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		typ, body, err := tw.fr.next()
		if err != nil {
			break
		}
		if typ == msgReport {
			if r, err := decodeReport(body); err == nil && len(r.Streams) == 1 {
				last = r.Streams[0].Counters.PacketsOut
			}
		}
	}
	if err := tw.cmd.Wait(); err != nil {
		tb.Fatal(err)
	}
	cpu, rss := usage(tw.cmd.ProcessState)
	// The worker's idle time before and after the burst is a few reports:
	// counted against it, which only makes the comparison harder for it.
	return relayRun{relayed: last, cpu: cpu, maxRSS: rss}
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// BenchmarkRelay compares the worker with the plain relay, one stream of
// 1328-byte datagrams, b.N rounds of each, alternating. Reported: packets per
// CPU-second of each relay (median), their ratio, and the worker's peak RSS.
func BenchmarkRelay(b *testing.B) {
	const count, size = 300_000, 1328
	var worker, plain []float64
	var rss int64
	for i := 0; i < b.N; i++ {
		w := runWorker(b, count, size)
		p := runPlain(b, count, size)
		worker = append(worker, w.perCore())
		plain = append(plain, p.perCore())
		rss = max(rss, w.maxRSS)
		b.Logf("round %d: worker %d packets in %v CPU (%.0f/s), plain %d packets in %v CPU (%.0f/s)",
			i, w.relayed, w.cpu.Round(time.Millisecond), w.perCore(), p.relayed, p.cpu.Round(time.Millisecond), p.perCore())
	}
	b.ReportMetric(median(worker), "worker-pkts/cpu-s")
	b.ReportMetric(median(plain), "plain-pkts/cpu-s")
	b.ReportMetric(median(worker)/median(plain), "ratio")
	b.ReportMetric(float64(rss)/1024, "worker-rss-MiB")
}

// BenchmarkRelayHandle is the per-packet work without the sockets:
// parse, check, count, rewrite. It must not allocate.
func BenchmarkRelayHandle(b *testing.B) {
	ssrc := uint32(5)
	r := newRelay(90000, &ssrc, Continuity{})
	pkt := make([]byte, 1328)
	pkt[0], pkt[1] = 0x80, PayloadTypeMP2T
	for off := 12; off+tsPacketSize <= len(pkt); off += tsPacketSize {
		fillTSPacket(pkt[off:off+tsPacketSize], 0x100, 0)
	}
	buf := make([]byte, readBufSize)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for i := 0; b.Loop(); i++ {
		copy(buf, pkt)
		buf[2], buf[3] = byte(i>>8), byte(i)
		if r.handle(buf, len(pkt), time.Duration(i)*time.Millisecond) == nil {
			b.Fatal("dropped")
		}
	}
}
