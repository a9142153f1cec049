package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// maxTestChannelLine bounds one response; a service log ring buffer
// (256 KiB) in base64 fits with room to spare.
const maxTestChannelLine = 8 << 20

// defaultExecTimeout is sent as timeout_ms when ctx carries no deadline.
const defaultExecTimeout = time.Minute

// tcRequest is one request of the test channel protocol (CONTRACTS.md).
type tcRequest struct {
	ID        uint64   `json:"id"`
	Op        string   `json:"op"`
	Argv      []string `json:"argv,omitempty"`
	TimeoutMS int64    `json:"timeout_ms,omitempty"`
	Path      string   `json:"path,omitempty"`
	Service   string   `json:"service,omitempty"`
	Signal    string   `json:"signal,omitempty"`
	Offset    int64    `json:"offset,omitempty"`
	Length    int64    `json:"length,omitempty"`
	Seed      int64    `json:"seed,omitempty"`
	Direct    bool     `json:"direct,omitempty"`
	DSync     bool     `json:"dsync,omitempty"`
	BlockSize int64    `json:"block_size,omitempty"`
	Count     int64    `json:"count,omitempty"`
	Data      []byte   `json:"data,omitempty"`
}

// tcResponse is one response of the test channel protocol.
type tcResponse struct {
	ID     uint64 `json:"id"`
	Exit   int    `json:"exit"`
	Stdout []byte `json:"stdout"`
	Stderr []byte `json:"stderr"`
	Data   []byte `json:"data"`
	Error  string `json:"error"`
}

// testChannel is the host end of a PM's virtio-serial test channel. QEMU
// holds requests in the socket until the guest opens its port, so a request
// sent early is answered once the PM's server runs. One request is in flight
// at a time; a connection that failed or timed out is dropped and the next
// request dials again (QEMU may have been restarted meanwhile).
type testChannel struct {
	path string

	mu     sync.Mutex
	conn   net.Conn
	sc     *bufio.Scanner
	nextID uint64
}

func (tc *testChannel) call(ctx context.Context, req tcRequest) (tcResponse, error) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	resp, err := tc.roundTrip(ctx, req)
	if err != nil {
		tc.drop()
		return tcResponse{}, fmt.Errorf("test channel %s: %w", req.Op, err)
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("test channel %s: guest: %s", req.Op, resp.Error)
	}
	return resp, nil
}

func (tc *testChannel) roundTrip(ctx context.Context, req tcRequest) (tcResponse, error) {
	if tc.conn == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", tc.path)
		if err != nil {
			return tcResponse{}, err
		}
		tc.conn = c
		tc.sc = bufio.NewScanner(c)
		tc.sc.Buffer(make([]byte, 0, 64<<10), maxTestChannelLine)
	}
	// The callback gets its own copy of the connection: it may run after
	// call has dropped tc.conn, and it does not hold tc.mu.
	conn := tc.conn
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			// ctx ended during the call, so the connection carries (or is
			// about to carry) a past deadline that would fail the next
			// call even when this one got its answer.
			tc.drop()
		}
	}()

	tc.nextID++
	req.ID = tc.nextID
	line, err := json.Marshal(req)
	if err != nil {
		return tcResponse{}, err
	}
	if _, err := tc.conn.Write(append(line, '\n')); err != nil {
		return tcResponse{}, ctxErr(ctx, err)
	}
	for tc.sc.Scan() {
		var resp tcResponse
		if err := json.Unmarshal(tc.sc.Bytes(), &resp); err != nil {
			return tcResponse{}, fmt.Errorf("malformed response %.200q: %w", tc.sc.Bytes(), err)
		}
		// Answers to requests abandoned earlier on this connection are skipped.
		if resp.ID == req.ID {
			return resp, nil
		}
	}
	if err := tc.sc.Err(); err != nil {
		return tcResponse{}, ctxErr(ctx, err)
	}
	return tcResponse{}, errors.New("connection closed by QEMU")
}

// ctxErr prefers the context's error over the deadline error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (tc *testChannel) drop() {
	if tc.conn != nil {
		tc.conn.Close()
		tc.conn, tc.sc = nil, nil
	}
}

func (tc *testChannel) close() {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.drop()
}

// reset drops the connection, for a new QEMU process.
func (tc *testChannel) reset() {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.drop()
}
