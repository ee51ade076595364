package pairnet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"appliance/failover"
	"appliance/internal/clock"
)

// Node is one unit's end of the pair link: a socket per path and one for
// the witness, read by a single loop on a real-time thread.
type Node struct {
	o      Options
	clk    clock.Clock
	log    *slog.Logger
	paths  []*pathState
	wit    *sock // nil: no witness
	witC   counters
	wakeFD int // eventfd: Run's poll wakes when ctx ends or Close is called

	realtime atomic.Bool
	muted    atomic.Bool
	bcn      atomic.Pointer[beacon] // the beacon; nil: none (set once, by Run)
	late     atomic.Uint64
	maxLate  atomic.Int64
	tid      atomic.Int64 // the loop thread, while Run runs
	running  atomic.Bool
	closed   atomic.Bool
	done     chan struct{} // closed when Run returns
	closeMu  sync.Mutex
	fdClosed bool

	// Loop state: touched only by the loop thread (Run and the Handler
	// callbacks it makes, which alone may call Send and AskWitness).
	peer, witSess *session
	seal          *sealer
	inTick        bool
	in            [maxDatagram + 1]byte // one more than any valid datagram, so a longer one shows as too long
	out           [maxDatagram]byte
	msg           failover.Message
	tim           timing
	rsa           unix.RawSockaddrAny
	rsaLen        uint32
	pfds          []unix.PollFd
	ts            unix.Timespec
}

// sock is a bound, non-blocking UDP socket and the one address it talks to.
type sock struct {
	fd     int
	local  netip.AddrPort
	remote netip.AddrPort
	to     unix.Sockaddr
}

type pathState struct {
	sock
	c      counters
	missed atomic.Uint64 // PathStats.Missed
	// The newest live message on this path, for the echo and held fields
	// of the next one sent: the peer's send time, and when it arrived.
	peerSent   uint64
	peerSentAt time.Duration
	// The path's silence, for missed: since when (the newest live message,
	// or the start of Run) and how many heartbeats it has counted. Loop only.
	quietSince  time.Duration
	quietMissed uint64
}

// countMissed counts the heartbeats the path's silence has missed by now
// that it has not counted yet.
func (p *pathState) countMissed(now, hb time.Duration) {
	if k := missedIn(now-p.quietSince, hb); k > p.quietMissed {
		p.missed.Add(k - p.quietMissed)
		p.quietMissed = k
	}
}

// countMissed brings every path's missed count up to now, at each beat: a
// path that stays silent counts its misses as they fall due, not only when
// a message ends the silence.
func (n *Node) countMissed(now time.Duration) {
	for _, p := range n.paths {
		p.countMissed(now, n.o.Heartbeat)
	}
}

// Open binds every path's local address, and an ephemeral port for the
// witness. Nothing is sent until Run.
func Open(o Options) (*Node, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RTPriority == 0 {
		o.RTPriority = DefaultRTPriority
	}
	if o.BeaconGrace == 0 {
		o.BeaconGrace = DefaultBeaconGrace
	}
	peer, err := newSession()
	if err != nil {
		return nil, err
	}
	witSess := &session{self: peer.self}
	n := &Node{
		o: o, clk: o.Clock, log: o.Logger, wakeFD: -1, done: make(chan struct{}),
		peer: peer, witSess: witSess, seal: newSealer(o.Key),
		msg: failover.Message{Entries: make([]failover.Entry, 0, failover.MaxEntries)},
	}
	fail := func(err error) (*Node, error) {
		n.closeFDs()
		return nil, err
	}
	for i, p := range o.Paths {
		s, err := bindUDP(p.Local, p.Remote)
		if err != nil {
			return fail(fmt.Errorf("pairnet: heartbeat path %d: %w", i, err))
		}
		n.paths = append(n.paths, &pathState{sock: s, quietSince: o.Clock.Mono()})
	}
	if o.Witness.IsValid() {
		var any netip.Addr
		if o.Witness.Addr().Unmap().Is4() {
			any = netip.IPv4Unspecified()
		} else {
			any = netip.IPv6Unspecified()
		}
		s, err := bindUDP(netip.AddrPortFrom(any, 0), o.Witness)
		if err != nil {
			return fail(fmt.Errorf("pairnet: witness socket: %w", err))
		}
		n.wit = &s
	}
	n.wakeFD, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		n.wakeFD = -1
		return fail(fmt.Errorf("pairnet: creating an eventfd: %w", err))
	}
	for _, p := range n.paths {
		n.pfds = append(n.pfds, unix.PollFd{Fd: int32(p.fd), Events: unix.POLLIN})
	}
	if n.wit != nil {
		n.pfds = append(n.pfds, unix.PollFd{Fd: int32(n.wit.fd), Events: unix.POLLIN})
	}
	n.pfds = append(n.pfds, unix.PollFd{Fd: int32(n.wakeFD), Events: unix.POLLIN})
	return n, nil
}

