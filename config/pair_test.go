package config

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// pairContract is the pair configuration as the documentation and the lab
// write it: the keys here are read by tools outside this repository.
const pairContract = `version: 1
unit: {name: unit-a}
pair:
  peer_name: unit-b
  paths:                                    # one heartbeat path per entry
    - {local: "198.18.1.1:7400", remote: "198.18.1.2:7400"}
    - {local: "198.18.0.1:7400", remote: "198.18.0.2:7400"}
  key_file: /etc/appliance/pair.key          # shared secret, the same file on both units
  heartbeat: 10ms
  detect_multiplier: 3
  witness: ""                               # optional "host:port"
  preempt: false
  capacity: {streams: 64, bitrate_bps: 2000000000}
streams:
  - name: cam1
    input: "udp://198.18.0.100:5004"
    input_mode: vip                          # vip | dual
    vip: {address: "198.18.0.100/24", interface: eth0}
    prefer: unit-a
    outputs: ["udp://198.18.0.10:6004"]
    rewrite: {ssrc: 0x1234}
`

// pairBase is a good paired config, one setting a line, so that a test can
// change one line and know where its problem is reported.
const pairBase = `version: 1
unit: {name: unit-a}
pair:
  peer_name: unit-b
  paths:
    - {local: "198.18.1.1:7400", remote: "198.18.1.2:7400"}
    - {local: "198.18.0.1:7400", remote: "198.18.0.2:7400"}
  key_file: /etc/appliance/pair.key
streams:
  - name: cam1
    input: "udp://198.18.0.100:5004"
    input_mode: vip
    vip: {address: "198.18.0.100/24", interface: eth0}
    outputs: ["udp://198.18.0.10:6004"]
`

// edit replaces old, which must be in pairBase once, with new.
func edit(t *testing.T, old, new string) string {
	t.Helper()
	if strings.Count(pairBase, old) != 1 {
		t.Fatalf("%q is not in pairBase exactly once", old)
	}
	return strings.Replace(pairBase, old, new, 1)
}

func TestPairContract(t *testing.T) {
	t.Parallel()
	c := mustParse(t, pairContract)
	want := &Pair{
		PeerName: "unit-b",
		Paths: []PairPath{
			{Local: netip.MustParseAddrPort("198.18.1.1:7400"), Remote: netip.MustParseAddrPort("198.18.1.2:7400")},
			{Local: netip.MustParseAddrPort("198.18.0.1:7400"), Remote: netip.MustParseAddrPort("198.18.0.2:7400")},
		},
		KeyFile:          "/etc/appliance/pair.key",
		Heartbeat:        Duration(10 * time.Millisecond),
		DetectMultiplier: 3,
		PreemptHold:      Duration(30 * time.Second),
		Capacity:         Capacity{Streams: 64, BitrateBPS: 2000000000},
	}
	if !reflect.DeepEqual(c.Pair, want) {
		t.Errorf("pair\n got %+v\nwant %+v", c.Pair, want)
	}
	s := c.Streams[0]
	if s.InputMode != InputVIP || s.VIP == nil || *s.VIP != (VIP{Address: netip.MustParsePrefix("198.18.0.100/24"), Interface: "eth0"}) ||
		s.Prefer != "unit-a" || s.Priority != 0 || *s.Rewrite.SSRC != 0x1234 {
		t.Errorf("stream %+v vip %+v", s, s.VIP)
	}
	if got, want := c.Summary(), "unit unit-a: 1 stream (1 output), 2 workers, 0 test sources, status 127.0.0.1:8080, paired with unit-b over 2 paths"; got != want {
		t.Errorf("Summary %q, want %q", got, want)
	}
	if c.Pair.Key != nil {
		t.Error("Parse read the key file; only Load and LoadEnv do")
	}

	// Every setting written out.
	c = mustParse(t, edit(t, "  key_file: /etc/appliance/pair.key\n",
		"  key_file: pair.key\n  heartbeat: 1s\n  detect_multiplier: 50\n  witness: \"[2001:db8::9]:7500\"\n  preempt: true\n  preempt_hold: 1h\n")+
		"    prefer: unit-b\n    priority: -1000\n")
	p := c.Pair
	if p.KeyFile != "pair.key" || p.Heartbeat.String() != "1s" || p.DetectMultiplier != 50 || p.Witness != netip.MustParseAddrPort("[2001:db8::9]:7500") ||
		!p.Preempt || p.PreemptHold.String() != "1h0m0s" || c.Streams[0].Prefer != "unit-b" || c.Streams[0].Priority != -1000 {
		t.Errorf("got %+v %+v", p, c.Streams[0])
	}
}

