package config

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// streamsYAML writes one flow-style stream per line, so stream i (from 0)
// sits on line first+i.
func streamsYAML(streams ...string) string {
	var b strings.Builder
	b.WriteString("streams:\n")
	for _, s := range streams {
		b.WriteString("  - " + s + "\n")
	}
	return b.String()
}

func st(name, in string, outs ...string) string {
	return fmt.Sprintf("{name: %s, input: \"udp://%s\", outputs: [\"udp://%s\"]}", name, in, strings.Join(outs, "\", \"udp://"))
}

func problemsEnv(t *testing.T, src string, env Env) []Problem {
	t.Helper()
	_, err := ParseEnv("t.yaml", []byte(src), env)
	if err == nil {
		t.Fatalf("ParseEnv accepted:\n%s", src)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error is %T, want *Error: %v", err, err)
	}
	return e.Problems
}

// hasProblem reports whether a problem at line contains want in its
// "path: message" text.
func hasProblem(ps []Problem, line int, want string) bool {
	for _, p := range ps {
		if p.Line == line && strings.Contains(p.Path+": "+p.Msg, want) {
			return true
		}
	}
	return false
}

// Two inputs on one port overlap when the addresses are equal or one is the
// unspecified address of a family covering the other; Go binds [::]
// dual-stack, so [::] covers IPv4 as well.
func TestOverlappingInputs(t *testing.T) {
	t.Parallel()
	// Streams start on line 4 (minimal is two lines, "streams:" the third).
	tests := []struct {
		a, b string // inputs of the first and second stream
		want string // "" if both may run
	}{
		{"0.0.0.0:5004", "127.0.0.1:5004", `udp://127.0.0.1:5004 overlaps the input of a (udp://0.0.0.0:5004): 0.0.0.0 receives on every IPv4 address; two streams cannot share an input`},
		{"127.0.0.1:5004", "0.0.0.0:5004", `udp://0.0.0.0:5004 overlaps the input of a (udp://127.0.0.1:5004): 0.0.0.0 receives on every IPv4 address`},
		{"[::]:5004", "192.0.2.1:5004", `udp://192.0.2.1:5004 overlaps the input of a (udp://[::]:5004): [::] receives on every IPv6 and IPv4 address`},
		{"[::1]:5004", "[::]:5004", `overlaps the input of a (udp://[::1]:5004): [::] receives`},
		{"0.0.0.0:5004", "[::]:5004", `overlaps the input of a`},
		{"[::ffff:127.0.0.1]:5004", "127.0.0.1:5004", `udp://127.0.0.1:5004 is already the input of a; two streams cannot share an input`},
		{"0.0.0.0:5004", "[::1]:5004", ""},
		{"0.0.0.0:5004", "127.0.0.1:5005", ""},
		{"127.0.0.1:5004", "127.0.0.2:5004", ""},
		{"[::1]:5004", "[2001:db8::1]:5004", ""},
	}
	for _, tt := range tests {
		t.Run(tt.a+"+"+tt.b, func(t *testing.T) {
			t.Parallel()
			src := minimal + streamsYAML(st("a", tt.a, "192.0.2.9:1"), st("b", tt.b, "192.0.2.9:2"))
			if tt.want == "" {
				mustParse(t, src)
				return
			}
			ps := problems(t, src)
			for _, p := range ps {
				if p.Line == 5 && p.Path == "b: input" && strings.Contains(p.Msg, tt.want) {
					return
				}
			}
			{
				t.Errorf("no problem at line 5 containing %q; got:\n%v", tt.want, &Error{File: "t.yaml", Problems: ps})
			}
		})
	}
}

