package config

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// The checks here relate parts of the file to each other and to the machine:
// streams to streams, streams to workers, the whole unit to its descriptor
// limit. They run after the walk, so the order the sections are written in
// does not matter, and each points at the line that is best changed.

// Descriptors the main process holds besides stream inputs and API
// connections: its own files, sockets, timers and the runtime's, with room
// to spare.
const (
	parentReserveFDs = 64
	fdsPerWorker     = 3 // its end of the worker's control socket, the pipe from its stderr, and the process handle
)

func (d *decoder) whole(c *Config, env Env) {
	d.streamLimits(c)
	d.pairStreams(c)
	d.pairWhole(c, env)
	d.overlappingInputs(c)
	d.forwardingLoops(c, env)
	d.descriptorBudget(c, env)
}

func (d *decoder) streamLimits(c *Config) {
	n := len(c.Streams)
	if n > MaxStreams {
		d.at(d.streamsNode, "streams", "%d streams; a unit relays at most %d: move the rest to another unit", n, MaxStreams)
		return
	}
	if d.workersBad || n <= c.Media.Workers*MaxStreamsPerWorker {
		return
	}
	need := (n + MaxStreamsPerWorker - 1) / MaxStreamsPerWorker
	at := d.workersNode
	if at == nil {
		at = d.streamsNode
	}
	d.at(at, "media: workers", "%d streams need at least %d workers (a worker relays at most %d streams), not %d; set media: workers: %d",
		n, need, MaxStreamsPerWorker, c.Media.Workers, need)
}

var (
	ipv4Any = netip.IPv4Unspecified()
	ipv6Any = netip.IPv6Unspecified()
)

// covers reports whether a socket bound to the unspecified address u also
// receives what is sent to a on the same port. Go binds [::] dual-stack, so
// it covers IPv4 as well.
func covers(u, a netip.Addr) bool {
	switch u {
	case ipv4Any:
		return a.Is4()
	case ipv6Any:
		return true
	}
	return false
}

func anyText(u netip.Addr) string {
	if u == ipv4Any {
		return "0.0.0.0 receives on every IPv4 address"
	}
	return "[::] receives on every IPv6 and IPv4 address"
}

// overlappingInputs refuses two inputs on one port that the kernel would not
// both let bind: the same address, or one that the other's unspecified
// address covers. The later stream is the one reported.
func (d *decoder) overlappingInputs(c *Config) {
	byPort := map[uint16][]int{}
	for i, s := range c.Streams {
		at := d.streamAt[i].input
		if at == nil {
			continue
		}
		in := s.Input.Addr
		for _, j := range byPort[in.Port()] {
			other := c.Streams[j].Input.Addr
			path := join(d.streamAt[i].path, "input")
			if other.Addr() == in.Addr() {
				d.at(at, path, "%s is already the input of %s; two streams cannot share an input", s.Input, c.Streams[j].Name)
				break
			}
			u := in.Addr()
			if !covers(u, other.Addr()) {
				u = other.Addr()
				if !covers(u, in.Addr()) {
					continue
				}
			}
			d.at(at, path, "%s overlaps the input of %s (%s): %s; two streams cannot share an input",
				s.Input, c.Streams[j].Name, c.Streams[j].Input, anyText(u))
			break
		}
		byPort[in.Port()] = append(byPort[in.Port()], i)
	}
}

// reaches reports whether a packet sent to out arrives on a socket bound to
// in on this machine.
func reaches(out, in netip.AddrPort, local map[netip.Addr]bool) bool {
	if out.Port() != in.Port() {
		return false
	}
	o := out.Addr()
	if o == in.Addr() {
		return true
	}
	return covers(in.Addr(), o) && (o.IsLoopback() || o.IsUnspecified() || local[o])
}

// A hop is one output of a stream that arrives at another stream's input.
type hop struct {
	out, to int // index into the stream's outputs; index of the stream reached
}

