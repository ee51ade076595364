package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Stream input modes in a pair.
const (
	InputDual = "dual" // the source sends to both units; each binds its own input
	InputVIP  = "vip"  // the input address moves to the stream's owner
)

// Pair limits.
const (
	// MinPairPaths is 2 because a single cut cable must not look like a
	// dead peer: both units would then take every stream.
	MinPairPaths = 2
	MaxPairPaths = 8
	MinKeySize   = 16 // bytes of shared secret, after one trailing newline is dropped
	MaxKeySize   = 4096
	MinPriority  = -1000
	MaxPriority  = 1000
)

// ErrKeyFileTooOpen means the pair's key file can be read or written by
// group or others: the secret is no longer the two units' alone.
var ErrKeyFileTooOpen = errors.New("key file is open to group or others")

// DefaultPair returns the defaults of a pair section: what a unit with a
// pair section but without these keys uses.
func DefaultPair() Pair {
	return Pair{
		Heartbeat:        Duration(10 * time.Millisecond),
		DetectMultiplier: 3,
		PreemptHold:      Duration(30 * time.Second),
	}
}

// pairNodes are where the pair settings the whole-config checks point at
// are written.
type pairNodes struct {
	peerName *yaml.Node // nil when missing or refused
	keyFile  *yaml.Node // nil when missing or refused
	paths    []pathNodes
}

// pathNodes are parallel to Pair.Paths.
type pathNodes struct {
	path          string
	local, remote *yaml.Node
}

func (d *decoder) pair(n *yaml.Node, c *Config) {
	d.pairSeen = true
	p := DefaultPair()
	var holdNode *yaml.Node
	ok := d.fields(n, "pair", map[string]func(*yaml.Node){
		"peer_name": func(v *yaml.Node) {
			if !d.str(v, "pair: peer_name", &p.PeerName) {
				return
			}
			if !unitName.MatchString(p.PeerName) {
				d.at(v, "pair: peer_name", "%q: give the other unit's unit: name (1 to 63 lowercase letters, digits and dashes)", p.PeerName)
				return
			}
			d.pairAt.peerName = v
		},
		"paths": func(v *yaml.Node) { d.pairPaths(v, &p) },
		"key_file": func(v *yaml.Node) {
			switch {
			case !d.str(v, "pair: key_file", &p.KeyFile):
			case p.KeyFile == "":
				d.at(v, "pair: key_file", "must not be empty; give the file holding the shared secret, the same file on both units, such as /etc/appliance/pair.key")
			case strings.ContainsRune(p.KeyFile, 0):
				d.at(v, "pair: key_file", "must not contain a NUL byte")
			default:
				d.pairAt.keyFile = v
			}
		},
		"heartbeat": func(v *yaml.Node) {
			d.duration(v, "pair: heartbeat", time.Millisecond, time.Second, &p.Heartbeat)
		},
		"detect_multiplier": func(v *yaml.Node) { d.intField(v, "pair: detect_multiplier", 2, 50, &p.DetectMultiplier) },
		"witness": func(v *yaml.Node) {
			var s string
			if !d.str(v, "pair: witness", &s) || s == "" {
				return
			}
			ap, err := parseHostPort(s, "192.0.2.50:7400")
			if err != nil {
				d.at(v, "pair: witness", "%v, or \"\" for no witness", err)
				return
			}
			p.Witness = ap
		},
		"preempt": func(v *yaml.Node) { d.boolean(v, "pair: preempt", &p.Preempt) },
		"preempt_hold": func(v *yaml.Node) {
			holdNode = v
			d.duration(v, "pair: preempt_hold", time.Second, time.Hour, &p.PreemptHold)
		},
		"capacity": func(v *yaml.Node) {
			d.fields(v, "pair: capacity", map[string]func(*yaml.Node){
				"streams": func(x *yaml.Node) { d.intField(x, "pair: capacity: streams", 0, math.MaxInt32, &p.Capacity.Streams) },
				"bitrate_bps": func(x *yaml.Node) {
					if i, ok := d.integer(x, "pair: capacity: bitrate_bps", 0, math.MaxInt64); ok {
						p.Capacity.BitrateBPS = uint64(i)
					}
				},
			})
		},
	}, "peer_name", "paths", "key_file")
	if !ok {
		return
	}
	if holdNode != nil && !p.Preempt {
		d.at(holdNode, "pair: preempt_hold", "applies only with preempt: true (streams then move back to their preferred unit after this long); remove it, or set preempt: true")
	}
	c.Pair = &p
}

