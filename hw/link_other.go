//go:build !linux

package hw

import (
	"context"
	"errors"

	"github.com/vishvananda/netns"
)

// errNoNetlink is what the link watcher says where there is no netlink.
var errNoNetlink = errors.New("link watching needs Linux netlink")

// NewLinkWatcher returns a LinkWatcher that fails: links are watched
// through netlink, which only Linux has.
func NewLinkWatcher(ns netns.NsHandle) LinkWatcher { return noLinks{} }

type noLinks struct{}

func (noLinks) List() ([]LinkUpdate, error)                        { return nil, errNoNetlink }
func (noLinks) Subscribe(context.Context, chan<- LinkUpdate) error { return errNoNetlink }
