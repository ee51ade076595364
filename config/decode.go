package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The decoder walks the YAML node tree itself rather than letting yaml.v3
// fill structs: that is what lets it report every problem, each with its
// line, instead of stopping at the first.

// Parse checks a config held in memory, without facts about the machine:
// ParseEnv(name, data, Env{}). name is used in problem reports.
func Parse(name string, data []byte) (*Config, error) { return ParseEnv(name, data, Env{}) }

// ParseEnv checks a config held in memory, as a whole and against env; name
// is used in problem reports. It reads no other file: Pair.Key stays nil.
func ParseEnv(name string, data []byte, env Env) (*Config, error) {
	return parse(name, data, env, false)
}

// parse reads the pair's key file only when asked: the in-memory parsers
// must not open files a fuzzer or a caller names.
func parse(name string, data []byte, env Env, readKey bool) (*Config, error) {
	d := &decoder{}
	c := defaults()
	switch {
	case len(data) > MaxSize:
		d.problem(1, 1, "", "file is larger than %d bytes; this is not a config file", MaxSize)
	case len(strings.TrimSpace(string(data))) == 0:
		d.problem(1, 1, "", "%s", emptyMsg)
	default:
		doc, next, err := unmarshal(data)
		if err != nil {
			line := yamlErrorLine(err)
			d.problem(line, 1, "", "not valid YAML: %s%s", strings.TrimPrefix(err.Error(), "yaml: "), tabHint(data, line))
		}
		switch {
		case doc != nil && len(doc.Content) > 0 && !isNull(doc.Content[0]):
			d.root(doc.Content[0], c)
			d.whole(c, env)
			if readKey {
				d.readKey(c)
				d.readTLS(c)
			}
		case err == nil:
			d.problem(1, 1, "", "%s", emptyMsg)
		}
		if next != nil {
			d.at(next, "", "a second YAML document starts here, and the unit would ignore it: a config file holds one document; merge the two or remove this one")
		}
	}
	if len(d.probs) > 0 {
		sort.SliceStable(d.probs, func(i, j int) bool {
			if d.probs[i].Line != d.probs[j].Line {
				return d.probs[i].Line < d.probs[j].Line
			}
			return d.probs[i].Column < d.probs[j].Column
		})
		return nil, &Error{File: name, Problems: d.probs}
	}
	return c, nil
}

// isNull reports a document that holds nothing, such as a bare "---".
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null" && n.Style == 0 && (n.Value == "" || n.Value == "~" || n.Value == "null")
}

const emptyMsg = "empty config; start from `appliance run` defaults, see README"

// unmarshal parses the first YAML document into a node tree, and returns the
// start of a second document if there is one: yaml.v3 would silently read
// only the first. yaml.v3 does not expand aliases when it builds nodes, so an
// alias bomb stays small here; the decoder then refuses every alias it meets.
// The recover is a last line of defence: a bug in the YAML library must
// become a problem report, not a crashed unit.
func unmarshal(data []byte) (doc, next *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			next, err = nil, fmt.Errorf("yaml: cannot parse this file (%v)", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	first := new(yaml.Node)
	if err := dec.Decode(first); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, nil
		}
		return nil, nil, err
	}
	doc = first
	second := new(yaml.Node)
	if err := dec.Decode(second); err != nil {
		if errors.Is(err, io.EOF) {
			return doc, nil, nil
		}
		return doc, nil, err
	}
	return doc, second, nil
}

// tabHint explains the commonest syntax error: YAML does not indent with tabs.
func tabHint(data []byte, line int) string {
	lines := strings.Split(string(data), "\n")
	if line < 1 || line > len(lines) {
		return ""
	}
	l := lines[line-1]
	if strings.Contains(l[:len(l)-len(strings.TrimLeft(l, " \t"))], "\t") {
		return "; indent with spaces, not tabs"
	}
	return ""
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

func yamlErrorLine(err error) int {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil {
			return n
		}
	}
	return 1
}