func TestForwardingLoops(t *testing.T) {
	t.Parallel()
	local := Env{LocalAddrs: []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("fe80::1%eth0"), netip.MustParseAddr("2001:db8::7")}}
	tests := []struct {
		name    string
		env     Env
		streams []string
		line    int    // 0: accepted
		want    string // the whole message up to the advice
	}{
		{"two streams", Env{}, []string{st("cam1", "127.0.0.1:5004", "127.0.0.1:5006"), st("cam2", "127.0.0.1:5006", "127.0.0.1:5004")},
			5, "forwarding loop: cam1 -> cam2 -> cam1 (cam2 outputs[0] udp://127.0.0.1:5004 is the input of cam1)"},
		{"three streams, later output", Env{}, []string{
			st("a", "127.0.0.1:1", "192.0.2.9:9", "127.0.0.1:2"), st("b", "127.0.0.1:2", "127.0.0.1:3"), st("c", "127.0.0.1:3", "127.0.0.1:1")},
			6, "forwarding loop: a -> b -> c -> a (c outputs[0] udp://127.0.0.1:1 is the input of a)"},
		{"itself through the wildcard", Env{}, []string{st("a", "0.0.0.0:5004", "127.0.0.9:5004")},
			4, "forwarding loop: a -> a (a outputs[0] udp://127.0.0.9:5004 reaches the input of a, udp://0.0.0.0:5004)"},
		{"itself through 0.0.0.0 sent to", Env{}, []string{st("a", "0.0.0.0:5004", "0.0.0.0:5004")},
			4, "forwarding loop: a -> a"},
		{"v6 wildcard takes v4 loopback", Env{}, []string{st("a", "[::]:5004", "127.0.0.1:5006"), st("b", "127.0.0.1:5006", "127.0.0.1:5004")},
			5, "forwarding loop: a -> b -> a (b outputs[0] udp://127.0.0.1:5004 reaches the input of a, udp://[::]:5004)"},
		{"own address", local, []string{st("a", "0.0.0.0:5004", "192.0.2.7:5004")},
			4, "forwarding loop: a -> a (a outputs[0] udp://192.0.2.7:5004 reaches the input of a, udp://0.0.0.0:5004)"},
		{"own v6 address with a zone", local, []string{st("a", "[::]:5004", "[fe80::1]:5004")},
			4, "forwarding loop: a -> a"},
		{"two loops, both named", Env{}, []string{
			st("a", "127.0.0.1:1", "127.0.0.1:2"), st("b", "127.0.0.1:2", "127.0.0.1:1", "127.0.0.1:3"), st("c", "127.0.0.1:3", "127.0.0.1:2")},
			6, "forwarding loop: b -> c -> b (c outputs[0] udp://127.0.0.1:2 is the input of b)"},

		{"chain", Env{}, []string{st("a", "127.0.0.1:5004", "127.0.0.1:5006"), st("b", "127.0.0.1:5006", "192.0.2.1:5004")}, 0, ""},
		{"another machine's address", Env{}, []string{st("a", "0.0.0.0:5004", "192.0.2.7:5004")}, 0, ""},
		{"v4 wildcard misses v6 loopback", Env{}, []string{st("a", "0.0.0.0:5004", "[::1]:5004")}, 0, ""},
		{"other loopback address", Env{}, []string{st("a", "127.0.0.1:5004", "127.0.0.2:5004")}, 0, ""},
		{"other port", local, []string{st("a", "0.0.0.0:5004", "192.0.2.7:5005")}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := minimal + streamsYAML(tt.streams...)
			if tt.line == 0 {
				if _, err := ParseEnv("t.yaml", []byte(src), tt.env); err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			ps := problemsEnv(t, src, tt.env)
			for _, p := range ps {
				if p.Line == tt.line && strings.HasPrefix(p.Msg, tt.want) {
					return
				}
			}
			t.Errorf("no problem at line %d starting %q; got:\n%v", tt.line, tt.want, &Error{File: "t.yaml", Problems: ps})
		})
	}
}

