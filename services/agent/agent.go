// Package agent is the node agent of a PM: it brings up the PM's private and
// management links, exchanges heartbeats with the peer, takes the role the
// election gives it, keeps the unit database (replicated from the primary to
// the secondary) and, on the primary, holds the management IP and serves the
// console and API.
package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dyad-ha/dyad/services/cluster"
	"github.com/dyad-ha/dyad/services/network"
	"github.com/dyad-ha/dyad/services/network/probe"
	"github.com/dyad-ha/dyad/services/pmconfig"
	"github.com/dyad-ha/dyad/services/quorum"
	"github.com/dyad-ha/dyad/services/store"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/unitca"
	"github.com/dyad-ha/dyad/services/vm"
)

// Heartbeat timing: a beat every 200 ms; a path is down after 1.5 s of
// silence. Under software emulation guests' timers jitter by hundreds of
// milliseconds, so the margin is seven intervals.
const (
	BeatInterval = 200 * time.Millisecond
	DeadAfter    = 1500 * time.Millisecond
	// PeerPort is the TCP port of the PM-to-PM API (mutual TLS).
	PeerPort = 7411
)

// Options are the agent's environment. Paths are absolute in production and
// point into a temporary tree in tests.
type Options struct {
	Config  pmconfig.Config
	DataDir string // /data/dyad
	// Version is the image version from the image manifest.
	Version string
	BootID  string
	// Uptime reports the PM's uptime.
	Uptime func() time.Duration
	// Hardware returns the PM's hardware inventory.
	Hardware func(ctx context.Context) (any, error)
	Net      Network
	// Leases leases the management address when it is configured as
	// DHCP; nil means the real client (DHCP).
	Leases LeaseSource
	Log    *slog.Logger
	// DataPersistent is false when /data is not a disk (no data partition).
	DataPersistent bool
	// Storage is the PM's storage reconciler; nil runs the PM without
	// storage (tests of other parts).
	Storage Storage
	// DRBDHelperSocket is where the agent answers the DRBD kernel
	// module's helper calls; "" for none.
	DRBDHelperSocket string
	// VMs runs the PM's virtual machines; nil runs the PM without VMs.
	VMs VMRunner
	// NewVMs, when VMs is nil, builds the VM runner once the agent can
	// attach taps and be told of changes.
	NewVMs func(taps vm.Taps, changed func()) (VMRunner, error)
	// Enslave puts a link into a bridge and brings it up (VM taps).
	Enslave func(ctx context.Context, link, bridge string) error
	// Fence resets the PM at once (a PM that lost the right to run VMs);
	// nil asks init (InitFence).
	Fence func() error
	// Power shuts this PM down ("shutdown", "poweroff") or reboots it
	// ("reboot"); nil asks init (InitPower).
	Power func(action string) error
}

// Network is what the agent needs from the PM's network stack.
type Network interface {
	// Setup names the ports by role (priv0, syncN, ibiz0 or the ibiz0pK
	// members of its bond, bizN) and returns the plan.
	Setup(ctx context.Context, cfg pmconfig.Config) (network.PortPlan, error)
	// Apply brings the kernel's links, bonds, bridges, addresses and routes
	// to d; it changes nothing when d is invalid.
	Apply(ctx context.Context, d network.Desired) error
	// Links reports the PM's links as the kernel sees them.
	Links(ctx context.Context) ([]unit.Link, error)
	// HoldMgmt adds the management addresses to ibiz0 and announces them;
	// ReleaseMgmt removes them. Both are idempotent.
	HoldMgmt(ctx context.Context, ps ...netip.Prefix) error
	ReleaseMgmt(ctx context.Context, ps ...netip.Prefix) error
}

