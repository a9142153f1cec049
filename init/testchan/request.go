// Package testchan serves the test channel: newline-delimited JSON requests
// from the test harness over a virtio-serial port, answered one line each.
// It exists only when dyad.testchannel=1 and never in production.
package testchan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
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
	Signal    string   `json:"signal,omitempty"` // OpSignal: QUIT, TERM, KILL, ...
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
	case OpPowerOff, OpReboot, OpPing:
	case "":
		return errors.New("missing op")
	default:
		return fmt.Errorf("unknown op %q", r.Op)
	}
	return nil
}
