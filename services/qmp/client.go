package qmp

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

// ErrClosed is returned by Execute once the connection is gone, for example
// after QEMU exited because of a "quit" command.
var ErrClosed = errors.New("qmp: connection closed")

// EventBuffer is how many events Events holds for a slow reader; events that
// arrive while it is full are dropped so that replies keep flowing.
const EventBuffer = 64

// maxMessage bounds one line from QEMU; query-qmp-schema, the largest
// reply QEMU 7.2 sends, is well below it.
const maxMessage = 16 << 20

// Client is one QMP connection. Its methods are safe for concurrent use.
type Client struct {
	conn    net.Conn
	events  chan Event
	greeted chan struct{}
	done    chan struct{}
	writeMu sync.Mutex

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan message
	readErr error
}

// Dial connects to the QMP socket at socketPath, waits for the greeting and
// leaves capabilities negotiation mode so that commands can run.
func Dial(ctx context.Context, socketPath string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial %s: %w", socketPath, err)
	}
	c := &Client{
		conn:    conn,
		events:  make(chan Event, EventBuffer),
		greeted: make(chan struct{}),
		done:    make(chan struct{}),
		pending: make(map[uint64]chan message),
	}
	go c.read()
	select {
	case <-c.greeted:
	case <-c.done:
		return nil, fmt.Errorf("qmp: %s: no greeting: %w", socketPath, c.err())
	case <-ctx.Done():
		c.Close()
		return nil, fmt.Errorf("qmp: %s: waiting for greeting: %w", socketPath, ctx.Err())
	}
	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("qmp: %s: %w", socketPath, err)
	}
	return c, nil
}

// Events delivers asynchronous events in arrival order. The channel is
// closed when the connection ends. See EventBuffer for what happens when
// nobody reads it.
func (c *Client) Events() <-chan Event { return c.events }

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Execute runs command with args (nil for none, otherwise anything that
// marshals to a JSON object) and decodes the "return" member into result
// unless result is nil. A refusal by QEMU is returned as a *Error.
func (c *Client) Execute(ctx context.Context, command string, args any, result any) error {
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        uint64 `json:"id"`
	}{Execute: command, Arguments: args}

	reply := make(chan message, 1)
	c.mu.Lock()
	if c.readErr != nil {
		c.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, c.readErr)
	}
	c.nextID++
	req.ID = c.nextID
	c.pending[req.ID] = reply
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, req.ID)
		c.mu.Unlock()
	}()

	line, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp %s: encode arguments: %w", command, err)
	}
	if err := c.write(ctx, append(line, '\n')); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}

	var m message
	select {
	case m = <-reply:
	case <-c.done:
		// The reply may have been delivered just before the reader stopped.
		select {
		case m = <-reply:
		default:
			return fmt.Errorf("qmp %s: %w", command, c.err())
		}
	case <-ctx.Done():
		return fmt.Errorf("qmp %s: %w", command, ctx.Err())
	}
	if m.kind == kindError {
		return fmt.Errorf("qmp %s: %w", command, m.err)
	}
	if result == nil {
		return nil
	}
	if err := json.Unmarshal(m.ret, result); err != nil {
		return fmt.Errorf("qmp %s: decode reply: %w", command, err)
	}
	return nil
}

// Close ends the connection and waits for the reader to stop.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (c *Client) write(ctx context.Context, b []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	cut := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.conn.SetWriteDeadline(time.Unix(1, 0))
		close(cut)
	})
	_, err := c.conn.Write(b)
	if !stop() {
		// ctx ended during or just after the write: the past deadline it
		// set must not outlive this call and fail the next command.
		<-cut
		c.conn.SetWriteDeadline(time.Time{})
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (c *Client) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

func (c *Client) read() {
	sc := bufio.NewScanner(c.conn)
	sc.Buffer(make([]byte, 0, 64<<10), maxMessage)
	var err error
	for sc.Scan() {
		var m message
		m, err = decode(sc.Bytes())
		if err != nil {
			break
		}
		c.dispatch(m)
	}
	if err == nil {
		err = sc.Err()
	}
	if err == nil || errors.Is(err, net.ErrClosed) {
		err = ErrClosed
	} else {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	c.conn.Close()
	c.mu.Lock()
	c.readErr = err
	c.mu.Unlock()
	close(c.events)
	close(c.done)
}

func (c *Client) dispatch(m message) {
	switch m.kind {
	case kindGreeting:
		select {
		case <-c.greeted:
		default:
			close(c.greeted)
		}
	case kindReturn, kindError:
		if !m.hasID {
			// Every request carries an id; a reply without one answers
			// input QEMU could not parse, which this client never sends.
			return
		}
		c.mu.Lock()
		reply, ok := c.pending[m.id]
		delete(c.pending, m.id)
		c.mu.Unlock()
		if ok {
			reply <- m
		}
	case kindEvent:
		select {
		case c.events <- m.event:
		default:
		}
	}
}
