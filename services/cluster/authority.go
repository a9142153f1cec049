package cluster

import (
	"fmt"
	"time"

	"github.com/dyad-ha/dyad/init/watchdog"
	"github.com/dyad-ha/dyad/services/unit"
)

// Verdict is what a PM may do with protected VMs (and the DRBD legs under
// them) when it cannot hear its peer.
type Verdict string

const (
	// Run: start, keep and take over VMs.
	Run Verdict = "run"
	// Wait: keep what runs here, start nothing, write nothing alone, until
	// the lease or the operator decides. DRBD keeps the legs' I/O frozen
	// meanwhile (fencing resource-and-stonith), so nothing diverges.
	Wait Verdict = "wait"
	// Lose: the peer has the right to run; stop every VM here at once, and
	// a PM that was part of the formed unit fences itself.
	Lose Verdict = "lose"
)

// Lease timing. A holder renews every LeaseRenew for LeaseTTL; it gives up
// LeaseMargin before its own view of the end, which is never later than the
// server's, so a PM that loses the lease has been reset by its watchdog
// (watchdog.FenceTimeout after the judgement that gives up) before the
// server grants it to the peer.
//
// A holder that cannot renew for LeaseTTL-LeaseMargin gives up, running
// VMs and all. On a loaded two-core CI host with emulated PMs a winner's
// renewals stalled for four seconds while the loser rebooted, so that
// window is four and a half seconds: each second of it costs a second of
// failover.
const (
	LeaseTTL    = 6 * time.Second
	LeaseRenew  = time.Second
	LeaseMargin = watchdog.FenceTimeout + JudgeInterval + 250*time.Millisecond
	// JudgeInterval is how often an agent weighs its right to run VMs.
	JudgeInterval = 250 * time.Millisecond
	// LoseAfter is how long a PM that never held the lease waits, from the
	// loss of its peer, for it: by then the lease of a dead holder has
	// expired on the server, so a refusal after it proves the holder alive
	// and renewing.
	LoseAfter = LeaseTTL + LeaseRenew + LeaseMargin
	// FailoverGrace is how long a PM with the right to run waits, from the
	// loss of its peer, before it starts the peer's VMs: the time the peer
	// needs to give up (LoseAfter) and be reset by its watchdog (one
	// second), with room for the two PMs' clocks of the loss to differ by
	// a beat or two and for a late round of the loser's judgement.
	FailoverGrace = LoseAfter + 4*time.Second
)

// LeaseState is what a PM knows of the quorum lease.
type LeaseState struct {
	// Until is the end of the last lease granted to this PM, by its own
	// clock; zero if it holds none.
	Until time.Time
	// Holder is the PM that holds it according to the server's last answer,
	// 0 if none or never asked.
	Holder int
	// Err is the last failure to reach the server.
	Err string
	// PeerHeard is when, by this PM's clock, the server last heard the
	// peer ask; zero if it never did. A peer heard after it went silent
	// here is alive and cut off, not failed.
	PeerHeard time.Time
}

// Claim is what Authorize looks at.
type Claim struct {
	Node int
	Role unit.Role
	// PeerSeen: the peer is heard on a heartbeat path now.
	PeerSeen bool
	// Formed: the peer was heard since this agent started, so this PM was
	// part of the running unit when it lost the peer.
	Formed bool
	// LostFor is how long the peer has been silent (since this agent
	// started when it never heard it).
	LostFor time.Duration
	// Quorum: a quorum server is configured.
	Quorum bool
	Lease  LeaseState
	// ProvenDead: the peer's BMC reports it powered off. ProofPending:
	// the peer has a BMC whose answer is not in yet.
	ProvenDead, ProofPending bool
	// Forced: an operator used Force Quorum on this PM.
	Forced bool
	Now    time.Time
}

// Authority is the verdict with its reason in words.
type Authority struct {
	Verdict Verdict `json:"verdict"`
	Reason  string  `json:"reason"`
}

// Authorize is the split-brain rule of DESIGN.md §6. With both PMs heard
// nothing is in question. Alone, a PM runs VMs only while it holds the
// quorum lease; without a quorum server the primary keeps running and the
// secondary runs only once the peer is proven dead. A PM that booted alone
// waits for its peer, the lease or an operator's Force Quorum.
func Authorize(c Claim) Authority {
	held := !c.Lease.Until.IsZero() && c.Now.Before(c.Lease.Until.Add(-LeaseMargin))
	switch {
	case c.PeerSeen:
		return Authority{Run, "both PMs are heard"}
	case c.Forced:
		return Authority{Run, "an operator forced quorum on this PM"}
	case c.ProvenDead:
		return Authority{Run, "the peer's BMC reports it powered off"}
	case c.Quorum && held:
		return Authority{Run, "this PM holds the quorum lease"}
	case c.Quorum && !c.Lease.Until.IsZero():
		// It held the lease and could not renew it: the peer may hold it
		// now, or will soon.
		return Authority{Lose, "the quorum lease ran out and could not be renewed"}
	case c.Quorum && c.Lease.Holder != 0 && c.Lease.Holder != c.Node && c.LostFor >= LoseAfter:
		return Authority{Lose, fmt.Sprintf("PM %d holds the quorum lease and keeps renewing it", c.Lease.Holder)}
	case c.Quorum && c.Formed && c.LostFor >= LoseAfter:
		// Cut from the peer and the quorum server: the peer, if it lives,
		// may be granted the lease.
		return Authority{Lose, "neither the peer nor the quorum server answers: " + c.Lease.Err}
	case c.Quorum:
		return Authority{Wait, "waiting for the quorum lease"}
	case !c.Formed:
		return Authority{Wait, "started alone: waiting for the peer PM (or an operator's Force Quorum)"}
	case c.Role == unit.RolePrimary:
		return Authority{Run, "peer lost; no quorum server: the primary keeps running"}
	case c.ProofPending:
		return Authority{Wait, "peer lost; asking its BMC whether it is powered off"}
	}
	return Authority{Lose, "peer lost; no quorum server and no proof the peer is dead: the primary keeps running"}
}
