package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dyad-ha/dyad/services/bmc"
	"github.com/dyad-ha/dyad/services/cluster"
	"github.com/dyad-ha/dyad/services/quorum"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/unitca"
	"github.com/dyad-ha/dyad/services/vm"
	"github.com/dyad-ha/dyad/webui"
)

// forcedFile records an operator's Force Quorum for the current boot, so a
// restarted agent keeps running what the operator forced.
const forcedFile = "quorum-forced"

// ErrNoQuorum refuses changes on a PM that runs alone without the right to
// (a provisional primary): its unit database may be behind the peer's.
var ErrNoQuorum = fmt.Errorf("%w: this PM runs alone without quorum; no change is possible until the peer returns or an operator uses Force Quorum", webui.ErrConflict)

// InitFence asks init for an immediate reset by the watchdog.
func InitFence() error { return unix.Kill(1, unix.SIGUSR1) }

// newQuorumClient is the lease client of this PM; nil without quorum servers.
func newQuorumClient(o Options) *quorum.Client {
	if len(o.Config.Quorum) == 0 {
		return nil
	}
	return quorum.NewClient(o.Config.Unit, o.Config.Node, o.BootID, unitca.QuorumKey(o.Config.UnitKey))
}

// loadForced reads an operator's Force Quorum of this boot.
func (a *Agent) loadForced() bool {
	b, err := os.ReadFile(filepath.Join(a.opt.DataDir, forcedFile))
	return err == nil && strings.TrimSpace(string(b)) == a.opt.BootID
}

// tendLease asks for the quorum lease, or renews it: the primary holds it
// while both PMs run, so that on a partition the running unit keeps it; a
// PM that lost its peer asks for it to learn whether it may run alone.
func (a *Agent) tendLease(ctx context.Context) {
	if a.quorum == nil {
		return
	}
	now := time.Now()
	v := a.mon.View(now)
	primary := a.Role() == unit.RolePrimary
	use, ok := a.agreeQuorumServer(v, primary)
	if v.Seen && !primary {
		a.mu.Lock()
		a.lease = cluster.LeaseState{}
		a.mu.Unlock()
		return
	}
	if !ok {
		a.mu.Lock()
		a.lease.Err = "the peer was lost while the PMs were switching quorum servers: neither counts"
		a.mu.Unlock()
		return
	}
	ctx, cancel := context.WithTimeout(ctx, cluster.LeaseRenew-100*time.Millisecond)
	defer cancel()
	server := a.cfg.Quorum[use]
	l, err := a.quorum.Acquire(ctx, server, cluster.LeaseTTL)
	a.mu.Lock()
	defer a.mu.Unlock()
	if v.Seen && primary && len(a.cfg.Quorum) > 1 {
		if err == nil {
			a.quorumFails = 0
		} else if a.quorumFails++; a.quorumFails >= quorumSwitchAfter && a.quorumProposed == use {
			a.quorumProposed = 1 - use
			a.log.Warn("the quorum server does not answer: proposing the other one to the peer", "from", server, "to", a.cfg.Quorum[a.quorumProposed])
		}
	}
	if l.Server != "" && l.PeerHeard >= 0 {
		a.lease.PeerHeard = time.Now().Add(-l.PeerHeard)
	}
	if v.Seen && !a.lease.Until.IsZero() && now.After(a.lease.Until) {
		// A lapse while the peer is heard put nothing at risk.
		a.lease.Until = time.Time{}
	}
	if err != nil {
		if a.lease.Err == "" {
			a.log.Warn("quorum server does not answer", "server", server, "err", err)
		}
		a.lease.Err = err.Error()
		return
	}
	if a.lease.Err != "" {
		a.log.Info("quorum server answers again", "server", server)
	}
	a.lease.Err, a.lease.Holder = "", l.Holder
	if l.Granted {
		a.lease.Until, a.lease.Holder = l.Until, a.cfg.Node
	}
}

// quorumSwitchAfter is how many renewals in a row the primary fails before
// it proposes the other quorum server.
const quorumSwitchAfter = 3

