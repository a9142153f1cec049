// Package logfile is an append-only log file on the data partition, kept
// below a size by rotating it to NAME.1, so that a chatty writer cannot fill
// the partition.
package logfile

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// File is a rotating log file. It is opened on the first write; the zero
// value with Path and Max set is ready to use. It is safe for concurrent use.
type File struct {
	Path string
	Max  int64

	mu   sync.Mutex
	f    *os.File
	size int64
	shut bool // set by Close: the file must not keep the data partition busy
}

// Write appends p and syncs it to disk: the last lines before a power loss
// or a crash are the ones an operator needs, and the writers (init and its
// services) log state changes, not data, so the cost is small.
func (l *File) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shut {
		return len(p), nil
	}
	if l.f == nil {
		if err := l.open(); err != nil {
			return 0, err
		}
	}
	if l.size+int64(len(p)) > l.Max && l.size > 0 {
		if err := l.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("write %s: %w", l.Path, err)
	}
	if err := l.f.Sync(); err != nil {
		return n, fmt.Errorf("sync %s: %w", l.Path, err)
	}
	return n, nil
}

// Close closes the file for good: later writes are dropped.
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.shut = true
	return l.close()
}

// Reset closes the file after a write error so that the next write reopens
// it (the data partition may have been remounted or the file removed).
func (l *File) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.close()
}

func (l *File) open() error {
	if err := os.MkdirAll(filepath.Dir(l.Path), 0o755); err != nil {
		return fmt.Errorf("create log directory: %w", err)
	}
	f, err := os.OpenFile(l.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat log file: %w", err)
	}
	l.f, l.size = f, st.Size()
	return nil
}

func (l *File) rotate() error {
	l.close()
	if err := os.Rename(l.Path, l.Path+".1"); err != nil {
		return fmt.Errorf("rotate %s: %w", l.Path, err)
	}
	return l.open()
}

func (l *File) close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
