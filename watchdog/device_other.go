//go:build !linux

package watchdog

import "fmt"

// Open fails: hardware watchdogs are driven on Linux only.
func Open(path string) (Device, error) {
	return nil, fmt.Errorf("opening watchdog %s: %w: hardware watchdogs are supported on Linux only; set watchdog.device to \"\"", path, ErrUnsupported)
}
