package watchdog

import (
	"errors"
	"time"
)

// Device is a hardware watchdog. Open returns the Linux one; tests use a fake.
type Device interface {
	// SetTimeout asks for a timeout and returns the one the driver granted,
	// which may be rounded to what the hardware can count.
	SetTimeout(d time.Duration) (time.Duration, error)
	// Keepalive restarts the countdown.
	Keepalive() error
	// Timeleft returns how long until the watchdog fires. Many drivers do
	// not support it: the error then wraps ErrUnsupported.
	Timeleft() (time.Duration, error)
	// BootStatus returns the WDIOF_* flags of the last reboot; CardReset
	// set means this watchdog caused it.
	BootStatus() (uint32, error)
	// Identity returns the driver's name for the device.
	Identity() (string, error)
	// Disarm stops the watchdog and closes the device (the magic close).
	// Only a clean, deliberate stop may call it.
	Disarm() error
	// Close closes the device and leaves the watchdog armed: it fires
	// unless someone opens and feeds it again within the timeout.
	Close() error
}

// CardReset is WDIOF_CARDRESET: in BootStatus, the last reboot was caused by
// this watchdog.
const CardReset uint32 = 0x0020

var (
	// ErrBusy means another process holds the watchdog device open.
	ErrBusy = errors.New("watchdog device busy")
	// ErrUnsupported is wrapped by errors for operations the driver lacks.
	// It is errors.ErrUnsupported, so either works with errors.Is.
	ErrUnsupported = errors.ErrUnsupported
	// ErrNoDevice means the watchdog device does not exist.
	ErrNoDevice = errors.New("no watchdog device")
	// ErrNotWatchdog means the path exists but is not a watchdog device.
	ErrNotWatchdog = errors.New("not a watchdog device")
	// ErrClosed means the device was already disarmed or closed.
	ErrClosed = errors.New("watchdog device already closed")
)
