package testchan

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// maxPidfile bounds what is read of a pid file: a pid is at most 7 digits
// (pid_max is at most 2^22) and a newline.
const maxPidfile = 64

// ParsePidfile returns the pid a pid file holds: decimal digits, optionally
// followed by white space (QEMU and most daemons end the line with '\n').
// Pids 0 and 1 and anything not a plain positive number are refused: kill(2)
// reads 0 and negative values as process groups, and pid 1 is init itself.
func ParsePidfile(b []byte) (int, error) {
	s := strings.TrimRight(string(b), " \t\r\n")
	if s == "" {
		return 0, errors.New("pid file is empty")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("pid file holds %q, not a pid", s)
		}
	}
	pid, err := strconv.Atoi(s)
	if err != nil || pid > 1<<22 {
		return 0, fmt.Errorf("pid file holds %q, out of the range of pids", s)
	}
	if pid <= 1 {
		return 0, fmt.Errorf("pid file holds pid %d, which is not a process that may be signalled", pid)
	}
	return pid, nil
}

// killPidfile sends sig to the process named in the pid file at path and
// returns its pid.
func killPidfile(path string, sig syscall.Signal) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPidfile+1))
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(b) > maxPidfile {
		return 0, fmt.Errorf("%s is longer than a pid file", path)
	}
	pid, err := ParsePidfile(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return 0, fmt.Errorf("signal %v to pid %d from %s: %w", sig, pid, path, err)
	}
	return pid, nil
}
