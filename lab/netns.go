package lab

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netns"
)

// inNS runs f on an OS thread that is inside the named network namespace.
// Sockets f creates stay in that namespace for their whole life, whichever
// goroutine uses them later, and processes f starts are born in it.
func inNS(name string, f func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("reading this thread's network namespace: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("network namespace %s: %w", name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering network namespace %s: %w", name, err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		// The thread stays locked, so the runtime ends it with this
		// goroutine rather than reuse it in the wrong namespace.
		return fmt.Errorf("leaving network namespace %s: %w", name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// listenUDP opens a UDP socket bound to ap inside namespace ns.
func listenUDP(ns string, ap netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := inNS(ns, func() error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap))
		return err
	})
	return c, err
}

// sysctl writes a value under /proc/sys from inside namespace ns: the
// kernel picks a network sysctl's namespace from the thread that opens it.
func sysctl(ns, key, value string) error {
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	return inNS(ns, func() error {
		return os.WriteFile(path, []byte(value), 0o644)
	})
}

// ip runs the ip tool (iproute2).
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// listNS lists the named network namespaces.
func listNS() ([]string, error) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// nsInode is the identity of a named namespace, as /proc/PID/ns/net shows it.
func nsInode(name string) (uint64, bool) {
	var st syscall.Stat_t
	if syscall.Stat(filepath.Join("/run/netns", name), &st) != nil {
		return 0, false
	}
	return st.Ino, true
}

// killInNS SIGKILLs every process whose network namespace is the named
// one: what a run left behind (units, workers, the witness) dies with the
// namespace instead of living on in an unnamed one.
func killInNS(name string) {
	for _, pid := range inNamespace(name) {
		_ = syscall.Kill(pid, syscall.SIGCONT) // a stopped process dies only once it runs
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// inNamespace lists the processes in a named network namespace, this one
// aside: a thread of the lab's that made a socket there can be the one
// /proc shows for it.
func inNamespace(name string) []int {
	ino, ok := nsInode(name)
	if !ok {
		return nil
	}
	want := fmt.Sprintf("net:[%d]", ino)
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if l, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "net")); err == nil && l == want {
			out = append(out, pid)
		}
	}
	return out
}

// descendants lists pid and every process below it.
func descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name is in parentheses and may hold anything; the
		// fields after the last ')' are plain.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// signalTree sends sig to a process, its process group and everything
// below it. Workers run in process groups of their own, so the group alone
// would miss them.
func signalTree(pid int, sig syscall.Signal) {
	procs := descendants(pid)
	_ = syscall.Kill(-pid, sig)
	for _, p := range procs {
		_ = syscall.Kill(p, sig)
	}
}

func lookPath(file string) (string, error) { return exec.LookPath(file) }
