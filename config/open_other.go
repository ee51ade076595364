//go:build !unix

package config

import "os"

func openNonblocking(path string) (*os.File, error) { return os.Open(path) }