// Agent is a running node agent.
type Agent struct {
	opt   Options
	cfg   pmconfig.Config
	log   *slog.Logger
	db    *store.Store
	mon   *cluster.Monitor
	ca    *unitca.CA
	leaf  tls.Certificate
	peerC *http.Client
	hbKey []byte
	// leases and clientID lease the management address (dyad.mgmt=dhcp).
	leases   LeaseSource
	clientID []byte
	start    time.Time

	mu    sync.Mutex
	role  unit.Role
	epoch uint64
	seq   uint64
	// noneSince is when this PM last had no role: the boot wait counts from it.
	noneSince time.Time
	// held is the reason of the last decision to keep a role, logged once.
	held string
	// deposed: the peer's unit database refused this primary's changes as
	// older than its own; the election loop steps down.
	deposed  bool
	hardware any
	console  *consoleServer
	// leased is the management address leased by DHCP that this PM holds.
	leased netip.Prefix
	// leaseStop ends the renewals of the lease; leaseDone is closed when
	// they have ended.
	leaseStop context.CancelFunc
	leaseDone chan struct{}
	// paths are the heartbeat paths in order of preference for replication
	// and migration traffic: sync links, priv0, ibiz0.
	paths []string
	// plan is the role of each port, fixed at start.
	plan network.PortPlan
	// links is the PM's network links as last read from the kernel.
	links []unit.Link
	// syncedBoot is the peer boot whose database we last brought in step.
	syncedBoot string
	// heard are the peer's newest probes per business port.
	heard map[string][]probe.Probe
	// peerReport is the peer's last self report.
	peerReport selfReport
	// storageKick runs the storage reconciler at once after a change.
	storageKick chan struct{}
	// vmKick runs the VM reconciler at once after a change.
	vmKick chan struct{}
	// migrations are the VMs whose live migration this PM runs.
	migrations map[int]bool
	// peerLong calls the peer without an overall time limit: migrations
	// and console streams last as long as they last.
	peerLong *http.Client
	// quorum asks the quorum server for the lease; nil without one.
	quorum *quorum.Client
	// lease is what this PM knows of the quorum lease.
	lease cluster.LeaseState
	// verdict is the last verdict on the right to run VMs.
	verdict cluster.Authority
	// forced: an operator used Force Quorum in this boot.
	forced bool
	// fenced: this PM has asked to be reset.
	fenced bool
	// provisional: this PM took the primary role alone without the right
	// to run VMs, at its old epoch; it takes a new epoch once it has the
	// right, and refuses changes until then.
	provisional bool
	// primarySince is when this PM last took the primary role with the
	// right to run VMs.
	primarySince time.Time
	// peerUpBoot is the peer's boot while it is heard; peerLosses are its
	// losses not yet weighed by the primary's upkeep.
	peerUpBoot string
	peerLosses []peerLoss
	// judgedBoots are the peer's boots whose loss was weighed.
	judgedBoots map[string]bool
	// pathsUp is each heartbeat path's state as last logged.
	pathsUp map[string]bool
	// keptOff is the boot of the out-of-service peer last powered off.
	keptOff string
	// askedOff is the peer boot last asked to shut down for a unit Shutdown.
	askedOff string
	// quorumUse is the quorum server (index of cfg.Quorum) both PMs agreed
	// on; quorumProposed the one this PM announces; quorumFails counts the
	// primary's failures to reach the agreed one.
	quorumUse, quorumProposed, quorumFails int
	// proof is what the peer's BMC said since the peer was lost.
	proof proofState
}

// New prepares an agent: opens the unit database and derives the unit CA.
func New(opt Options) (*Agent, error) {
	if err := os.MkdirAll(opt.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	db, err := store.Open(filepath.Join(opt.DataDir, "unit.db"), opt.Log)
	if err != nil {
		return nil, fmt.Errorf("unit database: %w", err)
	}
	ca, err := unitca.New(opt.Config.UnitKey)
	if err != nil {
		db.Close()
		return nil, err
	}
	leaf, err := ca.Leaf(opt.Config.Node)
	if err != nil {
		db.Close()
		return nil, err
	}
	a := &Agent{
		opt: opt, cfg: opt.Config, log: opt.Log, db: db, ca: ca, leaf: leaf,
		paths:       heartbeatPaths(opt.Config),
		heard:       map[string][]probe.Probe{},
		storageKick: make(chan struct{}, 1),
		vmKick:      make(chan struct{}, 1),
		migrations:  map[int]bool{},
		judgedBoots: map[string]bool{},
		pathsUp:     map[string]bool{},
		hbKey:       unitca.HeartbeatKey(opt.Config.UnitKey),
		leases:      opt.Leases,
		clientID:    dhcpClientID(opt.Config.UnitKey),
		start:       time.Now(),
		role:        unit.RoleNone,
		epoch:       db.Position().Epoch,
		// The peer takes from one boot of this PM only beats numbered above
		// the last it took, and init restarts a crashed agent within the
		// same boot: numbering from the uptime in milliseconds stays above
		// anything the previous agent sent (one beat per BeatInterval).
		seq: uint64(opt.Uptime().Milliseconds()),
	}
	if a.leases == nil {
		a.leases = DHCP{}
	}
	if a.opt.Fence == nil {
		a.opt.Fence = InitFence
	}
	if a.opt.Power == nil {
		a.opt.Power = InitPower
	}
	a.quorum = newQuorumClient(opt)
	a.forced = a.loadForced()
	if a.opt.VMs == nil && a.opt.NewVMs != nil {
		r, err := a.opt.NewVMs(a, a.kickVMs)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("VM runner: %w", err)
		}
		a.opt.VMs = r
	}
	a.mon = cluster.NewMonitor(DeadAfter, a.paths...)
	a.noneSince = a.start
	a.peerC = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     ca.ClientConfig(leaf, opt.Config.Peer()),
			TLSHandshakeTimeout: 3 * time.Second,
		},
	}
	a.peerLong = &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:       ca.ClientConfig(leaf, opt.Config.Peer()),
			TLSHandshakeTimeout:   3 * time.Second,
			ResponseHeaderTimeout: 10 * time.Minute,
		},
	}
	return a, nil
}

