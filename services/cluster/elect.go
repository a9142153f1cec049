package cluster

import (
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

// Situation is what the election looks at.
type Situation struct {
	Node  int
	Role  unit.Role
	Epoch uint64
	// Waited is how long this PM has been up without deciding a role.
	Waited time.Duration
	Peer   View
}

// Decision is the role a PM must take, with the unit epoch that goes with it.
type Decision struct {
	Role   unit.Role
	Epoch  uint64
	Reason string
}

// BootWait is how long a PM that hears no peer waits before it runs the unit
// alone, so two PMs powered on together always meet before either decides.
const BootWait = 15 * time.Second

// Decide is the election rule. It is deterministic: two PMs that see each
// other agree on one primary. A running primary is never preempted by a
// returning PM; epochs, bumped at every promotion, decide between two PMs
// that both believe they are primary (after a partition), the newer wins.
//
// Loss of the peer on every path promotes the secondary. The quorum lease
// and proof of death of DESIGN.md §6 refine this rule in a later step.
func Decide(s Situation) Decision {
	stay := Decision{Role: s.Role, Epoch: s.Epoch}
	p := s.Peer
	next := max(s.Epoch, p.Peer.Epoch) + 1
	if !p.Seen {
		switch {
		case s.Role == unit.RoleNone && s.Waited >= BootWait:
			return Decision{unit.RolePrimary, next, "no peer heard since boot"}
		case s.Role == unit.RoleSecondary && p.Lost:
			return Decision{unit.RolePrimary, next, "peer lost on every heartbeat path"}
		}
		return stay
	}
	peerWins := p.Peer.Epoch > s.Epoch || (p.Peer.Epoch == s.Epoch && p.Peer.Node < s.Node)
	switch s.Role {
	case unit.RoleNone:
		switch p.Peer.Role {
		case unit.RolePrimary:
			return Decision{unit.RoleSecondary, max(s.Epoch, p.Peer.Epoch), "peer is primary"}
		case unit.RoleNone:
			if !peerWins {
				return Decision{unit.RolePrimary, next, "elected: newest unit database"}
			}
		}
	case unit.RoleSecondary:
		if p.Peer.Role != unit.RolePrimary {
			return Decision{unit.RolePrimary, next, "peer is no longer primary"}
		}
		return Decision{unit.RoleSecondary, max(s.Epoch, p.Peer.Epoch), ""}
	case unit.RolePrimary:
		if p.Peer.Role == unit.RolePrimary && peerWins {
			return Decision{unit.RoleSecondary, p.Peer.Epoch, "peer is primary with a newer epoch"}
		}
	}
	return stay
}
