// Package config reads the unit's one YAML file: versioned, decoded strictly
// (an unknown key is an error), validated as a whole, with every problem
// reported at once with its line and what to do about it.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"strings"
	"time"
)

// MaxSize is the largest config file accepted.
const MaxSize = 1 << 20

// Stream limits. Past them a worker's reports outgrow what the parent reads
// and the parent spends its time on bookkeeping, so check refuses the config
// rather than let run fail minutes later.
const (
	MaxStreams          = 4096 // streams on one unit
	MaxStreamsPerWorker = 1024 // streams on one worker process
)

// Env is what the config is checked against beyond its own text: facts about
// the machine the unit runs on. The zero Env skips the checks that need them.
type Env struct {
	// LocalAddrs are the machine's own addresses: an output sent to one of
	// them reaches an input bound to the unspecified address.
	LocalAddrs []netip.Addr
	// NoFileLimit is the hard RLIMIT_NOFILE the unit will run with; 0 means
	// unknown, and the descriptor budget is not checked.
	NoFileLimit uint64
}

// ErrNotRegular means the config path names something other than a regular
// file, such as a directory or a named pipe.
var ErrNotRegular = errors.New("not a regular file")

// Config is the whole configuration of a unit.
type Config struct {
	Version     int
	Unit        Unit
	Status      Status
	Control     Control
	Media       Media
	Streams     []Stream
	TestSources []TestSource
	HW          HW
	Watchdog    Watchdog
	// Pair is the paired unit and how to reach it; nil when the file has no
	// pair section, and the unit runs alone.
	Pair *Pair
}

// Unit names the unit and where it keeps state.
type Unit struct {
	Name     string
	StateDir string
}

// Status is the HTTP API.
type Status struct {
	Listen         string
	MaxConnections int      // open API connections at once; more wait to be accepted
	IdleTimeout    Duration // an idle API connection is closed after this long
	// Tokens are who may act through the API (reading needs none). With
	// none, every action is refused.
	Tokens []Token
	// TLS serves the API over HTTPS: both files, or neither for plain HTTP.
	TLS TLS
}

// Token is one client that may act through the API: a name for the log and
// the SHA-256 of its bearer token, never the token itself. Format and
// LogValue leave the hash out too.
type Token struct {
	Name   string
	SHA256 [32]byte `json:"-" yaml:"-"`
}

// Format prints the token's name only, whatever the verb.
func (t Token) Format(f fmt.State, _ rune) { io.WriteString(f, t.String()) }

// String names the token without its hash.
func (t Token) String() string { return "{Name:" + t.Name + " SHA256:(hidden)}" }

// LogValue logs the token's name only.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.Name) }

// TLS is the certificate (with any intermediates) and private key the API
// serves HTTPS with, as PEM files.
type TLS struct {
	Cert string
	Key  string
}

// Control is the local socket that actions (reload, stream roles) arrive on.
type Control struct {
	Socket string // unix socket path, absolute or relative to the working directory
}

// Media sizes the worker processes and their supervision.
type Media struct {
	Workers        int
	HangTimeout    Duration
	ReportInterval Duration
	// StandbyRing is how much recent input a standby stream keeps, so that
	// it can later forward from an earlier sequence number.
	StandbyRing Duration
	// OutputAlarmAfter is how long an output must keep failing before its
	// health condition is raised, so that one lost send raises nothing.
	OutputAlarmAfter Duration
	// ProgressInterval is how often workers tell the parent how far each
	// stream has got: what the peer needs to take over without a gap, so it
	// is sent more often than the full reports.
	ProgressInterval Duration
	// BatchWindow is the longest a packet may wait in its input so that a
	// worker reads it together with others (docs/batching.md); 0 reads
	// every packet as it arrives.
	BatchWindow Duration
	Restart     Restart
}

// Restart is a supervisor's restart rule.
type Restart struct {
	Intensity  int
	Period     Duration
	Backoff    Duration
	BackoffMax Duration
}

