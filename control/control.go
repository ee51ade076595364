// Package control carries operator actions (reload, stream roles, stream
// restarts, handovers, drills) to a running unit over a local unix socket,
// the way haproxy's and bird's control sockets do. Who may act is decided by
// the socket file's owner, group and mode; every action is logged with the
// peer's uid and pid. Do is the one way a request reaches the unit's
// Actions: the socket and the HTTP API both call it.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Ops.
const (
	OpReload   = "reload"   // apply the config file again
	OpRole     = "role"     // set a stream's role
	OpHandover = "handover" // hand a stream to the paired unit, planned
	OpDrill    = "drill"    // run a failover drill on the live pair
	OpRestart  = "restart"  // restart one stream's pipeline
	OpUpdate   = "update"   // write an update bundle to the slot that is not running, then boot it on trial
)

// Drill scenarios.
const (
	DrillOverheat  = "overheat"   // act as if the temperature were critical: hand every stream over, planned
	DrillPowerLoss = "power-loss" // stop heartbeats and forwarding at once, as a power cut would
	DrillPlanned   = "planned"    // hand every stream (or one) over, planned
)

// Request is one action. It travels as one line of JSON.
type Request struct {
	Op      string  `json:"op"`
	Stream  string  `json:"stream,omitempty"`
	Role    string  `json:"role,omitempty"`     // forward or standby
	FromSeq *uint16 `json:"from_seq,omitempty"` // with role forward: start at this input sequence number
	// Scenario is the drill to run (drill).
	Scenario string `json:"scenario,omitempty"`
	// Bundle is the update bundle (update): an absolute path on the unit,
	// or an http(s) URL the unit can reach.
	Bundle string `json:"bundle,omitempty"`
}

// Response answers a Request.
type Response struct {
	OK       bool            `json:"ok"`
	Error    string          `json:"error,omitempty"` // what went wrong and what to do; every config problem, one per line
	Reload   *ReloadResult   `json:"reload,omitempty"`
	Role     *RoleResult     `json:"role,omitempty"`
	Handover *HandoverResult `json:"handover,omitempty"`
	Drill    *DrillResult    `json:"drill,omitempty"`
	Restart  *RestartResult  `json:"restart,omitempty"`
	Update   *UpdateResult   `json:"update,omitempty"`
}

// UpdateResult is the answer to an update: it has started. The bundle is
// checked in full (signature, then every part's hash) before anything is
// written; the status report's slots section follows it to the reboot,
// and says how the trial boot ended.
type UpdateResult struct {
	Bundle string `json:"bundle"`
	Slot   string `json:"slot"` // the slot it will write
	From   string `json:"from"` // the slot that runs
	State  string `json:"state"`
}

// Updater is what a unit that can update itself adds to its Actions (a
// unit booted from the appliance image).
type Updater interface {
	Update(ctx context.Context, bundle string) (UpdateResult, error)
}

// RestartResult is the answer to a restart: the stream's pipeline was
// stopped and started again on its worker, which went on carrying its other
// streams.
type RestartResult struct {
	Stream    string `json:"stream"`
	Worker    int    `json:"worker"`     // the worker that carries it
	WorkerPID int    `json:"worker_pid"` // that worker's process, the same as before the restart
	Restarts  int    `json:"restarts"`   // the stream's restarts so far, this one included
}

// HandoverResult is the answer to a handover: the stream has moved.
type HandoverResult struct {
	Stream string `json:"stream"`
	To     string `json:"to"`    // the unit that forwards it now
	Epoch  uint32 `json:"epoch"` // its new epoch
	// Start is the input sequence number the peer started from: this unit
	// forwarded everything before it.
	Start *uint16 `json:"start,omitempty"`
}

// DrillResult is what a drill measured. It is also kept in the unit's
// drill history, shown in the API.
type DrillResult struct {
	Scenario   string  `json:"scenario"`
	Result     string  `json:"result"` // ok or failed
	Detail     string  `json:"detail,omitempty"`
	Streams    int     `json:"streams"`
	GapMs      float64 `json:"gap_ms"`
	Lost       int     `json:"lost"`
	Duplicates int     `json:"duplicates"`
}

