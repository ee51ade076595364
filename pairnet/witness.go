package pairnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"appliance/failover"
	"appliance/internal/clock"
)

// WitnessLogic decides on witness requests (failover's witness, a pure
// state machine): ServeWitness only carries its requests and answers.
type WitnessLogic interface {
	Ask(now time.Duration, r WitnessRequest) WitnessAnswer
}

// maxWitnessUnits bounds what the witness remembers: a witness serves a
// few pairs, and a key holder sending made-up names must not grow it
// without end.
const maxWitnessUnits = 256

// ServeWitness answers signed witness requests on addr until ctx ends. A
// request is put to logic only when it is live (it echoes the witness's
// incarnation); any other authentic, new request gets an answer that grants
// nothing, so that the unit learns the witness's incarnation and its next
// request, one heartbeat later, counts.
func ServeWitness(ctx context.Context, addr netip.AddrPort, key []byte, logic WitnessLogic, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(key) < 16 {
		return fmt.Errorf("pairnet: the witness key is %d bytes: use the pair's key file (16 random bytes at least)", len(key))
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return fmt.Errorf("pairnet: witness: listening on %v: %w", addr, bindAdvice(err))
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	w, err := newWitnessServer(key, logic, clock.Real())
	if err != nil {
		return err
	}
	log.Info("witness listening", "addr", conn.LocalAddr().String())
	defer func() { log.Info("witness stopped", "refused", w.refusals) }()
	buf := make([]byte, maxDatagram+1)
	out := make([]byte, 0, maxDatagram)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("pairnet: witness socket closed: %w", err)
			}
			log.Warn("witness: reading a request", "err", err)
			continue
		}
		reply, err := w.handle(buf[:n], out[:0])
		if err != nil {
			w.refusals[reason(err)]++
			log.Debug("witness: request refused", "from", from, "err", err)
			continue
		}
		if _, err := conn.WriteToUDPAddrPort(reply, from); err != nil {
			log.Warn("witness: answering", "to", from, "err", err)
		}
	}
}

// witnessServer is the witness's protocol state, apart from the socket so
// that tests drive it directly.
type witnessServer struct {
	seal     *sealer
	logic    WitnessLogic
	clk      clock.Clock
	self     uint64
	counter  uint64
	units    map[string]*session
	refusals map[string]uint64
}

func newWitnessServer(key []byte, logic WitnessLogic, clk clock.Clock) (*witnessServer, error) {
	self, err := newIncarnation()
	if err != nil {
		return nil, err
	}
	return &witnessServer{
		seal: newSealer(key), logic: logic, clk: clk, self: self,
		units: map[string]*session{}, refusals: map[string]uint64{},
	}, nil
}

func reason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{{ErrForged, "forged"}, {ErrReplayed, "replayed"}, {ErrVersion, "version"}, {ErrStale, "stale"}} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "garbage"
}

var errTooManyUnits = errors.New("pairnet: witness: too many unit names; every unit of every pair it serves must have its own name")

// handle checks one request and appends the signed answer to out.
func (w *witnessServer) handle(b, out []byte) ([]byte, error) {
	hd, body, err := w.seal.open(b)
	if err != nil {
		return nil, err
	}
	if hd.kind != kindWitnessRequest {
		return nil, ErrGarbage
	}
	if hd.version != failover.Version {
		return nil, ErrVersion
	}
	req, sentAt, err := decodeWitnessRequest(body)
	if err != nil {
		return nil, err
	}
	s := w.units[req.Unit]
	if s == nil {
		if len(w.units) >= maxWitnessUnits {
			return nil, errTooManyUnits
		}
		s = &session{self: w.self}
		w.units[req.Unit] = s
	}
	var a WitnessAnswer
	switch err := s.accept(hd); {
	case err == nil:
		a = w.logic.Ask(w.clk.Mono(), req)
	case errors.Is(err, ErrStale):
		// Answer all the same, granting nothing: the unit learns this
		// witness's incarnation from it.
	default:
		return nil, err
	}
	w.counter++
	out = append(out[:0], make([]byte, headerLen)...)
	out = appendWitnessAnswer(out, a, sentAt)
	putHeader(out, header{version: failover.Version, kind: kindWitnessAnswer,
		incarnation: w.self, counter: w.counter, echo: hd.incarnation}, len(out)-headerLen)
	return w.seal.seal(out), nil
}
