package watchdog

import (
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends one sd_notify message, e.g. "READY=1" or "WATCHDOG=1".
type Notifier interface {
	Notify(state string) error
}

// NotifierFunc adapts a function to a Notifier.
type NotifierFunc func(state string) error

// Notify calls f.
func (f NotifierFunc) Notify(state string) error { return f(state) }

// SystemdNotifier returns a Notifier that sends datagrams to $NOTIFY_SOCKET.
// It does nothing, successfully, when NOTIFY_SOCKET is unset (not started by
// systemd, or not Type=notify), so the same binary runs anywhere.
func SystemdNotifier() Notifier { return sdNotifier{} }

type sdNotifier struct{}

func (sdNotifier) Notify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}

// SystemdWatchdogInterval returns systemd's WatchdogSec= for this process,
// from WATCHDOG_USEC, and whether it is enabled. It is not enabled when
// WATCHDOG_PID names another process (the variables were inherited) or when
// WATCHDOG_USEC is not a positive number.
func SystemdWatchdogInterval() (time.Duration, bool) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0, false
	}
	return d, true
}

// reloadingMessage is RELOADING=1 with the MONOTONIC_USEC= that systemd 253
// and later require of Type=notify-reload services in the same datagram.
func reloadingMessage() string {
	msg := daemon.SdNotifyReloading
	if m := strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"); m != "" {
		msg += "\n" + m
	}
	return msg
}
