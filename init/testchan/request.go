// Package testchan serves the test channel: newline-delimited JSON requests
// from the test harness over a virtio-serial port, answered one line each.
// It exists only when dyad.testchannel=1 and never in production.
package testchan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Request is one line from the harness.
type Request struct {
	ID        int64    `json:"id"`
	Op        string   `json:"op"`
	Argv      []string `json:"argv,omitempty"`
	TimeoutMS int64    `json:"timeout_ms,omitempty"`
	Path      string   `json:"path,omitempty"`
	Service   string   `json:"service,omitempty"`
	Signal    string   `json:"signal,omitempty"` // OpSignal, OpKillPidfile: QUIT, TERM, KILL, ...

	// Storage operations (OpPWrite, OpSHA256, OpDWrite) address the byte
	// range [Offset, Offset+Length) of Path, or Count writes of BlockSize
	// bytes from Offset.
	Offset    int64 `json:"offset,omitempty"`
	Length    int64 `json:"length,omitempty"`
	Seed      int64 `json:"seed,omitempty"`       // selects the Pattern written
	Direct    bool  `json:"direct,omitempty"`     // O_DIRECT: the page cache is bypassed
	DSync     bool  `json:"dsync,omitempty"`      // OpDWrite: O_DSYNC, each write is durable
	BlockSize int64 `json:"block_size,omitempty"` // OpDWrite
	Count     int64 `json:"count,omitempty"`      // OpDWrite
	// Data is the content OpWriteFile writes (base64 in JSON).
	Data []byte `json:"data,omitempty"`
}

