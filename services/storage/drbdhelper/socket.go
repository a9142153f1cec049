package drbdhelper

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// Handler answers a call with the exit code for the helper (0..255). Its
// context ends after Timeout(c.Cmd), when the helper stops waiting.
type Handler func(ctx context.Context, c Call) int

// request is Call on the wire, with Minor required: a missing minor must
// not read as minor 0.
type request struct {
	Cmd      string            `json:"cmd"`
	Arg      string            `json:"arg"`
	Resource string            `json:"resource,omitempty"`
	Minor    *int              `json:"minor"`
	Env      map[string]string `json:"env,omitempty"`
}

type reply struct {
	Exit *int `json:"exit"`
	// Error says why a request was refused (its exit is then 1).
	Error string `json:"error,omitempty"`
}

// ioTimeout bounds reading a request and writing a reply: a helper sends its
// line at once, and a stuck client must not hold a connection.
const ioTimeout = 5 * time.Second

// Serve answers helper calls on ln with h until ctx ends, then closes ln and
// waits for the calls in progress. A bad request gets exit code 1 and a log
// line. Serve returns nil when ctx ends, an error when ln fails otherwise.
func Serve(ctx context.Context, log *slog.Logger, ln net.Listener, h Handler) error {
	return serve(ctx, log, ln, h, ioTimeout)
}

func serve(ctx context.Context, log *slog.Logger, ln net.Listener, h Handler, ioTimeout time.Duration) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("drbd helper socket: %w", err)
			}
			// Out of file descriptors and the like: retry, slower each time.
			delay = min(max(2*delay, 10*time.Millisecond), time.Second)
			log.Warn("drbd helper socket: accept", "err", err, "retry_in", delay)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		wg.Go(func() { serveConn(ctx, log, conn, h, ioTimeout) })
	}
}

func serveConn(ctx context.Context, log *slog.Logger, conn net.Conn, h Handler, ioTimeout time.Duration) {
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(ioTimeout))
	c, err := readCall(conn)
	exit := 1
	var refusal string
	if err != nil {
		log.Warn("drbd helper: bad request", "err", err)
		refusal = err.Error()
	} else {
		hctx, cancel := context.WithTimeout(ctx, Timeout(c.Cmd))
		exit = min(max(h(hctx, c), 0), 255)
		cancel()
	}
	conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := writeLine(conn, reply{Exit: &exit, Error: refusal}); err != nil {
		log.Warn("drbd helper: reply not delivered", "cmd", c.Cmd, "target", c.Target(), "exit", exit, "err", err)
	}
}

// readLine reads one line of at most MaxMessage bytes, newline included; a
// last line may end at EOF instead.
func readLine(r io.Reader) ([]byte, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, MaxMessage), MaxMessage)
	line, err := br.ReadSlice('\n')
	switch {
	case err == nil:
		return line, nil
	case errors.Is(err, bufio.ErrBufferFull), errors.Is(err, io.EOF) && len(line) == MaxMessage:
		return nil, fmt.Errorf("message longer than %d bytes", MaxMessage)
	case errors.Is(err, io.EOF) && len(line) > 0:
		return line, nil
	case errors.Is(err, io.EOF):
		return nil, io.ErrUnexpectedEOF
	}
	return nil, err
}

// decodeStrict decodes exactly one JSON object from line into v, refusing
// unknown fields and trailing data.
func decodeStrict(line []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON object")
	}
	return nil
}

// readCall reads and checks one request.
func readCall(r io.Reader) (Call, error) {
	line, err := readLine(r)
	if err != nil {
		return Call{}, fmt.Errorf("read request: %w", err)
	}
	var req request
	if err := decodeStrict(line, &req); err != nil {
		return Call{}, fmt.Errorf("decode request: %w", err)
	}
	if req.Minor == nil {
		return Call{}, errors.New("request without minor")
	}
	c := Call{Cmd: req.Cmd, Arg: req.Arg, Resource: req.Resource, Minor: *req.Minor, Env: req.Env}
	if len(c.Env) == 0 {
		c.Env = nil // as ParseCall leaves it
	}
	if err := c.Validate(); err != nil {
		return Call{}, err
	}
	return c, nil
}

func writeLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if len(b) > MaxMessage {
		return fmt.Errorf("message of %d bytes, at most %d", len(b), MaxMessage)
	}
	_, err = w.Write(b)
	return err
}

// Ask sends c to the agent listening on socketPath and returns the exit
// code it answers. An error means no usable answer: the agent is not
// listening, did not answer before ctx ended, answered garbage, or refused
// the call (the exit code is then the refusal's, 1).
func Ask(ctx context.Context, socketPath string, c Call) (int, error) {
	if err := c.Validate(); err != nil {
		return 0, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return 0, fmt.Errorf("reach the agent: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// A cancelled context without a deadline unblocks the I/O too.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	exit, err := exchange(conn, c)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return 0, fmt.Errorf("ask the agent: %w", ctx.Err())
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The connection's deadline is the context's, which may fire
		// first.
		return 0, fmt.Errorf("ask the agent: %w", context.DeadlineExceeded)
	}
	return exit, err
}

func exchange(conn net.Conn, c Call) (int, error) {
	if err := writeLine(conn, c); err != nil {
		return 0, fmt.Errorf("send to the agent: %w", err)
	}
	line, err := readLine(conn)
	if err != nil {
		return 0, fmt.Errorf("read the agent's answer: %w", err)
	}
	var rep reply
	if err := decodeStrict(line, &rep); err != nil {
		return 0, fmt.Errorf("decode the agent's answer: %w", err)
	}
	if rep.Exit == nil || *rep.Exit < 0 || *rep.Exit > 255 {
		return 0, fmt.Errorf("the agent's answer has no exit code in 0..255: %s", bytes.TrimSpace(line))
	}
	if rep.Error != "" {
		return *rep.Exit, fmt.Errorf("the agent refused the call: %s", rep.Error)
	}
	return *rep.Exit, nil
}