func (d *decoder) pairPaths(n *yaml.Node, p *Pair) {
	if !d.kind(n, "pair: paths", yaml.SequenceNode, "a list of {local: IP:PORT, remote: IP:PORT}") {
		return
	}
	switch k := len(n.Content); {
	case k < MinPairPaths:
		d.at(n, "pair: paths", "%s; give at least %d, over separate links: with one, a single cut cable looks like a dead peer and both units take every stream",
			plural(k, "path"), MinPairPaths)
	case k > MaxPairPaths:
		d.at(n, "pair: paths", "%d paths; at most %d", k, MaxPairPaths)
	}
	locals, remotes := map[netip.AddrPort]int{}, map[netip.AddrPort]int{}
	for i, pn := range n.Content {
		var pp PairPath
		at := pathNodes{path: fmt.Sprintf("pair: paths[%d]", i)}
		addr := func(key, example string, dst *netip.AddrPort, node **yaml.Node) func(*yaml.Node) {
			return func(v *yaml.Node) {
				var s string
				if !d.str(v, join(at.path, key), &s) {
					return
				}
				ap, err := parseHostPort(s, example)
				if err != nil {
					d.at(v, join(at.path, key), "%v", err)
					return
				}
				*dst, *node = ap, v
			}
		}
		if !d.fields(pn, at.path, map[string]func(*yaml.Node){
			"local":  addr("local", "198.18.1.1:7400", &pp.Local, &at.local),
			"remote": addr("remote", "198.18.1.2:7400", &pp.Remote, &at.remote),
		}, "local", "remote") || at.local == nil || at.remote == nil {
			continue
		}
		switch {
		case pp.Local.Addr().Is4() != pp.Remote.Addr().Is4():
			d.at(at.remote, join(at.path, "remote"), "%s and local %s are of different address families; give both as IPv4 or both as IPv6", pp.Remote, pp.Local)
			continue
		case pp.Local == pp.Remote:
			d.at(at.remote, join(at.path, "remote"), "%s is the same as local; remote is the peer's address on this path", pp.Remote)
			continue
		}
		if j, dup := locals[pp.Local]; dup {
			d.at(at.local, join(at.path, "local"), "%s is already the local end of paths[%d]; each path needs its own local address or port", pp.Local, j)
			continue
		}
		if j, dup := remotes[pp.Remote]; dup {
			d.at(at.remote, join(at.path, "remote"), "%s is already the remote end of paths[%d]; each path goes to its own peer address or port", pp.Remote, j)
			continue
		}
		locals[pp.Local], remotes[pp.Remote] = i, i
		p.Paths = append(p.Paths, pp)
		d.pairAt.paths = append(d.pairAt.paths, at)
	}
}

// parseHostPort reads IP:PORT of a unicast address: the pair settles who
// owns a stream in milliseconds, and must not wait for name lookups.
func parseHostPort(s, example string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		if host, _, serr := net.SplitHostPort(s); serr == nil && host != "" {
			if _, aerr := netip.ParseAddr(host); aerr != nil {
				return netip.AddrPort{}, fmt.Errorf("%q: %q is not an IP address; give the IP address, such as %s (no host names: heartbeats must not wait on DNS)", s, host, example)
			}
		}
		return netip.AddrPort{}, fmt.Errorf("%q: write it as IP:PORT, such as %s (IPv6 in brackets: [2001:db8::1]:7400)", s, example)
	}
	a := ap.Addr()
	switch {
	case a.Zone() != "":
		return netip.AddrPort{}, fmt.Errorf("%q: an address with a zone is not supported; use a global or unique local address", s)
	case ap.Port() == 0:
		return netip.AddrPort{}, fmt.Errorf("%q: port 0 is not allowed; give the port, such as %s", s, example)
	case a.IsUnspecified(), a.IsMulticast():
		return netip.AddrPort{}, fmt.Errorf("%q: give one unit's own address, such as %s, not an unspecified or multicast one", s, example)
	}
	return netip.AddrPortFrom(a.Unmap(), ap.Port()), nil
}

func (d *decoder) boolean(n *yaml.Node, path string, dst *bool) {
	v, ok := d.scalar(n, path)
	if !ok {
		return
	}
	if n.Tag != "!!bool" {
		d.at(n, path, "%q: must be true or false (unquoted)", v)
		return
	}
	*dst = strings.EqualFold(v, "true")
}