// Response is one line back; []byte fields travel as base64.
type Response struct {
	ID     int64  `json:"id"`
	Exit   *int   `json:"exit,omitempty"`
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
	Data   []byte `json:"data,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Operations of the protocol.
const (
	OpExec     = "exec"
	OpRead     = "read"
	OpLog      = "log"
	OpPowerOff = "poweroff"
	OpReboot   = "reboot"
	OpPing     = "ping"
	// OpSignal sends a signal to a supervised service; SIGQUIT makes a Go
	// service print the stacks of all its goroutines to its log.
	OpSignal = "signal"
	// OpPWrite writes Length bytes of the pattern of Seed at Offset and
	// fsyncs; Data is the hex SHA-256 of the bytes written.
	OpPWrite = "pwrite"
	// OpSHA256 answers the hex SHA-256 of a byte range in Data, read past
	// the page cache where the file allows it.
	OpSHA256 = "sha256"
	// OpDWrite times Count sequential writes of BlockSize bytes; Data is a
	// JSON DWriteResult.
	OpDWrite = "dwrite"
	// OpWriteFile creates or replaces a file under /run or /tmp with Data,
	// for configuration files of the tools a test runs (the image has no
	// shell to write them with).
	OpWriteFile = "writefile"
	// OpKillPidfile sends Signal to the process whose pid Path (a pid
	// file, as QEMU's -pidfile writes) holds, as an operator's kill(1)
	// would: tests use it to crash a VM's QEMU. Data is the pid signalled.
	OpKillPidfile = "killpid"
)

// Signals a test may send to a service with OpSignal.
var Signals = map[string]syscall.Signal{
	"QUIT": syscall.SIGQUIT, "TERM": syscall.SIGTERM, "KILL": syscall.SIGKILL,
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "HUP": syscall.SIGHUP,
	"STOP": syscall.SIGSTOP, "CONT": syscall.SIGCONT,
}

// Limits on exec timeouts.
const (
	DefaultTimeout = 30 * time.Second
	MaxTimeout     = time.Hour
)

// Limits of the storage operations. A PM has little memory and a test no
// business writing more than a few GiB; the latency list of OpDWrite
// stays within 8 MiB.
const (
	MaxIOBytes   = 4 << 30  // Length, and BlockSize*Count
	MaxBlockSize = 64 << 20 // OpDWrite buffer
	MaxCount     = 1 << 20  // OpDWrite writes
	// DirectAlign is what O_DIRECT requires of offsets, lengths and block
	// sizes here: the largest logical block size of the disks in use.
	DirectAlign = 4096
	// MaxStorageTimeout bounds a storage operation's timeout_ms; without
	// one it runs until it is done.
	MaxStorageTimeout = MaxTimeout
)

// writeFileDirs are where OpWriteFile may write: the tmpfs mounts of a PM,
// never the image or the data partition.
var writeFileDirs = []string{"/run/", "/tmp/"}

// Timeout is the exec timeout the request asks for, DefaultTimeout if none.
func (r Request) Timeout() time.Duration {
	if r.TimeoutMS == 0 {
		return DefaultTimeout
	}
	return time.Duration(r.TimeoutMS) * time.Millisecond
}

// ParseRequest decodes and validates one request line. When the JSON decodes
// but the request is invalid, the returned Request still carries its ID so the
// error can be answered to the right request.
func ParseRequest(line []byte) (Request, error) {
	var r Request
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("bad request JSON: %w", err)
	}
	if dec.More() {
		return Request{ID: r.ID}, errors.New("bad request: more than one JSON value on the line")
	}
	if err := r.validate(); err != nil {
		return Request{ID: r.ID}, fmt.Errorf("bad request %d: %w", r.ID, err)
	}
	// An empty list and no list mean the same; keeping one form makes a
	// request survive encoding unchanged.
	if len(r.Argv) == 0 {
		r.Argv = nil
	}
	if len(r.Data) == 0 {
		r.Data = nil
	}
	return r, nil
}

func (r Request) validate() error {
	switch r.Op {
	case OpExec:
		if len(r.Argv) == 0 || r.Argv[0] == "" {
			return errors.New("exec needs a non-empty argv")
		}
		for _, a := range r.Argv {
			if strings.IndexByte(a, 0) >= 0 {
				return errors.New("argv contains a NUL byte")
			}
		}
		if r.TimeoutMS < 0 || r.TimeoutMS > MaxTimeout.Milliseconds() {
			return fmt.Errorf("timeout_ms %d out of range 0..%d", r.TimeoutMS, MaxTimeout.Milliseconds())
		}
	case OpRead:
		if !filepath.IsAbs(r.Path) || strings.IndexByte(r.Path, 0) >= 0 {
			return fmt.Errorf("read needs an absolute path, got %q", r.Path)
		}
	case OpLog:
		if r.Service == "" {
			return errors.New("log needs a service")
		}
	case OpSignal:
		if r.Service == "" {
			return errors.New("signal needs a service")
		}
		if _, ok := Signals[r.Signal]; !ok {
			return fmt.Errorf("unknown signal %q", r.Signal)
		}
	case OpPWrite, OpSHA256:
		if err := checkPath(r.Op, r.Path); err != nil {
			return err
		}
		if err := checkRange(r.Offset, r.Length); err != nil {
			return err
		}
		if r.Op == OpPWrite && r.Direct && (r.Offset%DirectAlign != 0 || r.Length%DirectAlign != 0) {
			return fmt.Errorf("direct pwrite needs offset and length in multiples of %d, got %d and %d", DirectAlign, r.Offset, r.Length)
		}
		if err := checkStorageTimeout(r.TimeoutMS); err != nil {
			return err
		}
	case OpDWrite:
		if err := checkPath(r.Op, r.Path); err != nil {
			return err
		}
		if r.BlockSize <= 0 || r.BlockSize > MaxBlockSize {
			return fmt.Errorf("block_size %d out of range 1..%d", r.BlockSize, MaxBlockSize)
		}
		if r.Count <= 0 || r.Count > MaxCount {
			return fmt.Errorf("count %d out of range 1..%d", r.Count, MaxCount)
		}
		if err := checkRange(r.Offset, r.BlockSize*r.Count); err != nil {
			return err
		}
		if r.Direct && (r.Offset%DirectAlign != 0 || r.BlockSize%DirectAlign != 0) {
			return fmt.Errorf("direct dwrite needs offset and block_size in multiples of %d, got %d and %d", DirectAlign, r.Offset, r.BlockSize)
		}
		if err := checkStorageTimeout(r.TimeoutMS); err != nil {
			return err
		}
	case OpWriteFile:
		if err := checkPath(r.Op, r.Path); err != nil {
			return err
		}
		if filepath.Clean(r.Path) != r.Path || !slices.ContainsFunc(writeFileDirs, func(d string) bool { return strings.HasPrefix(r.Path, d) }) {
			return fmt.Errorf("writefile path %q must be clean and under %s", r.Path, strings.Join(writeFileDirs, " or "))
		}
	case OpKillPidfile:
		if err := checkPath(r.Op, r.Path); err != nil {
			return err
		}
		if _, ok := Signals[r.Signal]; !ok {
			return fmt.Errorf("unknown signal %q", r.Signal)
		}
	case OpPowerOff, OpReboot, OpPing:
	case "":
		return errors.New("missing op")
	default:
		return fmt.Errorf("unknown op %q", r.Op)
	}
	return nil
}

func checkPath(op, p string) error {
	if !filepath.IsAbs(p) || strings.IndexByte(p, 0) >= 0 {
		return fmt.Errorf("%s needs an absolute path, got %q", op, p)
	}
	return nil
}

// checkRange accepts 1..MaxIOBytes bytes from a non-negative offset whose
// end does not overflow.
func checkRange(offset, length int64) error {
	if offset < 0 {
		return fmt.Errorf("offset %d is negative", offset)
	}
	if length <= 0 || length > MaxIOBytes {
		return fmt.Errorf("length %d out of range 1..%d", length, int64(MaxIOBytes))
	}
	if offset > math.MaxInt64-length {
		return fmt.Errorf("offset %d + length %d overflows", offset, length)
	}
	return nil
}

func checkStorageTimeout(ms int64) error {
	if ms < 0 || ms > MaxStorageTimeout.Milliseconds() {
		return fmt.Errorf("timeout_ms %d out of range 0..%d", ms, MaxStorageTimeout.Milliseconds())
	}
	return nil
}
