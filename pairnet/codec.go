package pairnet

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"time"

	"appliance/failover"
)

// The wire format of docs/pair-protocol.md, section Messages.
const (
	headerLen   = 32
	macLen      = sha256.Size
	maxDatagram = 1400
	minDatagram = headerLen + macLen

	kindPair           = 1
	kindWitnessRequest = 2
	kindWitnessAnswer  = 3

	pairFixedLen = 8 + 1 + 1 + 1 + 4 + 8 + 8 + 8 + 8 + 2
	entryLen     = 40

	maxNameLen = 64
	// Two names, their two length bytes, flags, detect, heartbeat, send time.
	witnessRequestFixed = 1 + 1 + 1 + 8 + 8 + 8
	witnessAnswerLen    = 1 + 8
)

var magic = [4]byte{'A', 'P', 'R', 0}

// Why a datagram was refused. The node and the witness count each under its
// own name; none of them is delivered.
var (
	// ErrGarbage: not a message of this protocol (length, magic, kind, or a
	// body that does not parse).
	ErrGarbage = errors.New("pairnet: not a pair protocol message")
	// ErrForged: the HMAC does not match: another key, or tampering.
	ErrForged = errors.New("pairnet: message authentication failed (pair.key_file differs between the units, or the message was tampered with)")
	// ErrReplayed: authentic, but its counter was seen before or is older
	// than the replay window, or it comes from an incarnation long gone.
	ErrReplayed = errors.New("pairnet: replayed message")
	// ErrStale: authentic and new, but its nonce echo is not this unit's
	// incarnation, so it does not prove the sender alive now. Not an attack:
	// every first message after a restart is stale. It only teaches the
	// sender's incarnation.
	ErrStale = errors.New("pairnet: message does not echo this unit's incarnation")
	// ErrVersion: authentic, but in a protocol version this side cannot read.
	ErrVersion = errors.New("pairnet: message in another protocol version")
)

// header is the fixed part of every message.
type header struct {
	version     uint8
	kind        uint8
	incarnation uint64
	counter     uint64
	echo        uint64
}

// timing are the body fields a node keeps per path to measure round trips;
// they are not part of failover.Message. All in nanoseconds of the monotonic
// clock of the unit that wrote them.
type timing struct {
	sent uint64 // sender's send time
	echo uint64 // the peer's send time of the newest message heard on this path
	held uint64 // how long that message was held before this one was sent
}

// sealer authenticates and checks messages with one key. It keeps its HMAC
// state and output buffer so that neither sealing nor opening allocates. Not
// safe for concurrent use.
type sealer struct {
	mac hash.Hash
	sum [macLen]byte
}

func newSealer(key []byte) *sealer {
	return &sealer{mac: hmac.New(sha256.New, key)}
}

// begin writes h into b[:headerLen] for a body of n bytes.
func putHeader(b []byte, h header, n int) {
	copy(b[0:4], magic[:])
	b[4] = h.version
	b[5] = h.kind
	binary.BigEndian.PutUint16(b[6:8], uint16(n))
	binary.BigEndian.PutUint64(b[8:16], h.incarnation)
	binary.BigEndian.PutUint64(b[16:24], h.counter)
	binary.BigEndian.PutUint64(b[24:32], h.echo)
}

// seal appends the HMAC over msg (header and body) and returns the datagram.
// msg must have room for it (cap >= len+macLen).
func (s *sealer) seal(msg []byte) []byte {
	s.mac.Reset()
	s.mac.Write(msg)
	return append(msg, s.mac.Sum(s.sum[:0])...)
}

