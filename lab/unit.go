package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"appliance/internal/spawn"
)

// unitStatus is the part of a unit's /api/v1/status the lab reads. It
// decodes only what it needs, so fields the unit adds do not break it.
type unitStatus struct {
	Unit struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"unit"`
	Streams []streamStatus `json:"streams"`
	// Pair is the pair's view, from a unit that has one. JSON names match
	// without regard to case, so "Epoch" and "epoch" both read.
	Pair *struct {
		Streams []struct {
			Name  string  `json:"name"`
			Owner string  `json:"owner"`
			Epoch *uint64 `json:"epoch"`
		} `json:"streams"`
	} `json:"pair,omitempty"`
}

// epoch is a stream's pair epoch, from the stream itself or the pair's
// section; false from a unit that shows none.
func (st *unitStatus) epoch(name string) (uint64, bool) {
	if s, ok := st.stream(name); ok && s.Epoch != nil {
		return *s.Epoch, true
	}
	if st.Pair != nil {
		for _, p := range st.Pair.Streams {
			if p.Name == name && p.Epoch != nil {
				return *p.Epoch, true
			}
		}
	}
	return 0, false
}

type streamStatus struct {
	Name      string `json:"name"`
	State     string `json:"state"`
	Role      string `json:"role"` // active (forwarding) or standby
	WorkerPID int    `json:"worker_pid"`
	// Epoch is the stream's pair epoch; nil from a unit that shows none.
	Epoch *uint64 `json:"epoch,omitempty"`
}

// forwarding says whether the unit carries the stream out to its outputs.
func (s streamStatus) forwarding() bool {
	return (s.Role == "active" || s.Role == "forward") && s.State != "failed" && s.State != "stopped" && s.WorkerPID != 0
}

func (st *unitStatus) stream(name string) (streamStatus, bool) {
	for _, s := range st.Streams {
		if s.Name == name {
			return s, true
		}
	}
	return streamStatus{}, false
}

// unit is one appliance process in its namespace.
type unit struct {
	spec   unitSpec
	ns     string
	binary string
	client *http.Client

	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

func newUnit(spec unitSpec, ns, binary string) *unit {
	u := &unit{spec: spec, ns: ns, binary: binary}
	u.client = &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true, // a restarted unit must not be asked on a dead connection
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var c net.Conn
				err := inNS(ns, func() error {
					var err error
					c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
					return err
				})
				return c, err
			},
		},
	}
	return u
}

func (u *unit) configPath() string { return filepath.Join(u.spec.Dir, "unit.yaml") }
func (u *unit) socket() string     { return filepath.Join(u.spec.Dir, "control.sock") }
func (u *unit) logPath() string    { return filepath.Join(u.spec.Dir, "unit.log") }

// prepare writes the unit's config, key and healthy fake sysfs.
func (u *unit) prepare(key []byte) error {
	if err := os.MkdirAll(u.spec.Dir, 0o755); err != nil {
		return err
	}
	if err := writeSysfs(u.spec.Dir); err != nil {
		return fmt.Errorf("fake sysfs for %s: %w", u.spec.Name, err)
	}
	if err := os.WriteFile(filepath.Join(u.spec.Dir, "pair.key"), key, 0o600); err != nil {
		return err
	}
	return os.WriteFile(u.configPath(), []byte(u.spec.configYAML()), 0o644)
}

// start runs `appliance run --config FILE` inside the unit's namespace, in a
// process group of its own so a power loss can take it all down at once.
func (u *unit) start() error {
	if u.running() {
		return nil
	}
	if u.log != nil {
		u.log.Close()
	}
	lf, err := os.OpenFile(u.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(u.binary, "run", "--config", u.configPath())
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// The child is born in the namespace of the thread that forks it.
	if err := spawn.Do(func() error { return inNS(u.ns, cmd.Start) }); err != nil {
		lf.Close()
		return fmt.Errorf("starting %s: %w", u.spec.Name, err)
	}
	u.cmd, u.log, u.done = cmd, lf, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(u.done)
	return nil
}

func (u *unit) running() bool {
	if u.cmd == nil {
		return false
	}
	select {
	case <-u.done:
		return false
	default:
		return true
	}
}

func (u *unit) pid() int {
	if u.cmd == nil {
		return 0
	}
	return u.cmd.Process.Pid
}

// signal sends sig to the unit and every process below it.
func (u *unit) signal(sig syscall.Signal) {
	if u.running() {
		signalTree(u.pid(), sig)
	}
}

// stop asks the unit to stop, and kills it and its workers if it does not
// within the grace period.
func (u *unit) stop(grace time.Duration) {
	if u.cmd == nil {
		return
	}
	if u.running() {
		procs := descendants(u.pid())
		_ = syscall.Kill(u.pid(), syscall.SIGCONT)
		_ = syscall.Kill(u.pid(), syscall.SIGTERM)
		select {
		case <-u.done:
		case <-time.After(grace):
		}
		for _, p := range procs {
			_ = syscall.Kill(p, syscall.SIGCONT)
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		<-u.done
	}
	u.log.Close()
	u.cmd, u.log = nil, nil
}

// kill is a power loss: SIGKILL to the unit and everything below it at once.
func (u *unit) kill() {
	if u.running() {
		signalTree(u.pid(), syscall.SIGKILL)
		<-u.done
	}
}

// status asks the unit's API.
func (u *unit) status(ctx context.Context) (*unitStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:8080/api/v1/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s's API answered %s", u.spec.Name, resp.Status)
	}
	var st unitStatus
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("%s's API: %w", u.spec.Name, err)
	}
	return &st, nil
}

// logTail is the end of the unit's log, for error messages.
func (u *unit) logTail() string {
	b, _ := os.ReadFile(u.logPath())
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// errDeadline means a condition the lab waits for did not come in time.
var errDeadline = errors.New("did not happen in time")

// poll checks cond until it holds, with a deadline. Polls start 10 ms
// apart and back off to 100 ms so a fast event is seen at once.
func poll(ctx context.Context, within time.Duration, what string, cond func(context.Context) bool) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	pause := 10 * time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("waiting %v for %s: %w", within, what, errDeadline)
			}
			return ctx.Err()
		case <-t.C:
		}
		if cond(ctx) {
			return nil
		}
		t.Reset(pause)
		pause = min(pause*2, 100*time.Millisecond)
	}
}
