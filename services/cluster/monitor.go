package cluster

import (
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

// Monitor keeps the view of the peer from the heartbeats received on each
// path. It is safe for concurrent use.
type Monitor struct {
	deadAfter time.Duration

	mu       sync.Mutex
	paths    map[string]*pathState
	last     Beat // newest beat from the peer on any path
	lastAt   time.Time
	everSeen bool
}

type pathState struct {
	lastSeen time.Time
	from     netip.AddrPort
	// boot and seq of the last beat taken on this path.
	boot string
	seq  uint64
}

// NewMonitor watches the named paths. A path is down when no valid beat came
// on it for deadAfter.
func NewMonitor(deadAfter time.Duration, paths ...string) *Monitor {
	m := &Monitor{deadAfter: deadAfter, paths: map[string]*pathState{}}
	for _, p := range paths {
		m.paths[p] = &pathState{}
	}
	return m
}

// Observe records a valid beat from the peer received on path from addr.
// Beats older than the newest seen from the same boot are ignored, so a
// replayed or reordered datagram cannot move the view backwards, and a path
// takes each beat once: replaying a captured beat cannot keep the path of a
// dead peer up (nor redirect our beats to the replayer's address).
func (m *Monitor) Observe(path string, b Beat, from netip.AddrPort, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ps, ok := m.paths[path]
	if !ok {
		return
	}
	if !ps.lastSeen.IsZero() && b.BootID == ps.boot && b.Seq <= ps.seq {
		return
	}
	if m.everSeen && b.BootID == m.last.BootID && b.Seq < m.last.Seq {
		return
	}
	ps.lastSeen, ps.from, ps.boot, ps.seq = now, from, b.BootID, b.Seq
	if !m.everSeen || b.BootID != m.last.BootID || b.Seq >= m.last.Seq {
		m.last, m.lastAt = b, now
	}
	m.everSeen = true
}

// View is a snapshot of what a PM knows of its peer.
type View struct {
	Paths []unit.Path
	// Peer is the newest beat; meaningful when Seen.
	Peer Beat
	// Seen: the peer is heard on at least one path now.
	Seen bool
	// Lost: the peer was heard since start and now is silent on every path.
	Lost bool
	// EverSeen: the peer was heard at least once since start.
	EverSeen bool
}

// View returns the state at now.
func (m *Monitor) View(now time.Time) View {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := View{Peer: m.last, EverSeen: m.everSeen}
	for name, ps := range m.paths {
		up := !ps.lastSeen.IsZero() && now.Sub(ps.lastSeen) < m.deadAfter
		v.Paths = append(v.Paths, unit.Path{Name: name, Up: up, LastSeen: ps.lastSeen})
		v.Seen = v.Seen || up
	}
	sort.Slice(v.Paths, func(i, j int) bool { return v.Paths[i].Name < v.Paths[j].Name })
	v.Lost = m.everSeen && !v.Seen
	return v
}

// PeerAddr is the address the peer's beats came from on path, if it is fresh.
func (m *Monitor) PeerAddr(path string, now time.Time) (netip.AddrPort, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ps, ok := m.paths[path]
	if !ok || ps.lastSeen.IsZero() || now.Sub(ps.lastSeen) >= m.deadAfter {
		return netip.AddrPort{}, false
	}
	return ps.from, true
}