// Run runs the agent until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	defer a.db.Close()
	plan, err := a.opt.Net.Setup(ctx, a.cfg)
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	a.plan = plan
	// The PM's own links and addresses come before the heartbeats use them.
	a.reconcileNetwork(ctx)
	if hw, err := a.opt.Hardware(ctx); err != nil {
		a.log.Warn("hardware inventory", "err", err)
	} else {
		a.hardware = hw
	}

	socks := map[string]*cluster.PathSocket{}
	for _, path := range a.paths {
		s, err := cluster.ListenPath(ctx, path, path)
		if err != nil {
			return err
		}
		defer s.Close()
		socks[path] = s
		go s.Receive(ctx, a.log, a.hbKey, func(b cluster.Beat, from netip.AddrPort) {
			if b.Unit == a.cfg.Unit && b.Node == a.cfg.Peer() {
				a.mon.Observe(path, b, from, time.Now())
			}
		})
	}

	if a.opt.Storage != nil && a.opt.DRBDHelperSocket != "" {
		if err := a.serveDRBDHelper(ctx, a.opt.DRBDHelperSocket); err != nil {
			return err
		}
	}
	peerSrv, err := a.servePeer(ctx)
	if err != nil {
		return err
	}
	defer peerSrv.Close()

	a.log.Info("agent started", "node", a.cfg.Node, "unit", a.cfg.Unit, "version", a.opt.Version, "epoch", a.epoch)
	// Three loops, so that nothing slow ever delays a heartbeat: a late beat
	// looks like a dead PM to the peer. The election may take seconds (new
	// epoch on disk, management IP, console); reconciling may wait on the
	// peer's API for longer.
	var wg sync.WaitGroup
	kick := make(chan struct{}, 1)
	wg.Go(func() { every(ctx, BeatInterval, func() { a.sendBeats(socks) }) })
	wg.Go(func() {
		every(ctx, BeatInterval, func() {
			if a.elect(ctx) {
				select {
				case kick <- struct{}{}:
				default:
				}
			}
		})
	})
	// The quorum lease and the verdict it gives: loops of their own, so a
	// slow quorum server never delays the loser's stop.
	wg.Go(func() { every(ctx, cluster.LeaseRenew, func() { a.tendLease(ctx) }) })
	wg.Go(func() { every(ctx, cluster.LeaseRenew, func() { a.seekProof(ctx) }) })
	wg.Go(func() { every(ctx, cluster.JudgeInterval, func() { a.judge(ctx) }) })
	// Every PM keeps its kernel network as the unit database wants it and
	// probes its business ports for the peer's.
	wg.Go(func() { every(ctx, 2*time.Second, func() { a.reconcileNetwork(ctx) }) })
	wg.Go(func() { a.probeBusiness(ctx) })
	// Storage commands (lvm, drbdadm) may take seconds: a loop of its own.
	wg.Go(func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			a.reconcileStorage(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-a.storageKick:
			}
		}
	})
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-kick:
			}
			a.reconcile(ctx)
		}
	})
	// QEMU processes: started, watched and stopped in a loop of their own,
	// run at once when a QEMU ends or a record changes.
	wg.Go(func() {
		t := time.NewTicker(vmTick)
		defer t.Stop()
		for {
			a.reconcileVMs(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-a.vmKick:
			}
		}
	})
	wg.Wait()
	a.log.Info("agent stopping", "reason", context.Cause(ctx))
	if a.opt.VMs != nil {
		// VMs outlive the agent; the next one adopts them.
		a.opt.VMs.Release()
	}
	a.stepDown(context.Background(), "agent stopping")
	return nil
}