func (o *Options) check() error {
	var errs []error
	if len(o.Paths) == 0 {
		errs = append(errs, errors.New("no heartbeat path: configure at least one in pair.paths"))
	}
	if len(o.Paths) > 255 {
		errs = append(errs, fmt.Errorf("%d heartbeat paths: the wire carries a path index in one byte, configure at most 255", len(o.Paths)))
	}
	for i, p := range o.Paths {
		l, r := p.Local.Addr().Unmap(), p.Remote.Addr().Unmap()
		switch {
		case !p.Local.IsValid() || !p.Remote.IsValid():
			errs = append(errs, fmt.Errorf("heartbeat path %d: local %v, remote %v: both addresses and ports are needed", i, p.Local, p.Remote))
		case l.Is4() != r.Is4():
			errs = append(errs, fmt.Errorf("heartbeat path %d: local %v and remote %v are of different IP versions", i, p.Local, p.Remote))
		case p.Remote.Port() == 0:
			errs = append(errs, fmt.Errorf("heartbeat path %d: remote %v has no port", i, p.Remote))
		}
	}
	if o.Witness.IsValid() && o.Witness.Port() == 0 {
		errs = append(errs, fmt.Errorf("witness %v has no port", o.Witness))
	}
	if len(o.Key) < 16 {
		errs = append(errs, fmt.Errorf("the pair key is %d bytes: use 16 random bytes at least in pair.key_file", len(o.Key)))
	}
	if o.Heartbeat <= 0 || o.Detect <= 0 {
		errs = append(errs, fmt.Errorf("heartbeat %v and detect %v must both be positive", o.Heartbeat, o.Detect))
	}
	if len(o.Self) > maxNameLen || len(o.Peer) > maxNameLen {
		errs = append(errs, errNameTooLong)
	}
	if o.RTPriority < -1 || o.RTPriority > 99 {
		errs = append(errs, fmt.Errorf("real-time priority %d: SCHED_FIFO takes 1 to 99 (or -1 for none)", o.RTPriority))
	}
	if len(errs) > 0 {
		return fmt.Errorf("pairnet: %w", errors.Join(errs...))
	}
	return nil
}

// bindUDP opens a non-blocking UDP socket on local that talks to remote.
// Raw descriptors, not the Go netpoller: the loop polls them itself so
// that a datagram wakes the real-time thread directly.
func bindUDP(local, remote netip.AddrPort) (sock, error) {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	family := unix.AF_INET6
	if local.Addr().Is4() {
		family = unix.AF_INET
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return sock{fd: -1}, fmt.Errorf("opening a UDP socket: %w", err)
	}
	// Heartbeats are network control traffic (CS6): switches that honour
	// DSCP queue them ahead of the media they protect. Best effort.
	if family == unix.AF_INET {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS, 0xc0)
	} else {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, 0xc0)
	}
	if err := unix.Bind(fd, sockaddr(local)); err != nil {
		unix.Close(fd)
		return sock{fd: -1}, fmt.Errorf("binding %v: %w", local, bindAdvice(err))
	}
	if local.Port() == 0 {
		if sa, err := unix.Getsockname(fd); err == nil {
			local = addrPortOf(sa)
		}
	}
	return sock{fd: fd, local: local, remote: remote, to: sockaddr(remote)}, nil
}