// forwardingLoops refuses every cycle of streams feeding each other, a
// stream feeding itself included: each packet would go round forever. A
// depth-first walk in file order reports each output that closes a cycle (a
// back edge); without those outputs no cycle is left, so fixing what is
// reported fixes every loop. A chain that ends is fine.
func (d *decoder) forwardingLoops(c *Config, env Env) {
	local := map[netip.Addr]bool{}
	for _, a := range env.LocalAddrs {
		local[a.WithZone("").Unmap()] = true
	}
	// A VIP is this unit's address whenever it owns the stream, so an
	// output sent to it comes back in.
	for _, s := range c.Streams {
		if s.VIP != nil {
			local[s.VIP.Address.Addr()] = true
		}
	}
	byPort := map[uint16][]int{}
	for i, s := range c.Streams {
		if d.streamAt[i].input != nil {
			byPort[s.Input.Addr.Port()] = append(byPort[s.Input.Addr.Port()], i)
		}
	}
	next := make([][]hop, len(c.Streams))
	for i, s := range c.Streams {
		for k, o := range s.Outputs {
			for _, j := range byPort[o.Addr.Port()] {
				if reaches(o.Addr, c.Streams[j].Input.Addr, local) {
					next[i] = append(next[i], hop{out: k, to: j})
				}
			}
		}
	}

	const (
		unseen = iota
		onPath
		done
	)
	state := make([]int, len(c.Streams))
	depth := make([]int, len(c.Streams)) // where a stream sits in path while onPath
	var path []int
	var walk func(i int)
	walk = func(i int) {
		state[i], depth[i] = onPath, len(path)
		path = append(path, i)
		for _, h := range next[i] {
			switch state[h.to] {
			case unseen:
				walk(h.to)
			case onPath:
				d.loop(c, path[depth[h.to]:], h)
			}
		}
		path = path[:len(path)-1]
		state[i] = done
	}
	for i := range c.Streams {
		if state[i] == unseen {
			walk(i)
		}
	}
}

// loop reports the cycle cycle[0] -> ... -> cycle[last] -> cycle[0], closed
// by hop h out of the last stream.
func (d *decoder) loop(c *Config, cycle []int, h hop) {
	from := cycle[len(cycle)-1]
	names := make([]string, 0, len(cycle)+1)
	for _, i := range cycle {
		names = append(names, c.Streams[i].Name)
	}
	names = append(names, c.Streams[h.to].Name)
	const ends = 4 // a long cycle is named by its first and last streams
	if len(names) > 2*ends+1 {
		names = append(append(names[:ends:ends], fmt.Sprintf("(%d more)", len(names)-2*ends)), names[len(names)-ends:]...)
	}
	out, in := c.Streams[from].Outputs[h.out], c.Streams[h.to].Input
	how := "is the input of " + c.Streams[h.to].Name
	if out != in {
		how = fmt.Sprintf("reaches the input of %s, %s", c.Streams[h.to].Name, in)
	}
	d.at(d.streamAt[from].outputs[h.out], "", "forwarding loop: %s (%s outputs[%d] %s %s); each packet would go round forever: send this output somewhere else",
		strings.Join(names, " -> "), c.Streams[from].Name, h.out, out, how)
}

// descriptorBudget checks the unit against the descriptor limit it will run
// with: past it, a stream or an API connection fails at run time, long after
// check said yes.
func (d *decoder) descriptorBudget(c *Config, env Env) {
	limit := env.NoFileLimit
	if limit == 0 || d.workersBad {
		return
	}
	n, workers := len(c.Streams), c.Media.Workers
	parent := uint64(n + c.Status.MaxConnections + parentReserveFDs + fdsPerWorker*workers)
	if parent > limit {
		d.at(d.wholeNode(), "", "the main process would need %d file descriptors (%d stream inputs, %d status connections, %d for %s, %d reserve) but the limit is %d: raise LimitNOFILE= for the service to at least %d, or lower status: max_connections",
			parent, n, c.Status.MaxConnections, fdsPerWorker*workers, plural(workers, "worker"), parentReserveFDs, limit, parent)
	}

	// The media layer decides which streams go to which worker, so the
	// worst case is the share of streams with the most outputs.
	share := (n + workers - 1) / workers
	outs := make([]int, n)
	for i, s := range c.Streams {
		outs[i] = len(s.Outputs)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(outs)))
	var worker uint64
	for _, o := range outs[:share] {
		worker += uint64(1 + o)
	}
	if worker > limit {
		at := d.workersNode
		if at == nil {
			at = d.wholeNode()
		}
		d.at(at, "media: workers", "a worker would need up to %d file descriptors (an input and its outputs for each of its %s) but the limit is %d: raise LimitNOFILE= for the service to at least %d, or spread the streams over more workers",
			worker, plural(share, "stream"), limit, worker)
	}
}

// wholeNode is where a problem of the whole stream list is reported.
func (d *decoder) wholeNode() *yaml.Node {
	if d.streamsNode != nil {
		return d.streamsNode
	}
	return d.rootNode
}
