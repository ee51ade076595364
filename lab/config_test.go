package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"appliance/config"
)

// TestLoneConfigIsValid: the config of a unit alone is one the unit accepts
// today, so the lone scenario runs before the pair exists.
func TestLoneConfigIsValid(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	u := unitSpec{Name: "unit-a", Peer: "unit-b", Addr: AddrA, Dir: dir, Mode: Lone, Streams: 3}
	if err := writeSysfs(dir); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("unit.yaml", []byte(u.configYAML()))
	if err != nil {
		t.Fatalf("%v\n%s", err, u.configYAML())
	}
	if len(cfg.Streams) != 3 || cfg.Streams[2].Input.Addr.String() != "198.18.0.1:5002" ||
		cfg.Streams[2].Outputs[0].Addr.String() != "198.18.0.10:6002" || *cfg.Streams[2].Rewrite.SSRC != outputSSRC(2) ||
		cfg.HW.Sysfs != filepath.Join(dir, "sys") {
		t.Errorf("lone config: %+v", cfg)
	}
}

// TestPairConfig checks the pair configs against the contract with the
// config package key by key, and mirrors each other's paths.
func TestPairConfig(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{Dual, VIP} {
		a := unitSpec{Name: "unit-a", Peer: "unit-b", Addr: AddrA, Dir: "/d/a", Side: 0, Mode: mode, Streams: 4, Witness: true}
		b := unitSpec{Name: "unit-b", Peer: "unit-a", Addr: AddrB, Dir: "/d/b", Side: 1, Mode: mode, Streams: 4}
		var ca, cb pairDoc
		for _, c := range []struct {
			u   unitSpec
			doc *pairDoc
		}{{a, &ca}, {b, &cb}} {
			dec := yaml.NewDecoder(strings.NewReader(c.u.configYAML()))
			dec.KnownFields(true)
			if err := dec.Decode(c.doc); err != nil {
				t.Fatalf("%s %s: %v\n%s", mode, c.u.Name, err, c.u.configYAML())
			}
		}
		if ca.Pair.PeerName != "unit-b" || cb.Pair.PeerName != "unit-a" || len(ca.Pair.Paths) != 2 ||
			ca.Pair.Paths[0].Local != cb.Pair.Paths[0].Remote || ca.Pair.Paths[1].Remote != cb.Pair.Paths[1].Local ||
			ca.Pair.Paths[0].Local != "198.18.1.1:7400" || ca.Pair.KeyFile != "/d/a/pair.key" {
			t.Errorf("%s pair sections: %+v / %+v", mode, ca.Pair, cb.Pair)
		}
		if ca.Pair.Witness != "198.18.0.10:7500" || cb.Pair.Witness != "" {
			t.Errorf("%s witness: %q / %q", mode, ca.Pair.Witness, cb.Pair.Witness)
		}
		sa, sb := ca.Streams[1], cb.Streams[1]
		if sa.InputMode != mode || sa.Prefer != "unit-b" || ca.Streams[0].Prefer != "unit-a" || sa.Outputs[0] != "udp://198.18.0.10:6001" {
			t.Errorf("%s stream: %+v", mode, sa)
		}
		switch mode {
		case Dual:
			if sa.Input != "udp://198.18.0.1:5001" || sb.Input != "udp://198.18.0.2:5001" || sa.VIP != nil {
				t.Errorf("dual inputs: %+v / %+v", sa, sb)
			}
		case VIP:
			if sa.Input != "udp://198.18.100.1:5001" || sb.Input != sa.Input || sa.VIP == nil || sa.VIP.Address != "198.18.100.1/16" || sa.VIP.Interface != "eth0" {
				t.Errorf("vip inputs: %+v / %+v", sa, sb)
			}
		}
		if len(ca.HW.Links) != 3 || ca.HW.PollInterval != "100ms" {
			t.Errorf("%s hw: %+v", mode, ca.HW)
		}
	}
}

// pairDoc is the contract of a pair unit's config, as far as the lab
// writes it.
type pairDoc struct {
	Version int
	Unit    struct {
		Name     string
		StateDir string `yaml:"state_dir"`
	}
	Status  struct{ Listen string }
	Control struct{ Socket string }
	Media   struct{ Workers int }
	Pair    struct {
		PeerName string `yaml:"peer_name"`
		Paths    []struct{ Local, Remote string }
		KeyFile  string `yaml:"key_file"`
		Witness  string
	}
	Streams []struct {
		Name, Input string
		InputMode   string `yaml:"input_mode"`
		VIP         *struct{ Address, Interface string }
		Prefer      string
		Outputs     []string
		Rewrite     struct{ SSRC uint32 }
	}
	HW struct {
		Sysfs        string
		Links        []struct{ Name, Role string }
		PollInterval string `yaml:"poll_interval"`
	}
}

func TestVIPs(t *testing.T) {
	t.Parallel()
	for i, want := range map[int]string{0: "198.18.100.0", 255: "198.18.100.255", 256: "198.18.101.0", 999: "198.18.103.231"} {
		if got := vipOf(i).String(); got != want || !vipRange.Contains(vipOf(i)) {
			t.Errorf("vip %d: %s, want %s", i, got, want)
		}
	}
}

func TestSysfs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := writeSysfs(dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "sys/class/hwmon/hwmon0/temp1_input")
	if err := writeSensor(path, tempHot); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != tempHot+"\n" {
		t.Errorf("temp1_input: %q, %v", b, err)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("the temporary file stayed: %v", err)
	}
	b, _ = os.ReadFile(filepath.Join(dir, "sys/class/power_supply/AC/type"))
	if string(b) != "Mains\n" {
		t.Errorf("AC type %q", b)
	}
}