// Stream is one relayed stream.
type Stream struct {
	Name      string
	Input     Endpoint
	Outputs   []Endpoint
	ClockRate int
	Rewrite   *Rewrite

	// The rest is set only when the unit has a pair section.

	// InputMode is how the standby receives the input too: InputDual (the
	// source sends to both units) or InputVIP (the input address moves to
	// the stream's owner).
	InputMode string
	VIP       *VIP   // with InputVIP only
	Prefer    string // the unit that owns the stream while both are healthy
	Priority  int    // higher is kept first when a unit cannot carry every stream
}

// VIP is an address that moves with a stream's owner.
type VIP struct {
	Address   netip.Prefix // the address and its prefix length, as put on Interface
	Interface string
}

// Rewrite makes the output keep one SSRC and continuous numbering.
type Rewrite struct {
	SSRC *uint32
}

// TestSource is a built-in paced RTP generator.
type TestSource struct {
	To   Endpoint
	PPS  int
	Size int
	SSRC uint32
}

// HW configures the hardware monitor.
type HW struct {
	Sysfs        string
	Temperature  Temperature
	Links        []Link
	LinkDebounce Duration
	PollInterval Duration // how often sensors and power supplies are read
}

// Temperature thresholds, in °C, with the hysteresis margin for clearing.
type Temperature struct {
	WarnC        float64
	CritC        float64
	ClearMarginC float64
}

// Link is a NIC the unit watches.
type Link struct {
	Name string
	Role string
}

// Link roles.
var linkRoles = []string{"media", "pair", "management"}

// Watchdog configures the hardware watchdog. An empty Device means none.
type Watchdog struct {
	Device  string
	Timeout Duration
}

// Pair is the other unit of a pair and how the two keep in touch. The two
// units share one stream list; each stream has one owner at a time.
type Pair struct {
	PeerName string     // the other unit's unit.name
	Paths    []PairPath // heartbeats go over every one of them
	KeyFile  string
	// Key is the shared secret read from KeyFile by Load and LoadEnv (nil
	// after Parse). Pair's Format and LogValue leave it out, and no problem
	// or summary shows it.
	Key              []byte   `json:"-" yaml:"-"`
	Heartbeat        Duration // how often a heartbeat goes out on each path
	DetectMultiplier int      // the peer is dead after this many heartbeats missed on every path
	Witness          netip.AddrPort
	// Preempt moves streams back to their preferred unit once it has been
	// back and healthy for PreemptHold.
	Preempt     bool
	PreemptHold Duration
	Capacity    Capacity
}

// PairPath is one heartbeat path: this unit's address and the peer's.
type PairPath struct {
	Local, Remote netip.AddrPort
}

// Capacity is what a unit takes over at most; 0 is no limit.
type Capacity struct {
	Streams    int
	BitrateBPS uint64
}

// Format prints the pair without its key, whatever the verb, so that
// printing a Config or a Pair cannot leak the secret.
func (p Pair) Format(f fmt.State, _ rune) { io.WriteString(f, p.String()) }

// String describes the pair without its key.
func (p Pair) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "{PeerName:%s Paths:[", p.PeerName)
	for i, pp := range p.Paths {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s->%s", pp.Local, pp.Remote)
	}
	fmt.Fprintf(&b, "] KeyFile:%s Key:(%d bytes, hidden) Heartbeat:%s DetectMultiplier:%d Witness:%s Preempt:%t PreemptHold:%s Capacity:{Streams:%d BitrateBPS:%d}}",
		p.KeyFile, len(p.Key), p.Heartbeat, p.DetectMultiplier, witnessText(p.Witness), p.Preempt, p.PreemptHold, p.Capacity.Streams, p.Capacity.BitrateBPS)
	return b.String()
}