// ReloadResult says what a reload changed.
type ReloadResult struct {
	Added     []string          `json:"added"`
	Removed   []string          `json:"removed"`
	Changed   []string          `json:"changed"`
	Unchanged []string          `json:"unchanged"`
	Failed    map[string]string `json:"failed,omitempty"` // configured but not carried, with why
	// RestartNeeded names the changed settings that only a restart applies.
	RestartNeeded []string `json:"restart_needed"`
}

// RoleResult is the answer to a role change.
type RoleResult struct {
	LastForwarded *uint16 `json:"last_forwarded,omitempty"`
	Replayed      int     `json:"replayed"`
}

// Actions is what the unit does; the socket and the HTTP API only carry
// requests to it, through Do. An error says what went wrong and what to do;
// marked with Mark, it also says which kind of failure it is.
type Actions interface {
	Reload(ctx context.Context) (ReloadResult, error)
	SetRole(ctx context.Context, stream, role string, from *uint16) (RoleResult, error)
	Handover(ctx context.Context, stream string) (HandoverResult, error)
	Drill(ctx context.Context, scenario, stream string) (DrillResult, error)
	Restart(ctx context.Context, stream string) (RestartResult, error)
}

// Kinds of failure, for callers that branch on them with errors.Is: the
// HTTP API answers each with its own status code. A failure of no kind is
// an action the unit cannot carry out now (not paired, the peer is down, a
// config file with problems): the message says why.
var (
	ErrInvalid  = errors.New("invalid request")     // the request itself is wrong
	ErrNoStream = errors.New("no such stream")      // it names a stream the unit does not have
	ErrFailed   = errors.New("the unit has failed") // the supervision root gave up: only a restart of the unit helps
)

// Mark returns err, which errors.Is also takes for kind (one of ErrInvalid,
// ErrNoStream, ErrFailed); its message stays err's.
func Mark(kind, err error) error {
	if err == nil {
		return nil
	}
	return &marked{err: err, kind: kind}
}

type marked struct{ err, kind error }

func (m *marked) Error() string   { return m.err.Error() }
func (m *marked) Unwrap() []error { return []error{m.err, m.kind} }

const opList = "reload, role, handover, restart, drill or update"

// maxRequest bounds one request line.
const maxRequest = 64 << 10

// Server answers requests on a unix socket.
type Server struct {
	path string
	ln   *net.UnixListener
	act  Actions
	log  *slog.Logger
	wg   sync.WaitGroup
}

// Listen creates the socket at path with mode 0660 (its directory is
// created 0750 if missing). A socket file left by a unit that died is
// replaced; one a live unit answers on is an error.
func Listen(path string, act Actions, log *slog.Logger) (*Server, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("control socket: %w (set control.socket to a writable place)", err)
		}
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket: %s exists and is not a socket; remove it or set control.socket elsewhere", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket: %s: another unit is running and answers on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket: removing the stale %s: %w", path, err)
		}
	}
	// Created with no access for others from the start; the mode is then
	// opened to the group, never wider.
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w (set control.socket to a writable place)", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &Server{path: path, ln: ln, act: act, log: log}, nil
}

// Close removes the socket of a server that will not be served.
func (s *Server) Close() error { return s.ln.Close() }

// Serve answers until ctx ends, one request per connection, one at a time
// per connection; actions themselves are serialized by the unit.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	defer s.wg.Wait()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Warn("control socket: accept", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond): // out of descriptors: let others finish
			}
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(ctx, c)
		}()
	}
}

func (s *Server) handle(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	peer := peerOf(c)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReaderSize(io.LimitReader(c, maxRequest+1), 4096).ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		s.reply(c, Response{Error: "send one request as a line of JSON, such as {\"op\":\"reload\"}"})
		return
	}
	var req Request
	if len(line) > maxRequest {
		s.reply(c, Response{Error: fmt.Sprintf("request longer than %d bytes", maxRequest)})
		return
	}
	if err := json.Unmarshal(line, &req); err != nil {
		s.reply(c, Response{Error: "not a JSON request: " + err.Error()})
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	s.log.Info("control request", "op", req.Op, "stream", req.Stream, "role", req.Role, "scenario", req.Scenario, "peer", peer)
	resp, _ := Do(WithActor(ctx, "control socket, "+peer), s.act, req)
	if !resp.OK {
		s.log.Warn("control request failed", "op", req.Op, "peer", peer, "err", resp.Error)
	}
	s.reply(c, resp)
}