// open checks a datagram in the order the specification gives: length,
// magic, HMAC, and returns its header and body. The version is returned in
// the header, not checked: what to do with another version is the caller's.
func (s *sealer) open(b []byte) (header, []byte, error) {
	if len(b) < minDatagram || len(b) > maxDatagram {
		return header{}, nil, ErrGarbage
	}
	n := int(binary.BigEndian.Uint16(b[6:8]))
	if headerLen+n+macLen != len(b) {
		return header{}, nil, ErrGarbage
	}
	if [4]byte(b[0:4]) != magic {
		return header{}, nil, ErrGarbage
	}
	s.mac.Reset()
	s.mac.Write(b[:headerLen+n])
	if !hmac.Equal(s.mac.Sum(s.sum[:0]), b[headerLen+n:]) {
		return header{}, nil, ErrForged
	}
	h := header{
		version:     b[4],
		kind:        b[5],
		incarnation: binary.BigEndian.Uint64(b[8:16]),
		counter:     binary.BigEndian.Uint64(b[16:24]),
		echo:        binary.BigEndian.Uint64(b[24:32]),
	}
	return h, b[headerLen : headerLen+n], nil
}

// Entry flag bits.
const (
	efForwarding = 1 << iota
	efReady
	efHasStart
	efHasProgress
	efHasRing
	efPrepare
	efContValid
	efKnown = 1<<iota - 1
)

// Message flag bits.
const (
	mfWitnessLease = 1 << iota
	mfKnown        = 1<<iota - 1
)

// appendPair appends the body of a kind-1 message. It writes at most
// MaxEntries entries: the caller splits a larger table.
func appendPair(b []byte, m *failover.Message, t timing) []byte {
	var flags byte
	if m.WitnessLease {
		flags |= mfWitnessLease
	}
	b = binary.BigEndian.AppendUint64(b, m.Digest)
	b = append(b, byte(m.State), m.Path, flags)
	b = binary.BigEndian.AppendUint32(b, m.FreeStreams)
	b = binary.BigEndian.AppendUint64(b, m.FreeBitrate)
	b = binary.BigEndian.AppendUint64(b, t.sent)
	b = binary.BigEndian.AppendUint64(b, t.echo)
	b = binary.BigEndian.AppendUint64(b, t.held)
	entries := m.Entries
	if len(entries) > failover.MaxEntries {
		entries = entries[:failover.MaxEntries]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(entries)))
	for i := range entries {
		b = appendEntry(b, &entries[i])
	}
	return b
}

func appendEntry(b []byte, e *failover.Entry) []byte {
	f := bit(e.Forwarding, efForwarding) | bit(e.Ready, efReady) | bit(e.HasStart, efHasStart) |
		bit(e.HasProgress, efHasProgress) | bit(e.HasRing, efHasRing) | bit(e.Prepare, efPrepare) |
		bit(e.Cont.Valid, efContValid)
	b = append(b, make([]byte, entryLen)...)
	w := b[len(b)-entryLen:]
	be := binary.BigEndian
	be.PutUint16(w[0:2], e.Index)
	be.PutUint32(w[2:6], e.Epoch)
	w[6] = f
	be.PutUint16(w[7:9], e.Start)
	be.PutUint16(w[9:11], e.Progress)
	be.PutUint16(w[11:13], e.RingFirst)
	be.PutUint32(w[13:17], e.BitrateKbps)
	be.PutUint32(w[17:21], e.Cont.InSSRC)
	be.PutUint16(w[21:23], e.Cont.LastInSeq)
	be.PutUint16(w[23:25], e.Cont.SeqOffset)
	be.PutUint32(w[25:29], e.Cont.TSOffset)
	be.PutUint16(w[29:31], e.Cont.LastOutSeq)
	be.PutUint32(w[31:35], e.Cont.LastOutTS)
	be.PutUint32(w[35:39], ageMicros(e.Cont.Age))
	// w[39], reserved, is zero.
	return b
}

func bit(on bool, mask byte) byte {
	if on {
		return mask
	}
	return 0
}

// ageMicros is the wire form of an age: microseconds, saturating, never
// negative.
func ageMicros(d time.Duration) uint32 {
	us := d / time.Microsecond
	switch {
	case us <= 0:
		return 0
	case us >= 1<<32-1:
		return 1<<32 - 1
	}
	return uint32(us)
}