func bindAdvice(err error) error {
	switch {
	case errors.Is(err, unix.EADDRNOTAVAIL):
		return fmt.Errorf("%w: the address is not on any interface of this unit; correct the path's local address or configure it on the interface", err)
	case errors.Is(err, unix.EADDRINUSE):
		return fmt.Errorf("%w: another socket holds this address and port; stop the other appliance process or choose another port", err)
	case errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w: ports below 1024 need CAP_NET_BIND_SERVICE; choose a higher port or grant the capability", err)
	}
	return err
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if a := ap.Addr(); a.Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func addrPortOf(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// Run is the loop: it calls h.Tick every Heartbeat, and h.Receive and
// h.WitnessAnswer as messages arrive, all on one OS thread that runs under
// SCHED_FIFO when the unit may. It returns when ctx ends (nil) or the node
// is closed (ErrClosed).
func (n *Node) Run(ctx context.Context, h Handler) error {
	if n.closed.Load() {
		return ErrClosed
	}
	if !n.running.CompareAndSwap(false, true) {
		return errors.New("pairnet: Run called twice: one loop per node")
	}
	defer close(n.done)
	// The thread is never unlocked: when Run returns the goroutine ends
	// locked and the runtime retires the thread, real-time policy and all,
	// instead of handing it to other goroutines.
	runtime.LockOSThread()
	n.tid.Store(int64(unix.Gettid()))
	defer n.tid.Store(0)
	n.setRealtime()
	if n.o.Beacon != nil {
		if err := n.startBeacon(); err != nil {
			n.log.Warn("pair: the heartbeat beacon did not start; heartbeats go on from the loop alone, so a busy CPU may delay them", "err", err)
		}
		defer n.beaconOf().stop()
	}

	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-ctx.Done():
			n.wake()
		case <-stop:
		}
	}()

	dl, _ := h.(Deadliner)
	next := n.clk.Mono()
	for _, p := range n.paths {
		p.quietSince = next // the peer is expected from when the loop listens
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		if n.closed.Load() {
			return ErrClosed
		}
		now := n.clk.Mono()
		if now >= next {
			// What arrived is read before the machine judges the peer's
			// silence: a loop held off must not take a full socket for
			// a silent peer.
			n.drainAll(h)
			now = n.clk.Mono()
			n.inTick = true
			h.Tick(now)
			n.inTick = false
			if b := n.beaconOf(); b != nil {
				b.publish(n, now)
			}
			n.countMissed(now)
			if late := now - next; late > n.o.Heartbeat {
				n.late.Add(1)
				if int64(late) > n.maxLate.Load() {
					n.maxLate.Store(int64(late))
				}
			}
			next += n.o.Heartbeat
			if next <= now {
				// Late by more than a beat (the thread was held off):
				// beat now, and keep the rhythm from here rather than
				// firing the missed ones back to back.
				next = now + n.o.Heartbeat
			}
			continue
		}
		wake := next
		if dl != nil {
			// The handler's deadline (the peer's silence falls due)
			// becomes a beat of its own: a takeover waits for no
			// heartbeat.
			if d := dl.Deadline(); d > now && d < next {
				wake = d
			}
		}
		n.ts = unix.NsecToTimespec(int64(wake - now))
		_, err := unix.Ppoll(n.pfds, &n.ts, nil)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("pairnet: waiting for heartbeats: %w", err)
		}
		if wake < next && n.clk.Mono() >= wake {
			next = wake
		}
		n.handleReady(h)
	}
}

// handleReady reads what the last poll found ready.
func (n *Node) handleReady(h Handler) {
	for i, p := range n.paths {
		if n.pfds[i].Revents != 0 {
			n.drainPath(i, p, h)
		}
	}
	if n.wit != nil && n.pfds[len(n.paths)].Revents != 0 {
		n.drainWitness(h)
	}
	if n.pfds[len(n.pfds)-1].Revents != 0 {
		var b [8]byte
		_, _ = unix.Read(n.wakeFD, b[:])
	}
}

// drainAll reads whatever waits on every socket, without blocking.
func (n *Node) drainAll(h Handler) {
	for i, p := range n.paths {
		n.drainPath(i, p, h)
	}
	if n.wit != nil {
		n.drainWitness(h)
	}
}

func (n *Node) setRealtime() {
	if n.o.RTPriority < 0 {
		return
	}
	attr := unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: uint32(n.o.RTPriority)}
	if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
		n.log.Warn("heartbeats run at normal priority: real-time scheduling was refused, so a busy CPU can delay them and make the peer take over; "+
			"give the service CAP_SYS_NICE (systemd: AmbientCapabilities=CAP_SYS_NICE, or LimitRTPRIO=) and a non-zero real-time budget (kernel.sched_rt_runtime_us, cgroup cpu.rt_runtime_us)",
			"priority", n.o.RTPriority, "err", err)
		return
	}
	n.realtime.Store(true)
}

// recvfrom reads one datagram into n.in and its source into n.rsa, with no
// allocation (unix.Recvfrom allocates a Sockaddr per call).
func (n *Node) recvfrom(fd int) (int, error) {
	n.rsaLen = unix.SizeofSockaddrAny
	r, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd),
		uintptr(unsafe.Pointer(&n.in[0])), uintptr(len(n.in)), 0,
		uintptr(unsafe.Pointer(&n.rsa)), uintptr(unsafe.Pointer(&n.rsaLen)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// fromIs reports whether the datagram just read came from ap.
func (n *Node) fromIs(ap netip.AddrPort) bool {
	switch n.rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&n.rsa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		return ap.Addr().Is4() && ap.Addr().As4() == sa.Addr && ap.Port() == port
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&n.rsa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		return ap.Addr().Is6() && ap.Addr().As16() == sa.Addr && ap.Port() == port
	}
	return false
}

