package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const minimal = `version: 1
unit: {name: unit-a}
streams:
  - name: cam1
    input: "udp://127.0.0.1:5004"
    outputs: ["udp://127.0.0.1:6004", "udp://[::1]:6005"]
    rewrite: {ssrc: 0x1234}
`

func TestDefaults(t *testing.T) {
	c, err := Parse("t.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Status.Listen != "127.0.0.1:8080" || c.Media.Workers != 2 || c.Unit.StateDir != "/var/lib/appliance" {
		t.Errorf("defaults: %+v", c)
	}
	if time.Duration(c.Media.HangTimeout) != 500*time.Millisecond || time.Duration(c.Media.ReportInterval) != 100*time.Millisecond {
		t.Errorf("media defaults: %+v", c.Media)
	}
	if r := c.Media.Restart; r.Intensity != 3 || time.Duration(r.Period) != 5*time.Second {
		t.Errorf("restart defaults: %+v", r)
	}
	s := c.Streams[0]
	if s.ClockRate != 90000 || *s.Rewrite.SSRC != 0x1234 || s.Outputs[1].String() != "udp://[::1]:6005" {
		t.Errorf("stream: %+v", s)
	}
	if c.HW.Sysfs != "/sys" || c.HW.Temperature.CritC != 90 || c.Watchdog.Device != "" || time.Duration(c.Watchdog.Timeout) != 10*time.Second {
		t.Errorf("hw/watchdog defaults: %+v %+v", c.HW, c.Watchdog)
	}
}

func TestEmbeddedDefault(t *testing.T) {
	c := Default()
	if got, want := c.Summary(), "unit demo: 1 stream (1 output), 1 worker, 1 test source, status 127.0.0.1:8080"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	if len(c.TestSources) != 1 || c.TestSources[0].To != c.Streams[0].Input {
		t.Error("the demo's test source does not feed the demo stream")
	}
}

func TestFullSchema(t *testing.T) {
	full := `version: 1
unit: {name: unit-b, state_dir: /var/lib/appliance}
status: {listen: "0.0.0.0:8080"}
media:
  workers: 4
  hang_timeout: 1s
  report_interval: 50ms
  restart: {intensity: 5, period: 30s, backoff: 0s, backoff_max: 0s}
streams:
  - {name: a, input: "udp://0.0.0.0:5004", outputs: ["udp://198.18.0.10:6004"], clock_rate: 48000}
test_sources:
  - {to: "udp://127.0.0.1:5004"}
hw:
  sysfs: /host/sys
  temperature: {warn_c: 70.5, crit_c: 85, clear_margin_c: 3}
  links: [{name: eth0, role: media}, {name: eth1, role: pair}, {name: mgmt0}]
  link_debounce: 0s
watchdog: {device: /dev/watchdog0, timeout: 30s}
`
	c, err := Parse("full.yaml", []byte(full))
	if err != nil {
		t.Fatal(err)
	}
	if c.HW.Links[2].Role != "media" || c.HW.Temperature.WarnC != 70.5 || c.Watchdog.Device != "/dev/watchdog0" {
		t.Errorf("%+v", c.HW)
	}
	if ts := c.TestSources[0]; ts.PPS != 100 || ts.Size != 1328 || ts.SSRC != 0x5eed {
		t.Errorf("test source defaults %+v", ts)
	}
}

