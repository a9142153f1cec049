package quorum

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is the server's clock in tests: it moves only when told, and
// keeps the monotonic reading of the time.Now it starts from.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// startServer serves unit "u1" with testKey on loopback. The server's clock
// is returned; the quiet period is still running.
func startServer(t *testing.T) (*fakeClock, string) {
	t.Helper()
	clock := &fakeClock{t: time.Now()}
	keys := func(unit string) ([]byte, bool) {
		if unit == "u1" {
			return testKey, true
		}
		return nil, false
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := newServer(keys, log, clock.Now)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Serve returned %v, want context.Canceled", err)
		}
		conn.Close()
	})
	return clock, conn.LocalAddr().String()
}

func TestLease(t *testing.T) {
	clock, addr := startServer(t)
	clients := map[string]*Client{
		"n1":  NewClient("u1", 1, "boot-a", testKey),
		"n2":  NewClient("u1", 2, "boot-b", testKey),
		"n1'": NewClient("u1", 1, "boot-a2", testKey), // node 1 after a reboot
	}
	type want struct {
		granted   bool
		holder    int
		remaining time.Duration
		err       string
	}
	steps := []struct {
		name    string
		advance time.Duration
		client  string
		op      string
		ttl     time.Duration
		want    want
	}{
		{"quiet period refuses", 0, "n1", OpAcquire, 4 * time.Second, want{err: errStarting}},
		{"query works while quiet", 0, "n2", OpQuery, 0, want{}},
		{"still quiet", MaxTTL - time.Millisecond, "n1", OpAcquire, 4 * time.Second, want{err: errStarting}},
		{"grant", time.Millisecond, "n1", OpAcquire, 4 * time.Second, want{true, 1, 4 * time.Second, ""}},
		{"refusal names the holder", 0, "n2", OpAcquire, 4 * time.Second, want{false, 1, 4 * time.Second, ""}},
		{"renewal", time.Second, "n1", OpAcquire, 4 * time.Second, want{true, 1, 4 * time.Second, ""}},
		{"shorter renewal keeps the end", time.Second, "n1", OpAcquire, time.Second, want{true, 1, 3 * time.Second, ""}},
		{"query", 0, "n2", OpQuery, 0, want{false, 1, 3 * time.Second, ""}},
		{"refused just before expiry", 3*time.Second - time.Millisecond, "n2", OpAcquire, 2 * time.Second, want{false, 1, time.Millisecond, ""}},
		{"another boot of the holder is refused", 0, "n1'", OpAcquire, 2 * time.Second, want{false, 1, time.Millisecond, ""}},
		{"another boot of the holder cannot release", 0, "n1'", OpRelease, 0, want{err: "another boot of node 1"}},
		{"grant to the other node at expiry", time.Millisecond, "n2", OpAcquire, 2 * time.Second, want{true, 2, 2 * time.Second, ""}},
		{"former holder refused", 0, "n1", OpAcquire, 4 * time.Second, want{false, 2, 2 * time.Second, ""}},
		{"release by a non-holder changes nothing", 0, "n1", OpRelease, 0, want{}},
		{"holder still holds", 0, "n1", OpQuery, 0, want{false, 2, 2 * time.Second, ""}},
		{"release", 500 * time.Millisecond, "n2", OpRelease, 0, want{}},
		{"released", 0, "n1", OpQuery, 0, want{}},
		{"rebooted node granted once free", 0, "n1'", OpAcquire, 3 * time.Second, want{true, 1, 3 * time.Second, ""}},
	}
	for _, st := range steps {
		clock.Advance(st.advance)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c := clients[st.client]
		var l Lease
		var err error
		before := time.Now()
		switch st.op {
		case OpAcquire:
			l, err = c.Acquire(ctx, addr, st.ttl)
		case OpRelease:
			err = c.Release(ctx, addr)
		case OpQuery:
			l, err = c.Query(ctx, addr)
		}
		cancel()
		got := want{l.Granted, l.Holder, l.Remaining, ""}
		if err != nil {
			got.err = err.Error()
		}
		if got.err != st.want.err && (st.want.err == "" || !strings.Contains(got.err, st.want.err)) ||
			got.granted != st.want.granted || got.holder != st.want.holder || got.remaining != st.want.remaining {
			t.Fatalf("%s: %s by %s = %+v, want %+v", st.name, st.op, st.client, got, st.want)
		}
		switch {
		case l.Granted && (l.Until.Before(before) || l.Until.After(before.Add(st.ttl))):
			t.Errorf("%s: Until %v is not within [%v, %v]", st.name, l.Until, before, before.Add(st.ttl))
		case !l.Granted && !l.Until.IsZero():
			t.Errorf("%s: not granted but Until %v", st.name, l.Until)
		}
	}
}