// decodePair reads a kind-1 body into m, reusing m.Entries' backing array
// (it never grows beyond MaxEntries). Anything that does not parse exactly,
// including unknown flag bits and a nonzero reserved byte, is ErrGarbage:
// a peer of the same version never sends it.
func decodePair(body []byte, m *failover.Message, t *timing) error {
	if len(body) < pairFixedLen {
		return ErrGarbage
	}
	n := int(binary.BigEndian.Uint16(body[pairFixedLen-2:]))
	if n > failover.MaxEntries || len(body) != pairFixedLen+n*entryLen {
		return ErrGarbage
	}
	state := failover.UnitState(body[8])
	if state < failover.Starting || state > failover.Failed || body[10]&^mfKnown != 0 {
		return ErrGarbage
	}
	entries := m.Entries[:0]
	*m = failover.Message{
		Version:      failover.Version,
		Digest:       binary.BigEndian.Uint64(body[0:8]),
		State:        state,
		Path:         body[9],
		WitnessLease: body[10]&mfWitnessLease != 0,
		FreeStreams:  binary.BigEndian.Uint32(body[11:15]),
		FreeBitrate:  binary.BigEndian.Uint64(body[15:23]),
	}
	t.sent = binary.BigEndian.Uint64(body[23:31])
	t.echo = binary.BigEndian.Uint64(body[31:39])
	t.held = binary.BigEndian.Uint64(body[39:47])
	if cap(entries) < failover.MaxEntries {
		entries = make([]failover.Entry, 0, failover.MaxEntries)
	}
	entries = entries[:n]
	for i := range entries {
		if !decodeEntry(&entries[i], body[pairFixedLen+i*entryLen:][:entryLen]) {
			m.Entries = entries[:0]
			return ErrGarbage
		}
	}
	m.Entries = entries
	return nil
}

func decodeEntry(e *failover.Entry, b []byte) bool {
	f := b[6]
	if f&^efKnown != 0 || b[39] != 0 {
		return false
	}
	*e = failover.Entry{
		Index:       binary.BigEndian.Uint16(b[0:2]),
		Epoch:       binary.BigEndian.Uint32(b[2:6]),
		Forwarding:  f&efForwarding != 0,
		Ready:       f&efReady != 0,
		HasStart:    f&efHasStart != 0,
		HasProgress: f&efHasProgress != 0,
		HasRing:     f&efHasRing != 0,
		Prepare:     f&efPrepare != 0,
		Start:       binary.BigEndian.Uint16(b[7:9]),
		Progress:    binary.BigEndian.Uint16(b[9:11]),
		RingFirst:   binary.BigEndian.Uint16(b[11:13]),
		BitrateKbps: binary.BigEndian.Uint32(b[13:17]),
		Cont: failover.Continuity{
			Valid:      f&efContValid != 0,
			InSSRC:     binary.BigEndian.Uint32(b[17:21]),
			LastInSeq:  binary.BigEndian.Uint16(b[21:23]),
			SeqOffset:  binary.BigEndian.Uint16(b[23:25]),
			TSOffset:   binary.BigEndian.Uint32(b[25:29]),
			LastOutSeq: binary.BigEndian.Uint16(b[29:31]),
			LastOutTS:  binary.BigEndian.Uint32(b[31:35]),
			Age:        time.Duration(binary.BigEndian.Uint32(b[35:39])) * time.Microsecond,
		},
	}
	return true
}

// WitnessRequest is what a unit asks the witness every heartbeat interval
// (docs/pair-protocol.md, Witness).
type WitnessRequest struct {
	Unit, Peer string // names, at most 64 bytes each
	Takeover   bool   // the unit asks to take over from its silent peer
	HearsPeer  bool   // the unit hears its peer now
	Detect     time.Duration
	Heartbeat  time.Duration
}