func TestPairDefaults(t *testing.T) {
	t.Parallel()
	c := mustParse(t, edit(t, "    input_mode: vip\n    vip: {address: \"198.18.0.100/24\", interface: eth0}\n", "")+
		"  - {name: cam2, input: \"udp://0.0.0.0:5006\", outputs: [\"udp://198.18.0.10:6006\"]}\n")
	want := DefaultPair()
	want.PeerName, want.KeyFile, want.Paths = "unit-b", "/etc/appliance/pair.key", c.Pair.Paths
	if !reflect.DeepEqual(*c.Pair, want) || want.Heartbeat.String() != "10ms" || want.DetectMultiplier != 3 || want.Witness.IsValid() ||
		want.Preempt || want.PreemptHold.String() != "30s" || want.Capacity != (Capacity{}) {
		t.Errorf("pair %+v, want %+v", c.Pair, want)
	}
	for _, s := range c.Streams {
		if s.InputMode != InputDual || s.VIP != nil || s.Prefer != "unit-a" || s.Priority != 0 {
			t.Errorf("stream %s: mode %q vip %v prefer %q priority %d", s.Name, s.InputMode, s.VIP, s.Prefer, s.Priority)
		}
	}
	if c.Media.ProgressInterval.String() != "5ms" || Defaults().Media.ProgressInterval != c.Media.ProgressInterval || Defaults().Pair != nil {
		t.Errorf("progress interval %v; Defaults().Pair %v", c.Media.ProgressInterval, Defaults().Pair)
	}
}

// Both units of a pair compute the same preferred unit for a stream that
// names none, whichever of the two reads its config.
func TestPreferDefaultSymmetric(t *testing.T) {
	t.Parallel()
	for _, names := range [][2]string{{"unit-a", "unit-b"}, {"zeta", "alpha"}, {"box-10", "box-9"}} {
		prefer := func(self, peer string) string {
			src := strings.Replace(strings.Replace(pairBase, "name: unit-a", "name: "+self, 1), "peer_name: unit-b", "peer_name: "+peer, 1)
			return mustParse(t, src).Streams[0].Prefer
		}
		a, b := prefer(names[0], names[1]), prefer(names[1], names[0])
		if a != b || (a != names[0] && a != names[1]) {
			t.Errorf("%s computes %q, %s computes %q; want the same, one of the two", names[0], a, names[1], b)
		}
	}
}

