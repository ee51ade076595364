package pairnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
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
