package status

import (
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// backlog tells when a client waits in a listening socket's accept backlog,
// without accepting it: a listening socket is readable exactly then.
type backlog struct {
	f  *os.File // a duplicate of the listener's descriptor, in the runtime's poller
	rc syscall.RawConn
}

func watchBacklog(ln net.Listener) (*backlog, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, nil
	}
	f, err := tl.File()
	if err != nil {
		return nil, fmt.Errorf("status: watching the accept backlog: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("status: watching the accept backlog: %w", err)
	}
	return &backlog{f: f, rc: rc}, nil
}

// wait returns once a client is waiting, or with an error once closed.
func (b *backlog) wait() error {
	var perr error
	err := b.rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		if err != nil && err != unix.EINTR {
			perr = err
			return true
		}
		return n > 0
	})
	if err != nil {
		return err
	}
	return perr
}

func (b *backlog) close() error { return b.f.Close() }
