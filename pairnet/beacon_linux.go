package pairnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"appliance/failover"
	"appliance/internal/clock"
)

// The beacon (docs/pair-protocol.md, The beacon) covers for a late loop.
// A real-time thread inside a Go process still waits on the runtime now
// and then: for a P after a system call, for a runtime lock that an
// ordinary thread holds while a busy core keeps it off the CPU. Measured
// on a unit whose two cores were saturated, that held the loop off for up
// to 180 ms, more than the detection time, so the peer took over a unit
// that was working.
//
// The beacon is a small process started from the loop's real-time thread,
// so that it and every thread its runtime starts inherit SCHED_FIFO; its
// loop does not allocate and its collector is off. The loop publishes the
// whole table it sent at each beat into memory the two share. When the
// loop has sent nothing for a heartbeat and a quarter, the beacon sends that table again
// on every path, under a fresh counter, send time and echo, from the same
// sockets; it stops once the loop's last beat is older than the grace, so
// a control plane that hangs is still seen, after grace + D. The peer
// needs nothing new: a resent table is a message like any other, and
// applying one again changes nothing.

// DefaultBeaconGrace is how long after the loop's last beat the beacon
// stops covering for it.
const DefaultBeaconGrace = 500 * time.Millisecond

// maxBeaconPaths and maxBeaconChunks bound what the beacon covers: 16
// paths, and tables of 4,096 streams (MaxEntries per message).
const (
	maxBeaconPaths  = 16
	maxBeaconChunks = 128
)

// The shared memory's layout: words, then per-path words, then the table.
const (
	shmMagic = 0x4150524245434e31 // "APRBECN1"

	wMagic     = 0
	wSeq       = 1 // seqlock over the table and the per-path words: odd while written
	wStamp     = 2 // Mono of the loop's last beat; 0: none yet
	wMuted     = 3
	wCounter   = 4 // the session counter, shared by the loop and the beacon
	wSelf      = 5
	wEcho      = 6
	wHeartbeat = 7
	wGrace     = 8
	wPaths     = 9
	wChunks    = 10
	wKeyLen    = 11
	wSent      = 12 // messages the beacon sent
	wBeats     = 13 // beats the beacon covered
	wWords     = 16

	shmKeyOff   = wWords * 8
	shmKeyMax   = 256
	shmPathOff  = shmKeyOff + shmKeyMax                  // per path: peerSent, peerSentAt, the peer's address
	shmPathLen  = 48                                     // two words, family, port, 16 bytes of address
	shmLenOff   = shmPathOff + maxBeaconPaths*shmPathLen // per chunk: body length (uint16)
	shmTableOff = shmLenOff + maxBeaconChunks*2          // per chunk: maxDatagram bytes
	shmSize     = shmTableOff + maxBeaconChunks*maxDatagram
)

// shm is the memory the loop and the beacon share.
type shm []byte

func (m shm) word(i int) *uint64 { return (*uint64)(unsafe.Pointer(&m[i*8])) }

func (m shm) load(i int) uint64          { return atomic.LoadUint64(m.word(i)) }
func (m shm) store(i int, v uint64)      { atomic.StoreUint64(m.word(i), v) }
func (m shm) add(i int, v uint64) uint64 { return atomic.AddUint64(m.word(i), v) }

func (m shm) pathWord(p, k int) *uint64 {
	return (*uint64)(unsafe.Pointer(&m[shmPathOff+p*shmPathLen+k*8]))
}

// putRemote records path p's peer address; remote reads it back.
func (m shm) putRemote(p int, ap netip.AddrPort) {
	b := m[shmPathOff+p*shmPathLen+16 : shmPathOff+(p+1)*shmPathLen]
	b[0] = 4
	if !ap.Addr().Is4() {
		b[0] = 6
	}
	binary.BigEndian.PutUint16(b[8:10], ap.Port())
	a := ap.Addr().As16()
	copy(b[16:32], a[:])
}

func (m shm) remote(p int) netip.AddrPort {
	b := m[shmPathOff+p*shmPathLen+16 : shmPathOff+(p+1)*shmPathLen]
	a := netip.AddrFrom16([16]byte(b[16:32]))
	if b[0] == 4 {
		a = a.Unmap()
	}
	return netip.AddrPortFrom(a, binary.BigEndian.Uint16(b[8:10]))
}

func (m shm) chunkLen(c int) []byte { return m[shmLenOff+c*2 : shmLenOff+c*2+2] }
func (m shm) chunk(c int) []byte    { return m[shmTableOff+c*maxDatagram : shmTableOff+(c+1)*maxDatagram] }

