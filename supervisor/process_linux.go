package supervisor

import "syscall"

// setDeathSignal has the kernel send SIGKILL to the child when its parent
// dies (PR_SET_PDEATHSIG), on top of the control socket closing, which a
// worker notices only when it next reads it.
//
// Linux ties the signal to the parent thread that forked, not the process:
// it fires when that thread exits. Go retires a thread when a goroutine
// exits while locked to it with runtime.LockOSThread, and any thread of the
// pool may be the one such a goroutine takes (the pair's real-time loop
// does, and ends when its child restarts), so children are forked by
// internal/spawn, from one thread that never ends: the signal fires only
// when the whole process dies.
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
