package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// maxCaptured is how many frames a Capture keeps; older ones are dropped.
const maxCaptured = 10000

// maxFrame fits any frame a tap or bridge delivers, offloaded
// (GSO) super-frames of up to 64 KiB included.
const maxFrame = 1 << 16

// Capture records the frames seen on one interface of the unit's namespace
// with a raw AF_PACKET socket: those sent and received by it. On a bridge
// that is what the bridge floods to itself, broadcasts and multicasts such
// as gratuitous ARP and IPv6 neighbour advertisements included, and
// unicast for the operator host; unicast between two PMs is not.
type Capture struct {
	iface   string
	conn    *packet.Conn
	done    chan struct{} // closed when the reader has returned
	untrack func()

	closeOnce sync.Once

	mu      sync.Mutex
	stop    func() bool // releases the watch on the context
	frames  [][]byte
	total   uint64        // frames ever captured
	changed chan struct{} // closed and replaced on every frame and when reading stops
	err     error         // why reading stopped
}

// Capture starts recording the frames of iface inside the unit's namespace
// (a bridge such as "ibiz" or "biz1", or "lo" where priv0 and sync0 travel
// as UDP) until ctx ends, the capture is closed or the unit is closed.
func (u *Unit) Capture(ctx context.Context, iface string) (*Capture, error) {
	var conn *packet.Conn
	err := u.ns.do(func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("harness: capture on %s: %w", iface, err)
	}
	c := &Capture{
		iface:   iface,
		conn:    conn,
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	c.untrack = func() { u.untrack(c) }
	go c.read()
	if !u.track(c) {
		c.shut()
		return nil, fmt.Errorf("harness: capture on %s: unit closed", iface)
	}
	// Under mu: the callback may run before AfterFunc returns.
	c.mu.Lock()
	c.stop = context.AfterFunc(ctx, func() { c.Close() })
	c.mu.Unlock()
	return c, nil
}

func (c *Capture) read() {
	defer close(c.done)
	buf := make([]byte, maxFrame)
	for {
		n, _, err := c.conn.ReadFrom(buf)
		if err != nil {
			c.mu.Lock()
			c.err = err
			close(c.changed)
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		c.frames = append(c.frames, slices.Clone(buf[:n]))
		c.total++
		// Trim in batches so that a busy segment costs amortized O(1).
		if len(c.frames) >= 2*maxCaptured {
			c.frames = slices.Clone(c.frames[len(c.frames)-maxCaptured:])
		}
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
	}
}

// Frames returns the frames captured so far, oldest first, at most the
// last 10000, each starting with its Ethernet header.
func (c *Capture) Frames() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.frames[max(0, len(c.frames)-maxCaptured):])
}

// WaitFor returns once a captured frame satisfies match: one captured
// before the call (among those kept) or after it. It fails when timeout
// passes, ctx ends or the capture is closed first.
func (c *Capture) WaitFor(ctx context.Context, timeout time.Duration, what string, match func(frame []byte) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	var next uint64 // index (in total) of the first frame not yet matched
	for {
		c.mu.Lock()
		first := c.total - uint64(len(c.frames))
		fs := c.frames[max(next, first)-first:]
		next = c.total
		changed, stopped := c.changed, c.err
		c.mu.Unlock()
		for _, f := range fs {
			if match(f) {
				return nil
			}
		}
		if stopped != nil {
			return fmt.Errorf("harness: capture on %s: %s not seen in %d frames, capture stopped: %w", c.iface, what, next, stopped)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("harness: capture on %s: waited %s for %s (%d frames seen): %w", c.iface, time.Since(start).Round(time.Millisecond), what, next, ctx.Err())
		}
	}
}

// Close stops the capture; the frames stay readable. Close is idempotent.
func (c *Capture) Close() error {
	c.mu.Lock()
	stop := c.stop
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
	c.untrack()
	return c.shut()
}

func (c *Capture) shut() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.conn.Close()
		<-c.done
	})
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("harness: capture on %s: %w", c.iface, err)
	}
	return nil
}