// WitnessAnswer is the witness's decision on one request.
type WitnessAnswer struct {
	Lease    bool // the unit may forward for D from when it sent the request
	Takeover bool // the unit may take over from its peer
}

// Witness request and answer flag bits.
const (
	wfTakeover  = 1 << 0
	wfHearsPeer = 1 << 1
	wfKnown     = wfTakeover | wfHearsPeer

	afLease    = 1 << 0
	afTakeover = 1 << 1
	afKnown    = afLease | afTakeover
)

// errNameTooLong is a caller's mistake, found before anything is sent.
var errNameTooLong = errors.New("pairnet: unit name longer than 64 bytes: shorten pair.name")

func appendWitnessRequest(b []byte, r *WitnessRequest, sent uint64) []byte {
	unit, peer := r.Unit, r.Peer
	if len(unit) > maxNameLen {
		unit = unit[:maxNameLen]
	}
	if len(peer) > maxNameLen {
		peer = peer[:maxNameLen]
	}
	var f byte
	if r.Takeover {
		f |= wfTakeover
	}
	if r.HearsPeer {
		f |= wfHearsPeer
	}
	b = append(b, byte(len(unit)))
	b = append(b, unit...)
	b = append(b, byte(len(peer)))
	b = append(b, peer...)
	b = append(b, f)
	b = binary.BigEndian.AppendUint64(b, uint64(max(r.Detect, 0)))
	b = binary.BigEndian.AppendUint64(b, uint64(max(r.Heartbeat, 0)))
	return binary.BigEndian.AppendUint64(b, sent)
}

// decodeWitnessRequest returns the request and the requester's send time.
// Durations beyond what time.Duration holds are garbage, so that what is
// accepted encodes back to the same bytes.
func decodeWitnessRequest(b []byte) (WitnessRequest, uint64, error) {
	var r WitnessRequest
	unit, rest, ok := cutName(b)
	if !ok {
		return r, 0, ErrGarbage
	}
	peer, rest, ok := cutName(rest)
	if !ok || len(rest) != 1+8+8+8 || rest[0]&^wfKnown != 0 {
		return r, 0, ErrGarbage
	}
	detect := binary.BigEndian.Uint64(rest[1:9])
	beat := binary.BigEndian.Uint64(rest[9:17])
	if detect > 1<<63-1 || beat > 1<<63-1 {
		return r, 0, ErrGarbage
	}
	r = WitnessRequest{
		Unit:      string(unit),
		Peer:      string(peer),
		Takeover:  rest[0]&wfTakeover != 0,
		HearsPeer: rest[0]&wfHearsPeer != 0,
		Detect:    time.Duration(detect),
		Heartbeat: time.Duration(beat),
	}
	return r, binary.BigEndian.Uint64(rest[17:25]), nil
}

func cutName(b []byte) (name, rest []byte, ok bool) {
	if len(b) < 1 {
		return nil, nil, false
	}
	n := int(b[0])
	if n > maxNameLen || len(b) < 1+n {
		return nil, nil, false
	}
	return b[1 : 1+n], b[1+n:], true
}

func appendWitnessAnswer(b []byte, a WitnessAnswer, sentAt uint64) []byte {
	var f byte
	if a.Lease {
		f |= afLease
	}
	if a.Takeover {
		f |= afTakeover
	}
	b = append(b, f)
	return binary.BigEndian.AppendUint64(b, sentAt)
}

func decodeWitnessAnswer(b []byte) (WitnessAnswer, uint64, error) {
	if len(b) != witnessAnswerLen || b[0]&^afKnown != 0 {
		return WitnessAnswer{}, 0, ErrGarbage
	}
	return WitnessAnswer{Lease: b[0]&afLease != 0, Takeover: b[0]&afTakeover != 0},
		binary.BigEndian.Uint64(b[1:9]), nil
}