// drainPath reads every datagram waiting on path i.
func (n *Node) drainPath(i int, p *pathState, h Handler) {
	for {
		size, err := n.recvfrom(p.fd)
		if err != nil {
			// EAGAIN: drained. Anything else (an ICMP error queued on
			// the socket) says nothing about the peer: next poll.
			return
		}
		now := n.clk.Mono()
		if !n.fromIs(p.remote) {
			p.c.garbage.Add(1)
			continue
		}
		if err := n.openPair(n.in[:size], p, now); err != nil {
			p.c.refused(err)
			continue
		}
		p.c.received.Add(1)
		p.c.lastHeard.Store(int64(now))
		p.countMissed(now, n.o.Heartbeat)
		p.quietSince, p.quietMissed = now, 0
		h.Receive(now, i, n.msg)
		if e := time.Duration(n.tim.echo); e > 0 && e <= now {
			h.PeerHeard(now, e)
		}
	}
}

// openPair checks one datagram from the peer and decodes it into n.msg.
func (n *Node) openPair(b []byte, p *pathState, now time.Duration) error {
	hd, body, err := n.seal.open(b)
	if err != nil {
		return err
	}
	if hd.kind != kindPair {
		return ErrGarbage
	}
	// The header is the same in every version (the magic would change
	// otherwise), so replay rules apply before the version is looked at:
	// a recording of an old version's message cannot fake a live peer.
	err = n.peer.accept(hd)
	if b := n.beaconOf(); b != nil {
		// The beacon echoes the peer's incarnation as the loop now knows
		// it (accept learns it even from a stale message).
		b.mem.store(wEcho, n.peer.echo)
	}
	if err != nil {
		return err
	}
	if hd.version != failover.Version {
		p.c.version.Add(1)
		entries := n.msg.Entries[:0]
		n.msg = failover.Message{Version: hd.version, Entries: entries}
		return nil
	}
	if err := decodePair(body, &n.msg, &n.tim); err != nil {
		return err
	}
	if n.tim.sent > p.peerSent {
		p.peerSent, p.peerSentAt = n.tim.sent, now
	}
	// Round trip: our send time comes back with how long the peer held
	// it; both readings of our own clock, the peer's clock never enters.
	if e := time.Duration(n.tim.echo); e > 0 && e <= now {
		if rtt := now - e - time.Duration(n.tim.held); rtt >= 0 {
			p.c.rtt.Store(int64(rtt))
		}
	}
	return nil
}

func (n *Node) drainWitness(h Handler) {
	s := n.wit
	for {
		size, err := n.recvfrom(s.fd)
		if err != nil {
			return
		}
		now := n.clk.Mono()
		if !n.fromIs(s.remote) {
			n.witC.garbage.Add(1)
			continue
		}
		a, sentAt, err := n.openAnswer(n.in[:size])
		if err != nil {
			n.witC.refused(err)
			continue
		}
		n.witC.received.Add(1)
		n.witC.lastHeard.Store(int64(now))
		at := time.Duration(sentAt)
		if at > 0 && at <= now {
			n.witC.rtt.Store(int64(now - at))
		}
		h.WitnessAnswer(now, at, a.Lease, a.Takeover)
	}
}

func (n *Node) openAnswer(b []byte) (WitnessAnswer, uint64, error) {
	hd, body, err := n.seal.open(b)
	if err != nil {
		return WitnessAnswer{}, 0, err
	}
	if hd.kind != kindWitnessAnswer {
		return WitnessAnswer{}, 0, ErrGarbage
	}
	if err := n.witSess.accept(hd); err != nil {
		return WitnessAnswer{}, 0, err
	}
	if hd.version != failover.Version {
		return WitnessAnswer{}, 0, ErrVersion
	}
	return decodeWitnessAnswer(body)
}

// Send sends m on path (-1: on every path), in as many messages as its
// entries take (MaxEntries each; one message when it has none). The node
// writes m.Path, the version and the round-trip fields itself. Call it only
// from inside a Handler callback. A send that fails is counted, never
// returned: the peer's silence is what the machine acts on.
func (n *Node) Send(path int, m failover.Message) {
	if n.muted.Load() {
		return
	}
	now := n.clk.Mono()
	if path < 0 {
		for i := range n.paths {
			n.sendPath(i, &m, now)
		}
		return
	}
	if path < len(n.paths) {
		n.sendPath(path, &m, now)
	}
}

