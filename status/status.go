// Package status serves the unit's state over HTTP: health, the JSON API and the page.
package status

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"appliance/control"
	"appliance/health"
	"appliance/hw"
	"appliance/internal/clock"
	"appliance/media"
	"appliance/supervisor"
	"appliance/watchdog"
)

// Report is the body of GET /api/v1/status. Field names are a contract:
// operators' scripts and later releases read them, so only add, never rename.
type Report struct {
	Unit       Unit                 `json:"unit"`
	Streams    []media.StreamStatus `json:"streams"`
	Workers    []media.WorkerStatus `json:"workers"`
	Supervisor supervisor.Node      `json:"supervisor"`
	Hardware   hw.Hardware          `json:"hardware"`
	Health     []health.Condition   `json:"health"` // active conditions, most severe first
	Watchdog   watchdog.Status      `json:"watchdog"`
	// Pair is the paired unit and the links to it; absent on a unit that
	// runs alone.
	Pair *Pair `json:"pair,omitempty"`
	// Slots are the unit's two root slots and its last update; absent on
	// a unit that does not run from the appliance image.
	Slots  *Slots  `json:"slots,omitempty"`
	Events []Event `json:"events"` // most recent first
}

// Pair is what the unit knows of its peer.
type Pair struct {
	Peer string `json:"peer"`
	// PeerState is the peer's own word for itself (starting, up, draining,
	// failed), or "silent" when nothing has been heard for the detection
	// time, or "unknown" before the first message.
	PeerState string `json:"peer_state"`
	// Agreement is false when the peer runs another protocol version or
	// another stream list: no stream moves until they agree.
	Agreement bool    `json:"agreement"`
	State     string  `json:"state"`    // this unit's state as the peer is told it
	Realtime  bool    `json:"realtime"` // heartbeats run at real-time priority
	DetectMs  float64 `json:"detect_ms"`
	// LateBeats counts heartbeats sent more than a heartbeat interval
	// late (the loop was held off); MaxLateMs is the longest delay. Late
	// beats near the detection time can make the peer take over.
	LateBeats uint64  `json:"late_beats"`
	MaxLateMs float64 `json:"max_late_ms"`
	// Beacon is true while the heartbeat beacon runs; CoveredBeats counts
	// the beats it sent for a loop that was held off.
	Beacon       bool       `json:"beacon"`
	CoveredBeats uint64     `json:"covered_beats"`
	Paths        []PairPath `json:"paths"`
	Witness      *Witness   `json:"witness,omitempty"`
	Drills       []Drill    `json:"drills"` // most recent first
}

// PairPath is one heartbeat path.
type PairPath struct {
	Local  string `json:"local"`
	Remote string `json:"remote"`
	Up     bool   `json:"up"`
	// LastHeardMs is how long ago the peer was last heard on this path;
	// absent if never.
	LastHeardMs *float64 `json:"last_heartbeat_ms,omitempty"`
	RTTMs       *float64 `json:"rtt_ms,omitempty"`
	Sent        uint64   `json:"sent"`
	Received    uint64   `json:"received"`
	// Missed counts the peer's heartbeats that did not arrive on this
	// path, each counted half a heartbeat interval after it was due (in a
	// silence since the path's last message, or since the unit started
	// listening).
	Missed uint64 `json:"missed"`
	// Refused messages, by why: not ours at all, a wrong key, seen before,
	// or a protocol version this unit does not speak.
	Garbage  uint64 `json:"garbage"`
	Forged   uint64 `json:"forged"`
	Replayed uint64 `json:"replayed"`
	Version  uint64 `json:"version"`
}

// Witness is the third party that settles a cut pair link.
type Witness struct {
	Address      string   `json:"address"`
	Lease        bool     `json:"lease"` // this unit may forward without hearing its peer
	LastAnswerMs *float64 `json:"last_answer_ms,omitempty"`
	RTTMs        *float64 `json:"rtt_ms,omitempty"`
}

// Drill is one failover drill run on the live pair and what it measured.
type Drill struct {
	Scenario string    `json:"scenario"`
	Started  time.Time `json:"started"`
	Result   string    `json:"result"` // ok, failed, or running
	Detail   string    `json:"detail,omitempty"`
	Streams  int       `json:"streams"` // how many streams moved
	// GapMs is the longest time a moved stream went without a forwarder:
	// from this unit's last packet to the peer's first.
	GapMs float64 `json:"gap_ms"`
	// Lost and Duplicates are input packets the handover skipped or sent
	// twice, from the sequence numbers the two units agreed on.
	Lost       int `json:"lost"`
	Duplicates int `json:"duplicates"`
}

// Node is one entry of the supervision tree.
type Node = supervisor.Node

