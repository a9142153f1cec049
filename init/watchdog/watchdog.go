// Package watchdog drives a Linux watchdog device (/dev/watchdog): if PID 1
// stops feeding it, the kernel resets the PM, which the cluster relies on to
// fence a PM whose init has hung.
package watchdog

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Watchdog is an open, armed watchdog device.
type Watchdog struct {
	f *os.File
}

// Open opens and thereby arms the device at path, then sets its timeout.
func Open(path string, timeout time.Duration) (*Watchdog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open watchdog: %w", err)
	}
	w := &Watchdog{f: f}
	if err := w.setTimeout(timeout); err != nil {
		// Stay armed with the driver's default rather than disarm: a
		// watchdog with the wrong timeout still fences a hung PM.
		return w, err
	}
	return w, nil
}

func (w *Watchdog) setTimeout(d time.Duration) error {
	secs := int(d / time.Second)
	if secs < 1 {
		return fmt.Errorf("set watchdog timeout: %v is below one second", d)
	}
	sc, err := w.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("set watchdog timeout: %w", err)
	}
	var ioErr error
	if err := sc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetPointerInt(int(fd), unix.WDIOC_SETTIMEOUT, secs)
	}); err != nil {
		return fmt.Errorf("set watchdog timeout: %w", err)
	}
	if ioErr != nil {
		return fmt.Errorf("set watchdog timeout to %ds on %s: %w", secs, w.f.Name(), ioErr)
	}
	return nil
}

// Feed restarts the countdown. Any write counts as a keepalive for every
// driver, so no ioctl is needed.
func (w *Watchdog) Feed() error {
	if _, err := w.f.Write([]byte{0}); err != nil {
		return fmt.Errorf("feed watchdog: %w", err)
	}
	return nil
}

// FenceTimeout is how soon the watchdog resets a PM that fences itself.
const FenceTimeout = time.Second

// Fence makes the watchdog reset the PM within FenceTimeout; the caller
// must not feed it again.
func (w *Watchdog) Fence() error {
	return w.setTimeout(FenceTimeout)
}

// Disarm stops the watchdog on an orderly shutdown: drivers without
// nowayout stop counting when 'V' is written just before close.
func (w *Watchdog) Disarm() error {
	if _, err := w.f.Write([]byte("V")); err != nil {
		w.f.Close()
		return fmt.Errorf("disarm watchdog: %w", err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("disarm watchdog: %w", err)
	}
	return nil
}
