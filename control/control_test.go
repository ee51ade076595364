package control

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type fakeActions struct {
	reloadErr error
	roles     []string
}

func (f *fakeActions) Reload(ctx context.Context) (ReloadResult, error) {
	if f.reloadErr != nil {
		return ReloadResult{}, f.reloadErr
	}
	return ReloadResult{Added: []string{"cam9"}, RestartNeeded: []string{}}, nil
}

func (f *fakeActions) SetRole(ctx context.Context, stream, role string, from *uint16) (RoleResult, error) {
	f.roles = append(f.roles, stream+"="+role)
	if stream == "nope" {
		return RoleResult{}, errors.New("no such stream: nope")
	}
	seq := uint16(41)
	return RoleResult{LastForwarded: &seq}, nil
}

func (f *fakeActions) Handover(ctx context.Context, stream string) (HandoverResult, error) {
	if stream == "nope" {
		return HandoverResult{}, errors.New("no such stream: nope")
	}
	return HandoverResult{Stream: stream, To: "unit-b", Epoch: 4}, nil
}

func (f *fakeActions) Drill(ctx context.Context, scenario, stream string) (DrillResult, error) {
	return DrillResult{Scenario: scenario, Result: "ok", Streams: 2}, nil
}

func (f *fakeActions) Restart(ctx context.Context, stream string) (RestartResult, error) {
	if stream == "nope" {
		return RestartResult{}, Mark(ErrNoStream, errors.New("no such stream: nope"))
	}
	return RestartResult{Stream: stream, Worker: 1, WorkerPID: 4242, Restarts: 3}, nil
}

func serve(t *testing.T, act Actions) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "control.sock")
	s, err := Listen(path, act, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return path
}

func call(t *testing.T, path string, req Request) Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := Call(ctx, path, req)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestActions(t *testing.T) {
	act := &fakeActions{}
	path := serve(t, act)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want 0660: only the unit's user and group may act", fi.Mode().Perm())
	}
	if r := call(t, path, Request{Op: OpReload}); !r.OK || r.Reload == nil || r.Reload.Added[0] != "cam9" {
		t.Errorf("reload: %+v", r)
	}
	act.reloadErr = errors.New("unit.yaml:4:3: media: workers: 0 is out of range (1 to 64)")
	if r := call(t, path, Request{Op: OpReload}); r.OK || !strings.Contains(r.Error, "unit.yaml:4:3") {
		t.Errorf("a failed reload: %+v", r)
	}
	if r := call(t, path, Request{Op: OpRole, Stream: "cam1", Role: "standby"}); !r.OK || *r.Role.LastForwarded != 41 {
		t.Errorf("role: %+v", r)
	}
	if r := call(t, path, Request{Op: OpRole, Stream: "nope", Role: "standby"}); r.OK || !strings.Contains(r.Error, "nope") {
		t.Errorf("role of a missing stream: %+v", r)
	}
	if r := call(t, path, Request{Op: OpHandover, Stream: "cam1"}); !r.OK || r.Handover.To != "unit-b" || r.Handover.Epoch != 4 {
		t.Errorf("handover: %+v", r)
	}
	if r := call(t, path, Request{Op: OpHandover, Stream: "nope"}); r.OK || !strings.Contains(r.Error, "nope") {
		t.Errorf("handover of a missing stream: %+v", r)
	}
	if r := call(t, path, Request{Op: OpDrill, Scenario: DrillPowerLoss}); !r.OK || r.Drill.Scenario != DrillPowerLoss {
		t.Errorf("drill: %+v", r)
	}
	if r := call(t, path, Request{Op: OpRestart, Stream: "cam1"}); !r.OK || r.Restart == nil || *r.Restart != (RestartResult{Stream: "cam1", Worker: 1, WorkerPID: 4242, Restarts: 3}) {
		t.Errorf("restart: %+v", r)
	}
	if r := call(t, path, Request{Op: OpRestart, Stream: "nope"}); r.OK || r.Restart != nil || !strings.Contains(r.Error, "nope") {
		t.Errorf("restart of a missing stream: %+v", r)
	}
	for _, bad := range []Request{{Op: "explode"}, {}, {Op: OpRole, Stream: "cam1"}, {Op: OpHandover},
		{Op: OpDrill}, {Op: OpDrill, Scenario: "meteor"}, {Op: OpRestart}} {
		if r := call(t, path, bad); r.OK || r.Error == "" {
			t.Errorf("%+v answered %+v", bad, r)
		}
	}
}

// countingActions counts the calls that reach the unit.
type countingActions struct {
	fakeActions
	calls int
}

func (c *countingActions) Reload(ctx context.Context) (ReloadResult, error) {
	c.calls++
	return c.fakeActions.Reload(ctx)
}

func (c *countingActions) Handover(ctx context.Context, stream string) (HandoverResult, error) {
	c.calls++
	return c.fakeActions.Handover(ctx, stream)
}

