package watchdog

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// linuxDevice is a /dev/watchdog* character device driven by the kernel's
// watchdog ioctls. The mutex keeps an ioctl from reaching a closed, and
// possibly reused, file descriptor.
type linuxDevice struct {
	path string
	info unix.WatchdogInfo

	mu sync.Mutex
	fd int // -1 once closed
}

// Open opens a Linux watchdog device. Opening it starts the countdown: from
// here on the watchdog fires unless it is fed, disarmed or, for drivers
// without magic close support, closed.
func Open(path string) (Device, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, openError(path, err)
	}
	info, err := unix.IoctlGetWatchdogInfo(fd)
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			return nil, &deviceError{
				msg:  fmt.Sprintf("%s is not a watchdog device (WDIOC_GETSUPPORT: %v); set watchdog.device to a watchdog such as /dev/watchdog0, or to \"\" for none", path, err),
				errs: []error{ErrNotWatchdog, err},
			}
		}
		return nil, fmt.Errorf("asking %s what it supports: %w", path, err)
	}
	return &linuxDevice{path: path, info: *info, fd: fd}, nil
}

// openError explains why the device could not be opened and what to do.
func openError(path string, err error) error {
	switch {
	case errors.Is(err, unix.EBUSY):
		return &deviceError{
			msg:  fmt.Sprintf("%s is busy: another process holds it (systemd's RuntimeWatchdogSec= in /etc/systemd/system.conf opens it); set RuntimeWatchdogSec=0 or set watchdog.device to \"\"", path),
			errs: []error{ErrBusy, err},
		}
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return &deviceError{
			msg:  fmt.Sprintf("no watchdog device at %s (is the driver loaded? set watchdog.device to \"\" for none)", path),
			errs: []error{ErrNoDevice, err},
		}
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return &deviceError{
			msg:  fmt.Sprintf("opening %s: %v (the appliance user needs write access: install the udev rule that gives it to group appliance)", path, err),
			errs: []error{err},
		}
	}
	return fmt.Errorf("opening watchdog %s: %w", path, err)
}

// deviceError carries a message written for the operator and the sentinels
// callers branch on.
type deviceError struct {
	msg  string
	errs []error
}

func (e *deviceError) Error() string   { return e.msg }
func (e *deviceError) Unwrap() []error { return e.errs }

// do runs an ioctl on the open descriptor.
func (d *linuxDevice) do(what string, f func(fd int) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return fmt.Errorf("%s on %s: %w", what, d.path, ErrClosed)
	}
	if err := f(d.fd); err != nil {
		return fmt.Errorf("%s on %s: %w", what, d.path, err)
	}
	return nil
}

func (d *linuxDevice) SetTimeout(t time.Duration) (time.Duration, error) {
	if t <= 0 {
		return 0, fmt.Errorf("watchdog timeout %v: must be positive", t)
	}
	secs := int((t + time.Second - 1) / time.Second) // the driver counts whole seconds
	var granted uint32
	err := d.do("WDIOC_SETTIMEOUT", func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, secs); err != nil {
			return err
		}
		var err error
		granted, err = unix.IoctlGetUint32(fd, unix.WDIOC_GETTIMEOUT)
		return err
	})
	return time.Duration(granted) * time.Second, err
}

func (d *linuxDevice) Keepalive() error {
	return d.do("WDIOC_KEEPALIVE", unix.IoctlWatchdogKeepalive)
}

func (d *linuxDevice) Timeleft() (time.Duration, error) {
	var left uint32
	err := d.do("WDIOC_GETTIMELEFT", func(fd int) error {
		var err error
		left, err = unix.IoctlGetUint32(fd, unix.WDIOC_GETTIMELEFT)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("%w by this driver: %w", ErrUnsupported, err)
		}
		return err
	})
	return time.Duration(left) * time.Second, err
}

func (d *linuxDevice) BootStatus() (uint32, error) {
	var st uint32
	err := d.do("WDIOC_GETBOOTSTATUS", func(fd int) error {
		var err error
		st, err = unix.IoctlGetUint32(fd, unix.WDIOC_GETBOOTSTATUS)
		return err
	})
	return st, err
}

func (d *linuxDevice) Identity() (string, error) {
	id := d.info.Identity[:]
	if i := bytes.IndexByte(id, 0); i >= 0 {
		id = id[:i]
	}
	return string(id), nil
}

// magicClose reports whether closing without 'V' leaves the watchdog
// running. Drivers without WDIOF_MAGICCLOSE stop on any close.
func (d *linuxDevice) magicClose() bool { return d.info.Options&unix.WDIOF_MAGICCLOSE != 0 }

func (d *linuxDevice) Disarm() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return fmt.Errorf("disarming %s: %w", d.path, ErrClosed)
	}
	_, werr := unix.Write(d.fd, []byte("V"))
	cerr := unix.Close(d.fd)
	d.fd = -1
	if werr != nil {
		return fmt.Errorf("disarming %s (writing the magic close character; the watchdog stays armed): %w", d.path, werr)
	}
	if cerr != nil {
		return fmt.Errorf("closing %s after disarming it: %w", d.path, cerr)
	}
	return nil
}

func (d *linuxDevice) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	if err != nil {
		return fmt.Errorf("closing %s: %w", d.path, err)
	}
	return nil
}
