package status

import (
	"fmt"
	"html/template"
	"math"
	"net/url"
	"strconv"
	"time"

	"appliance/health"
	"appliance/hw"
	"appliance/supervisor"
)

// pageFuncs format the report's figures for people: thousands grouped,
// rates and durations with units, times relative to the report's.
var pageFuncs = template.FuncMap{
	"asset":     assetURL,
	"num":       num,
	"bps":       bps,
	"fixed":     decimals,
	"msp":       msp,
	"dur":       dur,
	"ago":       ago,
	"agop":      agop,
	"when":      when,
	"sev":       func(s health.Severity) string { return s.String() },
	"streamURL": func(name string) string { return "/streams/" + url.PathEscape(name) },
	"actionURL": func(name, verb string) string { return "/api/v1/streams/" + url.PathEscape(name) + "/" + verb },
	"yesno":     yesno,
	"online":    online,
	"capacity":  capacity,
	"meter":     meter,
	"tree":      tree,
	"pageURL":   pageURL,
	"link":      linkState,
}

// num groups an integer's digits by thousands: 66,640,000.
func num(v any) string {
	var s string
	switch n := v.(type) {
	case int:
		s = strconv.Itoa(n)
	case int64:
		s = strconv.FormatInt(n, 10)
	case uint64:
		s = strconv.FormatUint(n, 10)
	case uint32:
		s = strconv.FormatUint(uint64(n), 10)
	default:
		return fmt.Sprint(v)
	}
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	if len(s) <= 3 {
		if neg {
			return "-" + s
		}
		return s
	}
	b := make([]byte, 0, len(s)+len(s)/3+1)
	if neg {
		b = append(b, '-')
	}
	lead := len(s) % 3
	if lead == 0 {
		lead = 3
	}
	b = append(b, s[:lead]...)
	for i := lead; i < len(s); i += 3 {
		b = append(b, ',')
		b = append(b, s[i:i+3]...)
	}
	return string(b)
}

// bps writes a bitrate with its unit: 8.12 Mb/s.
func bps(v float64) string {
	switch {
	case v >= 1e9:
		return strconv.FormatFloat(v/1e9, 'f', 2, 64) + " Gb/s"
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + " Mb/s"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + " kb/s"
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + " b/s"
}

// decimals writes a float with d decimals.
func decimals(d int, v float64) string { return strconv.FormatFloat(v, 'f', d, 64) }

// msp writes an optional duration in milliseconds, or a dash.
func msp(v *float64) string {
	if v == nil {
		return "—"
	}
	return strconv.FormatFloat(*v, 'f', 1, 64) + " ms"
}

// dur writes seconds as the two largest units: 3d 4h, 5m 12s, 12.5s.
func dur(s float64) string {
	if s < 60 {
		return strconv.FormatFloat(math.Max(s, 0), 'f', 1, 64) + "s"
	}
	d := time.Duration(s * float64(time.Second))
	days := int(d / (24 * time.Hour))
	h := int(d/time.Hour) % 24
	m := int(d/time.Minute) % 60
	sec := int(d/time.Second) % 60
	switch {
	case days > 0:
		return fmt.Sprintf("%dd %dh", days, h)
	case h > 0:
		return fmt.Sprintf("%dh %02dm", h, m)
	}
	return fmt.Sprintf("%dm %02ds", m, sec)
}

// ago writes how long before now t was; a zero time is a dash.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	d := now.Sub(t)
	if d < 0 {
		return "just now"
	}
	return dur(d.Seconds()) + " ago"
}

// agop is ago for an optional time: never when absent.
func agop(now time.Time, t *time.Time) string {
	if t == nil {
		return "never"
	}
	return ago(now, *t)
}

// when writes a time for people, to the second, in the unit's zone.
func when(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.Format("2006-01-02 15:04:05 MST")
}

func yesno(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func online(b *bool) string {
	if b == nil {
		return "—"
	}
	if *b {
		return "online"
	}
	return "offline"
}

func capacity(c *int) string {
	if c == nil {
		return "—"
	}
	return strconv.Itoa(*c) + " %"
}

// meterView draws a temperature against its thresholds: a bar for the
// reading and marks at warn and crit, on a scale that holds all three.
type meterView struct {
	W, Warn, Crit int // pixels, in a meterW-wide box
}

const meterW = 120

func meter(t hw.TempStatus) meterView {
	top := math.Max(math.Max(t.CritC, t.WarnC)*1.15, t.Celsius*1.05)
	if top <= 0 {
		top = 100
	}
	px := func(c float64) int { return int(math.Round(math.Max(c, 0) / top * meterW)) }
	return meterView{W: px(t.Celsius), Warn: px(t.WarnC), Crit: px(t.CritC)}
}

// treeRow is one node of the supervision tree, as a row indented by its
// depth, with the report's time for "since".
type treeRow struct {
	Now   time.Time
	N     *supervisor.Node
	Depth int
}

// tree flattens the supervision tree, parents before their children.
func tree(now time.Time, root supervisor.Node) []treeRow {
	var rows []treeRow
	var walk func(n *supervisor.Node, depth int)
	walk = func(n *supervisor.Node, depth int) {
		rows = append(rows, treeRow{Now: now, N: n, Depth: min(depth, 6)})
		for i := range n.Children {
			walk(&n.Children[i], depth+1)
		}
	}
	walk(&root, 0)
	return rows
}

// pageURL is the main page with a query built by pageParams.query, which
// url.Values encodes: safe as it is.
func pageURL(q string) template.URL {
	if q == "" {
		return "/"
	}
	return template.URL("/?" + q)
}

// linkState is a link's state in one word.
func linkState(l hw.Link) string {
	switch {
	case !l.Present:
		return "missing"
	case !l.AdminUp:
		return "admin down"
	case !l.Carrier:
		return "no carrier"
	}
	return "up"
}