func TestPairProblems(t *testing.T) {
	t.Parallel()
	const (
		path0 = `    - {local: "198.18.1.1:7400", remote: "198.18.1.2:7400"}` + "\n"
		path1 = `    - {local: "198.18.0.1:7400", remote: "198.18.0.2:7400"}` + "\n"
		key   = "  key_file: /etc/appliance/pair.key\n"
		vip   = `    vip: {address: "198.18.0.100/24", interface: eth0}` + "\n"
		mode  = "    input_mode: vip\n"
		cam2  = `  - {name: cam2, input: "udp://198.18.0.101:5004", outputs: ["udp://198.18.0.10:6005"]`
	)
	paths := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "    - {local: \"198.18.%d.1:7400\", remote: \"198.18.%d.2:7400\"}\n", i, i)
		}
		return b.String()
	}
	tests := []struct {
		name string
		src  string
		line int
		want string
	}{
		{"peer missing", edit(t, "  peer_name: unit-b\n", "  # no peer\n"), 5, `pair: "peer_name" is required`},
		{"peer bad", edit(t, "peer_name: unit-b", "peer_name: Unit_B"), 4, `pair: peer_name: "Unit_B": give the other unit's unit: name`},
		{"peer is this unit", edit(t, "peer_name: unit-b", "peer_name: unit-a"), 4, `pair: peer_name: "unit-a" is this unit's own name; give the other unit's unit: name`},
		{"one path", edit(t, path1, "    # one\n"), 6, "pair: paths: 1 path; give at least 2, over separate links: with one, a single cut cable looks like a dead peer"},
		{"no paths", edit(t, path0+path1, "    []\n\n"), 6, "pair: paths: 0 paths; give at least 2"},
		{"nine paths", edit(t, path0+path1, paths(9)), 6, "pair: paths: 9 paths; at most 8"},
		{"paths missing", edit(t, "  paths:\n"+path0+path1, "\n\n\n"), 4, `pair: "paths" is required`},
		{"host name", edit(t, `local: "198.18.1.1:7400"`, `local: "unit-a.lan:7400"`), 6, `pair: paths[0]: local: "unit-a.lan:7400": "unit-a.lan" is not an IP address; give the IP address, such as 198.18.1.1:7400 (no host names`},
		{"no port", edit(t, `remote: "198.18.1.2:7400"`, `remote: "198.18.1.2"`), 6, `pair: paths[0]: remote: "198.18.1.2": write it as IP:PORT, such as 198.18.1.2:7400`},
		{"port 0", edit(t, `remote: "198.18.1.2:7400"`, `remote: "198.18.1.2:0"`), 6, `port 0 is not allowed`},
		{"unspecified", edit(t, `local: "198.18.1.1:7400"`, `local: "0.0.0.0:7400"`), 6, `give one unit's own address, such as 198.18.1.1:7400, not an unspecified or multicast one`},
		{"local missing", edit(t, `local: "198.18.1.1:7400", `, ""), 6, `pair: paths[0]: "local" is required`},
		{"families", edit(t, `remote: "198.18.1.2:7400"`, `remote: "[2001:db8::2]:7400"`), 6, `pair: paths[0]: remote: [2001:db8::2]:7400 and local 198.18.1.1:7400 are of different address families; give both as IPv4 or both as IPv6`},
		{"remote is local", edit(t, `remote: "198.18.1.2:7400"`, `remote: "198.18.1.1:7400"`), 6, `remote is the peer's address on this path`},
		{"same local", edit(t, `local: "198.18.0.1:7400"`, `local: "198.18.1.1:7400"`), 7, `pair: paths[1]: local: 198.18.1.1:7400 is already the local end of paths[0]; each path needs its own local address or port`},
		{"same remote", edit(t, `remote: "198.18.0.2:7400"`, `remote: "198.18.1.2:7400"`), 7, `pair: paths[1]: remote: 198.18.1.2:7400 is already the remote end of paths[0]`},
		{"path meets a wildcard input", pairBase + cam2 + "}\n" + `  - {name: cam3, input: "udp://0.0.0.0:7400", outputs: ["udp://198.18.0.10:6007"]}` + "\n", 6,
			`pair: paths[0]: local: 198.18.1.1:7400 is also where stream cam3 receives (udp://0.0.0.0:7400); give the heartbeat path a port no stream uses`},
		{"path meets an input", pairBase + `  - {name: cam3, input: "udp://198.18.0.1:7400", outputs: ["udp://198.18.0.10:6007"]}` + "\n", 7,
			`is also where stream cam3 receives (udp://198.18.0.1:7400)`},
		{"path on a VIP", edit(t, `local: "198.18.0.1:7400"`, `local: "198.18.0.100:7400"`), 7, `198.18.0.100 is the VIP of stream cam1, which moves between the units`},
		{"key file missing", edit(t, key, "  # no key\n"), 4, `pair: "key_file" is required`},
		{"key file empty", edit(t, key, "  key_file: \"\"\n"), 8, `pair: key_file: must not be empty; give the file holding the shared secret`},
		{"heartbeat short", edit(t, key, key+"  heartbeat: 500us\n"), 9, "pair: heartbeat: 500µs is out of range (1ms to 1s)"},
		{"heartbeat long", edit(t, key, key+"  heartbeat: 2s\n"), 9, "out of range (1ms to 1s)"},
		{"multiplier low", edit(t, key, key+"  detect_multiplier: 1\n"), 9, "pair: detect_multiplier: 1 is out of range (2 to 50)"},
		{"multiplier high", edit(t, key, key+"  detect_multiplier: 51\n"), 9, "out of range (2 to 50)"},
		{"witness host", edit(t, key, key+"  witness: witness.lan:7400\n"), 9, `pair: witness: "witness.lan:7400": "witness.lan" is not an IP address`},
		{"witness no port", edit(t, key, key+"  witness: 198.18.0.9\n"), 9, `write it as IP:PORT, such as 192.0.2.50:7400 (IPv6 in brackets: [2001:db8::1]:7400), or "" for no witness`},
		{"preempt word", edit(t, key, key+"  preempt: yes\n"), 9, `pair: preempt: "yes": must be true or false`},
		{"preempt quoted", edit(t, key, key+"  preempt: \"true\"\n"), 9, `must be true or false`},
		{"hold without preempt", edit(t, key, key+"  preempt_hold: 1m\n"), 9, "pair: preempt_hold: applies only with preempt: true"},
		{"hold range", edit(t, key, key+"  preempt: true\n  preempt_hold: 2h\n"), 10, "pair: preempt_hold: 2h0m0s is out of range (1s to 1h0m0s)"},
		{"capacity negative", edit(t, key, key+"  capacity: {streams: -1}\n"), 9, "pair: capacity: streams: -1 is out of range (0 to"},
		{"bitrate negative", edit(t, key, key+"  capacity: {bitrate_bps: -1}\n"), 9, "pair: capacity: bitrate_bps: -1 is out of range (0 to"},
		{"unknown pair key", edit(t, key, key+"  peer: unit-b\n"), 9, `pair: unknown key "peer"`},
		{"pair not a mapping", "version: 1\nunit: {name: unit-a}\npair: unit-b\n", 3, "pair: must be a mapping"},
		{"vip missing", edit(t, vip, "    # no vip\n"), 12, `cam1: input_mode: input_mode: vip needs vip: {address: IP/PREFIX, interface: NAME}`},
		{"input not on the VIP", edit(t, "udp://198.18.0.100:5004", "udp://198.18.0.101:5004"), 11,
			`cam1: input: udp://198.18.0.101:5004 is not on the stream's VIP 198.18.0.100, and only the VIP moves to the owner; set input: "udp://198.18.0.100:5004"`},
		{"wildcard input with a VIP", edit(t, "udp://198.18.0.100:5004", "udp://0.0.0.0:5004"), 11, `set input: "udp://198.18.0.100:5004"`},
		{"shared VIP", pairBase + cam2 + `, input_mode: vip, vip: {address: "198.18.0.100/24", interface: eth0}}` + "\n", 15,
			"cam2: vip: address: 198.18.0.100 is already the VIP of cam1, and the two streams could have different owners; give each stream its own VIP, or use input_mode: dual"},
		{"VIP without prefix", edit(t, `"198.18.0.100/24"`, `"198.18.0.100"`), 13, `cam1: vip: address: "198.18.0.100": give the prefix length too, as it is put on the interface, such as 198.18.0.100/24`},
		{"VIP garbage", edit(t, `"198.18.0.100/24"`, `"vip-1"`), 13, `write it as IP/PREFIX`},
		{"VIP multicast", edit(t, `"198.18.0.100/24"`, `"239.1.1.1/32"`), 13, `a VIP is one unicast address`},
		{"VIP mapped", edit(t, `"198.18.0.100/24"`, `"::ffff:198.18.0.100/120"`), 13, `write an IPv4 address as such, such as 198.18.0.100/24`},
		{"interface slash", edit(t, "interface: eth0", "interface: \"eth/0\""), 13, `cam1: vip: interface: "eth/0" is not an interface name`},
		{"interface long", edit(t, "interface: eth0", "interface: enp3s0f1np1abcdef"), 13, `is not an interface name (1 to 15 bytes`},
		{"interface space", edit(t, "interface: eth0", "interface: \"eth 0\""), 13, `is not an interface name`},
		{"interface missing", edit(t, `, interface: eth0`, ""), 13, `cam1: vip: "interface" is required`},
		{"dual with a VIP", edit(t, mode, "    input_mode: dual\n"), 13, "cam1: vip: a VIP is used only with input_mode: vip (input_mode is dual); remove vip, or set input_mode: vip"},
		{"default dual with a VIP", edit(t, mode, "    # dual\n"), 13, "(input_mode is dual, the default)"},
		{"input mode unknown", edit(t, mode, "    input_mode: multicast\n"), 12, `cam1: input_mode: "multicast": use dual (the source sends to both units) or vip`},
		{"prefer neither", pairBase + "    prefer: unit-c\n", 15, `cam1: prefer: "unit-c" is neither this unit (unit-a) nor its peer (unit-b); prefer one of the two`},
		{"prefer bad", pairBase + "    prefer: Unit-A\n", 15, `cam1: prefer: "Unit-A" is not a unit name`},
		{"priority high", pairBase + "    priority: 1001\n", 15, "cam1: priority: 1001 is out of range (-1000 to 1000)"},
		{"priority low", pairBase + "    priority: -1001\n", 15, "out of range (-1000 to 1000)"},
		{"loop through a VIP", pairBase + `  - {name: cam2, input: "udp://0.0.0.0:6000", outputs: ["udp://198.18.0.100:6000"]}` + "\n", 15,
			"forwarding loop: cam2 -> cam2 (cam2 outputs[0] udp://198.18.0.100:6000 reaches the input of cam2, udp://0.0.0.0:6000)"},
		{"wildcard overlaps a VIP", pairBase + `  - {name: cam2, input: "udp://0.0.0.0:5004", outputs: ["udp://198.18.0.10:6005"]}` + "\n", 15,
			"cam2: input: udp://0.0.0.0:5004 overlaps the input of cam1 (udp://198.18.0.100:5004)"},
		{"progress over report", minimal + "media:\n  report_interval: 10ms\n  progress_interval: 20ms\n", 5,
			"media: progress_interval: 20ms is longer than the report interval (10ms); progress goes to the parent at least as often as reports: lower it"},
		{"progress zero", minimal + "media:\n  progress_interval: 0s\n", 4, "media: progress_interval: 0s is out of range (1ms to 1s)"},
		{"progress long", minimal + "media:\n  progress_interval: 2s\n", 4, "out of range (1ms to 1s)"},
		{"batch window long", minimal + "media:\n  batch_window: 3ms\n", 4, "media: batch_window: 3ms is out of range (0s to 2ms)"},
		{"batch window negative", minimal + "media:\n  batch_window: -1ms\n", 4, "media: batch_window: -1ms is out of range (0s to 2ms)"},
		{"batch window bare number", minimal + "media:\n  batch_window: 1\n", 4, "write it with a unit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if ps := problems(t, tt.src); !hasProblem(ps, tt.line, tt.want) {
				t.Errorf("no problem at line %d containing %q; got:\n%v", tt.line, tt.want, &Error{File: "t.yaml", Problems: ps})
			}
		})
	}
}

