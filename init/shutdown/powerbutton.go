package shutdown

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Event is one struct input_event from an evdev device.
type Event struct {
	Type  uint16
	Code  uint16
	Value int32
}

// Linux input constants (linux/input-event-codes.h).
const (
	evKey      = 0x01
	keyPower   = 116
	keyPressed = 1
)

// eventSize is sizeof(struct input_event): a struct timeval then type, code
// and value.
const eventSize = int(unsafe.Sizeof(unix.Timeval{})) + 8

// DecodeEvents decodes the whole input_event records in b and returns them
// with the number of bytes consumed; a trailing partial record is left for
// the next read.
func DecodeEvents(b []byte) ([]Event, int) {
	n := len(b) / eventSize
	evs := make([]Event, 0, n)
	tv := eventSize - 8
	for i := range n {
		r := b[i*eventSize : (i+1)*eventSize]
		evs = append(evs, Event{
			Type:  binary.NativeEndian.Uint16(r[tv:]),
			Code:  binary.NativeEndian.Uint16(r[tv+2:]),
			Value: int32(binary.NativeEndian.Uint32(r[tv+4:])),
		})
	}
	return evs, n * eventSize
}

// IsPowerPress reports whether e is the power key going down.
func (e Event) IsPowerPress() bool {
	return e.Type == evKey && e.Code == keyPower && e.Value == keyPressed
}

// FindPowerButtons returns the evdev nodes (under devInput, normally
// /dev/input) of input devices that sysfs (sysInput, normally
// /sys/class/input) names "Power Button", as the ACPI button driver does.
func FindPowerButtons(sysInput, devInput string) ([]string, error) {
	names, err := filepath.Glob(filepath.Join(sysInput, "event*", "device", "name"))
	if err != nil {
		return nil, fmt.Errorf("scan input devices: %w", err)
	}
	var out []string
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			continue // the device went away while scanning
		}
		if strings.TrimSpace(string(b)) == "Power Button" {
			ev := filepath.Base(filepath.Dir(filepath.Dir(n)))
			out = append(out, filepath.Join(devInput, ev))
		}
	}
	return out, nil
}

// ReadPowerButton reads input events from r until the power key is pressed
// (returns nil) or reading fails.
func ReadPowerButton(r io.Reader) error {
	buf := make([]byte, 64*eventSize)
	have := 0
	for {
		n, err := r.Read(buf[have:])
		have += n
		evs, used := DecodeEvents(buf[:have])
		for _, e := range evs {
			if e.IsPowerPress() {
				return nil
			}
		}
		have = copy(buf, buf[used:have])
		if err != nil {
			return fmt.Errorf("read power button: %w", err)
		}
	}
}

// PowerButtonWatcher sends a power-off request when an ACPI power button is
// pressed. The button and evdev modules may load after it starts, so it
// rescans for buttons for a while.
type PowerButtonWatcher struct {
	Log      *slog.Logger
	SysInput string        // /sys/class/input
	DevInput string        // /dev/input
	Rescan   time.Duration // how long to keep looking for new buttons
	Interval time.Duration // between scans
}

// Run watches until ctx is done, sending at most one request per press.
func (w *PowerButtonWatcher) Run(ctx context.Context, out chan<- Request) {
	watched := map[string]bool{}
	deadline := time.Now().Add(w.Rescan)
	tick := time.NewTicker(w.Interval)
	defer tick.Stop()
	for {
		devs, err := FindPowerButtons(w.SysInput, w.DevInput)
		if err != nil {
			w.Log.Warn("dyad-init: power button scan", "err", err)
		}
		for _, d := range devs {
			if watched[d] {
				continue
			}
			watched[d] = true
			go w.watch(ctx, d, out)
		}
		if time.Now().After(deadline) {
			if len(watched) == 0 {
				w.Log.Warn("dyad-init: no ACPI power button found; power off with the test channel or SIGTERM", "searched", w.Rescan)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (w *PowerButtonWatcher) watch(ctx context.Context, dev string, out chan<- Request) {
	f, err := os.Open(dev)
	if err != nil {
		w.Log.Warn("dyad-init: cannot open power button", "dev", dev, "err", err)
		return
	}
	context.AfterFunc(ctx, func() { f.Close() })
	w.Log.Info("dyad-init: watching power button", "dev", dev)
	for {
		if err := ReadPowerButton(f); err != nil {
			if !errors.Is(err, os.ErrClosed) {
				w.Log.Warn("dyad-init: power button stopped", "dev", dev, "err", err)
			}
			f.Close()
			return
		}
		select {
		case out <- Request{PowerOff, "power button"}:
		case <-ctx.Done():
			return
		}
	}
}
