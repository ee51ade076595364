package media

import (
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"appliance/config"
)

// testWorker is a worker process (this test binary re-executed as one)
// driven by the test through the real protocol, standing in for the parent.
type testWorker struct {
	tb   testing.TB
	cmd  *exec.Cmd
	conn *net.UnixConn
	fw   frameWriter
	fr   *frameReader
	id   uint64
	// reports read while waiting for something else
	reports []report
	// progress entries read, in order
	progress []progressEntry
}

// testBatchWindow is the media.batch_window the tests' workers get unless a
// test sets its own: the default (config owns it), or
// MEDIA_TEST_BATCH_WINDOW (0 for the per-packet path; make test runs the
// media tests both ways).
func testBatchWindow(tb testing.TB) time.Duration {
	tb.Helper()
	v := os.Getenv("MEDIA_TEST_BATCH_WINDOW")
	if v == "" {
		return time.Duration(config.Defaults().Media.BatchWindow)
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > maxBatchWindow {
		tb.Fatalf("MEDIA_TEST_BATCH_WINDOW=%q: want a duration from 0 to %v", v, maxBatchWindow)
	}
	return d
}

func startTestWorker(tb testing.TB, ring time.Duration) *testWorker {
	tb.Helper()
	return startTestWorkerWindow(tb, ring, testBatchWindow(tb))
}

// startTestWorkerWindow starts a worker that reads in batches of up to
// window (0: per packet).
func startTestWorkerWindow(tb testing.TB, ring, window time.Duration) *testWorker {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	parent, child := os.NewFile(uintptr(fds[0]), "ctl"), os.NewFile(uintptr(fds[1]), "ctl-child")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchChildEnv+"=worker")
	cmd.ExtraFiles = []*os.File{child}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	child.Close()
	fc, err := net.FileConn(parent)
	parent.Close()
	if err != nil {
		tb.Fatal(err)
	}
	conn := fc.(*net.UnixConn)
	tw := &testWorker{tb: tb, cmd: cmd, conn: conn, fw: frameWriter{c: conn}, fr: newFrameReader(conn)}
	tb.Cleanup(func() {
		conn.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	hello := helloMsg{Version: protocolVersion, ReportIntervalNs: int64(20 * time.Millisecond), StandbyRingNs: int64(ring),
		ProgressIntervalNs: int64(5 * time.Millisecond), BatchWindowNs: int64(window)}
	if err := tw.fw.json(msgHello, hello, nil); err != nil {
		tb.Fatal(err)
	}
	typ, body := tw.frame()
	if typ != msgReady {
		tb.Fatalf("worker answered hello with %q %s", typ, body)
	}
	return tw
}

func (tw *testWorker) frame() (byte, []byte) {
	tw.tb.Helper()
	_ = tw.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, body, err := tw.fr.next()
	if err != nil {
		tw.tb.Fatalf("reading from the worker: %v", err)
	}
	return typ, body
}

// request sends a message and returns the worker's acknowledgement.
func (tw *testWorker) request(typ byte, v any, fds []int) ackMsg {
	tw.tb.Helper()
	if err := tw.fw.json(typ, v, fds); err != nil {
		tw.tb.Fatal(err)
	}
	for {
		t, body := tw.frame()
		switch t {
		case msgAck:
			var a ackMsg
			if err := json.Unmarshal(body, &a); err != nil {
				tw.tb.Fatal(err)
			}
			return a
		case msgReport:
			r, err := decodeReport(body)
			if err != nil {
				tw.tb.Fatal(err)
			}
			tw.reports = append(tw.reports, r)
		case msgProgress:
			tw.takeProgress(body)
		default:
			tw.tb.Fatalf("worker sent %q %s", t, body)
		}
	}
}

func (tw *testWorker) nextID() uint64 { tw.id++; return tw.id }

// add hands the worker one stream on input in, and fails the test on a refusal.
func (tw *testWorker) add(sid uint32, in *os.File, outputs []netip.AddrPort, ssrc *uint32, role string) {
	tw.tb.Helper()
	as := addStream{streamConfig: streamConfig{SID: sid, Name: "s" + string(rune('a'+sid)), Outputs: outputs, ClockRate: 90000, RewriteSSRC: ssrc}, Role: role}
	a := tw.request(msgAdd, addMsg{ID: tw.nextID(), Streams: []addStream{as}}, []int{int(in.Fd())})
	if len(a.Errors) > 0 {
		tw.tb.Fatalf("add refused: %+v", a.Errors)
	}
}

// report returns the next report.
func (tw *testWorker) report() report {
	tw.tb.Helper()
	if len(tw.reports) > 0 {
		r := tw.reports[0]
		tw.reports = tw.reports[1:]
		return r
	}
	t, body := tw.frame()
	for t == msgProgress {
		tw.takeProgress(body)
		t, body = tw.frame()
	}
	if t != msgReport {
		tw.tb.Fatalf("worker sent %q %s, want a report", t, body)
	}
	r, err := decodeReport(body)
	if err != nil {
		tw.tb.Fatal(err)
	}
	return r
}

// stream finds sid in the next report that has it.
func (tw *testWorker) stream(sid uint32) streamReport {
	tw.tb.Helper()
	for i := 0; i < 100; i++ {
		for _, s := range tw.report().Streams {
			if s.SID == sid {
				return s
			}
		}
	}
	tw.tb.Fatalf("no report names stream %d", sid)
	return streamReport{}
}

func (tw *testWorker) takeProgress(body []byte) {
	tw.tb.Helper()
	var err error
	if tw.progress, err = decodeProgress(body, tw.progress); err != nil {
		tw.tb.Fatal(err)
	}
}

// role changes one stream's role and returns the worker's answer for it,
// failing the test on a refusal.
func (tw *testWorker) role(sid uint32, role string, from *uint16, cont *PeerContinuity) roleAck {
	tw.tb.Helper()
	a := tw.request(msgRole, roleMsg{ID: tw.nextID(), Changes: []roleChange{{SID: sid, Role: role, FromSeq: from, Continuity: cont}}}, nil)
	if len(a.Errors) > 0 || len(a.Roles) != 1 || a.Roles[0].SID != sid {
		tw.tb.Fatalf("role %s for stream %d answered %+v", role, sid, a)
	}
	return a.Roles[0]
}