// The per-stream pair settings mean nothing to a unit alone; each is
// refused where it is written, and nothing more is said when the pair
// section is there but broken.
func TestStreamPairSettingsNeedAPair(t *testing.T) {
	t.Parallel()
	src := minimal + "streams:\n  - name: cam1\n    input: \"udp://198.18.0.100:5004\"\n    outputs: [\"udp://198.18.0.10:6004\"]\n" +
		"    input_mode: vip\n    vip: {address: \"198.18.0.100/24\", interface: eth0}\n    prefer: u1\n    priority: 5\n"
	var got []string
	for _, p := range problems(t, src) {
		got = append(got, fmt.Sprintf("%d: %s: %s", p.Line, p.Path, p.Msg))
	}
	const msg = "applies only to paired units; add a pair: section, or remove it"
	want := []string{"7: cam1: input_mode: " + msg, "8: cam1: vip: " + msg, "9: cam1: prefer: " + msg, "10: cam1: priority: " + msg}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}

	ps := problems(t, strings.Replace(src, "streams:", "pair: []\nstreams:", 1))
	if len(ps) != 1 || !strings.Contains(ps[0].Msg, "must be a mapping") {
		t.Errorf("with a broken pair section: %+v, want only the section's problem", ps)
	}
}

// Facts about the machine: a heartbeat cannot leave from an address the
// machine does not have, but a VIP input is bound with IP_FREEBIND before the
// address arrives, so it needs no local address.
func TestPairEnv(t *testing.T) {
	t.Parallel()
	env := Env{LocalAddrs: []netip.Addr{netip.MustParseAddr("198.18.1.1"), netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("127.0.0.1")}}
	if _, err := ParseEnv("t.yaml", []byte(pairBase), env); err != nil {
		t.Errorf("refused with the path addresses local and the VIP not: %v", err)
	}
	loop := strings.NewReplacer(`"198.18.1.1:7400"`, `"127.0.0.2:7400"`, `"198.18.1.2:7400"`, `"127.0.0.3:7400"`).Replace(pairBase)
	if _, err := ParseEnv("t.yaml", []byte(loop), env); err != nil {
		t.Errorf("refused a loopback address the machine has but does not list: %v", err)
	}
	env.LocalAddrs = env.LocalAddrs[1:]
	ps := problemsEnv(t, pairBase, env)
	const want = "pair: paths[0]: local: 198.18.1.1 is not an address of this machine, so heartbeats cannot be sent from it; give the address of the link this path leaves by"
	if len(ps) != 1 || !hasProblem(ps, 6, want) {
		t.Errorf("got %v, want one problem at line 6: %s", &Error{File: "t.yaml", Problems: ps}, want)
	}
}

