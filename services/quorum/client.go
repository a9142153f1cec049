package quorum

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// Lease is a server's answer as the client sees it.
type Lease struct {
	// Granted: this client holds the lease until Until.
	Granted bool
	// Holder is the node holding the lease, 0 for none. A refusal with
	// Holder equal to this client's node means another boot of the node
	// holds it.
	Holder int
	// Until is the end of a granted lease by this client's monotonic
	// clock: never later than the server's end. Zero if not granted.
	Until  time.Time
	Server string
	// Remaining is what is left of the holder's lease by the server's
	// clock when it answered.
	Remaining time.Duration
	// PeerHeard is how long before its answer the server last heard the
	// unit's other node; negative if never.
	PeerHeard time.Duration
}

// retryEvery is how often a request is sent again while no reply comes.
const retryEvery = 250 * time.Millisecond

// rateMargin: a lease's end is brought forward by ttl/rateMargin (0.2%), for
// the client's clock running slower than the server's. NTP slews a clock by
// at most 0.05%, and a crystal's error is smaller still.
const rateMargin = 500

// Client asks quorum servers for the lease of one node of a unit. It opens
// a socket per call, so a call made from a thread inside a network
// namespace talks from that namespace; give the server as IP:port then, as
// resolving a name may run on another thread.
type Client struct {
	// Dial opens the UDP socket of one call; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	unit string
	node int
	boot string
	key  []byte
	seq  atomic.Uint64
	// now reads the clock that Until is on.
	now func() time.Time
}

// NewClient returns the client of node of unit in its incarnation boot (the
// kernel's boot id, so that a restarted agent keeps its lease). Use one
// Client per boot: the server drops requests whose Seq does not rise.
func NewClient(unit string, node int, boot string, key []byte) *Client {
	c := &Client{unit: unit, node: node, boot: boot, key: key, now: time.Now}
	// The wall clock, unlike uptime, keeps rising across reboots and agent
	// restarts, so the new incarnation's requests are not taken for replays.
	c.seq.Store(uint64(time.Now().UnixNano()))
	return c
}

// Acquire asks server (host:port) for the lease for ttl, or renews it. Until
// is computed from the time taken just before the request was sent, so the
// client's view of the end is never later than the server's. It retries the
// datagram every 250ms until ctx ends and accepts only a reply with the
// request's nonce. A refusal because the lease is held is not an error; one
// with a reason from the server (starting up) is, and comes with the Lease.
func (c *Client) Acquire(ctx context.Context, server string, ttl time.Duration) (Lease, error) {
	if ttl < time.Millisecond || ttl > MaxTTL {
		return Lease{}, fmt.Errorf("quorum: lease of %v outside [1ms, %v]", ttl, MaxTTL)
	}
	ms := ttl.Milliseconds()
	rep, sent, err := c.call(ctx, server, OpAcquire, ms)
	if err != nil {
		return Lease{}, err
	}
	l := lease(server, rep)
	if rep.Granted {
		d := time.Duration(ms) * time.Millisecond
		l.Until = sent.Add(d - d/rateMargin)
	}
	return l, serverError(server, rep)
}

// Release gives the lease back. The caller must have stopped what the lease
// protects first: whatever Release returns, a lease it held is void.
func (c *Client) Release(ctx context.Context, server string) error {
	rep, _, err := c.call(ctx, server, OpRelease, 0)
	if err != nil {
		return err
	}
	return serverError(server, rep)
}

// Query asks who holds the lease. It grants nothing: Granted is false.
func (c *Client) Query(ctx context.Context, server string) (Lease, error) {
	rep, _, err := c.call(ctx, server, OpQuery, 0)
	if err != nil {
		return Lease{}, err
	}
	return lease(server, rep), serverError(server, rep)
}

// serverError is the reason the server gave in rep, nil without one.
func serverError(server string, rep Reply) error {
	if rep.Error == "" {
		return nil
	}
	return fmt.Errorf("quorum server %s: %s", server, rep.Error)
}

func lease(server string, rep Reply) Lease {
	return Lease{Granted: rep.Granted, Holder: rep.Holder, Server: server,
		Remaining: time.Duration(rep.RemainingMs) * time.Millisecond,
		PeerHeard: time.Duration(rep.PeerHeardMs) * time.Millisecond}
}

// call sends one request, again every retryEvery, until its reply comes or
// ctx ends. sent is the time just before the first datagram went out: every
// datagram of the request left after it, so the server received the one it
// answered after it too.
func (c *Client) call(ctx context.Context, server, op string, ttlMs int64) (rep Reply, sent time.Time, err error) {
	var nonce [nonceSize]byte
	rand.Read(nonce[:])
	id := hex.EncodeToString(nonce[:])
	req := Request{Unit: c.unit, Node: c.node, Boot: c.boot, Nonce: id, Op: op, TTLms: ttlMs}
	if err := req.validate(); err != nil {
		return Reply{}, time.Time{}, err
	}
	dial := c.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, "udp", server)
	if err != nil {
		return Reply{}, time.Time{}, fmt.Errorf("quorum %s %s: %w", op, server, err)
	}
	defer conn.Close()

	// Buffered so that the reader never blocks once call has returned:
	// closing conn ends it.
	replies := make(chan Reply, 1)
	readErr := make(chan error, 1)
	go func() {
		buf := make([]byte, maxDatagram+1)
		for {
			n, err := conn.Read(buf)
			switch {
			case errors.Is(err, syscall.ECONNREFUSED):
				// An ICMP error for an earlier datagram: the server may
				// be restarting; the next retry may reach it.
				continue
			case err != nil:
				readErr <- err
				return
			}
			r, err := UnmarshalReply(c.key, buf[:n])
			if err != nil || r.Nonce != id || r.Unit != c.unit || r.Node != c.node {
				continue // a late reply to an earlier request, or noise
			}
			replies <- r
			return
		}
	}()

	retry := time.NewTimer(0)
	defer retry.Stop()
	for first := true; ; {
		select {
		case <-ctx.Done():
			return Reply{}, time.Time{}, fmt.Errorf("quorum %s %s: no reply: %w", op, server, ctx.Err())
		case err := <-readErr:
			return Reply{}, time.Time{}, fmt.Errorf("quorum %s %s: %w", op, server, err)
		case r := <-replies:
			return r, sent, nil
		case <-retry.C:
		}
		req.Seq = c.seq.Add(1)
		p, err := MarshalRequest(c.key, req)
		if err != nil {
			return Reply{}, time.Time{}, err
		}
		if first {
			sent, first = c.now(), false
		}
		if _, err := conn.Write(p); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			return Reply{}, time.Time{}, fmt.Errorf("quorum %s %s: %w", op, server, err)
		}
		retry.Reset(retryEvery)
	}
}
