package status

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// series is one sample made at scrape time: what prometheus.NewConstMetric
// makes, except that the collector makes its label pairs and may share
// them between series. NewConstMetric gives every series pairs of its
// own, which at 1,000 streams were most of a scrape's allocations; here a
// stream's series share its pairs. A series never changes once sent.
type series struct {
	desc   *prometheus.Desc
	labels labels
	kind   prometheus.ValueType // CounterValue or GaugeValue
	value  float64
}

func (m *series) Desc() *prometheus.Desc { return m.desc }

func (m *series) Write(out *dto.Metric) error {
	out.Label = m.labels
	if m.kind == prometheus.CounterValue {
		out.Counter = &dto.Counter{Value: &m.value}
	} else {
		out.Gauge = &dto.Gauge{Value: &m.value}
	}
	return nil
}

// labels are a series' label pairs, sorted by name as the text format
// has them. They are never changed once made, so series can share them.
type labels []*dto.LabelPair

// labelsOf pairs values with d's label names. Names the unit reads from
// sysfs need not be UTF-8, which label values must be: such a value is
// shown under a readable spelling.
func labelsOf(d *prometheus.Desc, values ...string) (labels, error) {
	names := descMeta[d].labels
	if len(values) != len(names) {
		return nil, fmt.Errorf("%s has the labels %q, given the values %q; this is a bug", d, names, values)
	}
	if len(values) == 0 {
		return nil, nil
	}
	pairs := make([]dto.LabelPair, len(values))
	ls := make(labels, len(values))
	for i := range values {
		if !utf8.ValidString(values[i]) {
			values[i] = strings.ToValidUTF8(values[i], "\uFFFD")
		}
		pairs[i].Name, pairs[i].Value = &names[i], &values[i]
		ls[i] = &pairs[i]
	}
	if len(ls) > 1 {
		slices.SortFunc(ls, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
	}
	return ls, nil
}

// sink makes series onto a collector's channel.
type sink chan<- prometheus.Metric

func (s sink) gauge(d *prometheus.Desc, v float64, values ...string) {
	if ls, ok := s.labels(d, values...); ok {
		s.send(d, prometheus.GaugeValue, v, ls)
	}
}

func (s sink) counter(d *prometheus.Desc, v float64, values ...string) {
	if ls, ok := s.labels(d, values...); ok {
		s.send(d, prometheus.CounterValue, v, ls)
	}
}

// labels are d's labels with values, to share between series of d and
// of other descriptions with the same label names. When they cannot be
// made, the scrape says why and goes on.
func (s sink) labels(d *prometheus.Desc, values ...string) (labels, bool) {
	ls, err := labelsOf(d, values...)
	if err != nil {
		s <- prometheus.NewInvalidMetric(d, err)
		return nil, false
	}
	return ls, true
}

// send sends one series of d with labels ls.
func (s sink) send(d *prometheus.Desc, kind prometheus.ValueType, v float64, ls labels) {
	s <- &series{desc: d, labels: ls, kind: kind, value: v}
}
