package cluster

import (
	"testing"
	"time"

	"github.com/dyad-ha/dyad/init/watchdog"
	"github.com/dyad-ha/dyad/services/unit"
)

func TestAuthorize(t *testing.T) {
	now := time.Unix(5000, 0)
	holds := LeaseState{Until: now.Add(3 * time.Second), Holder: 1}
	ranOut := LeaseState{Until: now.Add(LeaseMargin / 2), Holder: 1}
	peerHolds := LeaseState{Holder: 1}
	unreachable := LeaseState{Err: "no answer"}
	tests := []struct {
		name string
		c    Claim
		want Verdict
	}{
		{"both heard", Claim{PeerSeen: true, Quorum: true}, Run},
		{"forced", Claim{Forced: true, Quorum: true, Lease: peerHolds}, Run},
		{"peer proven dead", Claim{Node: 2, Role: unit.RoleSecondary, Formed: true, ProvenDead: true}, Run},
		{"holds the lease", Claim{Node: 1, Role: unit.RolePrimary, Formed: true, Quorum: true, Lease: holds}, Run},
		{"lease about to run out", Claim{Node: 1, Role: unit.RolePrimary, Formed: true, Quorum: true, Lease: ranOut}, Lose},
		{"peer holds, just lost", Claim{Node: 2, Formed: true, Quorum: true, Lease: peerHolds, LostFor: time.Second}, Wait},
		{"peer holds and renews", Claim{Node: 2, Formed: true, Quorum: true, Lease: peerHolds, LostFor: LoseAfter}, Lose},
		{"cut from peer and server, just lost", Claim{Node: 1, Formed: true, Quorum: true, Lease: unreachable, LostFor: time.Second}, Wait},
		{"cut from peer and server", Claim{Node: 1, Formed: true, Quorum: true, Lease: unreachable, LostFor: LoseAfter}, Lose},
		{"alone since boot, server unreachable", Claim{Node: 1, Quorum: true, Lease: unreachable, LostFor: time.Hour}, Wait},
		{"alone since boot, peer holds", Claim{Node: 2, Quorum: true, Lease: peerHolds, LostFor: time.Hour}, Lose},
		{"alone since boot, no quorum server", Claim{Node: 1, Role: unit.RolePrimary, LostFor: time.Hour}, Wait},
		{"no quorum server: the primary keeps running", Claim{Node: 1, Role: unit.RolePrimary, Formed: true}, Run},
		{"no quorum server: the secondary loses", Claim{Node: 2, Role: unit.RoleSecondary, Formed: true}, Lose},
		{"no quorum server: the secondary asks the peer's BMC", Claim{Node: 2, Role: unit.RoleSecondary, Formed: true, ProofPending: true}, Wait},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.Now = now
			if got := Authorize(tt.c); got.Verdict != tt.want || got.Reason == "" {
				t.Fatalf("Authorize = %+v, want %s", got, tt.want)
			}
		})
	}
}

// The margins are what keeps two writers apart: a loser gives up before the
// server could grant the lease to its peer, and the winner waits until the
// loser has given up before it starts the loser's VMs.
func TestLeaseMargins(t *testing.T) {
	if LeaseRenew >= LeaseTTL-LeaseMargin {
		t.Errorf("renewal every %v cannot keep a %v lease with a %v margin", LeaseRenew, LeaseTTL, LeaseMargin)
	}
	if FailoverGrace <= LoseAfter+watchdog.FenceTimeout {
		t.Errorf("failover after %v, before a loser that gives up at %v is reset", FailoverGrace, LoseAfter)
	}
	if LeaseMargin <= watchdog.FenceTimeout+JudgeInterval {
		t.Errorf("a holder gives up %v before its lease ends, but the judgement and the reset take up to %v", LeaseMargin, watchdog.FenceTimeout+JudgeInterval)
	}
}
