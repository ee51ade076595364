package media

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/pion/rtp"
)

// ProbeResult is what a receiver saw. The JSON names are what scripts and
// later drills read.
type ProbeResult struct {
	Received           uint64  `json:"received"`
	Lost               int64   `json:"lost"`
	Duplicates         uint64  `json:"duplicates"`
	Reordered          uint64  `json:"reordered"`
	MaxGapMs           float64 `json:"max_gap_ms"` // longest time without a packet, between the first and the last
	SeqDiscontinuities uint64  `json:"seq_discontinuities"`
	SSRCChanges        uint64  `json:"ssrc_changes"`
	JitterMs           float64 `json:"jitter_ms"`
	CCErrors           uint64  `json:"cc_errors"`
	Malformed          uint64  `json:"malformed"`
	SSRC               uint32  `json:"ssrc"`
	Bytes              uint64  `json:"bytes"`
	FirstSeq           uint16  `json:"first_seq"`
	LastSeq            uint16  `json:"last_seq"`
}

// Probe receives RTP on addr for the given duration (or until ctx ends) and
// measures it. ready, if not nil, is called once the socket is bound.
func Probe(ctx context.Context, addr netip.AddrPort, d time.Duration, clockRate int, ready func()) (ProbeResult, error) {
	var res ProbeResult
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return res, fmt.Errorf("probe: %w", err)
	}
	defer conn.Close()
	setReceiveBuffer(conn, 8<<20)
	if ready != nil {
		ready()
	}
	start := time.Now()
	end := start.Add(d)
	if dl, ok := ctx.Deadline(); ok && dl.Before(end) {
		end = dl
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()
	_ = conn.SetReadDeadline(end)

	var (
		pkt      rtp.Packet
		seq      SeqTracker
		jit      = NewJitter(clockRate)
		tsc      TSChecker
		buf      = make([]byte, 65536)
		last     time.Time
		haveSSRC bool
	)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return res, fmt.Errorf("probe: %w", err)
		}
		now := time.Now()
		if n < 12 || buf[0]>>6 != 2 || pkt.Unmarshal(buf[:n]) != nil {
			res.Malformed++
			continue
		}
		if !last.IsZero() {
			if gap := now.Sub(last).Seconds() * 1000; gap > res.MaxGapMs {
				res.MaxGapMs = gap
			}
		}
		last = now
		res.Bytes += uint64(n)
		if haveSSRC && pkt.SSRC != res.SSRC {
			res.SSRCChanges++
			seq.Resync()
			jit.Reset()
			tsc.Reset()
		}
		if !haveSSRC {
			res.FirstSeq = pkt.SequenceNumber
		}
		res.SSRC, haveSSRC = pkt.SSRC, true
		r := seq.Observe(pkt.SequenceNumber)
		if r == SeqInOrder || r == SeqDiscontinuity {
			// Arrival times from Go's monotonic reading: a wall-clock step
			// during the probe must not show up as jitter.
			jit.Observe(int64(now.Sub(start)), pkt.Timestamp)
			res.LastSeq = pkt.SequenceNumber
		}
		if pkt.PayloadType == PayloadTypeMP2T {
			tsc.Check(pkt.Payload)
		}
	}
	res.Received = seq.Received
	res.Lost = seq.Lost
	res.Duplicates = seq.Duplicates
	res.Reordered = seq.Reordered
	res.SeqDiscontinuities = seq.Discontinuity
	res.JitterMs = jit.Millis()
	res.CCErrors = tsc.CCErrors
	return res, nil
}
