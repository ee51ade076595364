package config

import (
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// FuzzParse: no input makes Parse panic, every failure is a *Error with
// lines inside the file, and every accepted config both keeps its invariants
// and reads back the same after being written out again.
func FuzzParse(f *testing.F) {
	f.Add(DefaultYAML())
	f.Add([]byte(minimal))
	f.Add([]byte(pairContract))
	f.Add([]byte(pairBase))
	env := Env{LocalAddrs: []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7")}, NoFileLimit: 300}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Facts about the machine only add problems.
		ce, errEnv := ParseEnv("fuzz.yaml", data, env)
		c, err := Parse("fuzz.yaml", data)
		if errEnv == nil && (err != nil || !reflect.DeepEqual(c, ce)) {
			t.Fatalf("accepted with an Env but not without: %v", err)
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || len(e.Problems) == 0 {
				t.Fatalf("error %T %v, want *Error with problems", err, err)
			}
			// YAML also breaks lines at \r, NEL, LS and PS; this is an upper bound.
			lines := 1
			for _, brk := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
				lines += strings.Count(string(data), brk)
			}
			for _, p := range e.Problems {
				if p.Line < 1 || (len(data) <= MaxSize && p.Line > lines) || p.Msg == "" {
					t.Fatalf("problem outside the file (%d lines): %+v", lines, p)
				}
			}
			return
		}
		if c == nil {
			t.Fatal("nil config and nil error")
		}
		if msg := invariants(c); msg != "" {
			t.Fatalf("accepted config breaks an invariant: %s\n%+v", msg, c)
		}
		_ = c.Summary()
		out := encode(t, c)
		c2, err := Parse("again.yaml", out)
		if err != nil {
			t.Fatalf("written-out config does not parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v\n%s", c, c2, out)
		}
	})
}

func TestEncodeRoundTrip(t *testing.T) {
	t.Parallel()
	preempt := strings.NewReplacer(`witness: ""`, `witness: "[2001:db8::9]:7500"`, "preempt: false", "preempt: true\n  preempt_hold: 1m").Replace(pairContract)
	if c := mustParse(t, preempt); !c.Pair.Preempt || !c.Pair.Witness.IsValid() {
		t.Fatalf("the preempting pair is not: %+v", c.Pair)
	}
	for _, c := range []*Config{Default(), mustParse(t, pairContract), mustParse(t, pairBase), mustParse(t, preempt)} {
		c2, err := Parse("again.yaml", encode(t, c))
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, c, c2)
		}
		if msg := invariants(c); msg != "" {
			t.Fatal(msg)
		}
	}
}

// invariants re-checks an accepted config from the structs alone, without the
// decoder's help: a second opinion on the rules in the package comment.
func invariants(c *Config) string {
	in := func(v, lo, hi int) bool { return v >= lo && v <= hi }
	dur := func(d Duration, lo, hi time.Duration) bool { return time.Duration(d) >= lo && time.Duration(d) <= hi }
	m, r := c.Media, c.Media.Restart
	switch {
	case c.Version != 1:
		return "version"
	case c.Unit.Name == "" || c.Unit.StateDir == "":
		return "unit"
	case !in(m.Workers, 1, 64):
		return "workers"
	case !dur(m.HangTimeout, 50*time.Millisecond, time.Minute), !dur(m.ReportInterval, 10*time.Millisecond, 250*time.Millisecond),
		m.HangTimeout < 2*m.ReportInterval:
		return "media timing"
	case !in(r.Intensity, 1, 1000), r.Period <= 0, r.Backoff < 0, r.BackoffMax < r.Backoff:
		return "restart"
	case c.HW.Temperature.WarnC >= c.HW.Temperature.CritC, c.HW.Temperature.ClearMarginC < 0:
		return "temperature"
	case !dur(c.HW.LinkDebounce, 0, 10*time.Second), !dur(c.HW.PollInterval, 100*time.Millisecond, time.Minute), !dur(c.Watchdog.Timeout, 2*time.Second, 10*time.Minute):
		return "hw or watchdog durations"
	case c.Watchdog.Device != "" && !strings.HasPrefix(c.Watchdog.Device, "/"):
		return "watchdog device"
	case c.Control.Socket == "" || len(c.Control.Socket) > 107:
		return "control socket"
	case !in(c.Status.MaxConnections, 1, 4096), !dur(c.Status.IdleTimeout, time.Second, 10*time.Minute):
		return "status"
	case (c.Status.TLS.Cert == "") != (c.Status.TLS.Key == ""), len(c.Status.Tokens) > MaxTokens:
		return "status tls or tokens"
	case !dur(m.StandbyRing, 0, 10*time.Second), !dur(m.OutputAlarmAfter, 0, time.Minute):
		return "media standby and alarm"
	case !dur(m.ProgressInterval, time.Millisecond, time.Second), m.ProgressInterval > m.ReportInterval:
		return "media progress interval"
	case !dur(m.BatchWindow, 0, 2*time.Millisecond):
		return "media batch window"
	case len(c.Streams) > MaxStreams, len(c.Streams) > m.Workers*MaxStreamsPerWorker:
		return "too many streams"
	}
	tokens, sums := map[string]bool{}, map[[32]byte]bool{}
	for _, tk := range c.Status.Tokens {
		if CheckTokenName(tk.Name) != nil || tokens[tk.Name] || sums[tk.SHA256] || tk.SHA256 == emptyHash {
			return "token " + tk.Name
		}
		tokens[tk.Name], sums[tk.SHA256] = true, true
	}
	names, links := map[string]bool{}, map[string]bool{}
	for i, s := range c.Streams {
		if !streamName.MatchString(s.Name) || names[s.Name] || !s.Input.Addr.IsValid() ||
			!in(len(s.Outputs), 1, 16) || !in(s.ClockRate, 1000, 1000000) {
			return "stream " + s.Name
		}
		names[s.Name] = true
		for _, o := range s.Outputs {
			if o.Addr.Port() == 0 {
				return "output of " + s.Name
			}
		}
		for _, t := range c.Streams[:i] {
			if a, b := s.Input.Addr, t.Input.Addr; a.Port() == b.Port() &&
				(a.Addr() == b.Addr() || wildcardFor(a.Addr(), b.Addr()) || wildcardFor(b.Addr(), a.Addr())) {
				return "inputs of " + t.Name + " and " + s.Name + " overlap"
			}
		}
	}
	if hasCycle(c.Streams) {
		return "forwarding loop"
	}
	if msg := pairInvariants(c); msg != "" {
		return msg
	}
	for _, ts := range c.TestSources {
		if !in(ts.PPS, 1, 100000) || !in(ts.Size, 12, 1500) || ts.To.Addr.Port() == 0 {
			return "test source"
		}
	}
	for _, l := range c.HW.Links {
		if !validIfName(l.Name) || links[l.Name] || (l.Role != "media" && l.Role != "pair" && l.Role != "management") {
			return "link " + l.Name
		}
		links[l.Name] = true
	}
	return ""
}

