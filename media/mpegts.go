package media

// MPEG-TS continuity checking for RTP payload type 33 (RFC 2250): every
// 188-byte transport packet carries a 4-bit continuity counter per PID that
// must count up by one for each packet with payload. A wrong step means the
// decoder lost or got a repeated piece of that elementary stream.

const (
	tsPacketSize = 188
	tsSyncByte   = 0x47
	tsNullPID    = 0x1fff
	// PayloadTypeMP2T is the static RTP payload type of MPEG-2 transport streams.
	PayloadTypeMP2T = 33
)

// TSChecker follows the continuity counters of every PID in one transport stream.
type TSChecker struct {
	CCErrors   uint64 // continuity counter steps that were not +1 (nor an allowed repeat)
	SyncErrors uint64 // payloads that are not whole 188-byte packets starting with 0x47
	// last holds the last counter per PID plus one, so zero means "not seen".
	last [8192]uint8
	dup  [8192]bool // whether the last packet of the PID was already a repeat
}

// Check inspects one RTP payload.
func (c *TSChecker) Check(payload []byte) {
	if len(payload)%tsPacketSize != 0 {
		c.SyncErrors++
		return
	}
	for off := 0; off < len(payload); off += tsPacketSize {
		p := payload[off : off+tsPacketSize]
		if p[0] != tsSyncByte {
			c.SyncErrors++
			continue
		}
		pid := uint16(p[1]&0x1f)<<8 | uint16(p[2])
		if pid == tsNullPID {
			continue
		}
		afc := p[3] >> 4 & 0x3
		cc := p[3] & 0xf
		hasPayload := afc&0x1 != 0
		discontinuity := afc&0x2 != 0 && p[4] > 0 && p[5]&0x80 != 0
		prev := c.last[pid]
		switch {
		case !hasPayload:
			// The counter does not advance on adaptation-only packets (ISO 13818-1 2.4.3.3).
			if prev != 0 && cc != prev-1 && !discontinuity {
				c.CCErrors++
			}
		case prev == 0 || discontinuity:
		case cc == (prev)&0xf: // prev-1+1
			c.dup[pid] = false
		case cc == prev-1 && !c.dup[pid]:
			// One repeat is allowed (ISO 13818-1 2.4.3.3), a second is an error.
			c.dup[pid] = true
			continue
		default:
			c.CCErrors++
			c.dup[pid] = false
		}
		c.last[pid] = cc + 1
	}
}

// Reset forgets every PID's counter, for a new source.
func (c *TSChecker) Reset() {
	c.last = [8192]uint8{}
	c.dup = [8192]bool{}
}
