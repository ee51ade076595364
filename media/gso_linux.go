package media

import (
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// gsoSender sends a run of equal-sized datagrams to one output in one
// sendmsg with UDP GSO (UDP_SEGMENT): the kernel cuts them, so the stack is
// walked once for the run. Made once per stream and used under its lock.
type gsoSender struct {
	msg unix.Msghdr
	iov unix.Iovec
	oob []byte
}

func newGSOSender() *gsoSender {
	g := &gsoSender{oob: make([]byte, unix.CmsgSpace(2))}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&g.oob[0]))
	h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	g.msg.Iov = &g.iov
	g.msg.SetIovlen(1)
	g.msg.Control = &g.oob[0]
	g.msg.SetControllen(len(g.oob))
	return g
}

func (g *gsoSender) send(fd int, b []byte, seg int) syscall.Errno {
	*(*uint16)(unsafe.Pointer(&g.oob[unix.CmsgLen(0)])) = uint16(seg)
	g.iov.Base = &b[0]
	g.iov.SetLen(len(b))
	_, _, errno := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&g.msg)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
	return errno
}

// sendRun sends count datagrams of seg bytes each, back to back in b, and
// returns a mask of those that did not leave (bit i: datagram i). Counted
// per datagram, exactly as count calls of send would be.
func (o *output) sendRun(g *gsoSender, b []byte, seg, count int, now time.Duration) uint32 {
	if o.fd >= 0 && !o.noGSO {
		errno := g.send(o.fd, b, seg)
		if errno == unix.ECONNREFUSED {
			errno = g.send(o.fd, b, seg) // as in send: an earlier ICMP, consumed now
		}
		switch errno {
		case 0:
			o.packets += uint64(count)
			if o.state != outOK {
				o.state, o.badSince = outOK, 0
			}
			return 0
		case unix.EINVAL:
			// A segment too large for the route's MTU (GSO does not
			// fragment): this run goes one by one.
		case unix.EIO, unix.ENOPROTOOPT, unix.EOPNOTSUPP:
			// The route's device cannot segment (no checksum offload), or
			// the kernel has no UDP GSO: this output sends one by one.
			o.noGSO = true
		default:
			for range count {
				o.fail(errno, now)
			}
			return 1<<count - 1
		}
	}
	var failed uint32
	for i := range count {
		if !o.send(b[i*seg:(i+1)*seg], now) {
			failed |= 1 << i
		}
	}
	return failed
}
