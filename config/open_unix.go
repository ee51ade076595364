//go:build unix

package config

import (
	"os"
	"syscall"
)

// openNonblocking opens path for reading without waiting: opening a named
// pipe that has no writer would otherwise block until one appears.
func openNonblocking(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
