package failover

import "time"

// Version is the pair protocol version (docs/pair-protocol.md).
const Version = 1

// MaxEntries is how many stream entries one message carries, so that a
// message fits one unfragmented datagram.
const MaxEntries = 32

// UnitState is what a unit tells its peer about itself.
type UnitState uint8

// Unit states.
const (
	Starting UnitState = 1 // claims nothing yet, takes no handover
	Up       UnitState = 2 // healthy, takes handovers
	Draining UnitState = 3 // a critical condition threatens it: it hands its streams over
	Failed   UnitState = 4 // its media cannot carry streams
)

// NoLimit in a capacity field means the unit has no limit.
const (
	NoLimitStreams = ^uint32(0)
	NoLimitBitrate = ^uint64(0)
)

// Message is one pair message's content: what pairnet authenticates and
// carries, and what the machine reads. Version and Incarnation come from the
// header; the rest from the body. A message with another Version carries
// nothing else.
type Message struct {
	Version      uint8
	Digest       uint64
	State        UnitState
	Path         uint8
	WitnessLease bool
	FreeStreams  uint32
	FreeBitrate  uint64
	Entries      []Entry
}

// Entry is one stream as the sender sees it.
type Entry struct {
	Index       uint16
	Epoch       uint32
	Forwarding  bool
	Ready       bool
	HasStart    bool
	HasProgress bool
	HasRing     bool
	Prepare     bool
	Start       uint16
	Progress    uint16
	RingFirst   uint16
	BitrateKbps uint32
	Cont        Continuity
}

// Continuity is an owner's output numbering for a stream.
type Continuity struct {
	Valid      bool
	InSSRC     uint32
	LastInSeq  uint16
	SeqOffset  uint16
	TSOffset   uint32
	LastOutSeq uint16
	LastOutTS  uint32
	Age        time.Duration // since the owner forwarded its last packet
}