// Defaults returns the default of every setting: the one place they live.
// Its Pair is nil, as a unit runs alone unless told otherwise; the defaults
// of a pair section are DefaultPair's.
func Defaults() *Config { return defaults() }

func defaults() *Config {
	return &Config{
		Unit:    Unit{StateDir: "/var/lib/appliance"},
		Status:  Status{Listen: "127.0.0.1:8080", MaxConnections: 64, IdleTimeout: Duration(10 * time.Second)},
		Control: Control{Socket: "/run/appliance/control.sock"},
		Media: Media{
			Workers: 2, HangTimeout: Duration(500 * time.Millisecond), ReportInterval: Duration(100 * time.Millisecond),
			StandbyRing: Duration(500 * time.Millisecond), OutputAlarmAfter: Duration(time.Second),
			ProgressInterval: Duration(5 * time.Millisecond),
			// Chosen from make bench-density (docs/PERFORMANCE.md): p99
			// added latency under 1 ms on a loaded machine, most of the
			// saving of larger windows.
			BatchWindow: Duration(500 * time.Microsecond),
			Restart:     Restart{Intensity: 3, Period: Duration(5 * time.Second), Backoff: Duration(10 * time.Millisecond), BackoffMax: Duration(2 * time.Second)},
		},
		HW: HW{
			Sysfs:        "/sys",
			Temperature:  Temperature{WarnC: 80, CritC: 90, ClearMarginC: 5},
			LinkDebounce: Duration(200 * time.Millisecond),
			PollInterval: Duration(2 * time.Second),
		},
		Watchdog: Watchdog{Timeout: Duration(10 * time.Second)},
	}
}

type decoder struct {
	probs []Problem

	// Where the whole-config checks point, once the tree is walked.
	rootNode    *yaml.Node
	streamsNode *yaml.Node    // the "streams" key
	workersNode *yaml.Node    // nil when media.workers is not set
	workersBad  bool          // media.workers was set to something refused
	streamAt    []streamNodes // parallel to Config.Streams
	pairSeen    bool          // the file has a pair key, even one refused
	pairAt      pairNodes
	tlsNode     *yaml.Node // the "tls" key of status, when both files are named
}

// streamNodes are where a stream's endpoints are written.
type streamNodes struct {
	path    string       // how problems name the stream
	input   *yaml.Node   // nil when the input was refused or is missing
	outputs []*yaml.Node // parallel to Stream.Outputs

	// The pair settings, nil when not written.
	inputMode, vip, vipAddress, prefer, priority *yaml.Node
	pairBad                                      bool // one of them was refused on its own
}