// writeKey writes a key file with mode perm.
func writeKey(t *testing.T, dir, name string, data []byte, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // not subject to the umask
		t.Fatal(err)
	}
	return path
}

// pairFile writes pairBase, with key_file set to keyPath and extra lines
// after it, and returns its path.
func pairFile(t *testing.T, keyPath string, extra string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "appliance.yaml")
	src := strings.Replace(pairBase, "/etc/appliance/pair.key", fmt.Sprintf("%q", keyPath), 1) + extra
	if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func loadWithKey(t *testing.T, keyPath string, extra string) (*Config, error) {
	t.Helper()
	return Load(pairFile(t, keyPath, extra))
}

const secret = "s3cr3t-pair-KEY-never-shown-0123456789"

func TestKeyFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		data string
		want string // the key read
	}{
		{"one newline dropped", secret + "\n", secret},
		{"no newline", secret, secret},
		{"only one newline dropped", secret + "\n\n", secret + "\n"},
		{"shortest", strings.Repeat("k", MinKeySize), strings.Repeat("k", MinKeySize)},
		{"longest", strings.Repeat("k", MaxKeySize) + "\n", strings.Repeat("k", MaxKeySize)},
		{"binary", "\x00\x01\xff\xfe" + strings.Repeat("\n", 12) + "\r\n", "\x00\x01\xff\xfe" + strings.Repeat("\n", 12) + "\r"},
	} {
		c, err := loadWithKey(t, writeKey(t, dir, tt.name, []byte(tt.data), 0o600), "")
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if string(c.Pair.Key) != tt.want {
			t.Errorf("%s: key %q, want %q", tt.name, c.Pair.Key, tt.want)
		}
	}
	// 0400 is as private as 0600.
	if _, err := loadWithKey(t, writeKey(t, dir, "read-only", []byte(secret), 0o400), ""); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
	// A unit alone reads no key.
	if c, err := Load(writeKey(t, dir, "alone.yaml", []byte(minimal), 0o600)); err != nil || c.Pair != nil {
		t.Errorf("alone: %+v, %v", c, err)
	}

	missing := filepath.Join(dir, "missing.key")
	for _, tt := range []struct {
		name string
		path string
		want string
		too  bool // ErrKeyFileTooOpen
	}{
		{"group readable", writeKey(t, dir, "g.key", []byte(secret), 0o640), "g.key has mode 0640, key file is open to group or others; the secret must be the unit's alone: chmod 600 ", true},
		{"world writable", writeKey(t, dir, "o.key", []byte(secret), 0o602), "has mode 0602, key file is open to group or others", true},
		{"missing", missing, missing + " does not exist; create the shared secret (head -c 32 /dev/urandom | base64 > " + missing + "; chmod 600 " + missing + ", then copy", false},
		{"directory", dir, dir + " is a directory, not a regular file; give the path of the key file itself", false},
		{"empty", writeKey(t, dir, "empty.key", nil, 0o600), "empty.key holds 0 bytes of key, fewer than 16; make a longer one", false},
		{"short", writeKey(t, dir, "short.key", []byte("0123456789abcde\n"), 0o600), "short.key holds 15 bytes of key, fewer than 16", false},
		{"long", writeKey(t, dir, "long.key", []byte(strings.Repeat(secret, 200)), 0o600), "long.key holds more than 4096 bytes, too long for a key; is it the right file?", false},
		{"long by one", writeKey(t, dir, "long1.key", []byte(strings.Repeat("k", MaxKeySize+1)), 0o600), "holds more than 4096 bytes", false},
	} {
		_, err := loadWithKey(t, tt.path, "")
		var e *Error
		if !errors.As(err, &e) || len(e.Problems) != 1 || e.Problems[0].Line != 8 || e.Problems[0].Path != "pair: key_file" ||
			!strings.Contains(e.Problems[0].Msg, tt.want) {
			t.Errorf("%s: got %v\nwant one problem at line 8 containing %q", tt.name, err, tt.want)
		}
		if errors.Is(err, ErrKeyFileTooOpen) != tt.too {
			t.Errorf("%s: errors.Is(err, ErrKeyFileTooOpen) = %v", tt.name, !tt.too)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error shows the key: %v", tt.name, err)
		}
	}
}

