package pairnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// AddVIP adds p to the interface as an extra address. It is already there:
// nothing to do. The address is added as is, so a VIP inside the
// interface's own subnet becomes a secondary address; deleting the
// primary then removes it too unless net.ipv4.conf.<if>.promote_secondaries
// is 1.
func AddVIP(ifname string, p netip.Prefix) error {
	v := NewVIPs()
	defer v.Close()
	return v.Add(ifname, p)
}

// DelVIP removes p from the interface. It is not there: nothing to do.
func DelVIP(ifname string, p netip.Prefix) error {
	v := NewVIPs()
	defer v.Close()
	return v.Del(ifname, p)
}

func vipAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{
		IP:   p.Addr().AsSlice(),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}}
}

// Announce tells the interface's segment that addr is now at this
// interface's MAC: count rounds of gratuitous ARP, gap apart, each round a
// request and a reply (some switches and hosts heed only one of the two
// forms). The first round is sent before it returns; the rest follow in
// the background. Linux neighbours update an existing entry from either
// form even with arp_accept=0; only entries they do not have are left
// alone.
func Announce(ifname string, addr netip.Addr, count int, gap time.Duration) error {
	addr = addr.Unmap()
	if !addr.Is4() {
		return fmt.Errorf("pairnet: announcing %v: only IPv4 virtual addresses are announced (IPv6 needs unsolicited neighbour advertisements, not implemented)", addr)
	}
	if count < 1 {
		return nil
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("pairnet: announcing %v: interface %q: %w", addr, ifname, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("pairnet: announcing %v: interface %s has no Ethernet address, so ARP does not apply", addr, ifname)
	}
	conn, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("pairnet: announcing %v on %s: %w: the service needs CAP_NET_RAW (systemd: AmbientCapabilities=CAP_NET_RAW)", addr, ifname, err)
		}
		return fmt.Errorf("pairnet: announcing %v on %s: opening a packet socket: %w", addr, ifname, err)
	}
	frames, err := garpFrames(ifi.HardwareAddr, addr)
	if err != nil {
		conn.Close()
		return fmt.Errorf("pairnet: announcing %v on %s: %w", addr, ifname, err)
	}
	send := func() error {
		for _, f := range frames {
			if _, err := conn.WriteTo(f, &packet.Addr{HardwareAddr: ethernet.Broadcast}); err != nil {
				return err
			}
		}
		return nil
	}
	if err := send(); err != nil {
		conn.Close()
		return fmt.Errorf("pairnet: announcing %v on %s: %w (is the interface up?)", addr, ifname, err)
	}
	if count == 1 {
		return conn.Close()
	}
	go func() {
		defer conn.Close()
		t := time.NewTimer(gap)
		defer t.Stop()
		for range count - 1 {
			<-t.C
			// A later round failing (the link went down) changes nothing
			// the caller could act on: the first round went out.
			_ = send()
			t.Reset(gap)
		}
	}()
	return nil
}

// garpFrames builds the two gratuitous forms: a request and a reply from
// addr to addr, both to the broadcast address.
func garpFrames(mac net.HardwareAddr, addr netip.Addr) ([][]byte, error) {
	var out [][]byte
	for _, form := range []struct {
		op     arp.Operation
		target net.HardwareAddr
	}{
		// The request form asks nobody in particular (RFC 5227 style);
		// the reply form answers everybody.
		{arp.OperationRequest, net.HardwareAddr{0, 0, 0, 0, 0, 0}},
		{arp.OperationReply, ethernet.Broadcast},
	} {
		p, err := arp.NewPacket(form.op, mac, addr, form.target, addr)
		if err != nil {
			return nil, err
		}
		pb, err := p.MarshalBinary()
		if err != nil {
			return nil, err
		}
		f := ethernet.Frame{Destination: ethernet.Broadcast, Source: mac, EtherType: ethernet.EtherTypeARP, Payload: pb}
		fb, err := f.MarshalBinary()
		if err != nil {
			return nil, err
		}
		out = append(out, fb)
	}
	return out, nil
}

// VIPs adds, removes and announces virtual addresses for a unit that holds
// many, keeping each interface's link and packet socket between calls: a
// takeover of hundreds of vip streams then costs one netlink request and
// two frames per address, not an interface lookup and a new socket each
// (which took 1.4 s for 100 addresses on a busy lab machine). A cached
// interface that went away or was re-created is looked up again once. Not
// safe for concurrent use.
type VIPs struct {
	links map[string]netlink.Link
	anns  map[string]*announcer
}

type announcer struct {
	ifi  *net.Interface
	conn *packet.Conn
}

// NewVIPs returns an empty cache.
func NewVIPs() *VIPs {
	return &VIPs{links: map[string]netlink.Link{}, anns: map[string]*announcer{}}
}

func (v *VIPs) link(ifname string) (netlink.Link, error) {
	if l, ok := v.links[ifname]; ok {
		return l, nil
	}
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, err
	}
	v.links[ifname] = l
	return l, nil
}