// Every loop is refused: with the two loops a <-> b and b <-> c, both
// closing outputs are reported.
func TestEveryLoopReported(t *testing.T) {
	t.Parallel()
	ps := problems(t, minimal+streamsYAML(
		st("a", "127.0.0.1:1", "127.0.0.1:2"), st("b", "127.0.0.1:2", "127.0.0.1:1", "127.0.0.1:3"), st("c", "127.0.0.1:3", "127.0.0.1:2")))
	var got []string
	for _, p := range ps {
		got = append(got, fmt.Sprintf("%d: %s", p.Line, p.Msg[:strings.Index(p.Msg, " (")]))
	}
	if want := []string{"5: forwarding loop: a -> b -> a", "6: forwarding loop: b -> c -> b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestLongLoopNamedByItsEnds(t *testing.T) {
	t.Parallel()
	var streams []string
	const n = 20
	for i := range n {
		streams = append(streams, st(fmt.Sprintf("s%d", i), fmt.Sprintf("127.0.0.1:%d", 1000+i), fmt.Sprintf("127.0.0.1:%d", 1000+(i+1)%n)))
	}
	ps := problems(t, minimal+streamsYAML(streams...))
	want := "forwarding loop: s0 -> s1 -> s2 -> s3 -> (13 more) -> s17 -> s18 -> s19 -> s0 (s19 outputs[0] udp://127.0.0.1:1000 is the input of s0)"
	if len(ps) != 1 || ps[0].Line != 3+n || !strings.HasPrefix(ps[0].Msg, want) {
		t.Errorf("got %+v, want one problem at line %d starting %q", ps, 3+n, want)
	}
}

func manyStreams(n int) []string {
	streams := make([]string, n)
	for i := range streams {
		streams[i] = st(fmt.Sprintf("s%d", i), fmt.Sprintf("127.0.0.1:%d", 1+i), fmt.Sprintf("192.0.2.1:%d", 1+i))
	}
	return streams
}

func TestStreamLimits(t *testing.T) {
	t.Parallel()
	perWorker := strings.Join(manyStreams(MaxStreamsPerWorker+1), "\n  - ")
	tests := []struct {
		name string
		src  string
		line int
		want string
	}{
		{"over one worker, workers set", minimal + "media:\n  workers: 1\nstreams:\n  - " + perWorker + "\n", 4,
			"media: workers: 1025 streams need at least 2 workers (a worker relays at most 1024 streams), not 1; set media: workers: 2"},
		{"over one worker, streams first", minimal + "streams:\n  - " + perWorker + "\nmedia: {workers: 1}\n", 4 + MaxStreamsPerWorker + 1,
			"media: workers: 1025 streams need at least 2 workers"},
		{"over the unit", minimal + "media: {workers: 8}\n" + streamsYAML(manyStreams(MaxStreams+1)...), 4,
			"streams: 4097 streams; a unit relays at most 4096: move the rest to another unit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if ps := problems(t, tt.src); !hasProblem(ps, tt.line, tt.want) {
				t.Errorf("no problem at line %d containing %q; got %d problems, first %+v", tt.line, tt.want, len(ps), ps[0])
			}
		})
	}
	// At the limits exactly, the config is fine.
	mustParse(t, minimal+"media: {workers: 1}\n"+streamsYAML(manyStreams(MaxStreamsPerWorker)...))
	mustParse(t, minimal+"media: {workers: 4}\n"+streamsYAML(manyStreams(MaxStreams)...))
	// A refused worker count says nothing more about streams.
	ps := problems(t, minimal+"media: {workers: 0}\n"+streamsYAML(manyStreams(MaxStreamsPerWorker+1)...))
	if len(ps) != 1 || !strings.Contains(ps[0].Msg, "out of range") {
		t.Errorf("got %+v, want only the range problem", ps)
	}
}

func TestDescriptorBudget(t *testing.T) {
	t.Parallel()
	// 10 streams of 3 outputs on 2 workers: the main process needs
	// 10 + 64 + 64 + 6 = 144; a worker 5 * (1 + 3) = 20.
	var streams []string
	for i := range 10 {
		streams = append(streams, st(fmt.Sprintf("s%d", i), fmt.Sprintf("127.0.0.1:%d", 1+i),
			fmt.Sprintf("192.0.2.1:%d", 1+i), fmt.Sprintf("192.0.2.2:%d", 1+i), fmt.Sprintf("192.0.2.3:%d", 1+i)))
	}
	src := minimal + "media: {workers: 2}\n" + streamsYAML(streams...)
	for _, limit := range []uint64{0, 144, 1 << 20} {
		if _, err := ParseEnv("t.yaml", []byte(src), Env{NoFileLimit: limit}); err != nil {
			t.Errorf("limit %d: %v", limit, err)
		}
	}
	ps := problemsEnv(t, src, Env{NoFileLimit: 143})
	want := "the main process would need 144 file descriptors (10 stream inputs, 64 status connections, 6 for 2 workers, 64 reserve) but the limit is 143: raise LimitNOFILE= for the service to at least 144, or lower status: max_connections"
	if len(ps) != 1 || ps[0].Line != 4 || ps[0].Msg != want {
		t.Errorf("got %+v\nwant one problem at line 4: %s", ps, want)
	}

	// One worker's share is what it holds: the streams with the most outputs.
	src = minimal + "status: {max_connections: 1}\nmedia: {workers: 4}\n" +
		streamsYAML(st("a", "127.0.0.1:1", "192.0.2.1:1"), st("b", "127.0.0.1:2", "192.0.2.1:2", "192.0.2.1:3", "192.0.2.1:4"),
			st("c", "127.0.0.1:3", "192.0.2.1:5", "192.0.2.1:6"), st("d", "127.0.0.1:4", "192.0.2.1:7"), st("e", "127.0.0.1:5", "192.0.2.1:8"))
	// share 2: b (1+3) + c (1+2) = 7; the main process needs 5 + 1 + 64 + 12 = 82.
	if _, err := ParseEnv("t.yaml", []byte(src), Env{NoFileLimit: 82}); err != nil {
		t.Errorf("limit 82: %v", err)
	}
	ps = problemsEnv(t, src, Env{NoFileLimit: 6})
	want = "media: workers: a worker would need up to 7 file descriptors (an input and its outputs for each of its 2 streams) but the limit is 6: raise LimitNOFILE= for the service to at least 7, or spread the streams over more workers"
	if !hasProblem(ps, 4, want) {
		t.Errorf("no problem at line 4: %s\ngot %+v", want, ps)
	}
}