// Each kind of problem, with the line it must be reported on and words it
// must say.
func TestProblems(t *testing.T) {
	tests := []struct {
		name, yaml string
		line       int
		want       string
	}{
		{"empty", "", 1, "empty config"},
		{"comment only", "# nothing\n", 1, "empty config"},
		{"syntax", "version: 1\nunit:\n  name: a\n    x: y\n", 4, "not valid YAML"},
		{"not a mapping", "- a\n- b\n", 1, "must be a mapping"},
		{"no version", "unit: {name: a}\n", 1, "version: 1"},
		{"wrong version", "version: 2\nunit: {name: a}\n", 1, "only version 1"},
		{"version text", "version: one\nunit: {name: a}\n", 1, "whole number"},
		{"no unit", "version: 1\n", 1, `"unit" is required`},
		{"unknown top key", "version: 1\nunit: {name: a}\nstreems: []\n", 3, `did you mean "streams"`},
		{"unknown far key", "version: 1\nunit: {name: a}\nzzz: 1\n", 3, "valid keys here"},
		{"duplicate key", "version: 1\nunit: {name: a}\nunit: {name: b}\n", 3, "set twice"},
		{"bad unit name", "version: 1\nunit: {name: Unit_A}\n", 2, "lowercase"},
		{"name is a number", "version: 1\nunit: {name: 123}\n", 2, "quote it"},
		{"listen", "version: 1\nunit: {name: a}\nstatus: {listen: localhost:8080}\n", 3, "IP:PORT"},
		{"workers type", "version: 1\nunit: {name: a}\nmedia: {workers: two}\n", 3, "whole number"},
		{"duration", "version: 1\nunit: {name: a}\nmedia: {hang_timeout: 5}\n", 3, "with a unit"},
		{"report too slow", "version: 1\nunit: {name: a}\nmedia: {report_interval: 1s}\n", 3, "out of range"},
		{"hang below reports", "version: 1\nunit: {name: a}\nmedia: {hang_timeout: 150ms}\n", 3, "two report intervals"},
		{"backoff max", "version: 1\nunit: {name: a}\nmedia:\n  restart: {backoff: 5s, backoff_max: 1s}\n", 4, "less than backoff"},
		{"streams not a list", "version: 1\nunit: {name: a}\nstreams: {name: x}\n", 3, "a list of streams"},
		{"stream missing input", "version: 1\nunit: {name: a}\nstreams:\n  - {name: x, outputs: [\"udp://127.0.0.1:1\"]}\n", 4, `x: "input" is required`},
		{"scheme", "version: 1\nunit: {name: a}\nstreams:\n  - {name: x, input: \"rtp://127.0.0.1:1\", outputs: [\"udp://127.0.0.1:2\"]}\n", 4, "only udp://"},
		{"no scheme", "version: 1\nunit: {name: a}\nstreams:\n  - {name: x, input: \"127.0.0.1:1\", outputs: [\"udp://127.0.0.1:2\"]}\n", 4, "udp://IP:PORT"},
		{"hostname", "version: 1\nunit: {name: a}\nstreams:\n  - {name: x, input: \"udp://cam.local:1\", outputs: [\"udp://127.0.0.1:2\"]}\n", 4, "use an IP address"},
		{"loop", "version: 1\nunit: {name: a}\nstreams:\n  - {name: x, input: \"udp://127.0.0.1:1\", outputs: [\"udp://127.0.0.1:1\"]}\n", 4, "a loop"},
		{"shared input", "version: 1\nunit: {name: a}\nstreams:\n  - {name: x, input: \"udp://127.0.0.1:1\", outputs: [\"udp://127.0.0.1:2\"]}\n  - {name: y, input: \"udp://127.0.0.1:1\", outputs: [\"udp://127.0.0.1:3\"]}\n", 5, "share an input"},
		{"duplicate output", "version: 1\nunit: {name: a}\nstreams:\n  - {name: x, input: \"udp://127.0.0.1:1\", outputs: [\"udp://127.0.0.1:2\", \"udp://127.0.0.1:2\"]}\n", 4, "listed twice"},
		{"ssrc range", "version: 1\nunit: {name: a}\nstreams:\n  - {name: x, input: \"udp://127.0.0.1:1\", outputs: [\"udp://127.0.0.1:2\"], rewrite: {ssrc: 0x100000000}}\n", 4, "out of range"},
		{"ssrc negative", "version: 1\nunit: {name: a}\nstreams:\n  - {name: x, input: \"udp://127.0.0.1:1\", outputs: [\"udp://127.0.0.1:2\"], rewrite: {ssrc: -1}}\n", 4, "out of range"},
		{"alias", "version: 1\nunit: &u {name: a}\nstatus: *u\n", 3, "aliases are not supported"},
		{"temps inverted", "version: 1\nunit: {name: a}\nhw:\n  temperature: {warn_c: 95, crit_c: 90}\n", 4, "below crit_c"},
		{"link role", "version: 1\nunit: {name: a}\nhw:\n  links: [{name: eth0, role: uplink}]\n", 4, "use one of media, pair, management"},
		{"link name", "version: 1\nunit: {name: a}\nhw:\n  links: [{name: averyveryverylongname}]\n", 4, "not an interface name"},
		{"watchdog relative", "version: 1\nunit: {name: a}\nwatchdog: {device: watchdog}\n", 3, "absolute path"},
		{"watchdog timeout", "version: 1\nunit: {name: a}\nwatchdog: {timeout: 1s}\n", 3, "out of range"},
		{"test source size", "version: 1\nunit: {name: a}\ntest_sources: [{to: \"udp://127.0.0.1:1\", size: 9000}]\n", 3, "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %v, want problems", err)
			}
			for _, p := range e.Problems {
				if p.Line == tt.line && strings.Contains(p.Path+": "+p.Msg, tt.want) {
					return
				}
			}
			t.Errorf("no problem on line %d saying %q; got:\n%v", tt.line, tt.want, err)
		})
	}
}

// The example of the README and the issue: every problem at once, each on
// its own line, in line order.
func TestEveryProblemAtOnce(t *testing.T) {
	broken := `version: 1
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
	_, err := Parse("broken.yaml", []byte(broken))
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{
		`broken.yaml:4:18: media: workers: 0 is out of range (1 to 64)`,
		`broken.yaml:8:15: cam1: outputs[0]: "udp://x:99999": port out of range (1-65535)`,
		`broken.yaml:9:5: cam1: unknown key "colour"`,
		`broken.yaml:10:11: streams[1] (cam1): name: "cam1" is already the name of streams[0]`,
		`broken.yaml:11:12: streams[1] (cam1): input: "udp://127.0.0.1:70000": port out of range`,
		`broken.yaml:12:14: streams[1] (cam1): outputs: no outputs`,
	}
	if len(lines) != len(want) {
		t.Fatalf("%d problems, want %d:\n%v", len(lines), len(want), err)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("problem %d:\n got %s\nwant %s...", i, lines[i], want[i])
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, MaxSize+10), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("big file: %v", err)
	}
	ok := filepath.Join(dir, "ok.yaml")
	if err := os.WriteFile(ok, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(ok); err != nil {
		t.Errorf("good file: %v", err)
	}
}
