//go:build !linux

package supervisor

import "syscall"

// setDeathSignal does nothing where there is no parent death signal: a
// child notices its parent's death only when the control socket closes.
func setDeathSignal(*syscall.SysProcAttr) {}