// every runs fn every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

func (a *Agent) sendBeats(socks map[string]*cluster.PathSocket) {
	now := time.Now()
	msg, err := cluster.Marshal(a.hbKey, a.beat(now))
	if err != nil {
		a.log.Error("heartbeat", "err", err)
		return
	}
	for path, s := range socks {
		to, _ := a.mon.PeerAddr(path, now)
		if err := s.Send(msg, to); err != nil {
			a.log.Debug("heartbeat send", "path", path, "err", err)
		}
	}
}

// beat is this PM's next heartbeat.
func (a *Agent) beat(now time.Time) cluster.Beat {
	v := a.mon.View(now)
	// Read outside a.mu: the store may wait on a snapshot restore.
	dbSeq := a.db.Position().Seq
	a.mu.Lock()
	a.seq++
	b := cluster.Beat{
		Unit: a.cfg.Unit, Node: a.cfg.Node, BootID: a.opt.BootID, Seq: a.seq,
		Role: a.role, Epoch: a.epoch, State: unit.PMRunning,
		Uptime: a.opt.Uptime().Seconds(), Version: a.opt.Version, DBSeq: dbSeq,
		Paths: map[string]bool{},
	}
	if a.quorum != nil {
		b.Quorum = a.quorumProposed + 1
	}
	a.mu.Unlock()
	if a.cfg.Ibiz0.IsValid() {
		b.Ibiz0 = a.cfg.Ibiz0.Addr().String()
	}
	for _, p := range v.Paths {
		b.Paths[p.Name] = p.Up
	}
	return b
}

// elect applies the election rule and acts on a change of role. It reports
// whether this PM became primary.
func (a *Agent) elect(ctx context.Context) bool {
	if a.stepDownIfDeposed(ctx) {
		return false
	}
	pos := a.db.Position()
	a.mu.Lock()
	s := cluster.Situation{Node: a.cfg.Node, Role: a.role, Epoch: a.epoch,
		DBEpoch: pos.Epoch, DBSeq: pos.Seq, Peer: a.mon.View(time.Now()),
		Provisional: a.provisional}
	if a.role == unit.RoleNone {
		s.Waited = time.Since(a.noneSince)
	}
	a.mu.Unlock()
	s.Verdict = a.authority().Verdict
	d := cluster.Decide(s)
	if d.Role == unit.RolePrimary && s.Role == unit.RolePrimary && d.Epoch != s.Epoch {
		a.log.Info("provisional primary takes a new epoch", "epoch", d.Epoch, "reason", d.Reason)
		return a.becomePrimary(ctx, d.Epoch)
	}
	if d.Role == s.Role {
		a.mu.Lock()
		a.epoch = d.Epoch
		logHeld := d.Reason != a.held
		a.held = d.Reason
		a.mu.Unlock()
		if logHeld && d.Reason != "" {
			a.log.Warn("keeping role", "role", d.Role, "reason", d.Reason)
		}
		return false
	}
	a.log.Info("role change", "from", s.Role, "to", d.Role, "epoch", d.Epoch, "reason", d.Reason)
	switch {
	case d.Role == unit.RolePrimary && d.Epoch == s.Epoch:
		// Provisional: nothing written, no new epoch; the console comes up
		// so an operator can see why and force quorum.
		a.mu.Lock()
		a.role, a.held, a.provisional, a.syncedBoot = unit.RolePrimary, "", true, ""
		a.mu.Unlock()
		a.holdMgmt(ctx)
		return true
	case d.Role == unit.RolePrimary:
		return a.becomePrimary(ctx, d.Epoch)
	default:
		a.stepDown(ctx, d.Reason)
		a.mu.Lock()
		a.role, a.epoch, a.held, a.provisional = d.Role, d.Epoch, "", false
		if d.Role == unit.RoleNone {
			a.noneSince = time.Now()
		}
		a.mu.Unlock()
	}
	return false
}

