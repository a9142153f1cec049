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
	// DBEpoch and DBSeq are the position of this PM's unit database. On a
	// secondary DBEpoch is below Epoch until the primary's copy arrives.
	DBEpoch, DBSeq uint64
	// Waited is how long this PM has been without a role (since boot, or
	// since it gave one up).
	Waited time.Duration
	Peer   View
	// Verdict is this PM's right to run VMs (Authorize).
	Verdict Verdict
	// Provisional: this PM is primary without the right to run VMs, at the
	// epoch it had (it booted alone).
	Provisional bool
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
// Loss of the peer on every path promotes the secondary, if its unit
// database holds the primary's: a secondary that never received it would run
// the unit on an old copy and, once the old primary returns, push that copy
// over the newer one.
//
// The secondary takes over only with the right to run VMs (the quorum
// lease, or proof the peer is dead). A PM alone since boot becomes primary
// after BootWait to serve the console, but without the right to run VMs it
// stays at its old epoch (provisional): a PM that ran the unit meanwhile
// has the newer database and must win when the two meet. It takes a new
// epoch once it has the right (lease or Force Quorum).
func Decide(s Situation) Decision {
	stay := Decision{Role: s.Role, Epoch: s.Epoch}
	p := s.Peer
	next := nextEpoch(s.Node, s.Epoch, p.Peer.Epoch)
	// behind: a secondary whose database lacks its primary's history.
	behind := s.Role == unit.RoleSecondary && s.DBEpoch < p.Peer.Epoch
	if s.Role == unit.RolePrimary && s.Provisional && s.Verdict == Run && (!p.Seen || p.Peer.Role != unit.RolePrimary) {
		return Decision{unit.RolePrimary, next, "the provisional primary may run VMs now"}
	}
	if !p.Seen {
		switch {
		case s.Role == unit.RoleNone && s.Waited >= BootWait && s.Verdict == Run:
			return Decision{unit.RolePrimary, next, "no peer heard since boot"}
		case s.Role == unit.RoleNone && s.Waited >= BootWait && s.Verdict == Lose:
			stay.Reason = "no peer heard since boot, and the peer holds the quorum lease: not taking the primary role"
			return stay
		case s.Role == unit.RoleNone && s.Waited >= BootWait:
			return Decision{unit.RolePrimary, s.Epoch, "no peer heard since boot: provisional primary, no VM runs until the peer returns or Force Quorum"}
		case s.Role == unit.RoleSecondary && p.Lost && behind:
			stay.Reason = "peer lost on every heartbeat path, but this PM never received its unit database: not taking over"
			return stay
		case s.Role == unit.RoleSecondary && p.Lost && s.Verdict != Run:
			stay.Reason = "peer lost on every heartbeat path; not taking over without the right to run VMs"
			return stay
		case s.Role == unit.RoleSecondary && p.Lost:
			return Decision{unit.RolePrimary, next, "peer lost on every heartbeat path"}
		}
		return stay
	}
	// Within one epoch there is one history (one primary wrote it), so the
	// database with more changes of it is the newer.
	peerWins := p.Peer.Epoch > s.Epoch || p.Peer.Epoch == s.Epoch &&
		(p.Peer.DBSeq > s.DBSeq || p.Peer.DBSeq == s.DBSeq && p.Peer.Node < s.Node)
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
		if p.Peer.Role != unit.RolePrimary && behind {
			// Back to the cold-start rule, which elects the newer database.
			return Decision{unit.RoleNone, s.DBEpoch, "peer is no longer primary and this PM's unit database is behind it"}
		}
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

// nextEpoch is the first epoch above both PMs' that belongs to node: node 1
// promotes to odd epochs, node 2 to even ones. Two PMs that promote without
// hearing each other (a partition, each booting alone) so never claim the
// same epoch, and one epoch names one primary's history: the store takes a
// snapshot of its own epoch as the same history, and the election above
// compares positions within an epoch.
func nextEpoch(node int, own, peer uint64) uint64 {
	e := max(own, peer) + 1
	if e%2 != uint64(node%2) {
		e++
	}
	return e
}