func (n *Node) sendPath(i int, m *failover.Message, now time.Duration) {
	p := n.paths[i]
	all := m.Entries
	defer func(e []failover.Entry) { m.Entries = e }(all)
	m.Path = uint8(i)
	t := timing{sent: uint64(now)}
	if p.peerSent != 0 {
		t.echo, t.held = p.peerSent, uint64(max(now-p.peerSentAt, 0))
	}
	for first := true; first || len(all) > 0; first = false {
		m.Entries = all[:min(len(all), failover.MaxEntries)]
		all = all[len(m.Entries):]
		b := n.out[:headerLen]
		b = appendPair(b, m, t)
		if bc := n.beaconOf(); n.inTick && i == 0 && bc != nil {
			bc.gather(b[headerLen:])
		}
		putHeader(b, n.peer.next(failover.Version, kindPair), len(b)-headerLen)
		n.sendTo(&p.sock, &p.c, n.seal.seal(b))
	}
}

func (n *Node) sendTo(s *sock, c *counters, b []byte) {
	if err := unix.Sendto(s.fd, b, 0, s.to); err != nil {
		c.sendErrors.Add(1)
		return
	}
	c.sent.Add(1)
}

// AskWitness sends this unit's request to the witness, if one is
// configured: takeover asks to take over from the peer, hearsPeer says the
// peer is heard now. Call it only from inside a Handler callback.
func (n *Node) AskWitness(takeover, hearsPeer bool) {
	if n.wit == nil {
		return
	}
	r := WitnessRequest{
		Unit: n.o.Self, Peer: n.o.Peer, Takeover: takeover, HearsPeer: hearsPeer,
		Detect: n.o.Detect, Heartbeat: n.o.Heartbeat,
	}
	b := n.out[:headerLen]
	b = appendWitnessRequest(b, &r, uint64(n.clk.Mono()))
	putHeader(b, n.witSess.next(failover.Version, kindWitnessRequest), len(b)-headerLen)
	n.sendTo(n.wit, &n.witC, n.seal.seal(b))
}

func (n *Node) beaconOf() *beacon { return n.bcn.Load() }

// SetMuted stops (true) or resumes every message this unit sends, the
// beacon's too: a simulated power loss. The node goes on listening.
func (n *Node) SetMuted(on bool) {
	n.muted.Store(on)
	if b := n.beaconOf(); b != nil {
		v := uint64(0)
		if on {
			v = 1
		}
		b.mem.store(wMuted, v)
	}
}

// Stats returns a snapshot of the counters. It takes no lock and may be
// called from any goroutine.
func (n *Node) Stats() Stats {
	now := n.clk.Mono()
	s := Stats{Realtime: n.realtime.Load(), Late: n.late.Load(), MaxLate: time.Duration(n.maxLate.Load()),
		Paths: make([]PathStats, len(n.paths)), Beacon: n.beaconOf().stats()}
	for i, p := range n.paths {
		ps := PathStats{Local: p.local, Remote: p.remote, Counters: p.c.snapshot(),
			RTT: time.Duration(p.c.rtt.Load()), Missed: p.missed.Load()}
		ps.Heard, ps.LastHeard = p.c.heard(now)
		s.Paths[i] = ps
	}
	if n.wit != nil {
		s.Witness = WitnessStats{Addr: n.wit.remote, Counters: n.witC.snapshot(),
			RTT: time.Duration(n.witC.rtt.Load())}
		s.Witness.Answered, s.Witness.LastAnswer = n.witC.heard(now)
	}
	return s
}

// Close stops Run, waiting for it to return, and closes the sockets. Do
// not call it from inside a Handler callback.
func (n *Node) Close() error {
	n.closed.Store(true)
	if n.running.Load() {
		n.wake()
		<-n.done
	}
	n.closeFDs()
	return nil
}

func (n *Node) wake() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	n.closeMu.Lock()
	defer n.closeMu.Unlock()
	if !n.fdClosed && n.wakeFD >= 0 {
		_, _ = unix.Write(n.wakeFD, one[:])
	}
}

func (n *Node) closeFDs() {
	n.closeMu.Lock()
	defer n.closeMu.Unlock()
	if n.fdClosed {
		return
	}
	n.fdClosed = true
	for _, p := range n.paths {
		unix.Close(p.fd)
	}
	if n.wit != nil {
		unix.Close(n.wit.fd)
	}
	if n.wakeFD >= 0 {
		unix.Close(n.wakeFD)
	}
}
