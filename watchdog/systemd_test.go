package watchdog

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"appliance/internal/clock"
)

// notifySocket is a fake systemd: a unixgram socket in NOTIFY_SOCKET.
func notifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return c
}

// receive reads the next datagram; the deadline is only a guard against a hang.
func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("reading from the notify socket: %v", err)
	}
	return string(buf[:n])
}

func TestSystemdNotifierSends(t *testing.T) {
	c := notifySocket(t)
	n := SystemdNotifier()
	for _, msg := range []string{"READY=1", "STATUS=2 streams, all healthy", "WATCHDOG=1"} {
		if err := n.Notify(msg); err != nil {
			t.Fatal(err)
		}
		if got := receive(t, c); got != msg {
			t.Errorf("systemd got %q, want %q", got, msg)
		}
	}
}

func TestSystemdNotifierWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := SystemdNotifier().Notify("READY=1"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v, want a quiet no-op", err)
	}
}

func TestSystemdNotifierSocketGone(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody-listens"))
	if err := SystemdNotifier().Notify("READY=1"); err == nil {
		t.Error("no error when systemd's socket is missing")
	}
}

func TestSystemdWatchdogInterval(t *testing.T) {
	for _, tc := range []struct {
		name, usec, pid string
		want            time.Duration
		ok              bool
	}{
		{"unset", "", "", 0, false},
		{"enabled", "2000000", "", 2 * time.Second, true},
		{"for this process", "2000000", strconv.Itoa(os.Getpid()), 2 * time.Second, true},
		{"for another process", "2000000", strconv.Itoa(os.Getpid() + 1), 0, false},
		{"garbage", "soon", "", 0, false},
		{"zero", "0", "", 0, false},
		{"bad pid", "2000000", "me", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tc.usec)
			t.Setenv("WATCHDOG_PID", tc.pid)
			got, ok := SystemdWatchdogInterval()
			if got != tc.want || ok != tc.ok {
				t.Errorf("got %v %v, want %v %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// The keeper through the real go-systemd client into a fake systemd.
func TestKeeperTalksToSystemd(t *testing.T) {
	c := notifySocket(t)
	t.Setenv("WATCHDOG_USEC", "4000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	interval, ok := SystemdWatchdogInterval()
	if !ok {
		t.Fatal("systemd watchdog not enabled")
	}
	clk := clock.NewFake(epoch)
	var root fakeRoot
	root.clk = clk
	root.beat()
	k, err := New(Options{
		Notifier: SystemdNotifier(), SystemdInterval: interval,
		Progress: root.Progress, Status: func() string { return "1 stream" }, Clock: clk,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Serve(ctx) }()
	for _, want := range []string{"WATCHDOG=1", "READY=1", "STATUS=1 stream"} {
		if got := receive(t, c); got != want {
			t.Errorf("systemd got %q, want %q", got, want)
		}
	}
	if err := k.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, c); got != "STOPPING=1" {
		t.Errorf("systemd got %q, want STOPPING=1", got)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
	cancel()
}