// agreeQuorumServer keeps the two PMs on one quorum server: the secondary
// follows the primary's, and the primary's proposal counts once the
// secondary announces it too. A PM alone in the middle of a switch has no
// server it may count on (ok false): the peer may already use the other.
func (a *Agent) agreeQuorumServer(v cluster.View, primary bool) (use int, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	announced := v.Peer.Quorum - 1
	valid := announced >= 0 && announced < len(a.cfg.Quorum)
	switch {
	case v.Seen && !primary && valid && announced != a.quorumUse:
		a.log.Info("following the primary to the other quorum server", "server", a.cfg.Quorum[announced])
		a.quorumUse, a.quorumProposed = announced, announced
	case v.Seen && primary && a.quorumProposed != a.quorumUse && valid && announced == a.quorumProposed:
		a.log.Warn("both PMs use the other quorum server now", "server", a.cfg.Quorum[announced])
		a.quorumUse = a.quorumProposed
		a.lease = cluster.LeaseState{}
	}
	return a.quorumUse, v.Seen || a.quorumProposed == a.quorumUse
}

// authority weighs this PM's right to run VMs now.
func (a *Agent) authority() cluster.Authority {
	now := time.Now()
	v := a.mon.View(now)
	lostAt := a.peerLostAt(v)
	a.mu.Lock()
	defer a.mu.Unlock()
	return cluster.Authorize(cluster.Claim{
		Node: a.cfg.Node, Role: a.role, PeerSeen: v.Seen, Formed: v.EverSeen,
		LostFor: now.Sub(lostAt), Quorum: a.quorum != nil, Lease: a.lease,
		ProvenDead: a.proof.dead, ProofPending: !v.Seen && a.proof.hasBMC && !a.proof.asked,
		Forced: a.forced, Now: now,
	})
}

// judge acts on the verdict: a PM of the formed unit that lost stops its
// VMs and fences itself; a Force Quorum ends when the peer is back.
func (a *Agent) judge(ctx context.Context) {
	au := a.authority()
	v := a.mon.View(time.Now())
	seen := v.Seen
	a.watchPeer(v)
	a.mu.Lock()
	changed := au != a.verdict
	a.verdict = au
	if seen && a.forced {
		a.forced = false
		os.Remove(filepath.Join(a.opt.DataDir, forcedFile))
		a.log.Info("the peer is back: Force Quorum ends")
	}
	fence := au.Verdict == cluster.Lose && v.EverSeen && !a.fenced
	if fence {
		a.fenced = true
	}
	a.mu.Unlock()
	if changed {
		a.log.Warn("right to run VMs", "verdict", au.Verdict, "reason", au.Reason)
		a.kickVMs()
		a.kickStorage()
	}
	if !fence {
		return
	}
	a.log.Error("lost the right to run VMs: fencing this PM", "reason", au.Reason)
	// The reset stops the VMs, and it comes first: a QEMU whose disk I/O
	// DRBD holds frozen may take long to stop, or never stop, while the
	// peer waits only so long before it starts the same VMs.
	if err := a.opt.Fence(); err != nil {
		a.log.Error("fence", "err", err)
	}
	if a.opt.VMs != nil {
		// Stop them anyway, should the reset not come (fencing failed).
		go a.opt.VMs.Reconcile(context.WithoutCancel(ctx), vm.NodeDesired{})
	}
}

// Verdict is the last verdict on this PM's right to run VMs.
func (a *Agent) Verdict() cluster.Authority {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.verdict.Verdict == "" {
		return cluster.Authority{Verdict: cluster.Wait, Reason: "starting"}
	}
	return a.verdict
}

// ForceQuorum lets this PM run the unit's VMs alone although it cannot
// prove its peer is down. If the peer runs them too, both write the same
// volumes: a split brain that the operator then resolves by hand.
func (a *Agent) ForceQuorum(ctx context.Context) (unit.Unit, error) {
	if a.mon.View(time.Now()).Seen {
		return unit.Unit{}, fmt.Errorf("%w: both PMs are heard; there is nothing to force", webui.ErrConflict)
	}
	if au := a.authority(); au.Verdict == cluster.Run {
		return unit.Unit{}, fmt.Errorf("%w: this PM already runs VMs (%s)", webui.ErrConflict, au.Reason)
	}
	if err := os.WriteFile(filepath.Join(a.opt.DataDir, forcedFile), []byte(a.opt.BootID+"\n"), 0o600); err != nil {
		return unit.Unit{}, fmt.Errorf("recording Force Quorum: %w", err)
	}
	a.mu.Lock()
	a.forced = true
	a.mu.Unlock()
	a.log.Warn("an operator forced quorum: this PM runs the unit's VMs alone")
	a.judge(ctx)
	return a.Unit(ctx)
}