// Unit identifies the unit and its software.
type Unit struct {
	Name    string    `json:"name"`
	Version string    `json:"version"`
	UptimeS float64   `json:"uptime_s"`
	Started time.Time `json:"started"`
	// State is "running", or "failed" once the supervision root has given up.
	State string `json:"state"`
}

// Source is what the server shows. The two methods have very different
// costs on purpose: /healthz is what watchdogs and load balancers poll, so
// it must answer in constant time however many streams there are and
// whatever the API is doing.
type Source interface {
	// Report assembles the whole report from snapshots the report path has
	// published; at 1,000 streams it may take milliseconds. It must not
	// take any lock the report or heartbeat path holds while it works.
	Report() Report
	// State is "running", or "failed" once the supervision root has given
	// up. It must do constant work.
	State() string
}

// MaxEvents is the most events /api/v1/events returns, and the most a
// Report should carry.
const MaxEvents = 200

// Options bound what the API may take from the unit. MaxConnections and
// IdleTimeout are required: the defaults belong to the config
// (status.max_connections, status.idle_timeout).
type Options struct {
	// MaxConnections caps the connections held open at once. Keep it well
	// below the descriptor limit: worker restarts need descriptors too.
	MaxConnections int
	// IdleTimeout closes a keep-alive connection that has been idle this long.
	IdleTimeout time.Duration
	// Actions carries out what an authenticated client asks: the same
	// control.Actions the control socket calls. Nil: every action is
	// answered 503.
	Actions control.Actions
	// Tokens may act (status.tokens). None: every action is refused, with
	// how to add one.
	Tokens []Token
	// TLS serves HTTPS with this certificate and key (status.tls); the
	// zero value serves plain HTTP.
	TLS TLSFiles
	// Clock times sessions and rate limits; nil is the machine's.
	Clock clock.Clock

	// Tests shorten these; zero is the default.
	headerTimeout, readTimeout time.Duration
	rates                      *rates
}

// TLSFiles are PEM files: a certificate (with its intermediates) and its key.
type TLSFiles struct{ Cert, Key string }

// Server is the unit's HTTP API. It runs outside the supervision tree on
// purpose: when everything else has given up, it is how an operator finds out why.
type Server struct {
	src    Source
	log    *slog.Logger
	ln     *capListener
	srv    *http.Server
	render renderer

	actions control.Actions
	auth    *authority
	limits  *limiter
	tls     bool
	life    context.Context // Serve's
	page    *pageState
}

// ListenError is a status address that could not be bound. Its message
// names status.listen; a caller that took the address from elsewhere (a
// command-line flag) can name that instead.
type ListenError struct {
	Addr string
	Err  error
}

func (e *ListenError) Error() string {
	return fmt.Sprintf("status: listen on %s: %v (set status.listen to a free address)", e.Addr, e.Err)
}

func (e *ListenError) Unwrap() error { return e.Err }

// Listen binds addr now, so that a busy port is reported before anything
// else starts.
func Listen(addr string, opts Options, src Source, log *slog.Logger) (*Server, error) {
	if opts.MaxConnections < 1 {
		return nil, fmt.Errorf("status: MaxConnections is %d; pass status.max_connections from the config (at least 1)", opts.MaxConnections)
	}
	if opts.IdleTimeout <= 0 {
		return nil, fmt.Errorf("status: IdleTimeout is %v; pass status.idle_timeout from the config (more than 0)", opts.IdleTimeout)
	}
	var cert tls.Certificate
	if opts.TLS != (TLSFiles{}) {
		c, err := tls.LoadX509KeyPair(opts.TLS.Cert, opts.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("status: status.tls: %w (give a PEM certificate and its key, or neither)", err)
		}
		cert = c
	}
	inner, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &ListenError{Addr: addr, Err: err}
	}
	ln, err := newCapListener(inner, opts.MaxConnections)
	if err != nil {
		inner.Close()
		return nil, err
	}
	clk := opts.Clock
	if clk == nil {
		clk = clock.Real()
	}
	r := defaultRates
	if opts.rates != nil {
		r = *opts.rates
	}
	s := &Server{src: src, log: log, ln: ln, render: renderer{src: src, now: time.Now},
		actions: opts.Actions, auth: &authority{tokens: opts.Tokens, now: clk.Mono}, limits: newLimiter(r, clk.Mono),
		tls: opts.TLS != (TLSFiles{}), life: context.Background(), page: newPageState(opts, log)}
	mux := http.NewServeMux()
	s.routePage(mux)
	mux.HandleFunc("/healthz", s.healthz)
	mux.HandleFunc("/api/v1/status", s.status)
	mux.HandleFunc("/api/v1/events", s.events)
	s.routes(mux)
	mux.HandleFunc("/metrics", s.metrics)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path+" (the page is at /, the API at /api/v1/status)")
	})
	s.srv = &http.Server{
		Handler: mux,
		// A connection holds one of few slots, so a client that is slow to
		// send its request or read the answer is cut off in seconds.
		ReadHeaderTimeout: cmp.Or(opts.headerTimeout, 5*time.Second),
		ReadTimeout:       cmp.Or(opts.readTimeout, 10*time.Second),
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, &connSeen{})
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if tc, ok := c.(*tls.Conn); ok {
				c = tc.NetConn()
			}
			if cc, ok := c.(*capConn); ok && st != http.StateNew {
				ln.setIdle(cc, st == http.StateIdle)
			}
		},
	}
	if s.tls {
		s.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return s, nil
}