// The key is in Pair.Key and nowhere else: not in a problem, the summary,
// any way of printing a Config or a Pair, or a log line.
func TestKeyNeverShown(t *testing.T) {
	t.Parallel()
	keyPath := writeKey(t, t.TempDir(), "pair.key", []byte(secret+"\n"), 0o600)
	c, err := loadWithKey(t, keyPath, "")
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Pair.Key) != secret {
		t.Fatalf("key %q", c.Pair.Key)
	}
	key := c.Pair.Key
	leaks := []string{secret, hex.EncodeToString(key), strings.ToUpper(hex.EncodeToString(key)), base64.StdEncoding.EncodeToString(key),
		fmt.Sprint(key), fmt.Sprintf("%d", key), fmt.Sprintf("%x", key), fmt.Sprintf("% x", key), fmt.Sprintf("%q", key), fmt.Sprintf("%#v", key)[len("[]byte{"):]}

	var shown []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
		for _, v := range []any{c, *c, c.Pair, *c.Pair, []*Pair{c.Pair}, map[string]any{"c": c}} {
			shown = append(shown, fmt.Sprintf(verb, v))
		}
	}
	shown = append(shown, c.Summary(), c.Pair.String())
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		slog.New(h(&b)).Info("loaded", "config", c, "pair", c.Pair, "pair_value", *c.Pair)
		shown = append(shown, b.String())
	}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	shown = append(shown, string(js))
	// A file refused for another reason, after its key was read.
	_, err = loadWithKey(t, keyPath, "    priority: 5000\n")
	if err == nil {
		t.Fatal("priority 5000 accepted")
	}
	shown = append(shown, err.Error())

	for _, s := range shown {
		for _, leak := range leaks {
			if strings.Contains(s, leak) {
				t.Fatalf("the key shows (as %q) in:\n%s", leak, s)
			}
		}
	}
	if s := fmt.Sprint(c.Pair); !strings.Contains(s, "PeerName:unit-b") || !strings.Contains(s, "Key:(38 bytes, hidden)") || !strings.Contains(s, keyPath) {
		t.Errorf("printed pair says too little: %s", s)
	}
}