func (a *Agent) becomePrimary(ctx context.Context, epoch uint64) bool {
	// The epoch is durable before the PM acts as primary: a restart must not
	// come back with an older epoch than the one it announced.
	if err := a.db.SetEpoch(ctx, nil, epoch); err != nil {
		a.log.Error("cannot record the new epoch; staying out of the primary role", "epoch", epoch, "err", err)
		return false
	}
	a.mu.Lock()
	was := a.role
	a.role, a.epoch, a.held, a.provisional = unit.RolePrimary, epoch, "", false
	a.syncedBoot, a.primarySince = "", time.Now()
	a.mu.Unlock()
	if was != unit.RolePrimary {
		a.holdMgmt(ctx)
	}
	return true
}

// stepDownIfDeposed leaves the primary role for none when the peer's
// database proved newer, so the cold-start rule (newest database wins)
// decides again. Without this the deposed primary would go on running the
// unit, unable to write a change or bring its peer in step.
func (a *Agent) stepDownIfDeposed(ctx context.Context) bool {
	a.mu.Lock()
	deposed := a.deposed && a.role == unit.RolePrimary
	a.deposed = false
	a.mu.Unlock()
	if !deposed {
		return false
	}
	a.log.Warn("role change", "from", unit.RolePrimary, "to", unit.RoleNone, "reason", "the peer's unit database is of a newer epoch")
	a.stepDown(ctx, "deposed")
	pos := a.db.Position()
	a.mu.Lock()
	a.role, a.epoch, a.held, a.noneSince, a.provisional = unit.RoleNone, pos.Epoch, "", time.Now(), false
	a.mu.Unlock()
	return true
}

// stepDown gives up everything the primary holds. A leased management
// address is removed but not released to the DHCP server: the binding is
// the unit's, and the next primary asks for it with the same client
// identifier.
func (a *Agent) stepDown(ctx context.Context, reason string) {
	a.stopLease()
	a.closeConsole()
	a.mu.Lock()
	wasPrimary := a.role == unit.RolePrimary
	a.mu.Unlock()
	if wasPrimary {
		a.log.Info("releasing the management address", "reason", reason)
		if err := a.opt.Net.ReleaseMgmt(ctx, a.mgmtAddrs()...); err != nil {
			a.log.Error("release management address", "err", err)
		}
		a.mu.Lock()
		a.leased = netip.Prefix{}
		a.mu.Unlock()
	}
}

// Role is the PM's current role.
func (a *Agent) Role() unit.Role {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.role
}

// peerURLs lists the peer API base URLs, one per heartbeat path: the
// paths that are up first, in order of preference (sync links, priv0, ibiz0),
// then the others.
func (a *Agent) peerURLs(suffix string) []string {
	v := a.mon.View(time.Now())
	up := map[string]bool{}
	for _, p := range v.Paths {
		up[p.Name] = p.Up
	}
	var first, last []string
	for _, path := range a.paths {
		ip, ok := peerAddr(path, a.cfg.Peer(), v.Peer.Ibiz0)
		if !ok {
			continue
		}
		u := fmt.Sprintf("https://%s/%s", netip.AddrPortFrom(ip, PeerPort), suffix)
		if up[path] {
			first = append(first, u)
		} else {
			last = append(last, u)
		}
	}
	return append(first, last...)
}

// replicationPath is the path replication and migration traffic takes: the
// first path up in order of preference; "" when the peer is not heard.
func (a *Agent) replicationPath() string {
	v := a.mon.View(time.Now())
	up := map[string]bool{}
	for _, p := range v.Paths {
		up[p.Name] = p.Up
	}
	for _, path := range a.paths {
		if _, ok := peerAddr(path, a.cfg.Peer(), v.Peer.Ibiz0); ok && up[path] {
			return path
		}
	}
	return ""
}

// ReadUptime reads the PM's uptime from /proc/uptime.
func ReadUptime() time.Duration {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f, err := strconv.ParseFloat(strings.Fields(string(b) + " 0")[0], 64)
	if err != nil {
		return 0
	}
	return time.Duration(f * float64(time.Second))
}
