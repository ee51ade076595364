package media

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// output is one destination of a stream, in a worker. A fault here (no
// route, unreachable, no permission, a full send buffer) is this output's
// alone: it is counted, the socket is set up again with backoff if it could
// not be, and the stream's other outputs and every other stream go on.
//
// Sends never block: the socket is written with MSG_DONTWAIT, and a full
// buffer is a counted error, not a wait. All of it runs under the stream's
// lock, which is why the raw descriptor needs no locking of its own.
type output struct {
	addr    netip.AddrPort
	fd      int // -1 while down
	packets uint64
	errors  uint64
	state   uint8
	errno   syscall.Errno // the last error
	// badSince is when the output stopped being ok, on the monotonic clock.
	badSince time.Duration
	retryAt  time.Duration
	backoff  time.Duration
	noGSO    bool // a GSO send failed as unsupported: send one by one (sendRun)
}

// Retry delays for an output that could not be set up.
const (
	outputRetryMin = 100 * time.Millisecond
	outputRetryMax = 2 * time.Second
)

func newOutput(addr netip.AddrPort, now time.Duration) *output {
	o := &output{addr: addr, fd: -1}
	o.dial(now)
	return o
}

// dial sets the socket up: a connected UDP socket, so the kernel looks the
// route up once and reports errors per destination. The descriptor is a
// plain one, not in Go's poller: sends never wait (MSG_DONTWAIT), and a
// socket in the poller wakes the poller's thread each time a sent datagram
// frees its buffer space, a wake-up per packet for nothing.
func (o *output) dial(now time.Duration) {
	fd, err := dialRaw(o.addr)
	if err != nil {
		o.fd = -1
		o.fail(errnoOf(err), now)
		o.state = outDown
		o.backoff = min(max(2*o.backoff, outputRetryMin), outputRetryMax)
		o.retryAt = now + o.backoff
		return
	}
	o.fd = fd
	o.state, o.badSince, o.backoff = outOK, 0, 0
}

// dialRaw opens a UDP socket connected to addr, as net.DialUDP would, and
// returns its descriptor.
func dialRaw(addr netip.AddrPort) (int, error) {
	family := unix.AF_INET
	var sa unix.Sockaddr
	if a := addr.Addr().Unmap(); a.Is4() {
		sa = &unix.SockaddrInet4{Port: int(addr.Port()), Addr: a.As4()}
	} else {
		family = unix.AF_INET6
		sa6 := &unix.SockaddrInet6{Port: int(addr.Port()), Addr: a.As16()}
		if z := a.Zone(); z != "" {
			ifi, err := net.InterfaceByName(z)
			if err != nil {
				return -1, unix.ENODEV
			}
			sa6.ZoneId = uint32(ifi.Index)
		}
		sa = sa6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_UDP)
	if err != nil {
		return -1, err
	}
	// As Go's own UDP sockets: a broadcast destination is allowed.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func errnoOf(err error) syscall.Errno {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return unix.EINVAL
}

func (o *output) fail(errno syscall.Errno, now time.Duration) {
	o.errors++
	o.errno = errno
	if o.state == outOK {
		o.state, o.badSince = outFailing, now
	}
}

// send writes one datagram and reports whether it left.
func (o *output) send(b []byte, now time.Duration) bool {
	if o.fd < 0 {
		o.errors++
		return false
	}
	errno := sendRaw(o.fd, b)
	if errno == unix.ECONNREFUSED {
		// A connected UDP socket reports an earlier ICMP "port unreachable"
		// on the next send and drops that packet; the error is consumed by
		// then, so one retry sends it.
		errno = sendRaw(o.fd, b)
	}
	if errno != 0 {
		o.fail(errno, now)
		return false
	}
	o.packets++
	if o.state != outOK {
		o.state, o.badSince = outOK, 0
	}
	return true
}

func sendRaw(fd int, b []byte) syscall.Errno {
	if len(b) == 0 {
		return 0
	}
	_, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
	return errno
}

// maintain retries the setup of an output that is down, when its time has come.
func (o *output) maintain(now time.Duration) {
	if o.state == outDown && now >= o.retryAt {
		o.dial(now)
	}
}

func (o *output) report(now time.Duration) outputReport {
	r := outputReport{Packets: o.packets, Errors: o.errors, State: o.state, Errno: uint32(o.errno)}
	if o.state != outOK {
		r.BadFor = max(now-o.badSince, 0)
	}
	return r
}

func (o *output) close() {
	if o.fd >= 0 {
		unix.Close(o.fd)
		o.fd = -1
	}
}

// errorText says what an output's errno means to an operator.
func errorText(errno uint32) string {
	switch e := syscall.Errno(errno); e {
	case 0:
		return ""
	case unix.EAGAIN, unix.ENOBUFS:
		return "send buffer full: the output cannot keep up"
	case unix.ENETUNREACH:
		return "network is unreachable: no route to the destination"
	case unix.EHOSTUNREACH:
		return "host is unreachable"
	case unix.EPERM, unix.EACCES:
		return e.Error() + ": refused by the local firewall or a broadcast address"
	default:
		return e.Error()
	}
}