func TestMultipleDocuments(t *testing.T) {
	t.Parallel()
	const msg = "a second YAML document starts here, and the unit would ignore it: a config file holds one document; merge the two or remove this one"
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"second document", minimal + "---\nstreams: []\n", []string{"3:1: " + msg}},
		{"empty second document", minimal + "---\n", []string{"3:1: " + msg}},
		{"after an explicit start", "---\n" + minimal + "--- # more\nmedia: {workers: 0}\n", []string{"4:1: " + msg}},
		{"both documents have problems", "version: 1\nunit: {name: U}\n---\nmedia: {workers: 0}\n",
			[]string{`2:14: unit: name: "U": use 1 to 63 lowercase letters, digits and dashes`, "3:1: " + msg}},
		{"broken second document", minimal + "---\nmedia: [\n",
			[]string{"4:1: not valid YAML: line 4: did not find expected node content"}},
		{"content after the end marker", minimal + "...\nmedia: {}\n",
			[]string{"3:1: not valid YAML: line 3: did not find expected <document start>"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			for _, p := range problems(t, tt.src) {
				text := p.Msg
				if p.Path != "" {
					text = p.Path + ": " + text
				}
				got = append(got, fmt.Sprintf("%d:%d: %s", p.Line, p.Column, text))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
	// A document end marker alone ends the one document.
	mustParse(t, minimal+"...\n")
}

func TestNewSettings(t *testing.T) {
	t.Parallel()
	c := mustParse(t, minimal+"control: {socket: ctl.sock}\nstatus: {max_connections: 4096, idle_timeout: 10m}\n"+
		"media: {standby_ring: 0s, output_alarm_after: 1m}\n")
	if c.Control.Socket != "ctl.sock" || c.Status.MaxConnections != 4096 || c.Status.IdleTimeout.String() != "10m0s" ||
		c.Media.StandbyRing != 0 || c.Media.OutputAlarmAfter.String() != "1m0s" {
		t.Errorf("got %+v %+v %+v", c.Control, c.Status, c.Media)
	}
	tests := []struct {
		src  string
		want string
	}{
		{"control:\n  socket: \"\"\n", `control: socket: must not be empty; give a path such as /run/appliance/control.sock`},
		{"control:\n  socket:\n", `control: socket: must not be empty`},
		{"control:\n  socket: /run/" + strings.Repeat("x", 103) + "\n", `control: socket: 108 bytes is longer than a unix socket path can be (107); use a shorter path`},
		{"control:\n  socket: /run/appliance/\n", `control: socket: "/run/appliance/" names a directory; give the socket's file name too, such as /run/appliance/control.sock`},
		{"control:\n  socket: \"a\\0b\"\n", `control: socket: must not contain a NUL byte`},
		{"control:\n  sock: x\n", `control: unknown key "sock": did you mean "socket"?`},
		{"status:\n  max_connections: 0\n", `status: max_connections: 0 is out of range (1 to 4096)`},
		{"status:\n  max_connections: 4097\n", `out of range (1 to 4096)`},
		{"status:\n  idle_timeout: 999ms\n", `status: idle_timeout: 999ms is out of range (1s to 10m0s)`},
		{"status:\n  idle_timeout: 11m\n", `out of range (1s to 10m0s)`},
		{"media:\n  standby_ring: 11s\n", `media: standby_ring: 11s is out of range (0s to 10s)`},
		{"media:\n  standby_ring: -1ms\n", `out of range (0s to 10s)`},
		{"media:\n  output_alarm_after: 61s\n", `media: output_alarm_after: 1m1s is out of range (0s to 1m0s)`},
	}
	for _, tt := range tests {
		if ps := problems(t, minimal+tt.src); !hasProblem(ps, 4, tt.want) {
			t.Errorf("%q: no problem at line 4 containing %q; got:\n%v", tt.src, tt.want, &Error{File: "t.yaml", Problems: ps})
		}
	}
	// The limit is the kernel's: a path of 107 bytes is fine.
	mustParse(t, minimal+"control: {socket: /run/"+strings.Repeat("x", 102)+"}\n")
}

func TestValidateListen(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"127.0.0.1:8080", "0.0.0.0:1", "[::1]:9000", "[::]:65535"} {
		if err := ValidateListen(s); err != nil {
			t.Errorf("ValidateListen(%q) = %v", s, err)
		}
	}
	for s, want := range map[string]string{
		"localhost:8080": `"localhost:8080": write it as IP:PORT, such as 127.0.0.1:8080 or 0.0.0.0:8080`,
		"127.0.0.1":      `"127.0.0.1": write it as IP:PORT`,
		":8080":          `":8080": write it as IP:PORT`,
		"127.0.0.1:0":    "port 0 is not allowed; pick a port such as 8080",
		"":               `"": write it as IP:PORT`,
	} {
		err := ValidateListen(s)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("ValidateListen(%q) = %v, want %q", s, err, want)
			continue
		}
		// status.listen says exactly what the flag says.
		if ps := problems(t, minimal+fmt.Sprintf("status:\n  listen: %q\n", s)); len(ps) != 1 || ps[0].Msg != err.Error() {
			t.Errorf("status.listen %q: got %+v, want %q", s, ps, err)
		}
	}
}

