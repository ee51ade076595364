package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"appliance/internal/clock"
	"appliance/internal/spawn"
)

// Process is a child that is an OS process. Each run starts a fresh process
// from Command in its own process group. Stopping it sends SIGTERM (and
// SIGCONT, so a stopped process sees it) to the group; the supervisor's kill
// after the shutdown timeout sends SIGKILL to the group.
//
// On Linux the process also gets SIGKILL when this one dies (a parent death
// signal), however it dies: a worker never outlives the unit that started it
// and holds on to its sockets, so a restarted unit can bind its ports at once.
//
// With HangTimeout set, the process must show it is alive: Attach runs beside
// it and calls Proc.Beat whenever the process proves it is making progress
// (for media workers, each report). A process without a beat for HangTimeout
// is killed and its run ends with a "hung" reason, like a crash. Silence is
// measured on the monotonic clock: a wall-clock step neither kills a healthy
// process nor hides a hung one.
type Process struct {
	Name string
	// Command returns the command of a new run. Files in ExtraFiles are
	// closed in this process once the child has started. Its SysProcAttr,
	// if any, is kept, with the process group and death signal added.
	Command func() (*exec.Cmd, error)
	// Attach, if set, runs while the process does. Its context ends when the
	// process has exited; Serve waits for it to return before it reports
	// the exit, so a note it leaves with Proc.SetExitNote on the way out
	// still counts. An error from it kills the process.
	Attach      func(ctx context.Context, p *Proc) error
	HangTimeout time.Duration
	// StartGrace is how long a new process has for its first beat;
	// max(HangTimeout, 2s) if zero, since a loaded machine starts processes slowly.
	StartGrace time.Duration
	Clock      clock.Clock
	Logger     *slog.Logger

	mu  sync.Mutex
	cur *Proc
}

// Proc is one running process of a Process.
type Proc struct {
	PID      int
	lastBeat atomic.Int64 // the clock's Mono() at the last beat; 0 before the first
	clk      clock.Clock
	note     atomic.Pointer[string]
}

// Beat records that the process is alive.
func (p *Proc) Beat() { p.lastBeat.Store(int64(p.clk.Mono())) }

// MaxExitNote is how many bytes of an exit note are kept.
const MaxExitNote = 300

// SetExitNote records why the process is likely to exit (its last error, or
// the first line of a panic from its stderr). If the run then ends
// abnormally, the note follows the reason: "exit code 1: NOTE". A later note
// replaces an earlier one. The note is made one line, and cut to
// MaxExitNote bytes, since it ends up in events and the status page.
func (p *Proc) SetExitNote(note string) {
	n := cleanNote(note)
	p.note.Store(&n)
}

func (p *Proc) exitNote() string {
	if n := p.note.Load(); n != nil {
		return *n
	}
	return ""
}

// cleanNote makes s one line of valid UTF-8 of at most MaxExitNote bytes:
// control characters and runs of spaces become one space.
func cleanNote(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= MaxExitNote {
		return s
	}
	const more = "…"
	cut := MaxExitNote - len(more)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strings.TrimRight(s[:cut], " ") + more
}

// ExitError describes why a process run ended abnormally.
type ExitError struct {
	// Reason is the whole story: "exit code 3", "killed by signal KILL",
	// "hung: no heartbeat for 500ms", then ": " and the Note if there is one.
	Reason string
	Code   int    // exit code, or -1
	Signal string // signal name without SIG, if it died of one
	Hung   bool
	Note   string // what the process's Attach said about it, if anything
}

func (e *ExitError) Error() string { return e.Reason }

// withNote adds the process's exit note to an abnormal end.
func withNote(err error, note string) error {
	var ee *ExitError
	if note == "" || !errors.As(err, &ee) {
		return err
	}
	noted := *ee
	noted.Reason, noted.Note = ee.Reason+": "+note, note
	return &noted
}

func (p *Process) reportsStart() {}

// PID returns the PID of the running process, or 0.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return 0
	}
	return p.cur.PID
}

func (p *Process) describe(n *Node) {
	n.Kind = "process"
	if pid := p.PID(); pid != 0 {
		n.PID = pid
	}
}

// Kill sends SIGKILL to the process group of the running process.
func (p *Process) Kill() { p.signal(syscall.SIGKILL) }

