package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const minimal = "version: 1\nunit: {name: u1}\n"

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse("t.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse:\n%v\ninput:\n%s", err, src)
	}
	return c
}

func problems(t *testing.T, src string) []Problem {
	t.Helper()
	_, err := Parse("t.yaml", []byte(src))
	if err == nil {
		t.Fatalf("Parse accepted:\n%s", src)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error is %T, want *Error: %v", err, err)
	}
	return e.Problems
}

func TestDefaultsFilledIn(t *testing.T) {
	t.Parallel()
	got := mustParse(t, minimal)
	want := &Config{
		Version: 1,
		Unit:    Unit{Name: "u1", StateDir: "/var/lib/appliance"},
		Status:  Status{Listen: "127.0.0.1:8080", MaxConnections: 64, IdleTimeout: Duration(10 * time.Second)},
		Control: Control{Socket: "/run/appliance/control.sock"},
		Media: Media{
			Workers: 2, HangTimeout: Duration(500 * time.Millisecond), ReportInterval: Duration(100 * time.Millisecond),
			StandbyRing: Duration(500 * time.Millisecond), OutputAlarmAfter: Duration(time.Second),
			ProgressInterval: Duration(5 * time.Millisecond), BatchWindow: Duration(500 * time.Microsecond),
			Restart: Restart{Intensity: 3, Period: Duration(5 * time.Second), Backoff: Duration(10 * time.Millisecond), BackoffMax: Duration(2 * time.Second)},
		},
		HW: HW{
			Sysfs:        "/sys",
			Temperature:  Temperature{WarnC: 80, CritC: 90, ClearMarginC: 5},
			LinkDebounce: Duration(200 * time.Millisecond),
			PollInterval: Duration(2 * time.Second),
		},
		Watchdog: Watchdog{Timeout: Duration(10 * time.Second)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}

	s := mustParse(t, minimal+"streams: [{name: a, input: \"udp://0.0.0.0:5004\", outputs: [\"udp://127.0.0.1:6004\"]}]\n"+
		"test_sources: [{to: \"udp://127.0.0.1:5004\"}]\nhw: {links: [{name: eth0}]}\n")
	if st := s.Streams[0]; st.ClockRate != 90000 || st.Rewrite != nil || st.InputMode != "" || st.VIP != nil || st.Prefer != "" || st.Priority != 0 {
		t.Errorf("stream defaults: %+v", st)
	}
	if ts := s.TestSources[0]; ts.PPS != 100 || ts.Size != 1328 || ts.SSRC != 0x5eed {
		t.Errorf("test source defaults: %+v", ts)
	}
	if l := s.HW.Links[0]; l != (Link{Name: "eth0", Role: "media"}) {
		t.Errorf("link defaults: %+v", l)
	}
}

func TestParseValid(t *testing.T) {
	t.Parallel()
	ssrc := func(c *Config) uint32 { return *c.Streams[0].Rewrite.SSRC }
	tests := []struct {
		name  string
		src   string
		check func(*Config) bool
	}{
		{"hex ssrc", minimal + "streams: [{name: a, input: \"udp://127.0.0.1:1\", outputs: [\"udp://127.0.0.1:2\"], rewrite: {ssrc: 0x1234}}]\n",
			func(c *Config) bool { return ssrc(c) == 0x1234 }},
		{"decimal ssrc", minimal + "streams: [{name: a, input: \"udp://127.0.0.1:1\", outputs: [\"udp://127.0.0.1:2\"], rewrite: {ssrc: 4660}}]\n",
			func(c *Config) bool { return ssrc(c) == 0x1234 }},
		{"max ssrc", minimal + "streams: [{name: a, input: \"udp://127.0.0.1:1\", outputs: [\"udp://127.0.0.1:2\"], rewrite: {ssrc: 0xffffffff}}]\n",
			func(c *Config) bool { return ssrc(c) == 0xffffffff }},
		{"empty rewrite", minimal + "streams: [{name: a, input: \"udp://127.0.0.1:1\", outputs: [\"udp://127.0.0.1:2\"], rewrite: {}}]\n",
			func(c *Config) bool { return c.Streams[0].Rewrite != nil && c.Streams[0].Rewrite.SSRC == nil }},
		{"ipv6", minimal + "streams: [{name: v6_1, input: \"udp://[::1]:5004\", outputs: [\"udp://[2001:db8::1]:6004\", \"udp://[::1]:6005\"]}]\n",
			func(c *Config) bool {
				return c.Streams[0].Input.Addr == netip.MustParseAddrPort("[::1]:5004") && c.Streams[0].Outputs[0].String() == "udp://[2001:db8::1]:6004"
			}},
		{"durations", minimal + "media: {hang_timeout: 1m, report_interval: 250ms, restart: {period: 1m30s, backoff: 0s, backoff_max: 0s}}\n",
			func(c *Config) bool {
				return time.Duration(c.Media.HangTimeout) == time.Minute && c.Media.Restart.Period.String() == "1m30s" && c.Media.Restart.BackoffMax == 0
			}},
		{"hw", minimal + "hw: {sysfs: /tmp/sys, temperature: {warn_c: 70.5, crit_c: 85}, links: [{name: eth0, role: pair}, {name: enp3s0f1, role: management}], link_debounce: 0s}\n",
			func(c *Config) bool {
				return c.HW.Temperature.WarnC == 70.5 && c.HW.Links[1].Role == "management" && c.HW.LinkDebounce == 0
			}},
		{"watchdog", minimal + "watchdog: {device: /dev/watchdog0, timeout: 30s}\n",
			func(c *Config) bool { return c.Watchdog.Device == "/dev/watchdog0" }},
		{"status v6", minimal + "status: {listen: \"[::1]:9000\"}\n",
			func(c *Config) bool { return c.Status.Listen == "[::1]:9000" }},
		{"unit", "version: 1\nunit:\n  name: edge-7\n  state_dir: /data/appliance\n",
			func(c *Config) bool { return c.Unit.StateDir == "/data/appliance" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if c := mustParse(t, tt.src); !tt.check(c) {
				t.Errorf("unexpected config: %+v", c)
			}
		})
	}
}

func TestProblems(t *testing.T) {
	t.Parallel()
	stream := func(fields string) string {
		return minimal + "streams:\n  - name: s1\n    input: \"udp://127.0.0.1:5004\"\n" + fields
	}
	out := "    outputs: [\"udp://127.0.0.1:6004\"]\n"
	tests := []struct {
		name string
		src  string
		line int
		want string
	}{
		{"empty", "", 1, "empty config; start from `appliance run` defaults, see README"},
		{"only comments", "# nothing\n", 1, "empty config"},
		{"bare document", "---\n", 1, "empty config"},
		{"syntax", "version: 1\nunit: \"u1\n", 2, "not valid YAML: line 2: found unexpected end of stream"},
		{"tab indent", "version: 1\nunit: {name: u1}\n\tmedia: {}\n", 3, "indent with spaces, not tabs"},
		{"syntax indent", "version: 1\nunit:\n  name: a\n    x: y\n", 4, "not valid YAML"},
		{"name is a number", "version: 1\nunit: {name: 123}\n", 2, "quote it"},
		{"root list", "- 1\n- 2\n", 1, "must be a mapping"},
		{"root scalar", "hello\n", 1, "must be a mapping"},
		{"version missing", "unit: {name: u1}\n", 1, "version: 1"},
		{"version 2", "version: 2\nunit: {name: u1}\n", 1, "only version 1 is supported"},
		{"version text", "version: one\nunit: {name: u1}\n", 1, "must be an integer"},
		{"unit missing", "version: 1\n", 1, `"unit" is required`},
		{"unit name missing", "version: 1\nunit: {state_dir: /x}\n", 2, `"name" is required`},
		{"unit name bad", "version: 1\nunit: {name: Unit_A}\n", 2, "lowercase"},
		{"unknown top key", minimal + "medai: {}\n", 3, `did you mean "media"?`},
		{"unknown key lists keys", minimal + "media: {colour: red}\n", 3, "valid keys here: batch_window, hang_timeout, output_alarm_after, progress_interval, report_interval, restart, standby_ring, workers"},
		{"duplicate key", minimal + "unit: {name: u2}\n", 3, "set twice"},
		{"workers text", minimal + "media:\n  workers: two\n", 4, "must be an integer"},
		{"workers quoted", minimal + "media:\n  workers: \"2\"\n", 4, "must be an integer"},
		{"workers range", minimal + "media:\n  workers: 65\n", 4, "out of range (1 to 64)"},
		{"workers huge", minimal + "media:\n  workers: 99999999999999999999999\n", 4, "must be an integer"},
		{"workers list", minimal + "media:\n  workers: [1]\n", 4, "must be a single value"},
		{"media not map", minimal + "media: 3\n", 3, "must be a mapping"},
		{"duration no unit", minimal + "media:\n  hang_timeout: 500\n", 4, "write it with a unit"},
		{"duration range", minimal + "media:\n  hang_timeout: 2h\n", 4, "out of range"},
		{"report too slow", minimal + "media:\n  report_interval: 300ms\n", 4, "out of range (10ms to 250ms)"},
		{"hang below 2 reports", minimal + "media:\n  hang_timeout: 100ms\n  report_interval: 60ms\n", 4, "less than two report intervals"},
		{"restart intensity", minimal + "media:\n  restart:\n    intensity: 0\n", 5, "out of range (1 to 1000)"},
		{"restart period zero", minimal + "media:\n  restart:\n    period: 0s\n", 5, "out of range"},
		{"backoff max below backoff", minimal + "media:\n  restart:\n    backoff: 3s\n    backoff_max: 1s\n", 6, "less than backoff"},
		{"status listen host", minimal + "status:\n  listen: localhost:8080\n", 4, "write it as IP:PORT"},
		{"status listen port 0", minimal + "status:\n  listen: 127.0.0.1:0\n", 4, "port 0"},
		{"streams not list", minimal + "streams: {name: a}\n", 3, "must be a list of streams"},
		{"stream name missing", minimal + "streams:\n  - input: \"udp://127.0.0.1:5004\"\n    outputs: [\"udp://127.0.0.1:6004\"]\n", 4, `"name" is required`},
		{"stream name bad", minimal + "streams:\n  - name: Cam-1\n    input: \"udp://127.0.0.1:5004\"\n    outputs: [\"udp://127.0.0.1:6004\"]\n", 4, "lowercase"},
		{"input missing", minimal + "streams:\n  - name: s1\n    outputs: [\"udp://127.0.0.1:6004\"]\n", 4, `s1: "input" is required`},
		{"outputs missing", stream(""), 4, `s1: "outputs" is required`},
		{"hostname", stream("    outputs: [\"udp://example.com:6004\"]\n"), 6, "use an IP address such as udp://192.0.2.10:6004"},
		{"scheme", stream("    outputs: [\"rtp://127.0.0.1:6004\"]\n"), 6, "only udp:// is supported"},
		{"no scheme", stream("    outputs: [\"127.0.0.1:6004\"]\n"), 6, "udp://IP:PORT"},
		{"port 0", stream("    outputs: [\"udp://127.0.0.1:0\"]\n"), 6, "s1: outputs[0]: \"udp://127.0.0.1:0\": port out of range (1-65535)"},
		{"port text", stream("    outputs: [\"udp://127.0.0.1:abc\"]\n"), 6, "is not a number"},
		{"v6 no brackets", stream("    outputs: [\"udp://::1:6004\"]\n"), 6, "brackets"},
		{"zone", stream("    outputs: [\"udp://[fe80::1%eth0]:6004\"]\n"), 6, "use an IP address"},
		{"too many outputs", stream("    outputs: [" + strings.Repeat("\"udp://127.0.0.1:1\", ", 16) + "\"udp://127.0.0.1:1\"]\n"), 6, "at most 16"},
		{"output twice", stream("    outputs: [\"udp://127.0.0.1:6004\", \"udp://127.0.0.1:6004\"]\n"), 6, "listed twice"},
		{"loop", stream("    outputs: [\"udp://127.0.0.1:5004\"]\n"), 6, "forwarding loop: s1 -> s1 (s1 outputs[0] udp://127.0.0.1:5004 is the input of s1)"},
		{"shared input", stream(out) + "  - name: s2\n    input: \"udp://127.0.0.1:5004\"\n" + out, 8, "two streams cannot share an input"},
		{"clock rate", stream(out + "    clock_rate: 999\n"), 7, "out of range (1000 to 1000000)"},
		{"ssrc range", stream(out + "    rewrite: {ssrc: 0x100000000}\n"), 7, "out of range (0 to 4294967295)"},
		{"ssrc negative", stream(out + "    rewrite: {ssrc: -1}\n"), 7, "out of range"},
		{"ssrc text", stream(out + "    rewrite: {ssrc: abc}\n"), 7, "must be an integer"},
		{"rewrite unknown", stream(out + "    rewrite: {sscr: 1}\n"), 7, `did you mean "ssrc"?`},
		{"test source to missing", minimal + "test_sources:\n  - {pps: 10}\n", 4, `"to" is required`},
		{"test source pps", minimal + "test_sources:\n  - {to: \"udp://127.0.0.1:1\", pps: 0}\n", 4, "out of range (1 to 100000)"},
		{"test source size", minimal + "test_sources:\n  - {to: \"udp://127.0.0.1:1\", size: 11}\n", 4, "out of range (12 to 1500)"},
		{"temperature order", minimal + "hw:\n  temperature: {warn_c: 95}\n", 4, "must be below crit_c"},
		{"temperature margin", minimal + "hw:\n  temperature: {clear_margin_c: -1}\n", 4, "out of range"},
		{"temperature text", minimal + "hw:\n  temperature: {warn_c: hot}\n", 4, "must be a number"},
		{"sysfs relative", minimal + "hw:\n  sysfs: sys\n", 4, "absolute path"},
		{"link name long", minimal + "hw:\n  links: [{name: abcdefghijklmnop}]\n", 4, "not an interface name"},
		{"link name slash", minimal + "hw:\n  links: [{name: \"a/b\"}]\n", 4, "not an interface name"},
		{"link name missing", minimal + "hw:\n  links: [{role: pair}]\n", 4, `"name" is required`},
		{"link role", minimal + "hw:\n  links: [{name: eth0, role: uplink}]\n", 4, "use one of media, pair, management"},
		{"link twice", minimal + "hw:\n  links:\n    - {name: eth0}\n    - {name: eth0}\n", 6, "listed twice"},
		{"link debounce", minimal + "hw:\n  link_debounce: 11s\n", 4, "out of range"},
		{"watchdog relative", minimal + "watchdog:\n  device: watchdog\n", 4, "absolute path"},
		{"watchdog timeout", minimal + "watchdog:\n  timeout: 1s\n", 4, "out of range (2s to 10m0s)"},
		{"alias", "version: 1\nunit: &u {name: u1}\nmedia: *u\n", 3, "aliases are not supported"},
		{"alias in list", minimal + "streams:\n  - &s {name: a, input: \"udp://127.0.0.1:1\", outputs: [\"udp://127.0.0.1:2\"]}\n  - *s\n", 5, "aliases are not supported"},
		{"merge key", minimal + "media:\n  <<: {workers: 3}\n", 4, `unknown key "<<"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ps := problems(t, tt.src)
			for _, p := range ps {
				if p.Line == tt.line && strings.Contains(p.Path+": "+p.Msg, tt.want) {
					return
				}
			}
			t.Errorf("no problem at line %d containing %q; got:\n%v", tt.line, tt.want, &Error{File: "t.yaml", Problems: ps})
		})
	}
}

// The broken file from the README's story: every problem, in line order, with
// the stream named where it is known.
func TestBrokenExample(t *testing.T) {
	t.Parallel()
	src := `version: 1
unit: {name: unit-a}
status: {listen: "127.0.0.1:18080"}
media: {workers: 0}
streams:
  - name: cam1
    input: "udp://127.0.0.1:5004"
    outputs: ["udp://x:99999"]
    colour: red
  - name: cam1
    input: "udp://127.0.0.1:70000"
    outputs: []
`
	_, err := Parse("broken.yaml", []byte(src))
	if err == nil {
		t.Fatal("Parse accepted the broken example")
	}
	want := []string{
		"broken.yaml:4:18: media: workers: 0 is out of range (1 to 64)",
		`broken.yaml:8:15: cam1: outputs[0]: "udp://x:99999": port out of range (1-65535)`,
		`broken.yaml:9:5: cam1: unknown key "colour"; valid keys here: clock_rate, input, input_mode, name, outputs, prefer, priority, rewrite, vip`,
		`broken.yaml:10:11: streams[1] (cam1): name: "cam1" is already the name of streams[0]; stream names must be unique`,
		`broken.yaml:11:12: streams[1] (cam1): input: "udp://127.0.0.1:70000": port out of range (1-65535)`,
		"broken.yaml:12:14: streams[1] (cam1): outputs: no outputs; give at least one udp://IP:PORT",
	}
	if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var e *Error
	if !errors.As(err, &e) || len(e.Problems) != 6 || e.Problems[2].Line != 9 || e.Problems[2].Column != 5 {
		t.Errorf("problems: %+v", e)
	}
}

func TestProblemsSortedByLine(t *testing.T) {
	t.Parallel()
	// The missing version is reported against the root (line 1) even though
	// it is found last; problems in nested blocks come out in file order.
	ps := problems(t, "unit: {name: u1}\nwatchdog: {timeout: 1s}\nmedia: {workers: 0, hang_timeout: x}\nhw: {sysfs: rel}\n")
	var lines []int
	for _, p := range ps {
		lines = append(lines, p.Line)
	}
	if want := []int{1, 2, 3, 3, 4}; !reflect.DeepEqual(lines, want) {
		t.Errorf("lines %v, want %v: %+v", lines, want, ps)
	}
}

func TestDefault(t *testing.T) {
	t.Parallel()
	c := Default()
	if c.Unit.Name != "demo" || c.Unit.StateDir != ".appliance-state" || c.Media.Workers != 1 || c.Watchdog.Device != "" ||
		c.Control.Socket != ".appliance-state/control.sock" {
		t.Errorf("default: %+v", c)
	}
	if len(c.Streams) != 1 || c.Streams[0].Input.String() != "udp://127.0.0.1:5004" ||
		c.Streams[0].Outputs[0].String() != "udp://127.0.0.1:6004" || *c.Streams[0].Rewrite.SSRC != 0x1234 {
		t.Errorf("default stream: %+v", c.Streams)
	}
	if len(c.TestSources) != 1 || c.TestSources[0] != (TestSource{To: c.Streams[0].Input, PPS: 100, Size: 1328, SSRC: 0x5eed}) {
		t.Errorf("default test source: %+v", c.TestSources)
	}
	if len(c.HW.Links) != 0 {
		t.Errorf("default links: %+v", c.HW.Links)
	}
	if d := Default(); d == c || d.Streams[0].Rewrite == c.Streams[0].Rewrite {
		t.Error("Default shares state between calls")
	}
}

func TestSummary(t *testing.T) {
	t.Parallel()
	if got, want := Default().Summary(), "unit demo: 1 stream (1 output), 1 worker, 1 test source, status 127.0.0.1:8080"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	c := mustParse(t, minimal+"streams:\n"+
		"  - {name: a, input: \"udp://127.0.0.1:1\", outputs: [\"udp://127.0.0.1:2\", \"udp://127.0.0.1:3\"]}\n"+
		"  - {name: b, input: \"udp://127.0.0.1:4\", outputs: [\"udp://127.0.0.1:5\"]}\n")
	if got, want := c.Summary(), "unit u1: 2 streams (3 outputs), 2 workers, 0 test sources, status 127.0.0.1:8080"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, DefaultYAML(), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(good); err != nil || c.Unit.Name != "demo" {
		t.Errorf("Load(good) = %+v, %v", c, err)
	}

	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want os.ErrNotExist", err)
	}

	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte(minimal+"#"+strings.Repeat("x", MaxSize)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(big)
	if err == nil || !strings.HasPrefix(err.Error(), big+":1:1: ") || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load(big) = %v", err)
	}
}

func TestEndpointAndDuration(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"udp://192.0.2.10:5004", "udp://[2001:db8::1]:6004", "udp://0.0.0.0:1"} {
		e, err := ParseEndpoint(s)
		if err != nil || e.String() != s {
			t.Errorf("ParseEndpoint(%q) = %v, %v", s, e, err)
		}
	}
	if e, err := ParseEndpoint("udp://[::ffff:192.0.2.1]:5"); err != nil || e.String() != "udp://192.0.2.1:5" {
		t.Errorf("v4-mapped: %v, %v", e, err)
	}
	d := Duration(1500 * time.Millisecond)
	if b, err := d.MarshalText(); err != nil || string(b) != "1.5s" || d.String() != "1.5s" {
		t.Errorf("MarshalText = %q, %v", b, err)
	}
}
