package config

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// docRows reads the table under heading in docs/operations.md: key -> its
// default cell.
func docRows(t *testing.T, heading string) map[string]string {
	t.Helper()
	f, err := os.Open("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows := map[string]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = line == heading
			continue
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, " | ")
		if len(cells) < 2 {
			t.Fatalf("table row with one cell: %s", line)
		}
		key := strings.Trim(strings.TrimPrefix(cells[0], "| "), "`")
		if _, dup := rows[key]; dup {
			t.Errorf("%s is documented twice", key)
		}
		rows[key] = cells[1]
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatalf("no table under %q in docs/operations.md", heading)
	}
	return rows
}

// validKeys asks the decoder which keys it takes where src has the unknown
// key "zzzzzzzz".
func validKeys(t *testing.T, src string) []string {
	t.Helper()
	for _, p := range problems(t, src) {
		if _, list, ok := strings.Cut(p.Msg, "valid keys here: "); ok {
			return strings.Split(list, ", ")
		}
	}
	t.Fatalf("no list of valid keys for:\n%s", src)
	return nil
}

var firstCode = regexp.MustCompile("`([^`]*)`")

// Every pair setting the decoder takes is documented for operators, with the
// default the decoder really uses.
func TestPairDocsMatchDecoder(t *testing.T) {
	t.Parallel()
	rows := docRows(t, "## Pair (config keys)")

	const key = "  key_file: /etc/appliance/pair.key\n"
	var want []string
	for _, k := range validKeys(t, edit(t, key, key+"  zzzzzzzz: 1\n")) {
		if k != "capacity" {
			want = append(want, "pair."+k)
		}
	}
	for _, k := range validKeys(t, edit(t, key, key+"  capacity: {zzzzzzzz: 1}\n")) {
		want = append(want, "pair.capacity."+k)
	}
	for _, k := range validKeys(t, edit(t, "interface: eth0", "interface: eth0, zzzzzzzz: 1")) {
		want = append(want, "streams[]."+"vip."+k)
	}
	want = append(want, "streams[].input_mode", "streams[].prefer", "streams[].priority", "media.progress_interval", "media.batch_window")
	for _, k := range want {
		if _, ok := rows[k]; !ok {
			t.Errorf("%s is not documented under \"Pair (config keys)\" in docs/operations.md", k)
		}
	}
	if len(rows) != len(want) {
		t.Errorf("docs/operations.md documents %d pair keys, the decoder takes %d: %q", len(rows), len(want), want)
	}

	c := mustParse(t, edit(t, "    input_mode: vip\n    vip: {address: \"198.18.0.100/24\", interface: eth0}\n", ""))
	p, s := c.Pair, c.Streams[0]
	defaults := map[string]string{
		"pair.heartbeat":            p.Heartbeat.String(),
		"pair.detect_multiplier":    fmt.Sprint(p.DetectMultiplier),
		"pair.witness":              `""`,
		"pair.preempt":              fmt.Sprint(p.Preempt),
		"pair.preempt_hold":         p.PreemptHold.String(),
		"pair.capacity.streams":     fmt.Sprint(p.Capacity.Streams),
		"pair.capacity.bitrate_bps": fmt.Sprint(p.Capacity.BitrateBPS),
		"streams[].input_mode":      s.InputMode,
		"streams[].priority":        fmt.Sprint(s.Priority),
		"media.progress_interval":   c.Media.ProgressInterval.String(),
		"media.batch_window":        c.Media.BatchWindow.String(),
	}
	if p.Witness.IsValid() {
		t.Errorf("witness default %v, want none", p.Witness)
	}
	for k, cell := range rows {
		d, ok := defaults[k]
		if !ok {
			// Required, or described in words: then it states no value
			// this test cannot check.
			if firstCode.MatchString(cell) && !strings.Contains(cell, "lesser") {
				t.Errorf("%s: default %q states a value; teach this test to check it", k, cell)
			}
			continue
		}
		if m := firstCode.FindStringSubmatch(cell); m == nil || m[1] != d {
			t.Errorf("%s: docs/operations.md says the default is %s, the decoder uses %s", k, cell, d)
		}
	}
}

// Every status setting the decoder takes is documented for operators, with
// the default the decoder really uses.
func TestStatusDocsMatchDecoder(t *testing.T) {
	t.Parallel()
	rows := docRows(t, "## Status API (config keys)")
	var want []string
	for _, k := range validKeys(t, minimal+"status: {zzzzzzzz: 1}\n") {
		switch k {
		case "tokens", "tls":
		default:
			want = append(want, "status."+k)
		}
	}
	for _, k := range validKeys(t, minimal+"status: {tokens: [{zzzzzzzz: 1}]}\n") {
		want = append(want, "status.tokens[]."+k)
	}
	for _, k := range validKeys(t, minimal+"status: {tls: {zzzzzzzz: 1}}\n") {
		want = append(want, "status.tls."+k)
	}
	for _, k := range want {
		if _, ok := rows[k]; !ok {
			t.Errorf("%s is not documented under \"Status API (config keys)\" in docs/operations.md", k)
		}
	}
	if len(rows) != len(want) {
		t.Errorf("docs/operations.md documents %d status keys, the decoder takes %d: %q", len(rows), len(want), want)
	}
	d := Defaults().Status
	defaults := map[string]string{
		"status.listen":          d.Listen,
		"status.max_connections": fmt.Sprint(d.MaxConnections),
		"status.idle_timeout":    d.IdleTimeout.String(),
		"status.tls.cert":        fmt.Sprintf("%q", d.TLS.Cert),
		"status.tls.key":         fmt.Sprintf("%q", d.TLS.Key),
	}
	for k, cell := range rows {
		v, ok := defaults[k]
		if !ok {
			if firstCode.MatchString(cell) {
				t.Errorf("%s: default %q states a value; teach this test to check it", k, cell)
			}
			continue
		}
		if m := firstCode.FindStringSubmatch(cell); m == nil || m[1] != v {
			t.Errorf("%s: docs/operations.md says the default is %s, the decoder uses %s", k, cell, v)
		}
	}
}