// beacon is the loop's side: the shared memory, the table being gathered
// during a beat, and the process.
type beacon struct {
	mem      shm
	cmd      *exec.Cmd
	exited   chan struct{}
	stopping atomic.Bool
	// Gathered during a Tick from what was sent on path 0.
	table  [maxBeaconChunks][maxDatagram]byte
	lens   [maxBeaconChunks]int
	chunks int
}

// startBeacon makes the shared memory and starts the beacon. It runs on
// the loop's thread, after that thread became real-time, so that the
// child inherits the policy.
func (n *Node) startBeacon() error {
	fd, err := unix.MemfdCreate("appliance-pair-beacon", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("creating its shared memory: %w", err)
	}
	shmFile := os.NewFile(uintptr(fd), "beacon-shm")
	defer shmFile.Close()
	if err := unix.Ftruncate(fd, shmSize); err != nil {
		return fmt.Errorf("sizing its shared memory: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, shmSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mapping its shared memory: %w", err)
	}
	b := &beacon{mem: shm(mem), exited: make(chan struct{})}
	m := b.mem
	paths := min(len(n.paths), maxBeaconPaths)
	m.store(wSelf, n.peer.self)
	m.store(wCounter, n.peer.counter)
	if n.muted.Load() {
		m.store(wMuted, 1)
	}
	m.store(wHeartbeat, uint64(n.o.Heartbeat))
	m.store(wGrace, uint64(n.o.BeaconGrace))
	m.store(wPaths, uint64(paths))
	m.store(wKeyLen, uint64(len(n.o.Key)))
	copy(m[shmKeyOff:shmKeyOff+shmKeyMax], n.o.Key)
	for i, p := range n.paths[:paths] {
		m.putRemote(i, p.remote)
	}
	m.store(wMagic, shmMagic)

	files := []*os.File{shmFile}
	for _, p := range n.paths[:paths] {
		dup, err := unix.FcntlInt(uintptr(p.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			closeFiles(files[1:])
			unix.Munmap(mem)
			return fmt.Errorf("passing it a path's socket: %w", err)
		}
		files = append(files, os.NewFile(uintptr(dup), "beacon-path"))
	}
	defer closeFiles(files[1:])
	cmd := n.o.Beacon()
	cmd.ExtraFiles = files
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Killed when this thread, the loop's, ends.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		unix.Munmap(mem)
		return fmt.Errorf("starting it: %w", err)
	}
	b.cmd = cmd
	go func() {
		err := cmd.Wait()
		close(b.exited)
		if !b.stopping.Load() {
			n.log.Warn("pair: the heartbeat beacon exited; heartbeats go on from the loop alone, so a busy CPU may again delay them", "err", err)
		}
	}()
	n.peer.shared = m.word(wCounter)
	n.bcn.Store(b)
	if n.muted.Load() {
		m.store(wMuted, 1)
	}
	return nil
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// gather keeps a copy of a body sent on path 0 during a beat.
func (b *beacon) gather(body []byte) {
	if b.chunks < maxBeaconChunks && len(body) <= maxDatagram {
		b.lens[b.chunks] = copy(b.table[b.chunks][:], body)
		b.chunks++
	}
}

// publish hands the beacon the table of the beat that just ended, with
// what it needs to stamp copies of it as sent now.
func (b *beacon) publish(n *Node, now time.Duration) {
	m := b.mem
	if b.chunks > 0 {
		m.add(wSeq, 1)
		for c := 0; c < b.chunks; c++ {
			binary.NativeEndian.PutUint16(m.chunkLen(c), uint16(b.lens[c]))
			copy(m.chunk(c), b.table[c][:b.lens[c]])
		}
		m.store(wChunks, uint64(b.chunks))
		for i, p := range n.paths[:min(len(n.paths), maxBeaconPaths)] {
			atomic.StoreUint64(m.pathWord(i, 0), p.peerSent)
			atomic.StoreUint64(m.pathWord(i, 1), uint64(p.peerSentAt))
		}
		m.add(wSeq, 1)
		m.store(wEcho, n.peer.echo)
		m.store(wStamp, uint64(now))
	}
	b.chunks = 0
}

func (b *beacon) stop() {
	if b == nil {
		return
	}
	b.stopping.Store(true)
	_ = b.cmd.Process.Kill()
	<-b.exited
	// The memory stays mapped: Stats may read it from any goroutine at
	// any time. It is one mapping per node.
}

// BeaconStats is what the beacon did.
type BeaconStats struct {
	Running bool
	Beats   uint64 // beats it covered for the loop
	Sent    uint64 // messages it sent
}

func (b *beacon) stats() BeaconStats {
	if b == nil {
		return BeaconStats{}
	}
	running := true
	select {
	case <-b.exited:
		running = false
	default:
	}
	return BeaconStats{Running: running, Beats: b.mem.load(wBeats), Sent: b.mem.load(wSent)}
}

// ServeBeacon is the beacon process's whole work: shared memory on fd 3,
// the paths' sockets on fd 4 and up. It returns only on a setup error; it
// ends when its parent's loop thread does (SIGKILL).
func ServeBeacon() error {
	runtime.LockOSThread()
	// Every thread real-time, in case the start did not make them so (it
	// does when the loop could become real-time itself).
	fifoAll()
	mem, err := unix.Mmap(3, 0, shmSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("pair beacon: mapping the shared memory on fd 3 (this command is started by the appliance, not by hand): %w", err)
	}
	m := shm(mem)
	if m.load(wMagic) != shmMagic {
		return errors.New("pair beacon: fd 3 is not the beacon's shared memory (this command is started by the appliance, not by hand)")
	}
	paths := int(m.load(wPaths))
	kl := int(m.load(wKeyLen))
	if paths < 1 || paths > maxBeaconPaths || kl < 1 || kl > shmKeyMax {
		return fmt.Errorf("pair beacon: shared memory says %d paths and a %d-byte key", paths, kl)
	}
	fds := make([]int, paths)
	tos := make([]unix.Sockaddr, paths)
	for i := range fds {
		fds[i] = 4 + i
		tos[i] = sockaddr(m.remote(i))
	}
	hb := time.Duration(m.load(wHeartbeat))
	grace := time.Duration(m.load(wGrace))
	if hb <= 0 || grace <= 0 {
		return fmt.Errorf("pair beacon: heartbeat %v, grace %v", hb, grace)
	}
	seal := newSealer(m[shmKeyOff : shmKeyOff+kl])
	ppid := os.Getppid()
	debug.SetGCPercent(-1)
	var (
		out      [maxDatagram]byte
		lastSent time.Duration
		nap      = unix.NsecToTimespec(int64(hb / 4))
	)
	for {
		_ = unix.Nanosleep(&nap, nil)
		if os.Getppid() != ppid {
			return nil
		}
		now := clock.Mono()
		stamp := time.Duration(m.load(wStamp))
		if stamp == 0 || m.load(wMuted) != 0 || now-stamp > grace || now-max(stamp, lastSent) < hb+hb/4 {
			continue
		}
		sent := uint64(0)
		for p := 0; p < paths; p++ {
			sent += resend(m, seal, &out, p, fds[p], tos[p], now)
		}
		if sent > 0 {
			lastSent = now
			m.add(wBeats, 1)
			m.add(wSent, sent)
		}
	}
}

// resend sends path p a copy of the published table, stamped now, and
// returns how many messages went out.
func resend(m shm, seal *sealer, out *[maxDatagram]byte, p, fd int, to unix.Sockaddr, now time.Duration) uint64 {
	var sent uint64
	for c := 0; ; c++ {
		var n int
		{
			// The loop is writing a new table: it is not late, and a
			// real-time beacon must not spin against it. Next wake.
			s1 := m.load(wSeq)
			if s1&1 != 0 {
				return sent
			}
			if c >= int(m.load(wChunks)) {
				return sent
			}
			n = int(binary.NativeEndian.Uint16(m.chunkLen(c)))
			if n < pairFixedLen || headerLen+n+macLen > maxDatagram {
				return sent
			}
			copy(out[headerLen:], m.chunk(c)[:n])
			peerSent := atomic.LoadUint64(m.pathWord(p, 0))
			peerAt := time.Duration(atomic.LoadUint64(m.pathWord(p, 1)))
			if m.load(wSeq) != s1 {
				return sent
			}
			body := out[headerLen : headerLen+n]
			body[9] = uint8(p)
			binary.BigEndian.PutUint64(body[23:31], uint64(now))
			var held uint64
			if peerSent != 0 {
				held = uint64(max(now-peerAt, 0))
			}
			binary.BigEndian.PutUint64(body[31:39], peerSent)
			binary.BigEndian.PutUint64(body[39:47], held)
		}
		putHeader(out[:], header{version: failover.Version, kind: kindPair, incarnation: m.load(wSelf),
			counter: m.add(wCounter, 1), echo: m.load(wEcho)}, n)
		b := seal.seal(out[:headerLen+n])
		if unix.Sendto(fd, b, 0, to) == nil {
			sent++
		}
	}
}

// fifoAll puts every thread of this process under SCHED_FIFO at the
// priority of the calling thread, when it has one.
func fifoAll() {
	attr, err := unix.SchedGetAttr(0, 0)
	if err != nil || attr.Policy != unix.SCHED_FIFO {
		return
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			_ = unix.SchedSetAttr(tid, attr, 0)
		}
	}
}
