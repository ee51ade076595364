package status

import (
	"bytes"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// docs/metrics.md lists every metric with its type and labels, and no
// metric that does not exist.
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		typ    string
		labels []string
	}
	documented := map[string]row{}
	re := regexp.MustCompile("(?m)^\\| `(appliance_[a-z0-9_]+)` \\| ([a-z]+) \\|([^|]*)\\|")
	for _, m := range re.FindAllSubmatch(doc, -1) {
		var labels []string
		for l := range strings.SplitSeq(string(m[3]), ",") {
			if l = strings.Trim(strings.TrimSpace(l), "`"); l != "" {
				labels = append(labels, l)
			}
		}
		documented[string(m[1])] = row{string(m[2]), labels}
	}

	// The types come from gathering: between them, the two reports have
	// every metric.
	types := map[string]string{}
	for _, rep := range []Report{unitReport(), metricsPairedReport(2, 1, 1)} {
		var b bytes.Buffer
		if err := writeMetrics(&b, &rep, time.Time{}); err != nil {
			t.Fatal(err)
		}
		for name, mf := range parseMetrics(t, b.Bytes()) {
			types[name] = strings.ToLower(mf.GetType().String())
		}
	}

	for _, meta := range descMeta {
		d, ok := documented[meta.name]
		if !ok {
			t.Errorf("%s is not in docs/metrics.md", meta.name)
			continue
		}
		delete(documented, meta.name)
		if typ, ok := types[meta.name]; !ok {
			t.Errorf("%s: neither test report has it; give one of them what it needs", meta.name)
		} else if d.typ != typ {
			t.Errorf("%s: docs/metrics.md says %s, it is a %s", meta.name, d.typ, typ)
		}
		if !slices.Equal(d.labels, meta.labels) {
			t.Errorf("%s: docs/metrics.md gives the labels %q, it has %q", meta.name, d.labels, meta.labels)
		}
	}
	for name := range documented {
		t.Errorf("docs/metrics.md lists %s, which does not exist", name)
	}
}