// vip reads a stream's {address, interface}; it sets s.VIP only when both
// are good.
func (d *decoder) vip(n *yaml.Node, path string, s *Stream, at *streamNodes) bool {
	var v VIP
	good := 0
	if !d.fields(n, path, map[string]func(*yaml.Node){
		"address": func(x *yaml.Node) {
			var t string
			if !d.str(x, join(path, "address"), &t) {
				return
			}
			p, err := netip.ParsePrefix(t)
			if err != nil {
				if _, aerr := netip.ParseAddr(t); aerr == nil {
					d.at(x, join(path, "address"), "%q: give the prefix length too, as it is put on the interface, such as %s/24", t, t)
				} else {
					d.at(x, join(path, "address"), "%q: write it as IP/PREFIX, such as 198.18.0.100/24", t)
				}
				return
			}
			a := p.Addr()
			switch {
			case a.Is4In6():
				d.at(x, join(path, "address"), "%q: write an IPv4 address as such, such as %s/%d", t, a.Unmap(), p.Bits()-96)
				return
			case a.IsUnspecified(), a.IsMulticast():
				d.at(x, join(path, "address"), "%q: a VIP is one unicast address that moves between the units", t)
				return
			}
			v.Address = p
			at.vipAddress = x
			good++
		},
		"interface": func(x *yaml.Node) {
			if !d.str(x, join(path, "interface"), &v.Interface) {
				return
			}
			if !validIfName(v.Interface) {
				d.at(x, join(path, "interface"), "%q is not an interface name (1 to 15 bytes, no '/', ':' or spaces); see `ip link`", v.Interface)
				return
			}
			good++
		},
	}, "address", "interface") || good < 2 {
		return false
	}
	s.VIP = &v
	return true
}

// pairStreams fills in the pair defaults of each stream and checks its pair
// settings against the pair section, wherever in the file that is.
func (d *decoder) pairStreams(c *Config) {
	if c.Pair == nil {
		if d.pairSeen {
			return // the pair section itself is reported
		}
		for _, at := range d.streamAt {
			for key, n := range map[string]*yaml.Node{"input_mode": at.inputMode, "vip": at.vip, "prefer": at.prefer, "priority": at.priority} {
				if n != nil {
					d.at(n, join(at.path, key), "applies only to paired units; add a pair: section, or remove it")
				}
			}
		}
		return
	}
	unit, peer := c.Unit.Name, c.Pair.PeerName
	namesOK := unitName.MatchString(unit) && d.pairAt.peerName != nil && unit != peer
	vips := map[netip.Addr]int{}
	for i := range c.Streams {
		s, at := &c.Streams[i], d.streamAt[i]
		if namesOK {
			switch {
			case s.Prefer == "" && at.prefer == nil:
				s.Prefer = min(unit, peer) // both units compute the same
			case s.Prefer != "" && s.Prefer != unit && s.Prefer != peer:
				d.at(at.prefer, join(at.path, "prefer"), "%q is neither this unit (%s) nor its peer (%s); prefer one of the two", s.Prefer, unit, peer)
			}
		}
		if at.pairBad {
			continue
		}
		if s.InputMode == "" {
			s.InputMode = InputDual
		}
		switch s.InputMode {
		case InputDual:
			if at.vip != nil {
				d.at(at.vip, join(at.path, "vip"), "a VIP is used only with input_mode: vip (input_mode is %s%s); remove vip, or set input_mode: vip",
					InputDual, map[bool]string{true: ", the default"}[at.inputMode == nil])
			}
		case InputVIP:
			if s.VIP == nil {
				d.at(at.inputMode, join(at.path, "input_mode"), "input_mode: vip needs vip: {address: IP/PREFIX, interface: NAME}, the address the input moves with the stream's owner; add it, or use input_mode: dual")
				continue
			}
			a := s.VIP.Address.Addr()
			if at.input != nil && s.Input.Addr.Addr() != a {
				d.at(at.input, join(at.path, "input"), "%s is not on the stream's VIP %s, and only the VIP moves to the owner; set input: \"%s\"",
					s.Input, a, Endpoint{Addr: netip.AddrPortFrom(a, s.Input.Addr.Port())})
			}
			if j, dup := vips[a]; dup {
				d.at(at.vipAddress, join(at.path, "vip: address"), "%s is already the VIP of %s, and the two streams could have different owners; give each stream its own VIP, or use input_mode: dual",
					a, c.Streams[j].Name)
				continue
			}
			vips[a] = i
		}
	}
}

