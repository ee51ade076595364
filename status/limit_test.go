package status

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"appliance/internal/testutil"
)

// rawConn is one client keep-alive connection, driven by hand so the test
// decides when it is idle.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, s *Server) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{Conn: c, br: bufio.NewReader(c)}
}

func (c *rawConn) send(t *testing.T, path string) {
	t.Helper()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: unit\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
}

// answer reads one response; the deadline only keeps a broken server from
// hanging the test.
func (c *rawConn) answer() (int, error) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

// closed reports whether the server has closed the connection.
func (c *rawConn) closed() bool {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.br.ReadByte()
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || (err != nil && strings.Contains(err.Error(), "reset"))
}

// serverSockets counts this process's descriptors for connections
// accepted on port: what the cap is about, seen from the kernel rather
// than from the listener's own count. Clients still in the backlog have a
// socket in the kernel but no descriptor here.
func serverSockets(t *testing.T, port int) int {
	t.Helper()
	table, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("cannot read /proc/net/tcp (%v); counting descriptors needs Linux procfs", err)
	}
	accepted := map[string]bool{} // socket inodes
	for _, line := range strings.Split(string(table), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "01" { // 01: established
			continue
		}
		if _, p, _ := strings.Cut(f[1], ":"); p == fmt.Sprintf("%04X", port) {
			accepted["socket:["+f[9]+"]"] = true
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && accepted[target] {
			n++
		}
	}
	return n
}

func port(s *Server) int { return s.Addr().(*net.TCPAddr).Port }

// More keep-alive clients than the cap: the server never holds more than
// the cap, every client is answered (the connection idle longest makes
// room), and exactly the ones made room for are gone.
func TestConnectionCap(t *testing.T) {
	const max, extra = 4, 3
	s := serveWith(t, sample("running"), Options{MaxConnections: max, IdleTimeout: time.Minute})
	conns := make([]*rawConn, max+extra)
	for i := range conns {
		conns[i] = dialRaw(t, s)
		conns[i].send(t, "/healthz")
	}
	for i, c := range conns {
		if code, err := c.answer(); code != 200 {
			t.Fatalf("client %d: %d %v", i, code, err)
		}
	}
	if peak, _ := s.ln.stats(); peak > max {
		t.Errorf("held %d connections at once, cap %d", peak, max)
	}
	if n := s.ln.held(); n != max {
		t.Errorf("holding %d connections after every client was answered, want the cap %d", n, max)
	}
	if n := serverSockets(t, port(s)); n != max {
		t.Errorf("%d descriptors for accepted connections, want the cap %d", n, max)
	}
	// The connections still held answer again; the ones shed do not.
	answered := 0
	for _, c := range conns {
		c.send(t, "/healthz")
		if code, _ := c.answer(); code == 200 {
			answered++
		}
	}
	if answered != max {
		t.Errorf("%d connections still answer, want %d", answered, max)
	}
}