// Add is AddVIP through the cache.
func (v *VIPs) Add(ifname string, p netip.Prefix) error {
	for try := 0; ; try++ {
		link, err := v.link(ifname)
		if err != nil {
			return fmt.Errorf("pairnet: adding virtual address %v: interface %q: %w (check the stream's vip interface in the config)", p, ifname, err)
		}
		err = netlink.AddrAdd(link, vipAddr(p))
		switch {
		case err == nil, errors.Is(err, unix.EEXIST):
			return nil
		case errors.Is(err, unix.EPERM):
			return fmt.Errorf("pairnet: adding virtual address %v to %s: %w: the service needs CAP_NET_ADMIN (systemd: AmbientCapabilities=CAP_NET_ADMIN)", p, ifname, err)
		case try == 0:
			delete(v.links, ifname) // perhaps re-created: look it up again
			continue
		}
		return fmt.Errorf("pairnet: adding virtual address %v to %s: %w", p, ifname, err)
	}
}

// Del is DelVIP through the cache.
func (v *VIPs) Del(ifname string, p netip.Prefix) error {
	for try := 0; ; try++ {
		link, err := v.link(ifname)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return nil // no interface, no address on it
			}
			return fmt.Errorf("pairnet: removing virtual address %v: interface %q: %w", p, ifname, err)
		}
		err = netlink.AddrDel(link, vipAddr(p))
		switch {
		case err == nil, errors.Is(err, unix.EADDRNOTAVAIL), errors.Is(err, unix.ESRCH):
			return nil
		case errors.Is(err, unix.EPERM):
			return fmt.Errorf("pairnet: removing virtual address %v from %s: %w: the service needs CAP_NET_ADMIN (systemd: AmbientCapabilities=CAP_NET_ADMIN)", p, ifname, err)
		case try == 0:
			// ENOENT or ENODEV from a link that went away: look again.
			delete(v.links, ifname)
			continue
		case errors.Is(err, unix.ENOENT):
			return nil
		}
		return fmt.Errorf("pairnet: removing virtual address %v from %s: %w", p, ifname, err)
	}
}

// Announce sends one round of gratuitous ARP for addr on ifname (as
// Announce with count 1), on the interface's kept socket.
func (v *VIPs) Announce(ifname string, addr netip.Addr) error {
	addr = addr.Unmap()
	if !addr.Is4() {
		return fmt.Errorf("pairnet: announcing %v: only IPv4 virtual addresses are announced (IPv6 needs unsolicited neighbour advertisements, not implemented)", addr)
	}
	for try := 0; ; try++ {
		a, err := v.announcer(ifname)
		if err != nil {
			return fmt.Errorf("pairnet: announcing %v: %w", addr, err)
		}
		frames, err := garpFrames(a.ifi.HardwareAddr, addr)
		if err != nil {
			return fmt.Errorf("pairnet: announcing %v on %s: %w", addr, ifname, err)
		}
		for _, f := range frames {
			if _, err = a.conn.WriteTo(f, &packet.Addr{HardwareAddr: ethernet.Broadcast}); err != nil {
				break
			}
		}
		if err == nil {
			return nil
		}
		a.conn.Close()
		delete(v.anns, ifname)
		if try > 0 {
			return fmt.Errorf("pairnet: announcing %v on %s: %w (is the interface up?)", addr, ifname, err)
		}
	}
}

func (v *VIPs) announcer(ifname string) (*announcer, error) {
	if a, ok := v.anns[ifname]; ok {
		return a, nil
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", ifname, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("interface %s has no Ethernet address, so ARP does not apply", ifname)
	}
	// It only sends: a filter that accepts nothing keeps the interface's
	// ARP traffic from queueing on it.
	conn, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), &packet.Config{Filter: []bpf.RawInstruction{{Op: 0x06}}})
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("on %s: %w: the service needs CAP_NET_RAW (systemd: AmbientCapabilities=CAP_NET_RAW)", ifname, err)
		}
		return nil, fmt.Errorf("on %s: opening a packet socket: %w", ifname, err)
	}
	a := &announcer{ifi: ifi, conn: conn}
	v.anns[ifname] = a
	return a, nil
}

// Close closes the kept sockets.
func (v *VIPs) Close() {
	for name, a := range v.anns {
		a.conn.Close()
		delete(v.anns, name)
	}
	clear(v.links)
}

