//go:build !linux

package status

import "net"

// backlog is not watched off Linux: a full server then waits for a slot
// without making room by closing idle connections.
type backlog struct{}

func watchBacklog(net.Listener) (*backlog, error) { return nil, nil }
func (*backlog) wait() error                      { return nil }
func (*backlog) close() error                     { return nil }
