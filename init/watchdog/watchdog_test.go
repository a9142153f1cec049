package watchdog

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A regular file stands in for the device: the writes are the real protocol,
// and the timeout ioctl must be refused because a file is not a watchdog.
func TestFeedAndDisarmWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := Open(path, 30*time.Second)
	if !errors.Is(err, unix.ENOTTY) {
		t.Errorf("Open on a regular file: err = %v, want ENOTTY from WDIOC_SETTIMEOUT", err)
	}
	if w == nil {
		t.Fatal("Open returned no watchdog")
	}
	for range 2 {
		if err := w.Feed(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Disarm(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "\x00\x00V" {
		t.Errorf("device saw %q, want two keepalives then the magic close", got)
	}
}

func TestOpenMissing(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "none"), 30*time.Second); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want not exist", err)
	}
}

func TestTimeoutBelowOneSecond(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := Open(path, 500*time.Millisecond)
	if err == nil {
		t.Error("500ms timeout accepted")
	}
	w.Disarm()
}