// quorumView is the unit's quorum as the API shows it.
func (a *Agent) quorumView() unit.Quorum {
	au := a.Verdict()
	seen := a.mon.View(time.Now()).Seen
	a.mu.Lock()
	defer a.mu.Unlock()
	q := unit.Quorum{Servers: a.cfg.Quorum, Verdict: string(au.Verdict), Reason: au.Reason,
		Holder: a.lease.Holder, Forced: a.forced, Error: a.lease.Err,
		PeerCutOff: !seen && !a.lease.PeerHeard.IsZero() && time.Since(a.lease.PeerHeard) < 3*cluster.LeaseRenew}
	if q.Servers == nil {
		q.Servers = []string{}
	}
	if left := time.Until(a.lease.Until); left > 0 {
		q.LeaseSeconds = left.Seconds()
	}
	return q
}

// quorumAlerts are the operator's view of a unit running on one leg.
func quorumAlerts(q unit.Quorum, node int, now time.Time) []unit.Alert {
	var out []unit.Alert
	switch {
	case q.Forced:
		out = append(out, unit.Alert{ID: "quorum/forced", Severity: unit.SevCritical, Source: "unit",
			Message: fmt.Sprintf("Quorum forced on PM %d: it runs the unit's VMs without proof that its peer is down", node), Since: now})
	case q.Verdict == string(cluster.Wait):
		out = append(out, unit.Alert{ID: "quorum/wait", Severity: unit.SevCritical, Source: "unit",
			Message: fmt.Sprintf("PM %d starts no protected VM: %s. If the peer PM is surely down, Force Quorum: dyadctl unit force-quorum", node, q.Reason), Since: now})
	}
	if q.PeerCutOff {
		out = append(out, unit.Alert{ID: "quorum/partition", Severity: unit.SevCritical, Source: "unit",
			Message: fmt.Sprintf("PM %d hears no heartbeat of its peer, which the quorum server hears: the PMs are cut off from each other on every link", node), Since: now})
	}
	if q.Error != "" && len(q.Servers) > 0 {
		out = append(out, unit.Alert{ID: "quorum/unreachable", Severity: unit.SevWarning, Source: "unit",
			Message: q.Error, Since: now})
	}
	return out
}

// mayTakeOver reports whether the primary may start the VMs of its lost
// peer now. With the right to run, it still waits until a live peer would
// have stopped them: a peer that was secondary decides it lost only
// LoseAfter after the loss. A PM that won the right after the loss (the
// lease of a holder that could not renew, proof of death, an operator)
// starts them at once: the other gave up before that right could exist.
func (a *Agent) mayTakeOver(now time.Time) bool {
	if a.Verdict().Verdict != cluster.Run {
		return false
	}
	lostAt := a.peerLostAt(a.mon.View(now))
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.forced || a.primarySince.After(lostAt) {
		return true
	}
	return now.Sub(lostAt) >= cluster.FailoverGrace
}

// isForced reports an operator's Force Quorum in effect.
func (a *Agent) isForced() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.forced
}

// peerLostAt is when the peer was last heard on any path, or when this
// agent started if it never was.
func (a *Agent) peerLostAt(v cluster.View) time.Time {
	at := a.start
	for _, p := range v.Paths {
		if p.LastSeen.After(at) {
			at = p.LastSeen
		}
	}
	return at
}

// proofState is what the peer's BMC said since the peer was lost.
type proofState struct {
	// hasBMC: the peer has a BMC (as known while it was heard).
	hasBMC bool
	// asked: its BMC answered, or could not be reached, since the loss;
	// dead: it answered that the peer is powered off.
	asked, dead bool
}

// seekProof asks the peer's BMC, while the peer is lost, whether it is
// powered off: proof that it is dead, which lets a secondary without a
// quorum server take over.
func (a *Agent) seekProof(ctx context.Context) {
	v := a.mon.View(time.Now())
	ops, _, err := a.opsRecords()
	if err != nil {
		return
	}
	b := ops[a.cfg.Peer()].BMC
	if v.Seen || !v.EverSeen || b == nil {
		a.mu.Lock()
		a.proof = proofState{hasBMC: b != nil}
		a.mu.Unlock()
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	on, err := bmc.PowerStatus(ctx, bmcConfig(*b))
	a.mu.Lock()
	defer a.mu.Unlock()
	dead := err == nil && !on
	if dead != a.proof.dead || !a.proof.asked {
		a.log.Warn("asked the lost peer's BMC", "powered_off", dead, "err", err)
	}
	a.proof = proofState{hasBMC: true, asked: true, dead: dead}
}
