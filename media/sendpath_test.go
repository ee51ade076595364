package media

import (
	"net"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BenchmarkSendPath: how much of a packet's send is the system call and how
// much the network stack, for the next step of docs/batching.md. One pass
// sends one 1,328-byte datagram to each of 32 destinations on loopback,
// either with one sendto per destination on its connected socket (what a
// worker does today) or with one sendmmsg of 32 messages, each with its own
// destination, on one unconnected socket. Receivers are drained by a
// goroutine each; ns/op is per pass of 32 datagrams. And for one
// destination, 16 datagrams by sendto against one sendmsg with UDP GSO
// (UDP_SEGMENT): what a high-rate stream or a backlog could do.
func BenchmarkSendPath(b *testing.B) {
	const dests = 32
	addrs := make([]netip.AddrPort, dests)
	for i := range dests {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		setReceiveBuffer(c, 4<<20)
		defer c.Close()
		addrs[i] = c.LocalAddr().(*net.UDPAddr).AddrPort()
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	pkt := make([]byte, 1328)
	pkt[0] = 0x80

	b.Run("sendto-connected", func(b *testing.B) {
		outs := make([]*output, dests)
		for i, a := range addrs {
			outs[i] = newOutput(a, 0)
			defer outs[i].close()
		}
		b.ReportAllocs()
		for b.Loop() {
			for _, o := range outs {
				o.send(pkt, 0)
			}
		}
	})
	b.Run("sendmmsg-unconnected", func(b *testing.B) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(fd)
		names := make([]unix.RawSockaddrInet4, dests)
		iovs := make([]unix.Iovec, dests)
		msgs := make([]unix.Mmsghdr, dests)
		for i, a := range addrs {
			names[i].Family = unix.AF_INET
			names[i].Addr = a.Addr().As4()
			p := (*[2]byte)(unsafe.Pointer(&names[i].Port))
			p[0], p[1] = byte(a.Port()>>8), byte(a.Port())
			iovs[i].Base = &pkt[0]
			iovs[i].SetLen(len(pkt))
			msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&names[i]))
			msgs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
			msgs[i].Hdr.Iov = &iovs[i]
			msgs[i].Hdr.SetIovlen(1)
		}
		b.ReportAllocs()
		for b.Loop() {
			for sent := 0; sent < dests; {
				n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[sent])),
					uintptr(dests-sent), unix.MSG_DONTWAIT, 0, 0)
				if errno != 0 {
					sent++ // counted as a failure, as an output would
					continue
				}
				sent += int(n)
			}
		}
	})
	b.Run("one-dest-16-sendto", func(b *testing.B) {
		o := newOutput(addrs[0], 0)
		defer o.close()
		for b.Loop() {
			for range 16 {
				o.send(pkt, 0)
			}
		}
	})
	b.Run("one-dest-16-gso", func(b *testing.B) {
		o := newOutput(addrs[0], 0)
		defer o.close()
		big := make([]byte, 16*len(pkt))
		oob := make([]byte, unix.CmsgSpace(2))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
		*(*uint16)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = uint16(len(pkt))
		for b.Loop() {
			if err := unix.Sendmsg(o.fd, big, oob, nil, unix.MSG_DONTWAIT); err != nil && err != unix.EAGAIN {
				b.Fatal(err)
			}
		}
	})
}
