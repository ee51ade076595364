package hw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NewLinkWatcher returns a LinkWatcher for the network namespace ns, which
// the caller keeps open while the watcher is in use; netns.None() means the
// namespace of the calling process.
func NewLinkWatcher(ns netns.NsHandle) LinkWatcher {
	return &netlinkWatcher{ns: ns, log: slog.Default()}
}

type netlinkWatcher struct {
	ns  netns.NsHandle
	log *slog.Logger
}

// setLogger lets the Monitor give the watcher its logger.
func (w *netlinkWatcher) setLogger(l *slog.Logger) { w.log = l }

func (w *netlinkWatcher) List() ([]LinkUpdate, error) {
	h, err := netlink.NewHandleAt(w.ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	defer h.Close()
	var links []netlink.Link
	// A dump interrupted by a concurrent change is retried; the last one is
	// still usable, and the next update or poll corrects it.
	for range 3 {
		links, err = h.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := make([]LinkUpdate, 0, len(links))
	for _, l := range links {
		out = append(out, linkUpdateOf(l, l.Attrs().RawFlags, true))
	}
	return out, nil
}

func linkUpdateOf(l netlink.Link, flags uint32, present bool) LinkUpdate {
	a := l.Attrs()
	u := LinkUpdate{
		Name:    a.Name,
		AdminUp: flags&unix.IFF_UP != 0,
		Carrier: flags&unix.IFF_LOWER_UP != 0,
		Present: present,
	}
	if s := a.Statistics; s != nil {
		u.Stats = &LinkStats{RxErrors: s.RxErrors, TxErrors: s.TxErrors, RxDropped: s.RxDropped, TxDropped: s.TxDropped}
	}
	return u
}

func (w *netlinkWatcher) Subscribe(ctx context.Context, ch chan<- LinkUpdate) error {
	raw, done, err := w.subscribe(ctx)
	if err != nil {
		return err
	}
	go w.forward(ctx, raw, done, ch)
	return nil
}

func (w *netlinkWatcher) subscribe(ctx context.Context) (chan netlink.LinkUpdate, chan struct{}, error) {
	raw := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	opts := netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			if ctx.Err() == nil { // errors after close are the close itself
				w.log.Warn("link updates", "err", err)
			}
		},
	}
	if w.ns.IsOpen() {
		ns := w.ns
		opts.Namespace = &ns
	}
	if err := netlink.LinkSubscribeWithOptions(raw, done, opts); err != nil {
		return nil, nil, fmt.Errorf("subscribe to link updates: %w", err)
	}
	return raw, done, nil
}

// forward turns netlink updates into LinkUpdates until ctx ends. When the
// kernel ends the subscription (a receive error, such as an overrun
// buffer), it subscribes again and sends a fresh listing, since updates in
// between are lost.
func (w *netlinkWatcher) forward(ctx context.Context, raw chan netlink.LinkUpdate, done chan struct{}, ch chan<- LinkUpdate) {
	send := func(u LinkUpdate) bool {
		select {
		case ch <- u:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		select {
		case <-ctx.Done():
			close(done)
			// netlink's reader blocks on a full channel; drain it so it
			// sees the closed socket and exits.
			for range raw {
			}
			return
		case u, ok := <-raw:
			if ok {
				present := u.Header.Type != unix.RTM_DELLINK
				send(linkUpdateOf(u.Link, u.IfInfomsg.Flags, present)) // on false, the ctx case shuts down
				continue
			}
			close(done)
			if raw, done = w.resubscribe(ctx); raw == nil {
				return
			}
			links, err := w.List()
			if err != nil {
				w.log.Warn("link updates: list after resubscribing", "err", err)
			}
			for _, u := range links {
				if !send(u) {
					break
				}
			}
		}
	}
}

// resubscribe retries the subscription every second until it works or
// ctx ends (then it returns nil channels). It waits on the wall clock: this
// is the kernel side, which tests replace with a fake watcher.
func (w *netlinkWatcher) resubscribe(ctx context.Context) (chan netlink.LinkUpdate, chan struct{}) {
	for {
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil
		case <-t.C:
		}
		raw, done, err := w.subscribe(ctx)
		if err == nil {
			w.log.Info("link updates: subscribed again")
			return raw, done
		}
		w.log.Warn("link updates", "err", err)
	}
}
