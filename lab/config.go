package lab

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// Input modes of a pair's streams (config streams[].input_mode), and the
// lab's mode for one unit alone.
const (
	Dual = "dual"
	VIP  = "vip"
	Lone = "lone"
)

// The ports streams use: stream i comes in on InputPort+i and goes out to
// the client on OutputPort+i.
const (
	InputPort  = 5000
	OutputPort = 6000
)

// unitSpec is what one unit's config says.
type unitSpec struct {
	Name, Peer string
	Addr       netip.Addr
	Dir        string // state, control socket, key, fake sysfs
	Side       int    // 0 for A, 1 for B: which end of each pair path
	Mode       string // Dual, VIP or Lone (no pair section)
	Streams    int
	Witness    bool
}

func streamName(i int) string { return fmt.Sprintf("s%03d", i) }

// vipRange holds every stream's virtual IP (up to 1,000 streams).
var vipRange = netip.MustParsePrefix("198.18.100.0/22")

// vipOf is stream i's virtual IP: 198.18.100.0 upwards, one per stream.
func vipOf(i int) netip.Addr {
	b := netip.MustParseAddr("198.18.100.0").As4()
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) + uint32(i)
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// inputOf is where stream i's source sends, as this unit sees it.
func (u unitSpec) inputOf(i int) netip.AddrPort {
	if u.Mode == VIP {
		return netip.AddrPortFrom(vipOf(i), uint16(InputPort+i))
	}
	return netip.AddrPortFrom(u.Addr, uint16(InputPort+i))
}

// preferOf splits the streams between the units, so both carry traffic
// (active/active) and a fault on either moves half of them.
func preferOf(i int) string {
	if i%2 == 0 {
		return "unit-a"
	}
	return "unit-b"
}

// configYAML is the unit's config file.
func (u unitSpec) configYAML() string {
	var b strings.Builder
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	fmt.Fprintf(&b, "version: 1\nunit: {name: %s, state_dir: %s}\n", u.Name, q(filepath.Join(u.Dir, "state")))
	fmt.Fprintf(&b, "status: {listen: \"127.0.0.1:8080\"}\ncontrol: {socket: %s}\n", q(filepath.Join(u.Dir, "control.sock")))
	b.WriteString("media: {workers: 2}\n")
	if u.Mode != Lone {
		fmt.Fprintf(&b, "pair:\n  peer_name: %s\n  paths:\n", u.Peer)
		for _, p := range PairPaths {
			fmt.Fprintf(&b, "    - {local: %q, remote: %q}\n", p[u.Side].String(), p[1-u.Side].String())
		}
		fmt.Fprintf(&b, "  key_file: %s\n", q(filepath.Join(u.Dir, "pair.key")))
		w := ""
		if u.Witness {
			w = WitnessAddr.String()
		}
		fmt.Fprintf(&b, "  witness: %q\n", w)
	}
	b.WriteString("streams:\n")
	for i := 0; i < u.Streams; i++ {
		fmt.Fprintf(&b, "  - name: %s\n    input: %q\n", streamName(i), "udp://"+u.inputOf(i).String())
		switch u.Mode {
		case Dual:
			fmt.Fprintf(&b, "    input_mode: dual\n    prefer: %s\n", preferOf(i))
		case VIP:
			fmt.Fprintf(&b, "    input_mode: vip\n    vip: {address: %q, interface: eth0}\n    prefer: %s\n", vipOf(i).String()+"/16", preferOf(i))
		}
		fmt.Fprintf(&b, "    outputs: [%q]\n    rewrite: {ssrc: 0x%x}\n", "udp://"+netip.AddrPortFrom(AddrClient, uint16(OutputPort+i)).String(), outputSSRC(i))
	}
	links := "[{name: eth0, role: media}, {name: pair0, role: pair}, {name: pair1, role: pair}]"
	if u.Mode == Lone {
		links = "[{name: eth0, role: media}]"
	}
	fmt.Fprintf(&b, "hw: {sysfs: %s, links: %s, poll_interval: 100ms}\n", q(filepath.Join(u.Dir, "sys")), links)
	return b.String()
}

// outputSSRC is the SSRC the units give stream i's output; sources use
// others, so a receiver can tell a rewritten packet from a raw one.
func outputSSRC(i int) uint32 { return 0x1234 + uint32(i) }
func sourceSSRC(i int) uint32 { return 0x50000000 + uint32(i) }

// Fake sensors: what a healthy unit reads, and what each fault writes.
const (
	tempNormal = "45000"
	tempCrit   = "90000"
	tempMax    = "80000"
	tempHot    = "95000" // above critical
)

// writeSysfs writes a healthy fake sysfs tree under dir/sys.
func writeSysfs(dir string) error {
	sys := filepath.Join(dir, "sys", "class")
	files := map[string]string{
		"hwmon/hwmon0/name":          "labcpu",
		"hwmon/hwmon0/temp1_label":   "Package id 0",
		"hwmon/hwmon0/temp1_input":   tempNormal,
		"hwmon/hwmon0/temp1_crit":    tempCrit,
		"hwmon/hwmon0/temp1_max":     tempMax,
		"power_supply/AC/type":       "Mains",
		"power_supply/AC/online":     "1",
		"power_supply/BAT0/type":     "Battery",
		"power_supply/BAT0/status":   "Full",
		"power_supply/BAT0/capacity": "100",
	}
	for name, v := range files {
		if err := writeSensor(filepath.Join(sys, name), v); err != nil {
			return err
		}
	}
	return nil
}

// writeSensor replaces a fake sysfs file at once: the monitor, which polls,
// never reads half a value.
func writeSensor(path, value string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(value+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
