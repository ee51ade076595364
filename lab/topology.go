package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Prefix starts the name of every namespace and directory a lab run makes,
// followed by the run's process ID, so a later run can find and remove
// what a killed one left.
const Prefix = "applab-"

// The lab's addresses, all in 198.18.0.0/15.
var (
	AddrA      = netip.MustParseAddr("198.18.0.1")
	AddrB      = netip.MustParseAddr("198.18.0.2")
	AddrClient = netip.MustParseAddr("198.18.0.10")
	// PairPaths are the two heartbeat paths, one per cable: A's end, B's end.
	PairPaths = [2][2]netip.AddrPort{
		{netip.MustParseAddrPort("198.18.1.1:7400"), netip.MustParseAddrPort("198.18.1.2:7400")},
		{netip.MustParseAddrPort("198.18.2.1:7400"), netip.MustParseAddrPort("198.18.2.2:7400")},
	}
	WitnessAddr = netip.AddrPortFrom(AddrClient, 7500)
)

// Role names a namespace of the topology.
type Role string

// The namespaces of a topology.
const (
	UnitA  Role = "a"
	UnitB  Role = "b"
	Client Role = "client"
	LAN    Role = "lan"
)

var roles = []Role{UnitA, UnitB, Client, LAN}

// Topology is a pair of units, a client and the media LAN between them,
// each in its own network namespace:
//
//	unitA eth0 198.18.0.1/16  ─┐
//	unitB eth0 198.18.0.2/16  ─┼─ bridge br0 in lan
//	client eth0 198.18.0.10/16 ┘
//	unitA pair0 198.18.1.1/24 ── unitB pair0 198.18.1.2/24
//	unitA pair1 198.18.2.1/24 ── unitB pair1 198.18.2.2/24
type Topology struct {
	ID string // Prefix + the process ID: every namespace name starts with it
}

// NS is the name of a role's namespace.
func (t *Topology) NS(r Role) string { return t.ID + "-" + string(r) }

// ErrNotRoot means the lab was started without the privileges it needs to
// make network namespaces.
var ErrNotRoot = errors.New("the lab needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to make network namespaces; run it with sudo")

// ErrNoIP means the ip tool is missing.
var ErrNoIP = errors.New("the lab needs the ip tool: apt-get install iproute2")

// BuildTopology makes the namespaces and links. On error it removes what
// it made.
func BuildTopology() (*Topology, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	if _, err := lookPath("ip"); err != nil {
		return nil, ErrNoIP
	}
	t := &Topology{ID: Prefix + strconv.Itoa(os.Getpid())}
	if err := t.build(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

func (t *Topology) build() error {
	a, b, c, lan := t.NS(UnitA), t.NS(UnitB), t.NS(Client), t.NS(LAN)
	steps := [][]string{}
	for _, r := range roles {
		steps = append(steps, []string{"netns", "add", t.NS(r)}, []string{"-n", t.NS(r), "link", "set", "lo", "up"})
	}
	steps = append(steps,
		[]string{"-n", lan, "link", "add", "br0", "type", "bridge"},
		[]string{"-n", lan, "link", "set", "br0", "up"})
	for _, m := range []struct {
		ns, port string
		addr     netip.Addr
	}{{a, "pa", AddrA}, {b, "pb", AddrB}, {c, "pc", AddrClient}} {
		steps = append(steps,
			[]string{"link", "add", "eth0", "netns", m.ns, "type", "veth", "peer", "name", m.port, "netns", lan},
			[]string{"-n", lan, "link", "set", m.port, "master", "br0", "up"},
			[]string{"-n", m.ns, "addr", "add", m.addr.String() + "/16", "dev", "eth0"},
			[]string{"-n", m.ns, "link", "set", "eth0", "up"})
	}
	for i, p := range PairPaths {
		name := fmt.Sprintf("pair%d", i)
		steps = append(steps,
			[]string{"link", "add", name, "netns", a, "type", "veth", "peer", "name", name, "netns", b},
			[]string{"-n", a, "addr", "add", p[0].Addr().String() + "/24", "dev", name},
			[]string{"-n", b, "addr", "add", p[1].Addr().String() + "/24", "dev", name},
			[]string{"-n", a, "link", "set", name, "up"},
			[]string{"-n", b, "link", "set", name, "up"})
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	// Units bind their virtual IPs before they hold them.
	for _, ns := range []string{a, b} {
		if err := sysctl(ns, "net.ipv4.ip_nonlocal_bind", "1"); err != nil {
			return fmt.Errorf("net.ipv4.ip_nonlocal_bind in %s: %w", ns, err)
		}
	}
	return nil
}

// SetLink brings a link of a role's namespace up or down.
func (t *Topology) SetLink(r Role, link string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return ip("-n", t.NS(r), "link", "set", link, state)
}

// Close kills every process left in the namespaces and removes them.
func (t *Topology) Close() error {
	return removeNamespaces(func(name string) bool { return strings.HasPrefix(name, t.ID+"-") })
}

func removeNamespaces(match func(string) bool) error {
	names, err := listNS()
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if !match(n) {
			continue
		}
		killInNS(n)
		if err := ip("netns", "del", n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CleanLeftovers removes what runs that are no longer alive left behind:
// namespaces (and every process in them) and state directories named
// Prefix + PID. A run that is still going is left alone. It returns the
// names it removed.
func CleanLeftovers() ([]string, error) {
	dead := func(name string) bool {
		rest, ok := strings.CutPrefix(name, Prefix)
		if !ok {
			return false
		}
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil {
			return false
		}
		return pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH
	}
	var removed []string
	names, err := listNS()
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if dead(n) {
			removed = append(removed, n)
		}
	}
	err = removeNamespaces(dead)
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), Prefix+"*"))
	for _, d := range dirs {
		if dead(filepath.Base(d)) {
			removed = append(removed, d)
			_ = os.RemoveAll(d)
		}
	}
	return removed, err
}