func (p *Process) signal(sig syscall.Signal) {
	if pid := p.PID(); pid > 0 {
		_ = unix.Kill(-pid, sig)
	}
}

// Serve runs one process until it exits or ctx ends. A clean exit (code 0)
// returns nil.
func (p *Process) Serve(ctx context.Context) error {
	clk := p.Clock
	if clk == nil {
		clk = clock.Real()
	}
	log := p.Logger
	if log == nil {
		log = slog.Default()
	}
	if ctx.Err() != nil {
		return nil
	}
	cmd, err := p.Command()
	if err != nil {
		return &ExitError{Reason: "cannot start: " + err.Error(), Code: -1}
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	setDeathSignal(cmd.SysProcAttr)
	err = spawn.Start(cmd) // from a thread that never ends: see setDeathSignal
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
	if err != nil {
		return &ExitError{Reason: "cannot start: " + err.Error(), Code: -1}
	}
	proc := &Proc{PID: cmd.Process.Pid, clk: clk}
	start := clk.Mono()
	p.mu.Lock()
	p.cur = proc
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.cur = nil
		p.mu.Unlock()
	}()
	if hook, ok := ctx.Value(startHookKey{}).(func(int)); ok {
		hook(proc.PID)
	}

	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	actx, cancelAttach := context.WithCancel(context.Background())
	defer cancelAttach()
	var attached chan error // nil once Attach has returned
	if p.Attach != nil {
		attached = make(chan error, 1)
		go func() { attached <- p.Attach(actx, proc) }()
	}

	var tick <-chan time.Time
	grace := p.StartGrace
	if p.HangTimeout > 0 {
		if grace <= 0 {
			grace = max(p.HangTimeout, 2*time.Second)
		}
		t := clk.NewTicker(max(p.HangTimeout/8, time.Millisecond))
		defer t.Stop()
		tick = t.C()
	}
	done := ctx.Done()
	var cause *ExitError  // set when we killed it for a reason of our own
	checked := clk.Mono() // when the hang check last ran
	var resumed time.Duration
	for {
		select {
		case werr := <-waited:
			cancelAttach()
			if attached != nil {
				<-attached
			}
			if cause != nil {
				return withNote(cause, proc.exitNote())
			}
			if ctx.Err() != nil {
				return nil // stopped on request: however it ended, it was asked to
			}
			return withNote(exitError(werr), proc.exitNote())
		case aerr := <-attached:
			attached = nil
			if aerr != nil && cause == nil && ctx.Err() == nil {
				cause = &ExitError{Reason: "killed: " + aerr.Error(), Code: -1, Signal: "KILL"}
				log.Warn("process misbehaved; killing it", "child", p.Name, "pid", proc.PID, "err", aerr)
				_ = unix.Kill(-proc.PID, syscall.SIGKILL)
			}
		case <-tick:
			now := clk.Mono()
			if now-checked > p.HangTimeout/2 {
				// This check itself was held off (the whole unit was
				// stopped, or starved): the beats that came meanwhile
				// may wait unread, so the silence is partly this
				// process's own. The child gets a full timeout from now.
				resumed = now
			}
			checked = now
			last, limit := time.Duration(proc.lastBeat.Load()), p.HangTimeout
			if last == 0 {
				last, limit = start, grace // no beat yet
			}
			last = max(last, resumed)
			if silent := now - last; silent >= limit && cause == nil && ctx.Err() == nil {
				cause = &ExitError{Reason: fmt.Sprintf("hung: no heartbeat for %v", silent.Round(time.Millisecond)),
					Code: -1, Signal: "KILL", Hung: true}
				log.Warn("process hung; killing it", "child", p.Name, "pid", proc.PID, "silent", silent)
				_ = unix.Kill(-proc.PID, syscall.SIGKILL)
			}
		case <-done:
			done = nil
			_ = unix.Kill(-proc.PID, syscall.SIGTERM)
			_ = unix.Kill(-proc.PID, syscall.SIGCONT)
		}
	}
}

func exitError(err error) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return &ExitError{Reason: err.Error(), Code: -1}
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		name := unix.SignalName(ws.Signal())
		if len(name) > 3 {
			name = name[3:]
		}
		return &ExitError{Reason: "killed by signal " + name, Code: -1, Signal: name}
	}
	return &ExitError{Reason: fmt.Sprintf("exit code %d", ee.ExitCode()), Code: ee.ExitCode()}
}
