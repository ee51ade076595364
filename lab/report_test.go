package lab

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func scenario(t *testing.T, name string) Scenario {
	for _, s := range Scenarios() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no scenario %s", name)
	return Scenario{}
}

// runOf is a run whose streams saw these results; stream i was owned by A.
func runOf(rs ...StreamResult) *trial {
	t := &trial{results: rs, owners: map[string]netip.Addr{}}
	for i := range rs {
		t.owners[streamName(i)] = ua
	}
	return t
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	ok := StreamResult{Detection: -1, Gap: time.Millisecond, Senders: []netip.Addr{ua}}
	took := func(gap time.Duration, lost int) StreamResult {
		return StreamResult{Detection: gap - time.Millisecond, Gap: gap, Lost: lost, Senders: []netip.Addr{ua, ub}}
	}
	cases := []struct {
		name, scenario, mode string
		streams              int
		runs                 []*trial
		pass                 bool
		why                  string
		gapMs, detMs         float64
	}{
		{"power loss within bounds", "power-loss", Dual, 2,
			[]*trial{runOf(took(31*time.Millisecond, 0), ok), runOf(took(40*time.Millisecond, 0), ok), runOf(took(90*time.Millisecond, 0), ok)},
			true, "", 40, 39}, // the median is over every moved stream of every run
		{"median gap too long", "power-loss", Dual, 2,
			[]*trial{runOf(took(60*time.Millisecond, 0), took(60*time.Millisecond, 0)), runOf(took(70*time.Millisecond, 0), took(70*time.Millisecond, 0)),
				runOf(took(30*time.Millisecond, 0), took(30*time.Millisecond, 0))},
			false, "median gap 60ms", 60, 59},
		{"one stream of many too long", "power-loss", Dual, 2,
			[]*trial{runOf(took(31*time.Millisecond, 0), ok), runOf(took(120*time.Millisecond, 0), ok), runOf(took(31*time.Millisecond, 0), ok)},
			false, "run 2, s000: a gap of 120ms", 31, 30},
		{"streams the fault did not move do not pull the median down", "hang", Dual, 2,
			[]*trial{runOf(took(60*time.Millisecond, 0), ok), runOf(took(55*time.Millisecond, 0), ok), runOf(took(70*time.Millisecond, 0), ok)},
			false, "median gap 60ms", 60, 59},
		{"loss fails dual", "power-loss", Dual, 1, []*trial{runOf(took(31*time.Millisecond, 3))}, false, "run 1, s000: 3 lost", 31, 30},
		{"loss allowed in vip", "power-loss", VIP, 1, []*trial{runOf(took(31*time.Millisecond, 3))}, true, "", 31, 30},
		{"planned with a duplicate", "planned", VIP, 1, []*trial{runOf(StreamResult{Dups: 1, Detection: -1})}, false, "1 duplicates", 0, -1},
		{"crash loop moved", "crash-loop", Dual, 1, []*trial{func() *trial { r := runOf(ok); v := true; r.moved = &v; return r }()}, true, "", 1, -1},
		{"crash loop stuck", "crash-loop", Dual, 1, []*trial{func() *trial { r := runOf(ok); v := false; r.moved = &v; return r }()}, false, "not the stream moved", 1, -1},
		{"starvation: a stranger sent", "cpu-starvation", Dual, 1, []*trial{func() *trial { r := runOf(took(2*time.Millisecond, 0)); v := false; r.takeover = &v; return r }()}, false, "which did not own it", 2, 1},
		{"the pair did not act in time", "overheat", Dual, 1, []*trial{func() *trial { r := runOf(ok); r.failure = "waiting 15s for unit-b"; return r }()}, false, "run 1: waiting 15s", 1, -1},
		{"lone restart", "lone-restart", Lone, 1, []*trial{runOf(StreamResult{Detection: -1, Gap: 300 * time.Millisecond})}, true, "", 300, -1},
		{"lone restart renumbered", "lone-restart", Lone, 1, []*trial{runOf(StreamResult{Detection: -1, Gap: 300 * time.Millisecond, Discontinuities: 1})}, false, "1 discontinuities", 300, -1},
		{"split brain with a witness", "pair-link-cut-witness", Dual, 1, []*trial{runOf(StreamResult{Detection: -1, TwoForwarders: 1500 * time.Millisecond})}, false, "1500 ms with two forwarders", 0, -1},
		{"split brain without a witness is reported, not failed", "pair-link-cut", Dual, 1, []*trial{runOf(StreamResult{Detection: -1, TwoForwarders: 1500 * time.Millisecond})}, true, "", 0, -1},
	}
	for _, c := range cases {
		row := summarize(scenario(t, c.scenario), c.mode, c.streams, c.runs)
		if row.Pass != c.pass || !strings.Contains(row.Why, c.why) || (c.why == "" && row.Why != "") ||
			row.GapMs != c.gapMs || row.DetectionMs != c.detMs || row.Runs != len(c.runs) || row.WorstGapMs < row.GapMs {
			t.Errorf("%s: %+v", c.name, row)
		}
	}
}