// dropReplies is a client socket that loses the first n replies.
type dropReplies struct {
	net.Conn
	mu      sync.Mutex
	n       int
	written int
}

func (c *dropReplies) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		c.mu.Lock()
		drop := err == nil && c.n > 0
		if drop {
			c.n--
		}
		c.mu.Unlock()
		if !drop {
			return n, err
		}
	}
}

func (c *dropReplies) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.written++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// TestUntilFromFirstSend loses the reply to the first datagram: the lease
// the retry brings must still be counted from before the first send.
func TestUntilFromFirstSend(t *testing.T) {
	clock, addr := startServer(t)
	clock.Advance(MaxTTL)
	c := NewClient("u1", 1, "boot-a", testKey)
	var sock *dropReplies
	c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		sock = &dropReplies{Conn: conn, n: 1}
		return sock, err
	}
	// Every reading of the client's clock is an hour after the previous
	// one, so a later reading would show in Until.
	base := time.Now()
	var reads int
	c.now = func() time.Time {
		reads++
		return base.Add(time.Duration(reads-1) * time.Hour)
	}
	const ttl = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l, err := c.Acquire(ctx, addr, ttl)
	if err != nil || !l.Granted {
		t.Fatalf("Acquire = %+v, %v", l, err)
	}
	if sock.written < 2 {
		t.Fatalf("%d datagrams sent; the lost reply was not retried", sock.written)
	}
	if want := base.Add(ttl - ttl/rateMargin); !l.Until.Equal(want) {
		t.Errorf("Until = %v, want %v (first send + ttl - margin)", l.Until, want)
	}
}

// exchange sends the datagram p to addr and returns the reply, if one comes
// within wait.
func exchange(t *testing.T, addr string, p []byte, wait time.Duration) (Reply, bool) {
	t.Helper()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(p); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, maxDatagram)
	n, err := conn.Read(buf)
	if err != nil {
		return Reply{}, false
	}
	r, err := UnmarshalReply(testKey, buf[:n])
	if err != nil {
		t.Fatalf("reply: %v", err)
	}
	return r, true
}

func TestReplayDropped(t *testing.T) {
	clock, addr := startServer(t)
	clock.Advance(MaxTTL)
	datagram := func(node int, boot string, seq uint64, op string) []byte {
		r := Request{Unit: "u1", Node: node, Boot: boot, Seq: seq, Op: op, Nonce: fmt.Sprintf("%032x", seq)}
		if op == OpAcquire {
			r.TTLms = 10000
		}
		p, err := MarshalRequest(testKey, r)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	release := datagram(1, "a", 11, OpRelease)
	acquire := datagram(1, "a", 12, OpAcquire)
	oldRelease := datagram(1, "a", 5, OpRelease)
	steps := []struct {
		name      string
		p         []byte
		wantReply bool
		holder    int // after the step, by a query of node 2
	}{
		{"old release, nothing held", oldRelease, true, 0},
		{"acquire", datagram(1, "a", 10, OpAcquire), true, 1},
		{"release", release, true, 0},
		{"acquire again", acquire, true, 1},
		{"replayed release", release, false, 1},
		{"replayed acquire", acquire, false, 1},
		// A request of another boot must not reset the record of boot a.
		{"other boot", datagram(1, "b", 1, OpQuery), true, 1},
		{"replayed release after another boot", release, false, 1},
		// Boots c..f push boot a out of what the server remembers of
		// node 1, unless it remembers the holder's boot regardless.
		{"boot c", datagram(1, "c", 1, OpQuery), true, 1},
		{"boot d", datagram(1, "d", 1, OpQuery), true, 1},
		{"boot e", datagram(1, "e", 1, OpQuery), true, 1},
		{"boot f", datagram(1, "f", 1, OpQuery), true, 1},
		{"replayed old release of the holder's boot", oldRelease, false, 1},
		{"replayed release of the holder's boot", release, false, 1},
	}
	var qseq uint64 = 100
	for _, st := range steps {
		wait := 2 * time.Second
		if !st.wantReply {
			wait = 300 * time.Millisecond
		}
		if _, ok := exchange(t, addr, st.p, wait); ok != st.wantReply {
			t.Fatalf("%s: reply %v, want %v", st.name, ok, st.wantReply)
		}
		qseq++
		q, ok := exchange(t, addr, datagram(2, "z", qseq, OpQuery), 2*time.Second)
		if !ok || q.Holder != st.holder {
			t.Fatalf("%s: query: holder %d (answered %v), want %d", st.name, q.Holder, ok, st.holder)
		}
	}
}

func TestDropped(t *testing.T) {
	clock, addr := startServer(t)
	clock.Advance(MaxTTL)
	tests := []struct {
		name   string
		client *Client
	}{
		{"unknown unit", NewClient("u2", 1, "boot-a", testKey)},
		{"wrong key", NewClient("u1", 1, "boot-a", otherKey)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
			defer cancel()
			l, err := tt.client.Acquire(ctx, addr, time.Second)
			if !errors.Is(err, context.DeadlineExceeded) || l.Granted {
				t.Fatalf("Acquire = %+v, %v; want no reply", l, err)
			}
		})
	}
}

func TestClientRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		c    *Client
		ttl  time.Duration
	}{
		{"zero ttl", NewClient("u1", 1, "boot-a", testKey), 0},
		{"ttl over MaxTTL", NewClient("u1", 1, "boot-a", testKey), MaxTTL + time.Millisecond},
		{"bad node", NewClient("u1", 3, "boot-a", testKey), time.Second},
		{"no boot", NewClient("u1", 1, "", testKey), time.Second},
	}
	for _, tt := range tests {
		// Nothing listens there: an error must come before any sending.
		if _, err := tt.c.Acquire(ctx, "127.0.0.1:9", tt.ttl); err == nil || strings.Contains(err.Error(), "no reply") {
			t.Errorf("%s: Acquire error %v", tt.name, err)
		}
	}
}

// A fresh server grants at once; one that may be a restart does not.
func TestFreshServerGrantsAtOnce(t *testing.T) {
	keys := func(unit string) ([]byte, bool) { return testKey, unit == "u1" }
	for _, tc := range []struct {
		name  string
		s     *Server
		grant bool
	}{
		{"fresh", NewFreshServer(keys, nil), true},
		{"maybe a restart", NewServer(keys, nil), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			go tc.s.Serve(ctx, conn)
			c := NewClient("u1", 1, "boot-a", testKey)
			actx, acancel := context.WithTimeout(ctx, 2*time.Second)
			defer acancel()
			l, err := c.Acquire(actx, conn.LocalAddr().String(), 4*time.Second)
			if l.Granted != tc.grant || (err == nil) != tc.grant {
				t.Errorf("Acquire = %+v, %v; want granted %v", l, err, tc.grant)
			}
		})
	}
}

// The server tells each node how long ago it heard the other one.
func TestPeerHeard(t *testing.T) {
	clock, addr := startServer(t)
	clock.Advance(MaxTTL) // past the quiet period
	ctx := t.Context()
	c1 := NewClient("u1", 1, "boot-1", testKey)
	c2 := NewClient("u1", 2, "boot-2", testKey)
	l, err := c1.Query(ctx, addr)
	if err != nil || l.PeerHeard >= 0 {
		t.Fatalf("node 1 first: %+v, %v; want the peer never heard", l, err)
	}
	clock.Advance(3 * time.Second)
	l, err = c2.Query(ctx, addr)
	if err != nil || l.PeerHeard != 3*time.Second {
		t.Fatalf("node 2: %+v, %v; want node 1 heard 3s ago", l, err)
	}
	l, err = c1.Query(ctx, addr)
	if err != nil || l.PeerHeard != 0 {
		t.Fatalf("node 1 again: %+v, %v; want node 2 heard just now", l, err)
	}
}