func (c *countingActions) Restart(ctx context.Context, stream string) (RestartResult, error) {
	c.calls++
	return c.fakeActions.Restart(ctx, stream)
}

func (c *countingActions) Drill(ctx context.Context, scenario, stream string) (DrillResult, error) {
	c.calls++
	return c.fakeActions.Drill(ctx, scenario, stream)
}

// TestDoKinds: Do answers what the socket answers, and its error carries
// the kind of failure: a request it refuses never reaches the unit.
func TestDoKinds(t *testing.T) {
	t.Parallel()
	failed := Mark(ErrFailed, errors.New("the unit has failed; restart it"))
	for _, tc := range []struct {
		req   Request
		kind  error // nil: success
		calls int
	}{
		{Request{Op: OpReload}, nil, 1},
		{Request{Op: OpRestart, Stream: "cam1"}, nil, 1},
		{Request{Op: OpRestart, Stream: "nope"}, ErrNoStream, 1},
		{Request{Op: OpRestart}, ErrInvalid, 0},
		{Request{Op: OpHandover}, ErrInvalid, 0},
		{Request{Op: OpDrill, Scenario: "meteor"}, ErrInvalid, 0},
		{Request{Op: "explode"}, ErrInvalid, 0},
		{Request{}, ErrInvalid, 0},
	} {
		act := &countingActions{}
		resp, err := Do(context.Background(), act, tc.req)
		switch {
		case tc.kind == nil && (err != nil || !resp.OK):
			t.Errorf("%+v: %+v, %v", tc.req, resp, err)
		case tc.kind != nil && (!errors.Is(err, tc.kind) || resp.OK || resp.Error != err.Error()):
			t.Errorf("%+v: %+v, %v; want a failure of kind %v", tc.req, resp, err, tc.kind)
		}
		if act.calls != tc.calls {
			t.Errorf("%+v reached the unit %d times, want %d", tc.req, act.calls, tc.calls)
		}
	}
	if errors.Is(failed, ErrInvalid) || !errors.Is(failed, ErrFailed) || failed.Error() != "the unit has failed; restart it" {
		t.Errorf("Mark: %v", failed)
	}
	if Mark(ErrFailed, nil) != nil {
		t.Error("Mark of no error is an error")
	}
	// A failed action answers no result, only the error.
	act := &countingActions{}
	act.reloadErr = errors.New("unit.yaml:4:3: bad")
	if resp, err := Do(context.Background(), act, Request{Op: OpReload}); err == nil || resp.Reload != nil || resp.Error != "unit.yaml:4:3: bad" {
		t.Errorf("a failed reload: %+v, %v", resp, err)
	}
}

func TestBadBytes(t *testing.T) {
	path := serve(t, &fakeActions{})
	for _, raw := range []string{"not json\n", "{\"op\":\n", strings.Repeat("x", maxRequest+10) + "\n", ""} {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte(raw))
		if raw == "" {
			c.(*net.UnixConn).CloseWrite()
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		c.Close()
		if !strings.Contains(string(b), `"ok":false`) {
			t.Errorf("%.20q answered %q", raw, b)
		}
	}
	// Still serving.
	if r := call(t, path, Request{Op: OpReload}); !r.OK {
		t.Errorf("after bad requests: %+v", r)
	}
}

func TestStaleAndLiveSockets(t *testing.T) {
	path := serve(t, &fakeActions{})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := Listen(path, &fakeActions{}, log); err == nil || !strings.Contains(err.Error(), "another unit") {
		t.Errorf("a second unit on a live socket: %v", err)
	}

	// A socket file left by a unit that died is replaced.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	s, err := Listen(stale, &fakeActions{}, log)
	if err != nil {
		t.Fatalf("a stale socket was not replaced: %v", err)
	}
	s.Close()

	notSock := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notSock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(notSock, &fakeActions{}, log); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("a regular file in the way: %v", err)
	}
	if _, err := Call(context.Background(), filepath.Join(t.TempDir(), "none.sock"), Request{Op: OpReload}); !errors.Is(err, ErrNoUnit) {
		t.Errorf("calling nobody: %v", err)
	}
}

// FuzzRequest: any bytes on the socket get an answer and never take the
// server down.
func FuzzRequest(f *testing.F) {
	f.Add([]byte(`{"op":"reload"}` + "\n"))
	f.Add([]byte(`{"op":"role","stream":"a","role":"forward","from_seq":70000}` + "\n"))
	f.Add([]byte("\x00\xff{"))
	path := filepath.Join(f.TempDir(), "c.sock")
	s, err := Listen(path, &fakeActions{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Serve(ctx) }()
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write(b)
		c.(*net.UnixConn).CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		out, err := io.ReadAll(c)
		if err != nil || !strings.HasPrefix(string(out), `{"ok":`) {
			t.Fatalf("%q answered %q (%v)", b, out, err)
		}
	})
}