func pairInvariants(c *Config) string {
	p := c.Pair
	if p == nil {
		for _, s := range c.Streams {
			if s.InputMode != "" || s.VIP != nil || s.Prefer != "" || s.Priority != 0 {
				return "pair settings of " + s.Name + " without a pair"
			}
		}
		return ""
	}
	in := func(v, lo, hi int) bool { return v >= lo && v <= hi }
	switch {
	case p.PeerName == "" || p.PeerName == c.Unit.Name:
		return "peer name"
	case !in(len(p.Paths), 2, 8):
		return "path count"
	case p.KeyFile == "" || p.Key != nil:
		return "key file"
	case time.Duration(p.Heartbeat) < time.Millisecond || time.Duration(p.Heartbeat) > time.Second, !in(p.DetectMultiplier, 2, 50):
		return "heartbeat timing"
	case p.Witness.IsValid() && (p.Witness.Port() == 0 || p.Witness.Addr().IsUnspecified()):
		return "witness"
	case p.Capacity.Streams < 0:
		return "capacity"
	}
	locals, remotes := map[netip.AddrPort]bool{}, map[netip.AddrPort]bool{}
	for _, pp := range p.Paths {
		if locals[pp.Local] || remotes[pp.Remote] || pp.Local.Port() == 0 || pp.Remote.Port() == 0 ||
			pp.Local.Addr().Is4() != pp.Remote.Addr().Is4() || pp.Local.Addr().IsUnspecified() {
			return "path " + pp.Local.String()
		}
		locals[pp.Local], remotes[pp.Remote] = true, true
		for _, s := range c.Streams {
			if a := s.Input.Addr; a.Port() == pp.Local.Port() && (a.Addr() == pp.Local.Addr() || wildcardFor(a.Addr(), pp.Local.Addr())) {
				return "path " + pp.Local.String() + " meets the input of " + s.Name
			}
		}
	}
	vips := map[netip.Addr]bool{}
	for _, s := range c.Streams {
		if (s.Prefer != c.Unit.Name && s.Prefer != p.PeerName) || s.Priority < -1000 || s.Priority > 1000 {
			return "prefer or priority of " + s.Name
		}
		switch s.InputMode {
		case "dual":
			if s.VIP != nil {
				return "dual stream with a VIP: " + s.Name
			}
		case "vip":
			if s.VIP == nil || vips[s.VIP.Address.Addr()] || s.Input.Addr.Addr() != s.VIP.Address.Addr() || !validIfName(s.VIP.Interface) {
				return "VIP of " + s.Name
			}
			vips[s.VIP.Address.Addr()] = true
		default:
			return "input mode of " + s.Name
		}
	}
	return ""
}

// wildcardFor says, independently of covers, whether binding to u receives
// what is sent to a.
func wildcardFor(u, a netip.Addr) bool {
	return u.String() == "::" || (u.String() == "0.0.0.0" && a.Is4())
}