func TestRestartNeededPair(t *testing.T) {
	t.Parallel()
	alone := mustParse(t, minimal)
	a := mustParse(t, pairBase)
	if got := RestartNeeded(alone, a); !reflect.DeepEqual(got, []string{"pair", "unit.name"}) {
		t.Errorf("pair added: %q", got)
	}
	if got := RestartNeeded(a, mustParse(t, strings.Replace(minimal, "u1", "unit-a", 1))); !reflect.DeepEqual(got, []string{"pair"}) {
		t.Errorf("pair removed: %q", got)
	}
	if got := RestartNeeded(a, mustParse(t, pairBase)); got != nil {
		t.Errorf("same pair: %q", got)
	}

	b := mustParse(t, edit(t, "  key_file: /etc/appliance/pair.key\n", "  key_file: /etc/appliance/pair.key\n  heartbeat: 20ms\n"))
	b.Pair.Key = []byte(secret)
	if got, want := RestartNeeded(a, b), []string{"pair.heartbeat", "pair.key"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, s := range RestartNeeded(a, b) {
		if strings.Contains(s, secret) {
			t.Errorf("a setting name shows the key: %q", s)
		}
	}

	// The streams' pair settings are applied by reload.
	c := mustParse(t, edit(t, "    input_mode: vip\n    vip: {address: \"198.18.0.100/24\", interface: eth0}\n",
		"    input_mode: dual\n    prefer: unit-b\n    priority: 7\n"))
	if got := RestartNeeded(a, c); got != nil {
		t.Errorf("stream pair settings changed: %q", got)
	}
}

// media.batch_window is read as written, 500µs by default, and 0 keeps
// the per-packet path.
func TestBatchWindow(t *testing.T) {
	t.Parallel()
	if d := Defaults().Media.BatchWindow; d.String() != "500µs" {
		t.Errorf("default batch window %v, want 500µs", d)
	}
	if c := mustParse(t, minimal+"media:\n  batch_window: 1ms\n"); c.Media.BatchWindow.String() != "1ms" {
		t.Errorf("batch window %v, want 1ms", c.Media.BatchWindow)
	}
	if c := mustParse(t, minimal+"media:\n  batch_window: 0s\n"); c.Media.BatchWindow != 0 {
		t.Errorf("batch window %v, want 0", c.Media.BatchWindow)
	}
}
