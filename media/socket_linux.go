package media

import (
	"fmt"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// datagramReader reads datagrams and reports their real length, so that a
// datagram larger than the buffer is seen as oversize rather than silently
// cut (a plain read truncates without telling).
type datagramReader struct {
	rc  syscall.RawConn
	buf []byte
	n   int
	err error
	fn  func(fd uintptr) bool // built once: a closure per read would allocate
}

func newDatagramReader(c *net.UDPConn, buf []byte) (*datagramReader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	d := &datagramReader{rc: rc, buf: buf}
	d.fn = func(fd uintptr) bool {
		// recvfrom directly: x/sys's wrappers build a Sockaddr per call, and
		// MSG_TRUNC makes the kernel return the datagram's full length.
		n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&d.buf[0])),
			uintptr(len(d.buf)), unix.MSG_TRUNC, 0, 0)
		if errno == unix.EAGAIN || errno == unix.EINTR {
			return false
		}
		d.n, d.err = int(n), nil
		if errno != 0 {
			d.n, d.err = 0, errno
		}
		return true
	}
	return d, nil
}

// read blocks until a datagram arrives and returns its full length.
func (d *datagramReader) read() (int, error) {
	if err := d.rc.Read(d.fn); err != nil {
		return 0, err
	}
	return d.n, d.err
}

// setReceiveBuffer asks for a large receive buffer, so a stream survives a
// worker restart without overflowing. As root the rmem_max cap is bypassed.
func setReceiveBuffer(c *net.UDPConn, size int) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	got := 0
	_ = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
		}
		got, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	return got
}

// setFreeBind lets a socket bind an address the machine does not have (yet).
func setFreeBind(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if network == "udp6" {
			// An IPv6 socket may carry IPv4 too; kernels before 4.15 know
			// only IP_FREEBIND, which covers both.
			if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1); serr == nil {
				return
			}
		}
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("setting IP_FREEBIND: %w", serr)
	}
	return nil
}

// batchReader reads up to len(bufs) datagrams in one recvmmsg, each with its
// real length, like datagramReader, and the time the kernel received it
// (SO_TIMESTAMPNS, set on the socket by enableRxStamps). Buffers and
// message headers are made once, with the stream: a read allocates nothing.
type batchReader struct {
	bufs   [][]byte
	lens   []int
	stamps []int64 // the kernel's receive time, real-time clock ns; 0 if none
	iovs   []unix.Iovec
	oobs   []byte // one control buffer per message, rxOOBSize each
	msgs   []unix.Mmsghdr
	size   int
}

// rxOOBSize holds one SCM_TIMESTAMPNS control message.
var rxOOBSize = unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{})))

func newBatchReader(count, size int) *batchReader {
	b := &batchReader{bufs: make([][]byte, count), lens: make([]int, count), stamps: make([]int64, count),
		iovs: make([]unix.Iovec, count), oobs: make([]byte, count*rxOOBSize), msgs: make([]unix.Mmsghdr, count), size: size}
	mem := make([]byte, count*size)
	for i := range count {
		b.bufs[i] = mem[i*size : (i+1)*size : (i+1)*size]
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(size)
		b.msgs[i].Hdr.Iov = &b.iovs[i]
		b.msgs[i].Hdr.SetIovlen(1)
	}
	return b
}

// read reads what is queued in the socket fd, without waiting, and returns
// how many datagrams it read (at most len(bufs); 0 when none was queued):
// datagram i is bufs[i], its full length lens[i], its arrival stamps[i].
func (b *batchReader) read(fd int) (int, error) {
	for i := range b.msgs {
		b.msgs[i].Hdr.Control = &b.oobs[i*rxOOBSize]
		b.msgs[i].Hdr.SetControllen(rxOOBSize)
	}
	for {
		// MSG_TRUNC: each message's length is the datagram's full length,
		// so an oversize one is seen as such.
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.msgs[0])),
			uintptr(len(b.msgs)), unix.MSG_TRUNC|unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		default:
			return 0, errno
		}
		for i := range int(n) {
			l := int(b.msgs[i].Len)
			if b.msgs[i].Hdr.Flags&unix.MSG_TRUNC != 0 && l <= b.size {
				l = b.size + 1
			}
			b.lens[i] = l
			b.stamps[i] = rxStamp(b.oobs[i*rxOOBSize:(i+1)*rxOOBSize], int(b.msgs[i].Hdr.Controllen))
		}
		return int(n), nil
	}
}

// rxStamp reads the SCM_TIMESTAMPNS in a message's control data (n bytes
// of oob): the real-time clock in ns, or 0 when there is none.
func rxStamp(oob []byte, n int) int64 {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	if n < unix.CmsgLen(16) || h.Level != unix.SOL_SOCKET || h.Type != unix.SCM_TIMESTAMPNS || int(h.Len) < unix.CmsgLen(16) {
		return 0
	}
	ts := (*unix.Timespec)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
	return ts.Nano()
}

// enableRxStamps asks the kernel to stamp each datagram with the time it
// arrived, for a batched read to give each its own arrival time.
func enableRxStamps(fd int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
}
