package failover

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Config is what a unit knows about its pair. Both units must be given the
// same agreement fields (see Digest); Priority, Preempt, PreemptHold, Paths
// and Capacity are this unit's own.
type Config struct {
	Self, Peer       string
	Streams          []Stream // sorted by Name: a stream's index is its position
	Paths            int      // heartbeat paths, at least 1
	Heartbeat        time.Duration
	DetectMultiplier int // at least 2: a lease is used up to one heartbeat before it ends
	Witness          bool
	Preempt          bool
	PreemptHold      time.Duration
	Capacity         Capacity
}

// Stream is one stream of the pair's list.
type Stream struct {
	Name     string
	Prefer   string // the unit that claims it at start and gets it back by preemption; "" is the rank-0 unit
	VIP      bool   // input mode vip (the input follows a virtual IP); false is dual
	Priority int    // higher is taken over first when capacity is short
}

// Capacity is how much a unit may forward; zero fields mean no limit.
type Capacity struct {
	Streams    int
	BitrateBPS uint64
}

// ErrConfig is wrapped by every error New returns for a bad Config.
var ErrConfig = errors.New("pair config")

// Detect is D, the detection time: how long a silent peer takes to be declared lost.
func (c Config) Detect() time.Duration { return c.Heartbeat * time.Duration(c.DetectMultiplier) }

// Digest is the agreement digest: the first 8 bytes of SHA-256 over the
// agreement text (docs/pair-protocol.md, Agreement). Both units compute the
// same value from the same pair config whichever of them computes it.
func Digest(cfg Config) uint64 {
	sum := sha256.Sum256([]byte(agreementText(cfg)))
	return binary.BigEndian.Uint64(sum[:8])
}

func agreementText(cfg Config) string {
	a, b := cfg.Self, cfg.Peer
	if b < a {
		a, b = b, a
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "pair-protocol %d\nunits %s %s\nheartbeat %d\ndetect-multiplier %d\nwitness %t\n",
		Version, a, b, cfg.Heartbeat.Nanoseconds(), cfg.DetectMultiplier, cfg.Witness)
	streams := append([]Stream(nil), cfg.Streams...)
	sort.Slice(streams, func(i, j int) bool { return streams[i].Name < streams[j].Name })
	for _, s := range streams {
		mode := "dual"
		if s.VIP {
			mode = "vip"
		}
		prefer := s.Prefer
		if prefer == "" {
			prefer = a
		}
		fmt.Fprintf(&sb, "stream %s %s %s\n", s.Name, mode, prefer)
	}
	return sb.String()
}

func (c Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Self == "" || c.Peer == "" {
		bad("both unit names are needed: set pair.self and pair.peer")
	} else if c.Self == c.Peer {
		bad("the unit and its peer are both named %q: give each unit its own name", c.Self)
	}
	if c.Paths < 1 || c.Paths > 255 {
		bad("%d heartbeat paths: configure 1 to 255", c.Paths)
	}
	if c.Heartbeat <= 0 {
		bad("heartbeat %v: set a positive pair.heartbeat", c.Heartbeat)
	}
	if c.DetectMultiplier < 2 {
		bad("detect multiplier %d: set pair.detect_multiplier to 2 or more", c.DetectMultiplier)
	}
	if c.Preempt && c.PreemptHold <= 0 {
		bad("preempt without a hold: set pair.preempt_hold, or streams would move back and forth")
	}
	if c.Capacity.Streams < 0 {
		bad("capacity of %d streams: set 0 (no limit) or more", c.Capacity.Streams)
	}
	if len(c.Streams) > 1<<16 {
		bad("%d streams: at most 65536 fit the protocol", len(c.Streams))
	}
	for i, s := range c.Streams {
		if s.Name == "" {
			bad("stream %d has no name", i)
		}
		if i > 0 && c.Streams[i-1].Name >= s.Name {
			if c.Streams[i-1].Name == s.Name {
				bad("stream %q is listed twice: stream names must be unique", s.Name)
			} else {
				bad("streams %q and %q out of order: pass the streams sorted by name (the index is the position)", c.Streams[i-1].Name, s.Name)
			}
		}
		if s.Prefer != "" && s.Prefer != c.Self && s.Prefer != c.Peer {
			bad("stream %q prefers %q, which is neither %q nor %q", s.Name, s.Prefer, c.Self, c.Peer)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
}
