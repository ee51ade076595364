package media

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/pion/rtp"
)

// Generator is a paced RTP test source. With a size of 12 + k*188 bytes it
// sends MPEG-TS (payload type 33) with correct continuity counters, so a
// healthy path shows no cc_errors; other sizes send payload type 96.
type Generator struct {
	To       netip.AddrPort
	PPS      int
	Size     int           // whole datagram, header included
	SSRC     uint32        // 0 = random
	Duration time.Duration // 0 = until ctx ends
}

// GenResult says what a generator sent.
type GenResult struct {
	Sent     uint64 `json:"sent"`
	SSRC     uint32 `json:"ssrc"`
	FirstSeq uint16 `json:"first_seq"`
	Errors   uint64 `json:"errors"`
	// LastError is why the last failed send failed; "" if none did.
	LastError string `json:"last_error,omitempty"`
}

// Serve sends until the duration is over or ctx ends. It is a supervisor service.
func (g *Generator) Serve(ctx context.Context) error {
	_, err := g.Run(ctx)
	return err
}

// Run sends until the duration is over or ctx ends, and says what it sent.
func (g *Generator) Run(ctx context.Context) (GenResult, error) {
	if g.PPS <= 0 || g.Size < 12 || g.Size > MaxDatagram {
		return GenResult{}, fmt.Errorf("generator: pps %d, size %d: need pps > 0 and 12 <= size <= %d", g.PPS, g.Size, MaxDatagram)
	}
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(g.To))
	if err != nil {
		return GenResult{}, fmt.Errorf("generator: %w", err)
	}
	defer conn.Close()

	ssrc := g.SSRC
	if ssrc == 0 {
		ssrc = rand.Uint32() | 1
	}
	h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(rand.Uint32()), Timestamp: rand.Uint32(), SSRC: ssrc}
	res := GenResult{SSRC: ssrc, FirstSeq: h.SequenceNumber}
	buf := make([]byte, g.Size)
	payload := buf[12:]
	ts := len(payload) > 0 && len(payload)%tsPacketSize == 0
	if ts {
		h.PayloadType = PayloadTypeMP2T
	} else {
		for i := range payload {
			payload[i] = byte(i)
		}
	}
	tsStep := uint32(90000 / g.PPS)
	var cc uint8

	interval := time.Second / time.Duration(g.PPS)
	start := time.Now()
	var end time.Time
	if g.Duration > 0 {
		end = start.Add(g.Duration)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * interval)
		if !end.IsZero() && !due.Before(end) {
			return res, nil
		}
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return res, nil
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return res, nil
		}
		if ts {
			for off := 0; off < len(payload); off += tsPacketSize {
				fillTSPacket(payload[off:off+tsPacketSize], 0x100, cc)
				cc = (cc + 1) & 0xf
			}
		}
		if _, err := h.MarshalTo(buf); err != nil {
			return res, err
		}
		if _, err := conn.Write(buf); err != nil {
			// Nobody listening yet is normal for a test source; keep pacing.
			if !errors.Is(err, net.ErrClosed) {
				res.Errors++
				res.LastError = err.Error()
			}
		} else {
			res.Sent++
		}
		h.SequenceNumber++
		h.Timestamp += tsStep
	}
}

// fillTSPacket writes a payload-only transport packet for pid with counter cc.
func fillTSPacket(p []byte, pid uint16, cc uint8) {
	p[0] = tsSyncByte
	p[1] = byte(pid>>8) & 0x1f
	p[2] = byte(pid)
	p[3] = 0x10 | cc&0xf
	for i := 4; i < len(p); i++ {
		p[i] = 0xff
	}
}