// LogValue logs the pair without its key.
func (p Pair) LogValue() slog.Value {
	paths := make([]string, len(p.Paths))
	for i, pp := range p.Paths {
		paths[i] = pp.Local.String() + "->" + pp.Remote.String()
	}
	return slog.GroupValue(
		slog.String("peer_name", p.PeerName),
		slog.Any("paths", paths),
		slog.String("key_file", p.KeyFile),
		slog.Duration("heartbeat", time.Duration(p.Heartbeat)),
		slog.Int("detect_multiplier", p.DetectMultiplier),
		slog.String("witness", witnessText(p.Witness)),
		slog.Bool("preempt", p.Preempt),
		slog.Duration("preempt_hold", time.Duration(p.PreemptHold)),
		slog.Int("capacity_streams", p.Capacity.Streams),
		slog.Uint64("capacity_bitrate_bps", p.Capacity.BitrateBPS),
	)
}

func witnessText(w netip.AddrPort) string {
	if !w.IsValid() {
		return "none"
	}
	return w.String()
}

// Duration is a time.Duration written as "500ms", "5s", "2m" in the file.
type Duration time.Duration

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes the duration as Go does, e.g. "1m30s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Endpoint is a UDP address, written "udp://IP:PORT".
type Endpoint struct {
	Addr netip.AddrPort
}

func (e Endpoint) String() string { return "udp://" + e.Addr.String() }

// Problem is one thing wrong with a config.
type Problem struct {
	Line, Column int
	Path         string // where, e.g. "cam1: outputs[0]" or "media: workers"
	Msg          string // what is wrong and what to do
	Err          error  // a sentinel such as ErrKeyFileTooOpen, when a caller may branch on it; usually nil
}

// Error lists every problem found in a config file.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s:%d:%d: ", e.File, p.Line, p.Column)
		if p.Path != "" {
			b.WriteString(p.Path + ": ")
		}
		b.WriteString(p.Msg)
	}
	return b.String()
}

// Unwrap gives the problems' sentinels to errors.Is.
func (e *Error) Unwrap() []error {
	var errs []error
	for _, p := range e.Problems {
		if p.Err != nil {
			errs = append(errs, p.Err)
		}
	}
	return errs
}

// Load reads and checks the config file at path, without facts about the
// machine: LoadEnv(path, Env{}).
func Load(path string) (*Config, error) { return LoadEnv(path, Env{}) }

// LoadEnv reads the config file at path and checks it against env, and
// reads the pair's key file into Pair.Key. Only a regular file is read: a
// named pipe or a device could block the caller (a reload) forever or never
// end.
func LoadEnv(path string, env Env) (*Config, error) {
	f, err := openNonblocking(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("config: %s is %s, %w; give the path of the YAML file itself", path, describeMode(fi.Mode()), ErrNotRegular)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: reading %s: %w", path, err)
	}
	return parse(path, data, env, true)
}

func describeMode(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "not a plain file"
}

//go:embed default.yaml
var defaultYAML []byte

// Default returns the embedded demo config: it runs on a fresh machine without root.
func Default() *Config {
	c, err := Parse("default.yaml", defaultYAML)
	if err != nil {
		panic("config: the embedded default is invalid: " + err.Error())
	}
	return c
}

// DefaultYAML returns the text of the embedded demo config.
func DefaultYAML() []byte { return append([]byte(nil), defaultYAML...) }

// Summary describes the config in one line.
func (c *Config) Summary() string {
	outputs := 0
	for _, s := range c.Streams {
		outputs += len(s.Outputs)
	}
	s := fmt.Sprintf("unit %s: %s (%s), %s, %s, status %s",
		c.Unit.Name, plural(len(c.Streams), "stream"), plural(outputs, "output"),
		plural(c.Media.Workers, "worker"), plural(len(c.TestSources), "test source"), c.Status.Listen)
	if c.Status.TLS.Cert != "" {
		s += " (https)"
	}
	if n := len(c.Status.Tokens); n > 0 {
		s += ", " + plural(n, "API token")
	}
	if c.Pair != nil {
		s += fmt.Sprintf(", paired with %s over %s", c.Pair.PeerName, plural(len(c.Pair.Paths), "path"))
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