// AddAll adds several virtual addresses to one interface in one netlink
// write: the kernel takes them one after the other within a single system
// call, so a takeover of hundreds of vip streams is not spread over
// hundreds of round trips that a busy unit's scheduler can each delay (in
// series, 100 addresses took 30 to 300 ms on a loaded lab machine; alone,
// 3 ms). errs[i] is the outcome for ps[i]; an address already there is
// no error.
func (v *VIPs) AddAll(ifname string, ps []netip.Prefix) []error {
	errs := make([]error, len(ps))
	fail := func(err error) []error {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	if len(ps) == 0 {
		return errs
	}
	link, err := v.link(ifname)
	if err != nil {
		return fail(fmt.Errorf("pairnet: adding virtual addresses: interface %q: %w (check the streams' vip interface in the config)", ifname, err))
	}
	// A link re-created since it was cached has another index: look it up
	// again rather than add to whatever now has the old one.
	if fresh, err := netlink.LinkByName(ifname); err == nil && fresh.Attrs().Index != link.Attrs().Index {
		v.links[ifname], link = fresh, fresh
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fail(fmt.Errorf("pairnet: adding virtual addresses: netlink socket: %w", err))
	}
	defer unix.Close(fd)
	// A kernel that never answers must not hold the takeover forever.
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail(fmt.Errorf("pairnet: adding virtual addresses: netlink bind: %w", err))
	}
	msgs := newAddrMsgs(link.Attrs().Index, ps)
	if err := unix.Sendto(fd, msgs, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail(fmt.Errorf("pairnet: adding virtual addresses to %s: %w", ifname, err))
	}
	pending := len(ps)
	for i := range errs {
		errs[i] = fmt.Errorf("pairnet: adding virtual address %v to %s: the kernel did not answer", ps[i], ifname)
	}
	buf := make([]byte, 64<<10)
	for pending > 0 {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return errs // the rest keep "did not answer"
		}
		replies, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return errs
		}
		for _, m := range replies {
			i := int(m.Header.Seq) - 1
			if m.Header.Type != unix.NLMSG_ERROR || i < 0 || i >= len(ps) || len(m.Data) < 4 {
				continue
			}
			pending--
			errno := -int32(binary.NativeEndian.Uint32(m.Data))
			switch e := unix.Errno(errno); {
			case errno == 0, e == unix.EEXIST:
				errs[i] = nil
			case e == unix.EPERM:
				errs[i] = fmt.Errorf("pairnet: adding virtual address %v to %s: %w: the service needs CAP_NET_ADMIN (systemd: AmbientCapabilities=CAP_NET_ADMIN)", ps[i], ifname, e)
			default:
				errs[i] = fmt.Errorf("pairnet: adding virtual address %v to %s: %w", ps[i], ifname, e)
			}
		}
	}
	return errs
}

// rtAttr is one netlink route attribute.
type rtAttr struct {
	typ uint16
	val []byte
}

// newAddrMsgs is one RTM_NEWADDR request per prefix, numbered from 1, as
// one buffer: header, ifaddrmsg, then the local, address and (IPv4 below
// /31) broadcast attributes.
func newAddrMsgs(index int, ps []netip.Prefix) []byte {
	var b []byte
	for i, p := range ps {
		a := p.Addr().Unmap()
		family, ip := unix.AF_INET6, a.AsSlice()
		if a.Is4() {
			family = unix.AF_INET
		}
		attrs := []rtAttr{{unix.IFA_LOCAL, ip}, {unix.IFA_ADDRESS, ip}}
		if a.Is4() && p.Bits() < 31 {
			brd := a.As4()
			for j := range brd {
				host := byte(0xff)
				if bits := p.Bits() - 8*j; bits >= 8 {
					host = 0
				} else if bits > 0 {
					host = 0xff >> bits
				}
				brd[j] |= host
			}
			attrs = append(attrs, rtAttr{unix.IFA_BROADCAST, brd[:]})
		}
		start := len(b)
		b = append(b, make([]byte, unix.NLMSG_HDRLEN+unix.SizeofIfAddrmsg)...)
		for _, at := range attrs {
			var h [unix.SizeofRtAttr]byte
			binary.NativeEndian.PutUint16(h[0:], uint16(unix.SizeofRtAttr+len(at.val)))
			binary.NativeEndian.PutUint16(h[2:], at.typ)
			b = append(b, h[:]...)
			b = append(b, at.val...)
			for len(b)%4 != 0 {
				b = append(b, 0)
			}
		}
		hdr := b[start:]
		binary.NativeEndian.PutUint32(hdr[0:], uint32(len(b)-start))
		binary.NativeEndian.PutUint16(hdr[4:], unix.RTM_NEWADDR)
		binary.NativeEndian.PutUint16(hdr[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL)
		binary.NativeEndian.PutUint32(hdr[8:], uint32(i+1))
		ifa := hdr[unix.NLMSG_HDRLEN:]
		ifa[0] = byte(family)
		ifa[1] = byte(p.Bits())
		binary.NativeEndian.PutUint32(ifa[4:], uint32(index))
	}
	return b
}

// TakeRealtime puts the calling goroutine on a thread of its own at
// SCHED_FIFO priority prio, for work on a takeover's critical path (adding
// a takeover's addresses) that a busy machine's ordinary threads must not
// hold up. The thread stays locked: it ends when the goroutine does, so
// nothing else ever runs at that priority. It reports whether the unit
// was allowed real-time priority; without it the work runs as before.
func TakeRealtime(prio int) bool {
	runtime.LockOSThread()
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(prio)}
	return unix.SchedSetAttr(0, &attr, 0) == nil
}