type actorKey struct{}

// WithActor names who asked for an action, for the unit's event log: the
// control socket names its peer (uid and pid), the API the token's name.
// The caller says it; a request never does, so it cannot be forged.
func WithActor(ctx context.Context, who string) context.Context {
	return context.WithValue(ctx, actorKey{}, who)
}

// ActorOf is who WithActor named, or "".
func ActorOf(ctx context.Context) string {
	who, _ := ctx.Value(actorKey{}).(string)
	return who
}

// Do carries out req on act: the one implementation of every action behind
// both the control socket and the HTTP API. It checks the request, calls
// act, and answers; the error, nil on success, is the one resp.Error
// spells, for callers that branch on its kind.
func Do(ctx context.Context, act Actions, req Request) (resp Response, err error) {
	defer func() {
		if err != nil {
			resp = Response{Error: err.Error()}
		}
	}()
	switch req.Op {
	case OpReload:
		r, err := act.Reload(ctx)
		return Response{OK: true, Reload: &r}, err
	case OpRole:
		if req.Stream == "" || req.Role == "" {
			return Response{}, invalid("role needs a stream and a role (forward or standby)")
		}
		r, err := act.SetRole(ctx, req.Stream, req.Role, req.FromSeq)
		return Response{OK: true, Role: &r}, err
	case OpHandover:
		if req.Stream == "" {
			return Response{}, invalid("handover needs a stream")
		}
		r, err := act.Handover(ctx, req.Stream)
		return Response{OK: true, Handover: &r}, err
	case OpRestart:
		if req.Stream == "" {
			return Response{}, invalid("restart needs a stream")
		}
		r, err := act.Restart(ctx, req.Stream)
		return Response{OK: true, Restart: &r}, err
	case OpDrill:
		switch req.Scenario {
		case DrillOverheat, DrillPowerLoss, DrillPlanned:
		default:
			return Response{}, invalid(fmt.Sprintf("drill scenario %q: use %s, %s or %s", req.Scenario, DrillOverheat, DrillPowerLoss, DrillPlanned))
		}
		r, err := act.Drill(ctx, req.Scenario, req.Stream)
		return Response{OK: true, Drill: &r}, err
	case OpUpdate:
		if req.Bundle == "" {
			return Response{}, invalid("update needs a bundle: its absolute path on the unit, or an http(s) URL")
		}
		up, ok := act.(Updater)
		if !ok {
			return Response{}, errors.New("this unit cannot update itself: it does not run from an appliance image (docs/image.md)")
		}
		r, err := up.Update(ctx, req.Bundle)
		return Response{OK: true, Update: &r}, err
	case "":
		return Response{}, invalid("no op; use " + opList)
	default:
		return Response{}, invalid(fmt.Sprintf("unknown op %q; use %s", req.Op, opList))
	}
}

func invalid(msg string) error { return Mark(ErrInvalid, errors.New(msg)) }

func (s *Server) reply(c *net.UnixConn, r Response) {
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	b, _ := json.Marshal(r)
	_, _ = c.Write(append(b, '\n'))
}

func peerOf(c *net.UnixConn) string {
	rc, err := c.SyscallConn()
	if err != nil {
		return "unknown"
	}
	var cred *unix.Ucred
	_ = rc.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if err != nil || cred == nil {
		return "unknown"
	}
	return fmt.Sprintf("uid %d pid %d", cred.Uid, cred.Pid)
}

// ErrNoUnit means nothing answers on the socket.
var ErrNoUnit = errors.New("no unit answers on the control socket")

// Call sends one request to the unit at path and returns its answer.
func Call(ctx context.Context, path string, req Request) (Response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, fmt.Errorf("%w %s: %v (is the unit running? is this its control.socket? are you in its group?)", ErrNoUnit, path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return Response{}, fmt.Errorf("sending to %s: %w", path, err)
	}
	var resp Response
	if err := json.NewDecoder(io.LimitReader(c, 16<<20)).Decode(&resp); err != nil {
		return Response{}, fmt.Errorf("reading the answer from %s: %w", path, err)
	}
	return resp, nil
}
