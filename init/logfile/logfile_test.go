package logfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRotateCloseReset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log", "svc.log")
	f := &File{Path: path, Max: 10}
	for _, line := range []string{"aaaa\n", "bbbb\n", "cccc\n"} {
		if _, err := f.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return string(b)
	}
	if got, old := read(path), read(path+".1"); got != "cccc\n" || old != "aaaa\nbbbb\n" {
		t.Fatalf("after rotation: current %q, .1 %q", got, old)
	}

	// A removed file (data partition replaced) is recreated after Reset.
	os.Remove(path)
	f.Reset()
	f.Write([]byte("dddd\n"))
	if got := read(path); got != "dddd\n" {
		t.Fatalf("after reset: %q", got)
	}

	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := f.Write([]byte("late\n")); err != nil || n != 5 {
		t.Fatalf("write after Close: %d, %v", n, err)
	}
	if got := read(path); got != "dddd\n" {
		t.Fatalf("a write after Close reached the file: %q", got)
	}
}
