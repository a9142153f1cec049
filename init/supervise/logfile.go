package supervise

import (
	"fmt"
	"os"
	"path/filepath"
)

// logFile appends a service's output to a file kept below max bytes by
// rotating it to NAME.1, so a chatty service cannot fill the data partition.
type logFile struct {
	path string
	max  int64
	f    *os.File
	size int64
	shut bool // set at Stop: the file must not keep the data partition busy
}

func (l *logFile) write(line []byte) error {
	if l.shut {
		return nil
	}
	if l.f == nil {
		if err := l.open(); err != nil {
			return err
		}
	}
	if l.size+int64(len(line)) > l.max && l.size > 0 {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(line)
	l.size += int64(n)
	if err != nil {
		return fmt.Errorf("write %s: %w", l.path, err)
	}
	return nil
}

func (l *logFile) open() error {
	if err := os.MkdirAll(filepath.Dir(l.path), 0o755); err != nil {
		return fmt.Errorf("create log directory: %w", err)
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
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

func (l *logFile) rotate() error {
	l.close()
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return fmt.Errorf("rotate %s: %w", l.path, err)
	}
	return l.open()
}

func (l *logFile) close() {
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}