// Every problem the whole-file checks find comes out at once, in line order,
// beside the problems of single values.
func TestEveryProblemAtOnce(t *testing.T) {
	t.Parallel()
	src := `version: 1
unit: {name: unit-a}
status: {max_connections: 150}
control: {socket: ""}
media: {workers: 1, standby_ring: 20s}
streams:
  - name: cam1
    input: "udp://0.0.0.0:5004"
    outputs: ["udp://127.0.0.1:5006"]
  - name: cam2
    input: "udp://127.0.0.1:5006"
    outputs: ["udp://192.0.2.7:5004", "udp://192.0.2.8:5004"]
  - name: cam3
    input: "udp://127.0.0.1:5004"
    outputs: ["udp://192.0.2.9:5004"]
---
streams: []
`
	_, err := ParseEnv("every.yaml", []byte(src), Env{LocalAddrs: []netip.Addr{netip.MustParseAddr("192.0.2.7")}, NoFileLimit: 200})
	if err == nil {
		t.Fatal("ParseEnv accepted the broken file")
	}
	want := []string{
		`every.yaml:4:19: control: socket: must not be empty; give a path such as /run/appliance/control.sock`,
		`every.yaml:5:35: media: standby_ring: 20s is out of range (0s to 10s)`,
		`every.yaml:6:1: the main process would need 220 file descriptors (3 stream inputs, 150 status connections, 3 for 1 worker, 64 reserve) but the limit is 200: raise LimitNOFILE= for the service to at least 220, or lower status: max_connections`,
		`every.yaml:12:15: forwarding loop: cam1 -> cam2 -> cam1 (cam2 outputs[0] udp://192.0.2.7:5004 reaches the input of cam1, udp://0.0.0.0:5004); each packet would go round forever: send this output somewhere else`,
		`every.yaml:14:12: cam3: input: udp://127.0.0.1:5004 overlaps the input of cam1 (udp://0.0.0.0:5004): 0.0.0.0 receives on every IPv4 address; two streams cannot share an input`,
		`every.yaml:16:1: a second YAML document starts here, and the unit would ignore it: a config file holds one document; merge the two or remove this one`,
	}
	if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