// pairWhole checks the pair section against the rest of the file and the
// machine.
func (d *decoder) pairWhole(c *Config, env Env) {
	p := c.Pair
	if p == nil {
		return
	}
	if d.pairAt.peerName != nil && p.PeerName == c.Unit.Name {
		d.at(d.pairAt.peerName, "pair: peer_name", "%q is this unit's own name; give the other unit's unit: name (the two units need different names)", p.PeerName)
	}
	local := map[netip.Addr]bool{}
	for _, a := range env.LocalAddrs {
		local[a.WithZone("").Unmap()] = true
	}
	for i, pp := range p.Paths {
		at := d.pairAt.paths[i]
		lp := join(at.path, "local")
		// Every loopback address is local, listed or not (127.0.0.0/8 is
		// one entry), which is what a pair on one machine uses.
		if len(local) > 0 && !local[pp.Local.Addr()] && !pp.Local.Addr().IsLoopback() {
			d.at(at.local, lp, "%s is not an address of this machine, so heartbeats cannot be sent from it; give the address of the link this path leaves by (see `ip -brief address`)", pp.Local.Addr())
			continue
		}
		d.pathMeetsInput(c, pp, at, lp)
	}
}

// pathMeetsInput refuses a heartbeat socket the kernel would not bind beside
// a stream's input, or that would take the stream's packets.
func (d *decoder) pathMeetsInput(c *Config, pp PairPath, at pathNodes, path string) {
	for _, s := range c.Streams {
		if s.VIP != nil && s.VIP.Address.Addr() == pp.Local.Addr() {
			d.at(at.local, path, "%s is the VIP of stream %s, which moves between the units; a heartbeat leaves from this unit's own address", pp.Local.Addr(), s.Name)
			return
		}
	}
	for j, s := range c.Streams {
		in := s.Input.Addr
		if d.streamAt[j].input == nil || in.Port() != pp.Local.Port() {
			continue
		}
		if in.Addr() == pp.Local.Addr() || covers(in.Addr(), pp.Local.Addr()) {
			d.at(at.local, path, "%s is also where stream %s receives (%s); give the heartbeat path a port no stream uses", pp.Local, s.Name, s.Input)
			return
		}
	}
}

// readKey reads the pair's key file into Pair.Key, or reports why not. The
// problem names the file and never holds any of its contents.
func (d *decoder) readKey(c *Config) {
	if c.Pair == nil || d.pairAt.keyFile == nil {
		return
	}
	key, err := readKeyFile(c.Pair.KeyFile)
	if err != nil {
		var sentinel error
		if errors.Is(err, ErrKeyFileTooOpen) {
			sentinel = ErrKeyFileTooOpen
		}
		d.atErr(d.pairAt.keyFile, "pair: key_file", sentinel, "%v", err)
		return
	}
	c.Pair.Key = key
}

const makeKey = "head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE, then copy FILE to the peer"

func readKeyFile(path string) ([]byte, error) {
	f, err := openNonblocking(path)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("%s does not exist; create the shared secret (%s)", path, strings.ReplaceAll(makeKey, "FILE", path))
		case errors.Is(err, os.ErrPermission):
			return nil, fmt.Errorf("%s cannot be read (permission denied); it must belong to the user the unit runs as: chown appliance %s; chmod 600 %s", path, path, path)
		}
		return nil, fmt.Errorf("cannot open the key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read the key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is %s, not a regular file; give the path of the key file itself", path, describeMode(fi.Mode()))
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o, %w; the secret must be the unit's alone: chmod 600 %s", path, perm, ErrKeyFileTooOpen, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxKeySize+2))
	if err != nil {
		return nil, fmt.Errorf("reading the key file %s: %w", path, err)
	}
	key := bytes.TrimSuffix(data, []byte("\n"))
	switch {
	case len(key) < MinKeySize:
		return nil, fmt.Errorf("%s holds %s of key, fewer than %d; make a longer one (%s)", path, plural(len(key), "byte"), MinKeySize, strings.ReplaceAll(makeKey, "FILE", path))
	case len(key) > MaxKeySize:
		return nil, fmt.Errorf("%s holds more than %d bytes, too long for a key; is it the right file?", path, MaxKeySize)
	}
	return key, nil
}

// ReadKey reads a pair key file with the rules pair.key_file follows, for
// programs that take the key without a config (the witness).
func ReadKey(path string) ([]byte, error) { return readKeyFile(path) }