// Idle keep-alive connections are closed after the idle timeout, giving
// their slots back.
func TestIdleConnectionsClosed(t *testing.T) {
	s := serveWith(t, sample("running"), Options{MaxConnections: 2, IdleTimeout: 100 * time.Millisecond})
	conns := []*rawConn{dialRaw(t, s), dialRaw(t, s)}
	for _, c := range conns {
		c.send(t, "/healthz")
		if code, err := c.answer(); code != 200 {
			t.Fatalf("%d %v", code, err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "idle connections to be closed", func() bool { return s.ln.held() == 0 })
	for i, c := range conns {
		if !c.closed() {
			t.Errorf("client %d: connection still open after the idle timeout", i)
		}
	}
	if n := serverSockets(t, port(s)); n != 0 {
		t.Errorf("%d descriptors for accepted connections after the idle timeout, want 0", n)
	}
	late := dialRaw(t, s)
	late.send(t, "/healthz")
	if code, err := late.answer(); code != 200 {
		t.Errorf("a client after the idle ones left: %d %v", code, err)
	}
}

// While every slot is busy with a request, the next client waits in the
// kernel's backlog, unaccepted, and is answered once a slot frees.
func TestBusySlotsMakeClientsWait(t *testing.T) {
	const max = 3
	src := &counting{rep: sample("running").rep, gate: make(chan struct{})}
	s := serveWith(t, src, Options{MaxConnections: max, IdleTimeout: time.Minute})
	busy := make([]*rawConn, max)
	for i := range busy {
		busy[i] = dialRaw(t, s)
		busy[i].send(t, "/api/v1/status")
	}
	testutil.Eventually(t, 5*time.Second, "the busy clients to be accepted", func() bool { return s.ln.held() == max })
	late := dialRaw(t, s)
	late.send(t, "/healthz")
	testutil.Eventually(t, 5*time.Second, "accept to wait for a slot", func() bool {
		_, waiting := s.ln.stats()
		return waiting == 1
	})
	if n := s.ln.held(); n != max {
		t.Fatalf("holding %d connections, cap %d", n, max)
	}
	if n := serverSockets(t, port(s)); n != max {
		t.Errorf("%d descriptors for accepted connections with a client waiting, want the cap %d", n, max)
	}
	close(src.gate)
	for i, c := range busy {
		if code, err := c.answer(); code != 200 {
			t.Errorf("busy client %d: %d %v", i, code, err)
		}
	}
	if code, err := late.answer(); code != 200 {
		t.Errorf("late client: %d %v", code, err)
	}
	if peak, _ := s.ln.stats(); peak > max {
		t.Errorf("held %d connections at once, cap %d", peak, max)
	}
}

func TestListenNeedsOptions(t *testing.T) {
	for _, tt := range []struct {
		opts Options
		want string
	}{
		{Options{IdleTimeout: time.Second}, "status.max_connections"},
		{Options{MaxConnections: 1}, "status.idle_timeout"},
		{Options{MaxConnections: -1, IdleTimeout: time.Second}, "status.max_connections"},
	} {
		s, err := Listen("127.0.0.1:0", tt.opts, sample("running"), discard())
		if err == nil {
			s.Close()
			t.Errorf("%+v: no error", tt.opts)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want it to name %s", tt.opts, err, tt.want)
		}
	}
}

// Where the backlog cannot be watched, the cap still holds and the API
// still answers: clients beyond it wait for an idle connection to time out.
func TestCapWithoutWatchingTheBacklog(t *testing.T) {
	s := serveWith(t, sample("running"), Options{MaxConnections: 1, IdleTimeout: 100 * time.Millisecond})
	if s.ln.backlog != nil {
		_ = s.ln.backlog.close() // the next wait fails, as a broken watch would
	}
	first, second := dialRaw(t, s), dialRaw(t, s)
	first.send(t, "/healthz")
	second.send(t, "/healthz")
	for i, c := range []*rawConn{first, second} {
		if code, err := c.answer(); code != 200 {
			t.Fatalf("client %d: %d %v", i, code, err)
		}
	}
	if peak, _ := s.ln.stats(); peak != 1 {
		t.Errorf("held %d connections at once, cap 1", peak)
	}
	if !first.closed() {
		t.Error("the first connection is open, yet the second was answered")
	}
}

// Clients that connect and say nothing fill every slot: one that asks is
// still answered once they have been silent for silentGrace, not after the
// whole header timeout, and a silent one is what makes room.
func TestSilentConnectionsShedForAWaitingClient(t *testing.T) {
	s := serveWith(t, sample("running"), Options{MaxConnections: 2, IdleTimeout: time.Minute})
	silent := []*rawConn{dialRaw(t, s), dialRaw(t, s)}
	testutil.Eventually(t, 5*time.Second, "both silent connections held", func() bool { return s.ln.held() == 2 })
	asker := dialRaw(t, s)
	asker.send(t, "/healthz")
	start := time.Now()
	if code, err := asker.answer(); code != 200 {
		t.Fatalf("a client waiting behind silent ones: %d %v", code, err)
	}
	took := time.Since(start)
	t.Logf("answered %v after asking, behind 2 silent connections", took.Round(time.Millisecond))
	if took >= 5*time.Second {
		t.Errorf("answered only after %v: silent connections held their slots for the header timeout", took)
	}
	shed := 0
	for _, c := range silent {
		if c.closed() {
			shed++
		}
	}
	if shed == 0 {
		t.Error("no silent connection was closed to make room")
	}
}
