package shutdown

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func encode(evs ...Event) []byte {
	var out []byte
	for _, e := range evs {
		r := make([]byte, eventSize)
		tv := eventSize - 8
		binary.NativeEndian.PutUint64(r[0:], 1234) // seconds: decoding must ignore the time
		binary.NativeEndian.PutUint16(r[tv:], e.Type)
		binary.NativeEndian.PutUint16(r[tv+2:], e.Code)
		binary.NativeEndian.PutUint32(r[tv+4:], uint32(e.Value))
		out = append(out, r...)
	}
	return out
}

var (
	press   = Event{evKey, keyPower, 1}
	release = Event{evKey, keyPower, 0}
	syn     = Event{0, 0, 0}
	other   = Event{evKey, 28, 1} // KEY_ENTER
)

func TestDecodeEvents(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    []byte
		want  []Event
		used  int
		power bool
	}{
		{"empty", nil, []Event{}, 0, false},
		{"press", encode(press, syn), []Event{press, syn}, 2 * eventSize, true},
		{"release only", encode(release, syn), []Event{release, syn}, 2 * eventSize, false},
		{"other key", encode(other), []Event{other}, eventSize, false},
		{"partial tail kept", append(encode(press), 1, 2, 3), []Event{press}, eventSize, true},
		{"only partial", []byte{1, 2, 3}, []Event{}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, used := DecodeEvents(tc.in)
			if !slices.Equal(got, tc.want) || used != tc.used {
				t.Errorf("got %v, %d; want %v, %d", got, used, tc.want, tc.used)
			}
			if p := slices.ContainsFunc(got, Event.IsPowerPress); p != tc.power {
				t.Errorf("power press = %v, want %v", p, tc.power)
			}
		})
	}
}

func FuzzDecodeEvents(f *testing.F) {
	f.Add(encode(press, syn))
	f.Add(append(encode(release), 9, 9))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, used := DecodeEvents(b)
		if used != len(evs)*eventSize || used > len(b) || len(b)-used >= eventSize {
			t.Fatalf("len %d: %d events, %d bytes used", len(b), len(evs), used)
		}
		if again := encode(evs...); len(again) != used {
			t.Fatalf("re-encoding gives %d bytes, want %d", len(again), used)
		}
	})
}

// chunked delivers its data a few bytes at a time, as a reader may.
type chunked struct{ b []byte }

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 5)], c.b)
	c.b = c.b[n:]
	return n, nil
}

func TestReadPowerButton(t *testing.T) {
	if err := ReadPowerButton(&chunked{encode(other, syn, release, press, syn)}); err != nil {
		t.Errorf("press in split reads: %v", err)
	}
	if err := ReadPowerButton(&chunked{encode(other, release)}); !errors.Is(err, io.EOF) {
		t.Errorf("no press: err = %v, want EOF", err)
	}
}

func TestFindPowerButtons(t *testing.T) {
	sys := t.TempDir()
	for dev, name := range map[string]string{"event0": "Power Button\n", "event1": "AT Translated Set 2 keyboard\n", "event4": "Power Button\n"} {
		dir := filepath.Join(sys, dev, "device")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "name"), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := FindPowerButtons(sys, "/dev/input")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/dev/input/event0", "/dev/input/event4"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// The button appears after the watcher started, as when the button module
// loads late; a press on it must become a power-off request.
func TestWatcherFindsLateButton(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	w := &PowerButtonWatcher{
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		SysInput: sys,
		DevInput: dev,
		Rescan:   time.Minute,
		Interval: 10 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan Request, 1)
	go w.Run(ctx, out)

	if err := os.WriteFile(filepath.Join(dev, "event2"), encode(release, syn, press, syn), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(sys, "event2", "device"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sys, "event2", "device", "name"), []byte("Power Button\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case req := <-out:
		if req.Action != PowerOff || req.Reason != "power button" {
			t.Errorf("request = %+v", req)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no request from the power button")
	}
}
