package spawn

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// child is a started process and its one waiter.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has ended
}

// startOnThreadThatEnds starts `sleep 60` with a parent-death signal, by
// start, from a goroutine locked to its thread, then lets that goroutine end
// locked, so that the runtime ends the thread, and waits until it has.
func startOnThreadThatEnds(t *testing.T, start func(*exec.Cmd) error) child {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	tid := make(chan int, 1)
	errc := make(chan error, 1)
	var run func()
	run = func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The main thread, which the runtime never ends: hold it
			// while another goroutine, on another thread, does the work.
			done := make(chan struct{})
			go func() { run(); close(done) }()
			<-done
			runtime.UnlockOSThread()
			return
		}
		// Never unlocked: the thread ends with the goroutine.
		tid <- unix.Gettid()
		errc <- start(cmd)
	}
	go run()
	gone := "/proc/self/task/" + strconv.Itoa(<-tid)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	c := child{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-c.done })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(gone); errors.Is(err, os.ErrNotExist) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatal("the locked thread did not end in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// exited reports whether the child's process ended within d.
func exited(c child, d time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(d):
		return false
	}
}

// A child forked on a thread that then ends gets its parent-death signal;
// one forked through Start, from whichever goroutine, does not.
func TestChildOutlivesTheForkingGoroutine(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep command")
	}
	direct := startOnThreadThatEnds(t, (*exec.Cmd).Start)
	if !exited(direct, 10*time.Second) {
		t.Fatal("a child forked on a thread that ended is still running: the hazard this package avoids is not reproduced, so the test proves nothing")
	}
	spawned := startOnThreadThatEnds(t, Start)
	// The signal is sent as the thread ends, which has happened: a second
	// is ample for the child to be gone if it was sent.
	if exited(spawned, time.Second) {
		t.Fatalf("a child started through Start died when the goroutine that asked for it ended: %v", spawned.cmd.ProcessState)
	}
}