// Close releases the listener of a server that will not be served.
func (s *Server) Close() error { return s.ln.Close() }

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers requests until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(shut)
	})
	defer stop()
	s.life = ctx // before any request: actions end with the server, not with their client
	defer s.startPage(ctx)()
	var err error
	if s.tls {
		err = s.srv.ServeTLS(s.ln, "", "")
	} else {
		err = s.srv.Serve(s.ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func getOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; this endpoint is read-only (GET)")
		return false
	}
	return true
}

// healthz answers from State alone, never from the report: it is polled
// by watchdogs and must not slow down as streams and API clients grow.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	state := s.src.State()
	code := http.StatusOK
	if state != "running" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]string{"state": state})
}

// status serves GET /api/v1/status: compact JSON, gzipped for clients that
// accept it, or indented with ?pretty=1.
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	g, ok := s.rendering(w, r, true)
	if !ok {
		return
	}
	w.Header().Set("Vary", "Accept-Encoding")
	switch {
	case pretty(r):
		writeBody(w, g.indented(), false)
	case acceptsGzip(r.Header.Values("Accept-Encoding")):
		writeBody(w, g.compressed(), true)
	default:
		writeBody(w, g.body, false)
	}
}

// connKey finds a connection's connSeen in a request's context.
type connKey struct{}

// connSeen is what one connection was last answered with. A connection
// serves one request at a time, so it needs no lock.
type connSeen struct{ last *rendering }

// rendering gets the shared rendering for a request, answering it with an
// error when it lacks what the request needs: the encoded document
// (needBody), or at least the report.
func (s *Server) rendering(w http.ResponseWriter, r *http.Request, needBody bool) (*rendering, bool) {
	g, err := s.render.get(r.Context())
	if err != nil {
		return nil, false // the client went away
	}
	// A connection that already has this rendering waits for the next:
	// nothing fresher exists before it, and a client polling back to back
	// then costs the unit one answer per reuseFor, not one per round trip.
	if seen, ok := r.Context().Value(connKey{}).(*connSeen); ok {
		if seen.last == g {
			t := time.NewTimer(max(reuseFor-s.render.now().Sub(g.at), 0))
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return nil, false
			}
			if g, err = s.render.get(r.Context()); err != nil {
				return nil, false
			}
		}
		seen.last = g
	}
	if g.err != nil && (needBody || !g.repOK) {
		s.serverError(w, g, g.err)
		return nil, false
	}
	return g, true
}

func (s *Server) serverError(w http.ResponseWriter, g *rendering, err error) {
	g.logOnce.Do(func() { s.log.Error("status: cannot serve the report", "err", err) })
	writeError(w, http.StatusInternalServerError, "the status report could not be built: "+err.Error()+"; this is a bug, please report it with the log")
}

// events serves GET /api/v1/events[?limit=N][&pretty=1], most recent first.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	n, err := parseLimit(r.URL.Query().Get("limit"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	g, ok := s.rendering(w, r, false)
	if !ok {
		return
	}
	doc, err := g.eventsDoc(n)
	if err != nil {
		s.serverError(w, g, err)
		return
	}
	if pretty(r) {
		doc = indent(doc)
	}
	writeBody(w, doc, false)
}

func pretty(r *http.Request) bool {
	v := r.URL.Query().Get("pretty")
	return v != "" && v != "0" && v != "false"
}

// writeBody answers 200 with a JSON document.
func writeBody(w http.ResponseWriter, body []byte, gzipped bool) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if gzipped {
		h.Set("Content-Encoding", "gzip")
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// parseLimit reads the limit parameter of /api/v1/events; empty means
// MaxEvents.
func parseLimit(v string) (int, error) {
	if v == "" {
		return MaxEvents, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, errors.New("limit must be a whole number of at least 1, got " + strconv.Quote(v))
	}
	if n > MaxEvents {
		return 0, fmt.Errorf("limit %d is above the cap of %d; ask for %d or fewer", n, MaxEvents, MaxEvents)
	}
	return n, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
