// Package spawn starts child processes from one OS thread that lives as long
// as the process.
//
// Linux ties a child's parent-death signal (PR_SET_PDEATHSIG, which the
// supervisor and the lab set so that no worker outlives the unit) to the
// thread that forked it, not to the process: the child gets the signal when
// that thread ends. Go ends a thread when a goroutine exits while locked to
// it (runtime.LockOSThread), and the pair's real-time loop, the lab's
// real-time sources and the like do exactly that. A child forked from any
// other thread of the pool may find its thread later taken by such a
// goroutine and retired, and die with it. Forking every child here, from a
// thread that is locked for good and never ends, closes that door.
package spawn

import (
	"os/exec"
	"runtime"
	"sync"
)

var (
	once sync.Once
	reqs chan func()
)

// Do runs f on the spawning thread and returns what f returns. f must leave
// the thread as it found it (a namespace entered is left again).
func Do(f func() error) error {
	once.Do(func() {
		reqs = make(chan func())
		go loop()
	})
	done := make(chan error, 1)
	reqs <- func() { done <- f() }
	return <-done
}

// Start starts cmd from the spawning thread.
func Start(cmd *exec.Cmd) error { return Do(cmd.Start) }

// loop serves Do forever; its goroutine never returns, so its thread never
// ends.
func loop() {
	runtime.LockOSThread()
	for f := range reqs {
		f()
	}
}