// hasCycle finds a forwarding loop by peeling off streams that nothing
// reaches (Kahn's topological sort), unlike the decoder's depth-first walk:
// whatever is left over lies on or behind a cycle.
func hasCycle(streams []Stream) bool {
	feeds := func(o, in netip.AddrPort) bool {
		a := o.Addr()
		return o.Port() == in.Port() &&
			(a == in.Addr() || wildcardFor(in.Addr(), a) && (a.IsLoopback() || a.IsUnspecified()))
	}
	indegree := make([]int, len(streams))
	for _, s := range streams {
		for _, o := range s.Outputs {
			for j, t := range streams {
				if feeds(o.Addr, t.Input.Addr) {
					indegree[j]++
				}
			}
		}
	}
	var ready []int
	for i, n := range indegree {
		if n == 0 {
			ready = append(ready, i)
		}
	}
	peeled := 0
	for len(ready) > 0 {
		i := ready[len(ready)-1]
		ready = ready[:len(ready)-1]
		peeled++
		for _, o := range streams[i].Outputs {
			for j, t := range streams {
				if feeds(o.Addr, t.Input.Addr) {
					if indegree[j]--; indegree[j] == 0 {
						ready = append(ready, j)
					}
				}
			}
		}
	}
	return peeled < len(streams)
}

// encode writes c back out as YAML, every field explicit.
func encode(t *testing.T, c *Config) []byte {
	t.Helper()
	type m = map[string]any
	var streams, sources, links []any
	for _, s := range c.Streams {
		var outs []string
		for _, o := range s.Outputs {
			outs = append(outs, o.String())
		}
		sm := m{"name": s.Name, "input": s.Input.String(), "outputs": outs, "clock_rate": s.ClockRate}
		if c.Pair != nil {
			sm["input_mode"], sm["prefer"], sm["priority"] = s.InputMode, s.Prefer, s.Priority
		}
		if s.VIP != nil {
			sm["vip"] = m{"address": s.VIP.Address.String(), "interface": s.VIP.Interface}
		}
		if s.Rewrite != nil {
			rw := m{}
			if s.Rewrite.SSRC != nil {
				rw["ssrc"] = *s.Rewrite.SSRC
			}
			sm["rewrite"] = rw
		}
		streams = append(streams, sm)
	}
	for _, ts := range c.TestSources {
		sources = append(sources, m{"to": ts.To.String(), "pps": ts.PPS, "size": ts.Size, "ssrc": ts.SSRC})
	}
	for _, l := range c.HW.Links {
		links = append(links, m{"name": l.Name, "role": l.Role})
	}
	r := c.Media.Restart
	doc := m{
		"version": c.Version,
		"unit":    m{"name": c.Unit.Name, "state_dir": c.Unit.StateDir},
		"status":  m{"listen": c.Status.Listen, "max_connections": c.Status.MaxConnections, "idle_timeout": c.Status.IdleTimeout},
		"control": m{"socket": c.Control.Socket},
		"media": m{"workers": c.Media.Workers, "hang_timeout": c.Media.HangTimeout, "report_interval": c.Media.ReportInterval,
			"standby_ring": c.Media.StandbyRing, "output_alarm_after": c.Media.OutputAlarmAfter, "progress_interval": c.Media.ProgressInterval,
			"batch_window": c.Media.BatchWindow,
			"restart":      m{"intensity": r.Intensity, "period": r.Period, "backoff": r.Backoff, "backoff_max": r.BackoffMax}},
		"hw": m{"sysfs": c.HW.Sysfs, "link_debounce": c.HW.LinkDebounce, "poll_interval": c.HW.PollInterval,
			"temperature": m{"warn_c": c.HW.Temperature.WarnC, "crit_c": c.HW.Temperature.CritC, "clear_margin_c": c.HW.Temperature.ClearMarginC}},
		"watchdog": m{"device": c.Watchdog.Device, "timeout": c.Watchdog.Timeout},
	}
	var tokens []any
	for _, tk := range c.Status.Tokens {
		tokens = append(tokens, m{"name": tk.Name, "sha256": hex.EncodeToString(tk.SHA256[:])})
	}
	if tokens != nil {
		doc["status"].(m)["tokens"] = tokens
	}
	if c.Status.TLS.Cert != "" {
		doc["status"].(m)["tls"] = m{"cert": c.Status.TLS.Cert, "key": c.Status.TLS.Key}
	}
	if streams != nil {
		doc["streams"] = streams
	}
	if sources != nil {
		doc["test_sources"] = sources
	}
	if links != nil {
		doc["hw"].(m)["links"] = links
	}
	if p := c.Pair; p != nil {
		var paths []any
		for _, pp := range p.Paths {
			paths = append(paths, m{"local": pp.Local.String(), "remote": pp.Remote.String()})
		}
		witness := ""
		if p.Witness.IsValid() {
			witness = p.Witness.String()
		}
		pm := m{"peer_name": p.PeerName, "paths": paths, "key_file": p.KeyFile, "heartbeat": p.Heartbeat,
			"detect_multiplier": p.DetectMultiplier, "witness": witness, "preempt": p.Preempt,
			"capacity": m{"streams": p.Capacity.Streams, "bitrate_bps": p.Capacity.BitrateBPS}}
		if p.Preempt {
			pm["preempt_hold"] = p.PreemptHold
		}
		doc["pair"] = pm
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatalf("yaml.Marshal: %v", err)
	}
	return out
}