func (d *decoder) problem(line, col int, path, format string, args ...any) {
	d.probs = append(d.probs, Problem{Line: line, Column: col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) at(n *yaml.Node, path, format string, args ...any) {
	d.problem(n.Line, n.Column, path, format, args...)
}

// atErr reports a problem that callers may also test for with errors.Is.
func (d *decoder) atErr(n *yaml.Node, path string, sentinel error, format string, args ...any) {
	d.at(n, path, format, args...)
	d.probs[len(d.probs)-1].Err = sentinel
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + ": " + key
}

// fields checks that n is a mapping of known keys without duplicates and
// calls each key's handler with its value. Required keys that are missing are
// reported against the mapping.
func (d *decoder) fields(n *yaml.Node, path string, handlers map[string]func(*yaml.Node), required ...string) bool {
	if !d.kind(n, path, yaml.MappingNode, "a mapping of keys to values") {
		return false
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		if k.Kind != yaml.ScalarNode {
			d.at(k, path, "keys must be plain words")
			continue
		}
		if seen[key] {
			d.at(k, join(path, key), "set twice; keep one")
			continue
		}
		seen[key] = true
		h, ok := handlers[key]
		if !ok {
			d.at(k, path, "unknown key %q%s", key, suggest(key, handlers))
			continue
		}
		if v.Kind == yaml.AliasNode {
			d.at(v, join(path, key), "YAML aliases are not supported; write the value out")
			continue
		}
		h(v)
	}
	for _, r := range required {
		if !seen[r] {
			d.at(n, path, "%q is required", r)
		}
	}
	return true
}

// keyOf returns the key that value v has in mapping m: a problem of a whole
// section reads best against its heading.
func keyOf(m, v *yaml.Node) *yaml.Node {
	for i := 1; i < len(m.Content); i += 2 {
		if m.Content[i] == v {
			return m.Content[i-1]
		}
	}
	return v
}

// suggest names the closest known key, or lists them all.
func suggest(key string, known map[string]func(*yaml.Node)) string {
	var names []string
	for k := range known {
		names = append(names, k)
	}
	sort.Strings(names)
	best, bestDist := "", 3
	for _, k := range names {
		if dist := editDistance(key, k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best != "" {
		return fmt.Sprintf(": did you mean %q?", best)
	}
	return "; valid keys here: " + strings.Join(names, ", ")
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var kindNames = map[yaml.Kind]string{
	yaml.MappingNode: "a mapping", yaml.SequenceNode: "a list", yaml.ScalarNode: "a single value",
	yaml.AliasNode: "an alias", yaml.DocumentNode: "a document",
}

func (d *decoder) kind(n *yaml.Node, path string, want yaml.Kind, wantText string) bool {
	if n.Kind == want {
		return true
	}
	if n.Kind == yaml.AliasNode {
		d.at(n, path, "YAML aliases are not supported; write the value out")
		return false
	}
	d.at(n, path, "must be %s, not %s", wantText, kindNames[n.Kind])
	return false
}

func (d *decoder) scalar(n *yaml.Node, path string) (string, bool) {
	if !d.kind(n, path, yaml.ScalarNode, "a single value") {
		return "", false
	}
	return n.Value, true
}

// str reads text. An empty value (key with nothing after it) is "".
func (d *decoder) str(n *yaml.Node, path string, dst *string) bool {
	v, ok := d.scalar(n, path)
	if !ok {
		return false
	}
	switch n.Tag {
	case "!!str":
	case "!!null":
		v = ""
	default:
		d.at(n, path, "must be text; quote it: \"%s\"", v)
		return false
	}
	*dst = v
	return true
}

func (d *decoder) integer(n *yaml.Node, path string, lo, hi int64) (int64, bool) {
	v, ok := d.scalar(n, path)
	if !ok {
		return 0, false
	}
	if n.Tag != "!!int" {
		d.at(n, path, "%q must be an integer (a whole number such as %d)", v, max(lo, 0))
		return 0, false
	}
	i, err := strconv.ParseInt(strings.ReplaceAll(v, "_", ""), 0, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		d.at(n, path, "%q must be an integer (a whole number such as %d)", v, max(lo, 0))
		return 0, false
	}
	if err != nil || i < lo || i > hi {
		d.at(n, path, "%s is out of range (%d to %d)", v, lo, hi)
		return 0, false
	}
	return i, true
}

func (d *decoder) intField(n *yaml.Node, path string, lo, hi int, dst *int) {
	if i, ok := d.integer(n, path, int64(lo), int64(hi)); ok {
		*dst = int(i)
	}
}

func (d *decoder) uint32Field(n *yaml.Node, path string, dst *uint32) bool {
	i, ok := d.integer(n, path, 0, math.MaxUint32)
	if ok {
		*dst = uint32(i)
	}
	return ok
}

func (d *decoder) float(n *yaml.Node, path string, lo, hi float64, dst *float64) {
	v, ok := d.scalar(n, path)
	if !ok {
		return
	}
	if n.Tag != "!!int" && n.Tag != "!!float" {
		d.at(n, path, "%q must be a number", v)
		return
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || f < lo || f > hi {
		d.at(n, path, "%s is out of range (%g to %g)", v, lo, hi)
		return
	}
	*dst = f
}

func (d *decoder) duration(n *yaml.Node, path string, lo, hi time.Duration, dst *Duration) {
	v, ok := d.scalar(n, path)
	if !ok {
		return
	}
	dur, err := time.ParseDuration(v)
	if err != nil {
		d.at(n, path, "%q is not a duration; write it with a unit, such as 500ms, 5s or 2m", v)
		return
	}
	if dur < lo || dur > hi {
		d.at(n, path, "%v is out of range (%v to %v)", dur, lo, hi)
		return
	}
	*dst = Duration(dur)
}

// endpoint reads "udp://IP:PORT".
func (d *decoder) endpoint(n *yaml.Node, path string, dst *Endpoint) bool {
	v, ok := d.scalar(n, path)
	if !ok {
		return false
	}
	ep, err := ParseEndpoint(v)
	if err != nil {
		d.at(n, path, "%q: %v", v, err)
		return false
	}
	*dst = ep
	return true
}

// ParseEndpoint reads "udp://IP:PORT" (IPv6 in brackets).
func ParseEndpoint(s string) (Endpoint, error) {
	rest, ok := strings.CutPrefix(s, "udp://")
	if !ok {
		if i := strings.Index(s, "://"); i >= 0 {
			return Endpoint{}, fmt.Errorf("only udp:// is supported, not %s://", s[:i])
		}
		return Endpoint{}, fmt.Errorf("write it as udp://IP:PORT, e.g. \"udp://%s\"", s)
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		return Endpoint{}, fmt.Errorf("write it as udp://IP:PORT (IPv6 in brackets: udp://[2001:db8::1]:5004)")
	}
	p, err := strconv.ParseUint(port, 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return Endpoint{}, fmt.Errorf("port %q is not a number; write udp://IP:PORT such as udp://192.0.2.10:5004", port)
	}
	if err != nil || p < 1 || p > 65535 {
		return Endpoint{}, fmt.Errorf("port out of range (1-65535)")
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || addr.Zone() != "" {
		return Endpoint{}, fmt.Errorf("%q is not an IP address; use an IP address such as udp://192.0.2.10:%d", host, p)
	}
	return Endpoint{Addr: netip.AddrPortFrom(addr.Unmap(), uint16(p))}, nil
}

var (
	streamName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	unitName   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
)

func (d *decoder) root(n *yaml.Node, c *Config) {
	d.rootNode = n
	var versionSeen bool
	d.fields(n, "", map[string]func(*yaml.Node){
		"version": func(v *yaml.Node) {
			versionSeen = true
			if i, ok := d.integer(v, "version", math.MinInt32, math.MaxInt32); ok {
				if i != 1 {
					d.at(v, "version", "only version 1 is supported, not %d", i)
				}
				c.Version = int(i)
			}
		},
		"unit":    func(v *yaml.Node) { d.unit(v, c) },
		"status":  func(v *yaml.Node) { d.status(v, c) },
		"control": func(v *yaml.Node) { d.control(v, c) },
		"media":   func(v *yaml.Node) { d.media(v, c) },
		"streams": func(v *yaml.Node) {
			d.streamsNode = keyOf(n, v)
			d.streams(v, c)
		},
		"test_sources": func(v *yaml.Node) { d.testSources(v, c) },
		"hw":           func(v *yaml.Node) { d.hw(v, c) },
		"watchdog":     func(v *yaml.Node) { d.watchdog(v, c) },
		"pair":         func(v *yaml.Node) { d.pair(v, c) },
	}, "unit")
	if n.Kind == yaml.MappingNode && !versionSeen {
		d.at(n, "", "\"version: 1\" is required at the top (only version 1 is supported), so that later releases can read this file")
	}
}

func (d *decoder) unit(n *yaml.Node, c *Config) {
	d.fields(n, "unit", map[string]func(*yaml.Node){
		"name": func(v *yaml.Node) {
			if d.str(v, "unit: name", &c.Unit.Name) && !unitName.MatchString(c.Unit.Name) {
				d.at(v, "unit: name", "%q: use 1 to 63 lowercase letters, digits and dashes", c.Unit.Name)
			}
		},
		"state_dir": func(v *yaml.Node) {
			if d.str(v, "unit: state_dir", &c.Unit.StateDir) && c.Unit.StateDir == "" {
				d.at(v, "unit: state_dir", "must not be empty")
			}
		},
	}, "name")
}

func (d *decoder) status(n *yaml.Node, c *Config) {
	st := &c.Status
	d.fields(n, "status", map[string]func(*yaml.Node){
		"listen": func(v *yaml.Node) {
			if d.str(v, "status: listen", &st.Listen) {
				if err := ValidateListen(st.Listen); err != nil {
					d.at(v, "status: listen", "%v", err)
				}
			}
		},
		"max_connections": func(v *yaml.Node) { d.intField(v, "status: max_connections", 1, 4096, &st.MaxConnections) },
		"idle_timeout": func(v *yaml.Node) {
			d.duration(v, "status: idle_timeout", time.Second, 10*time.Minute, &st.IdleTimeout)
		},
		"tokens": func(v *yaml.Node) { d.tokens(v, st) },
		"tls":    func(v *yaml.Node) { d.tls(keyOf(n, v), v, st) },
	})
}

// ValidateListen checks a status API address, IP:PORT, as status.listen and
// the --listen flag both give it.
func ValidateListen(s string) error {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return fmt.Errorf("%q: write it as IP:PORT, such as 127.0.0.1:8080 or 0.0.0.0:8080", s)
	}
	if ap.Port() == 0 {
		return errors.New("port 0 is not allowed; pick a port such as 8080")
	}
	return nil
}

// maxSocketPath is the longest path a unix socket can be bound to on Linux:
// sun_path is 108 bytes, one of them the terminating NUL.
const maxSocketPath = 107

func (d *decoder) control(n *yaml.Node, c *Config) {
	d.fields(n, "control", map[string]func(*yaml.Node){
		"socket": func(v *yaml.Node) {
			p := &c.Control.Socket
			switch {
			case !d.str(v, "control: socket", p):
			case *p == "":
				d.at(v, "control: socket", "must not be empty; give a path such as /run/appliance/control.sock")
			case strings.ContainsRune(*p, 0):
				d.at(v, "control: socket", "must not contain a NUL byte")
			case len(*p) > maxSocketPath:
				d.at(v, "control: socket", "%d bytes is longer than a unix socket path can be (%d); use a shorter path", len(*p), maxSocketPath)
			case strings.HasSuffix(*p, "/"):
				d.at(v, "control: socket", "%q names a directory; give the socket's file name too, such as %scontrol.sock", *p, *p)
			}
		},
	})
}

func (d *decoder) media(n *yaml.Node, c *Config) {
	m := &c.Media
	var hangNode, reportNode, progressNode *yaml.Node
	d.fields(n, "media", map[string]func(*yaml.Node){
		"workers": func(v *yaml.Node) {
			d.workersNode = v
			if i, ok := d.integer(v, "media: workers", 1, 64); ok {
				m.Workers = int(i)
			} else {
				d.workersBad = true
			}
		},
		"hang_timeout": func(v *yaml.Node) {
			hangNode = v
			d.duration(v, "media: hang_timeout", 50*time.Millisecond, time.Minute, &m.HangTimeout)
		},
		"report_interval": func(v *yaml.Node) {
			reportNode = v
			d.duration(v, "media: report_interval", 10*time.Millisecond, 250*time.Millisecond, &m.ReportInterval)
		},
		"standby_ring": func(v *yaml.Node) { d.duration(v, "media: standby_ring", 0, 10*time.Second, &m.StandbyRing) },
		"output_alarm_after": func(v *yaml.Node) {
			d.duration(v, "media: output_alarm_after", 0, time.Minute, &m.OutputAlarmAfter)
		},
		"progress_interval": func(v *yaml.Node) {
			progressNode = v
			d.duration(v, "media: progress_interval", time.Millisecond, time.Second, &m.ProgressInterval)
		},
		"batch_window": func(v *yaml.Node) {
			d.duration(v, "media: batch_window", 0, 2*time.Millisecond, &m.BatchWindow)
		},
		"restart": func(v *yaml.Node) { d.restart(v, "media: restart", &m.Restart) },
	})
	if m.ProgressInterval > m.ReportInterval {
		at := progressNode
		if at == nil {
			at = reportNode
		}
		if at != nil {
			d.at(at, "media: progress_interval", "%v is longer than the report interval (%v); progress goes to the parent at least as often as reports: lower it", m.ProgressInterval, m.ReportInterval)
		}
	}
	if m.HangTimeout < 2*m.ReportInterval {
		at := hangNode
		if at == nil {
			at = reportNode
		}
		if at != nil {
			d.at(at, "media: hang_timeout", "%v is less than two report intervals (%v); a healthy worker would be killed as hung", m.HangTimeout, 2*m.ReportInterval)
		}
	}
}

func (d *decoder) restart(n *yaml.Node, path string, r *Restart) {
	var maxNode *yaml.Node
	d.fields(n, path, map[string]func(*yaml.Node){
		"intensity": func(v *yaml.Node) { d.intField(v, path+": intensity", 1, 1000, &r.Intensity) },
		"period":    func(v *yaml.Node) { d.duration(v, path+": period", time.Millisecond, 24*time.Hour, &r.Period) },
		"backoff":   func(v *yaml.Node) { d.duration(v, path+": backoff", 0, time.Hour, &r.Backoff) },
		"backoff_max": func(v *yaml.Node) {
			maxNode = v
			d.duration(v, path+": backoff_max", 0, time.Hour, &r.BackoffMax)
		},
	})
	if r.BackoffMax < r.Backoff {
		at := maxNode
		if at == nil {
			at = n
		}
		d.at(at, path+": backoff_max", "%v is less than backoff (%v)", r.BackoffMax, r.Backoff)
	}
}

func (d *decoder) streams(n *yaml.Node, c *Config) {
	if !d.kind(n, "streams", yaml.SequenceNode, "a list of streams") {
		return
	}
	names := map[string]int{} // name -> index of first use
	for i, sn := range n.Content {
		s := Stream{ClockRate: 90000}
		path := fmt.Sprintf("streams[%d]", i)
		if sn.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(sn.Content); j += 2 {
				if sn.Content[j].Value == "name" && sn.Content[j+1].Kind == yaml.ScalarNode && streamName.MatchString(sn.Content[j+1].Value) {
					if _, dup := names[sn.Content[j+1].Value]; !dup {
						path = sn.Content[j+1].Value
					} else {
						path = fmt.Sprintf("streams[%d] (%s)", i, sn.Content[j+1].Value)
					}
				}
			}
		}
		at := streamNodes{path: path}
		ok := d.fields(sn, path, map[string]func(*yaml.Node){
			"name": func(v *yaml.Node) {
				if !d.str(v, join(path, "name"), &s.Name) {
					return
				}
				if !streamName.MatchString(s.Name) {
					d.at(v, join(path, "name"), "%q: use 1 to 63 lowercase letters, digits, dashes and underscores", s.Name)
				} else if first, dup := names[s.Name]; dup {
					d.at(v, join(path, "name"), "%q is already the name of streams[%d]; stream names must be unique", s.Name, first)
				} else {
					names[s.Name] = i
				}
			},
			"input": func(v *yaml.Node) {
				if d.endpoint(v, join(path, "input"), &s.Input) {
					at.input = v
				}
			},
			"outputs": func(v *yaml.Node) {
				if !d.kind(v, join(path, "outputs"), yaml.SequenceNode, "a list of udp://IP:PORT") {
					return
				}
				if len(v.Content) == 0 {
					d.at(v, join(path, "outputs"), "no outputs; give at least one udp://IP:PORT")
				}
				if len(v.Content) > 16 {
					d.at(v, join(path, "outputs"), "%d outputs; at most 16 per stream", len(v.Content))
				}
				seen := map[netip.AddrPort]bool{}
				for k, on := range v.Content {
					var ep Endpoint
					op := join(path, fmt.Sprintf("outputs[%d]", k))
					if !d.endpoint(on, op, &ep) {
						continue
					}
					if seen[ep.Addr] {
						d.at(on, op, "%s is listed twice", ep)
						continue
					}
					seen[ep.Addr] = true
					s.Outputs = append(s.Outputs, ep)
					at.outputs = append(at.outputs, on)
				}
			},
			"clock_rate": func(v *yaml.Node) { d.intField(v, join(path, "clock_rate"), 1000, 1000000, &s.ClockRate) },
			"input_mode": func(v *yaml.Node) {
				at.inputMode = v
				if !d.str(v, join(path, "input_mode"), &s.InputMode) {
					at.pairBad = true
				} else if s.InputMode != InputDual && s.InputMode != InputVIP {
					d.at(v, join(path, "input_mode"), "%q: use %s (the source sends to both units) or %s (the input address moves to the stream's owner)", s.InputMode, InputDual, InputVIP)
					s.InputMode, at.pairBad = "", true
				}
			},
			"vip": func(v *yaml.Node) {
				at.vip = v
				if !d.vip(v, join(path, "vip"), &s, &at) {
					at.pairBad = true
				}
			},
			"prefer": func(v *yaml.Node) {
				at.prefer = v
				if !d.str(v, join(path, "prefer"), &s.Prefer) {
					at.pairBad = true
				} else if !unitName.MatchString(s.Prefer) {
					d.at(v, join(path, "prefer"), "%q is not a unit name; give this unit's unit: name or pair: peer_name", s.Prefer)
					s.Prefer, at.pairBad = "", true
				}
			},
			"priority": func(v *yaml.Node) {
				at.priority = v
				if i, ok := d.integer(v, join(path, "priority"), MinPriority, MaxPriority); ok {
					s.Priority = int(i)
				}
			},
			"rewrite": func(v *yaml.Node) {
				r := &Rewrite{}
				d.fields(v, join(path, "rewrite"), map[string]func(*yaml.Node){
					"ssrc": func(x *yaml.Node) {
						var ssrc uint32
						if d.uint32Field(x, join(path, "rewrite: ssrc"), &ssrc) {
							r.SSRC = &ssrc
						}
					},
				})
				s.Rewrite = r
			},
		}, "name", "input", "outputs")
		if !ok {
			continue
		}
		c.Streams = append(c.Streams, s)
		d.streamAt = append(d.streamAt, at)
	}
}

func (d *decoder) testSources(n *yaml.Node, c *Config) {
	if !d.kind(n, "test_sources", yaml.SequenceNode, "a list of test sources") {
		return
	}
	for i, tn := range n.Content {
		ts := TestSource{PPS: 100, Size: 1328, SSRC: 0x5eed}
		path := fmt.Sprintf("test_sources[%d]", i)
		if d.fields(tn, path, map[string]func(*yaml.Node){
			"to":   func(v *yaml.Node) { d.endpoint(v, join(path, "to"), &ts.To) },
			"pps":  func(v *yaml.Node) { d.intField(v, join(path, "pps"), 1, 100000, &ts.PPS) },
			"size": func(v *yaml.Node) { d.intField(v, join(path, "size"), 12, 1500, &ts.Size) },
			"ssrc": func(v *yaml.Node) { d.uint32Field(v, join(path, "ssrc"), &ts.SSRC) },
		}, "to") {
			c.TestSources = append(c.TestSources, ts)
		}
	}
}

var ifName = regexp.MustCompile(`^[^/\s:]+$`)

// validIfName follows the kernel's dev_valid_name: at most 15 bytes (IFNAMSIZ
// less the NUL), not "." or "..", no '/', ':' or whitespace.
func validIfName(s string) bool {
	return len(s) <= 15 && s != "." && s != ".." && ifName.MatchString(s)
}

func (d *decoder) hw(n *yaml.Node, c *Config) {
	h := &c.HW
	var tempNode *yaml.Node
	d.fields(n, "hw", map[string]func(*yaml.Node){
		"sysfs": func(v *yaml.Node) {
			if d.str(v, "hw: sysfs", &h.Sysfs) && !filepath.IsAbs(h.Sysfs) {
				d.at(v, "hw: sysfs", "%q must be an absolute path, such as /sys", h.Sysfs)
			}
		},
		"temperature": func(v *yaml.Node) {
			tempNode = v
			t := &h.Temperature
			d.fields(v, "hw: temperature", map[string]func(*yaml.Node){
				"warn_c":         func(x *yaml.Node) { d.float(x, "hw: temperature: warn_c", -50, 200, &t.WarnC) },
				"crit_c":         func(x *yaml.Node) { d.float(x, "hw: temperature: crit_c", -50, 200, &t.CritC) },
				"clear_margin_c": func(x *yaml.Node) { d.float(x, "hw: temperature: clear_margin_c", 0, 50, &t.ClearMarginC) },
			})
		},
		"links": func(v *yaml.Node) {
			if !d.kind(v, "hw: links", yaml.SequenceNode, "a list of links") {
				return
			}
			seen := map[string]bool{}
			for i, ln := range v.Content {
				l := Link{Role: "media"}
				path := fmt.Sprintf("hw: links[%d]", i)
				var nameNode *yaml.Node
				if !d.fields(ln, path, map[string]func(*yaml.Node){
					"name": func(x *yaml.Node) {
						nameNode = x
						if d.str(x, join(path, "name"), &l.Name) && !validIfName(l.Name) {
							d.at(x, join(path, "name"), "%q is not an interface name (1 to 15 bytes, no '/', ':' or spaces); see `ip link`", l.Name)
						}
					},
					"role": func(x *yaml.Node) {
						if d.str(x, join(path, "role"), &l.Role) && !contains(linkRoles, l.Role) {
							d.at(x, join(path, "role"), "%q: use one of %s", l.Role, strings.Join(linkRoles, ", "))
						}
					},
				}, "name") {
					continue
				}
				if nameNode != nil && seen[l.Name] {
					d.at(nameNode, join(path, "name"), "%s is listed twice", l.Name)
					continue
				}
				seen[l.Name] = true
				h.Links = append(h.Links, l)
			}
		},
		"link_debounce": func(v *yaml.Node) { d.duration(v, "hw: link_debounce", 0, 10*time.Second, &h.LinkDebounce) },
		"poll_interval": func(v *yaml.Node) {
			d.duration(v, "hw: poll_interval", 100*time.Millisecond, time.Minute, &h.PollInterval)
		},
	})
	if t := h.Temperature; t.WarnC >= t.CritC && tempNode != nil {
		d.at(tempNode, "hw: temperature", "warn_c (%g) must be below crit_c (%g)", t.WarnC, t.CritC)
	}
}

func (d *decoder) watchdog(n *yaml.Node, c *Config) {
	w := &c.Watchdog
	d.fields(n, "watchdog", map[string]func(*yaml.Node){
		"device": func(v *yaml.Node) {
			if d.str(v, "watchdog: device", &w.Device) && w.Device != "" && !filepath.IsAbs(w.Device) {
				d.at(v, "watchdog: device", "%q must be an absolute path such as /dev/watchdog, or \"\" for none", w.Device)
			}
		},
		"timeout": func(v *yaml.Node) { d.duration(v, "watchdog: timeout", 2*time.Second, 10*time.Minute, &w.Timeout) },
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
