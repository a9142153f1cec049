package quorum

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"
)

// Keys looks up the key of a unit; nil,false for unknown units.
type Keys func(unit string) ([]byte, bool)

// Server grants the leases of the units whose keys it knows.
type Server struct {
	keys Keys
	log  *slog.Logger
	// now is the clock of lease expiry and of the quiet period; it must
	// carry a monotonic reading.
	now        func() time.Time
	quietUntil time.Time

	mu    sync.Mutex
	units map[string]*unitState
}

type unitState struct {
	holder int    // 0: never granted
	boot   string // the holder's incarnation: only it renews or releases
	expiry time.Time
	seen   [2][]bootSeq // per node, most recently accepted last
	// heard is when each node's last request was accepted.
	heard [2]time.Time
}

// bootSeq is the last Seq accepted from one boot of a node.
type bootSeq struct {
	boot string
	seq  uint64
}

// maxBoots is how many boots of a node the server remembers besides the
// holder's. Only reboots of a node add boots, so a few cover the requests
// still in flight after one.
const maxBoots = 4

// NewServer returns a server whose quiet period starts now. A nil log
// discards.
func NewServer(keys Keys, log *slog.Logger) *Server {
	return newServer(keys, log, time.Now)
}

func newServer(keys Keys, log *slog.Logger, now func() time.Time) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{keys: keys, log: log, now: now, quietUntil: now().Add(MaxTTL), units: map[string]*unitState{}}
}

// NewFreshServer returns a server without the quiet period, for units that
// have certainly never been granted a lease before (a new lab unit): there
// is no lease it could have forgotten. A server that may be a restart must
// use NewServer.
func NewFreshServer(keys Keys, log *slog.Logger) *Server {
	s := newServer(keys, log, time.Now)
	s.quietUntil = time.Time{}
	return s
}

// Serve answers requests on conn until ctx ends, then returns ctx.Err().
// It may run on several connections at once (IPv4 and IPv6, say).
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	// One byte more than a datagram may have, so that a longer one shows
	// as too long instead of arriving truncated.
	buf := make([]byte, maxDatagram+1)
	for {
		n, from, err := conn.ReadFrom(buf)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return fmt.Errorf("quorum server: %w", err)
		}
		out := s.handle(buf[:n], from)
		if out == nil {
			continue
		}
		if _, err := conn.WriteTo(out, from); err != nil {
			s.log.Debug("quorum: reply not sent", "to", from, "err", err)
		}
	}
}

// handle returns the reply datagram to p, or nil to drop it.
func (s *Server) handle(p []byte, from net.Addr) []byte {
	// The time of receipt is taken first: later readings only lengthen a
	// lease it grants.
	now := s.now()
	unit, err := requestUnit(p)
	if err != nil {
		s.log.Debug("quorum: dropped datagram", "from", from, "err", err)
		return nil
	}
	key, ok := s.keys(unit)
	if !ok {
		s.log.Debug("quorum: dropped request of an unknown unit", "from", from, "unit", unit)
		return nil
	}
	req, err := UnmarshalRequest(key, p)
	if err == nil && req.Unit != unit {
		err = fmt.Errorf("unit %q read as %q before authentication", req.Unit, unit)
	}
	if err != nil {
		s.log.Debug("quorum: dropped request", "from", from, "unit", unit, "err", err)
		return nil
	}
	rep, ok := s.decide(now, req)
	if !ok {
		s.log.Debug("quorum: dropped replayed request", "from", from, "unit", unit,
			"node", req.Node, "boot", req.Boot, "seq", req.Seq)
		return nil
	}
	out, err := MarshalReply(key, rep)
	if err != nil {
		s.log.Error("quorum: encode reply", "unit", unit, "err", err)
		return nil
	}
	return out
}

// decide applies req at time now; false means req is a replay.
func (s *Server) decide(now time.Time, req Request) (Reply, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.units[req.Unit]
	if u == nil {
		u = &unitState{}
		s.units[req.Unit] = u
	}
	if !u.accept(req) {
		return Reply{}, false
	}
	u.heard[req.Node-1] = now
	rep := Reply{Unit: req.Unit, Node: req.Node, Nonce: req.Nonce, PeerHeardMs: -1}
	if other := u.heard[2-req.Node]; !other.IsZero() {
		rep.PeerHeardMs = now.Sub(other).Milliseconds()
	}
	held := u.holder != 0 && now.Before(u.expiry)
	mine := held && u.holder == req.Node && u.boot == req.Boot
	switch req.Op {
	case OpAcquire:
		ttl := time.Duration(req.TTLms) * time.Millisecond
		switch {
		case now.Before(s.quietUntil):
			rep.Error = errStarting
		case mine:
			u.expiry = later(u.expiry, now.Add(ttl))
			rep.Granted = true
		case !held:
			if u.holder != 0 {
				s.log.Info("quorum: lease expired", "unit", req.Unit, "node", u.holder, "boot", u.boot)
			}
			u.holder, u.boot, u.expiry = req.Node, req.Boot, now.Add(ttl)
			rep.Granted = true
			s.log.Info("quorum: lease granted", "unit", req.Unit, "node", req.Node, "boot", req.Boot, "ttl", ttl)
		default:
			s.log.Debug("quorum: lease refused", "unit", req.Unit, "node", req.Node, "boot", req.Boot,
				"holder", u.holder, "holder_boot", u.boot)
		}
	case OpRelease:
		switch {
		case mine:
			u.holder, u.boot, u.expiry = 0, "", time.Time{}
			s.log.Info("quorum: lease released", "unit", req.Unit, "node", req.Node, "boot", req.Boot)
		case held && u.holder == req.Node:
			rep.Error = fmt.Sprintf("lease held by another boot of node %d", req.Node)
		}
	}
	if u.holder != 0 && now.Before(u.expiry) {
		rep.Holder = u.holder
		rep.RemainingMs = ceilMs(u.expiry.Sub(now))
	}
	return rep, true
}

// accept records req's Seq for its node and boot, or reports a replay.
func (u *unitState) accept(req Request) bool {
	seen := u.seen[req.Node-1]
	i := slices.IndexFunc(seen, func(b bootSeq) bool { return b.boot == req.Boot })
	if i >= 0 {
		if req.Seq <= seen[i].seq {
			return false
		}
		seen = slices.Delete(seen, i, i+1)
	}
	seen = append(seen, bootSeq{req.Boot, req.Seq})
	if len(seen) > maxBoots {
		// Forget the oldest boot, never the holder's: its replays could
		// end the lease of a client that still counts on it.
		j := slices.IndexFunc(seen, func(b bootSeq) bool {
			return !(u.holder == req.Node && b.boot == u.boot)
		})
		seen = slices.Delete(seen, j, j+1)
	}
	u.seen[req.Node-1] = seen
	return true
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func ceilMs(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}