func TestPrint(t *testing.T) {
	t.Parallel()
	rows := []Row{
		{Scenario: "power-loss", Mode: Dual, Runs: 3, Streams: 200, DetectionMs: 31.5, GapMs: 32, Pass: true},
		{Scenario: "planned", Mode: VIP, Runs: 1, Streams: 1, DetectionMs: -1, Lost: 2, Why: "run 1, s000: 2 lost", Criteria: "0 lost"},
	}
	var b bytes.Buffer
	if err := PrintTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"SCENARIO", "power-loss  dual", "31.5", "pass", "planned", "FAIL", "planned (vip) failed: run 1, s000: 2 lost\n  wanted: 0 lost"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	if err := PrintJSON(&b, rows); err != nil {
		t.Fatal(err)
	}
	var back []Row
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || len(back) != 2 || back[0] != rows[0] || back[1] != rows[1] {
		t.Errorf("JSON round trip: %v %+v", err, back)
	}
	b.Reset()
	if err := PrintJSON(&b, nil); err != nil || strings.TrimSpace(b.String()) != "[]" {
		t.Errorf("no rows: %q", b.String())
	}
	if AllPass(rows) || !AllPass(rows[:1]) || AllPass(nil) {
		t.Error("AllPass")
	}
}

func TestParseArgs(t *testing.T) {
	t.Parallel()
	opts, asJSON, err := ParseArgs([]string{"--scenario", "power-loss,hang", "--streams", "200", "--mode", "both", "--runs", "5", "--json"}, io.Discard)
	if err != nil || !asJSON || opts.Streams != 200 || opts.Runs != 5 || len(opts.Modes) != 2 || len(opts.Scenarios) != 2 || opts.Binary != "/proc/self/exe" {
		t.Errorf("full line: %+v %v %v", opts, asJSON, err)
	}
	opts, _, err = ParseArgs(nil, io.Discard)
	if err != nil || opts.Scenarios != nil || opts.Modes[0] != Dual || opts.Streams != 1 || opts.Runs != 1 || opts.PPS != 1000 {
		t.Errorf("defaults: %+v %v", opts, err)
	}
	for _, args := range [][]string{
		{"--scenario", "meteor"}, {"--mode", "triple"}, {"--streams", "0"}, {"--streams", "1001"},
		{"--runs", "-1"}, {"--pps", "x"}, {"extra"}, {"--nope"},
	} {
		var stderr bytes.Buffer
		if _, _, err := ParseArgs(args, &stderr); !errors.Is(err, ErrOptions) || stderr.Len() == 0 {
			t.Errorf("%v: %v, said %q", args, err, stderr.String())
		}
	}
	var stderr bytes.Buffer
	if _, _, err := ParseArgs([]string{"--scenario", "meteor"}, &stderr); !errors.Is(err, ErrUnknownScenario) || !strings.Contains(stderr.String(), "power-loss") {
		t.Errorf("an unknown scenario should list the known ones: %v %q", err, stderr.String())
	}
	if _, _, err := ParseArgs([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}
