package supervisor

import "syscall"

// setDeathSignal has the kernel send SIGKILL to the child when its parent
// dies (PR_SET_PDEATHSIG), on top of the control socket closing, which a
// worker notices only when it next reads it.
//
// Linux ties the signal to the parent thread that forked, not the process:
// it fires when that thread exits. Go retires a thread only when a goroutine
// exits while locked to it with runtime.LockOSThread; the supervisor forks
// from goroutines that never lock, so the signal fires only when the whole
// process dies. Do not call Process.Serve from a goroutine that is locked to
// its thread and may exit locked.
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
