package agent

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/dyad-ha/dyad/services/cluster"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/vm"
)

// migrationBackoff keeps the balancer from retrying a failed migration of
// the same VM at once.
const migrationBackoff = time.Minute

// watchPeer logs each heartbeat path that comes up or goes down and counts
// the peer's losses; the primary's upkeep turns each loss into a failure
// unless the loss was intended.
func (a *Agent) watchPeer(v cluster.View) {
	seen, boot := v.Seen, v.Peer.BootID
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range v.Paths {
		if p.Up == a.pathsUp[p.Name] {
			continue
		}
		a.pathsUp[p.Name] = p.Up
		if p.Up {
			from, _ := a.mon.PeerAddr(p.Name, time.Now())
			a.log.Info("heartbeat path up", "path", p.Name, "from", from, "peer_boot", boot)
		} else {
			a.log.Info("heartbeat path down", "path", p.Name, "last_heard", p.LastSeen.UTC().Format(time.RFC3339Nano))
		}
	}
	switch {
	case seen:
		a.peerUpBoot = boot
	case a.peerUpBoot != "":
		a.peerLosses = append(a.peerLosses, peerLoss{Boot: a.peerUpBoot, At: time.Now().UTC()})
		a.peerUpBoot = ""
	}
}

// peerLoss is one loss of the peer as this PM saw it.
type peerLoss struct {
	Boot string
	At   time.Time
}

// reconcileOps is the primary's upkeep of the operations: failures of the
// peer, Work On's evacuation, HA load balancing, unit Shutdown and start,
// Rolling Reboot.
func (a *Agent) reconcileOps(ctx context.Context) error {
	ops, uo, err := a.opsRecords()
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	self, peer := a.cfg.Node, a.cfg.Peer()
	v := a.mon.View(time.Now())
	// A loss is weighed once a peer that lives would have asked the quorum
	// server for the lease: one the server heard after the loss was cut
	// off, not failed.
	a.mu.Lock()
	var losses []peerLoss
	a.peerLosses = slices.DeleteFunc(a.peerLosses, func(l peerLoss) bool {
		ready := a.quorum == nil || now.Sub(l.At) >= cluster.LoseAfter+2*cluster.LeaseRenew
		if ready {
			losses = append(losses, l)
		}
		return ready
	})
	peerHeard := a.lease.PeerHeard
	a.mu.Unlock()

	// Failures: a loss of the peer that nobody intended.
	po := ops[peer]
	var failures []time.Time
	for _, l := range losses {
		if (po.Off && po.OffBoot == l.Boot) || po.Rebooting || po.OutOfService || uo.Shutdown != "" {
			continue
		}
		if a.failed(l, peerHeard) {
			failures = append(failures, l.At)
		}
	}
	pruned := slices.DeleteFunc(slices.Clone(po.Failures), func(t time.Time) bool { return now.Sub(t) > FailureWindow })
	all := append(pruned, failures...)
	outOfService := po.OutOfService || len(all) >= FailureLimit
	// Back from an intended power-off, in another boot.
	backSelf := ops[self].Off && ops[self].OffBoot != a.opt.BootID
	backPeer := po.Off && v.Seen && po.OffBoot != v.Peer.BootID
	if len(failures) > 0 || len(pruned) != len(po.Failures) || outOfService != po.OutOfService || backSelf || backPeer {
		if len(failures) > 0 {
			a.log.Warn("the peer PM failed", "pm", peer, "failures_within_window", len(all))
		}
		if outOfService && !po.OutOfService {
			a.log.Error("the peer PM failed too often: powering it off until Reset Device", "pm", peer, "failures", len(all))
		}
		if err := a.updateOps(ctx, func(pms map[int]*pmOps, _ *unitOps) error {
			pms[peer].Failures, pms[peer].OutOfService = all, outOfService
			if backSelf {
				pms[self].Off, pms[self].OffBoot = false, ""
			}
			if backPeer {
				pms[peer].Off, pms[peer].OffBoot = false, ""
			}
			return nil
		}); err != nil {
			return fmt.Errorf("recording the peer's failures: %w", err)
		}
		po.OutOfService = outOfService
	}
	// Kept out of service: a returning PM is powered off again.
	if po.OutOfService {
		a.keepOff(ctx, peer, po, v.Seen, v.Peer.BootID)
	}

	if uo.Shutdown != "" {
		return a.upkeepShutdown(ctx, uo, ops, v.Seen, now)
	}
	if uo.Rolling != nil {
		if err := a.upkeepRolling(ctx, uo, ops, v.Seen, v.Peer.BootID); err != nil {
			return err
		}
	}
	return a.balance(ctx, ops, v.Seen, now)
}

// failed tells a failure of the peer from a cut: a peer the quorum server
// heard after it went silent here was cut off. Each boot of the peer is
// judged once: one cut off is heard for a moment as it resets, and that
// second loss is no failure either.
func (a *Agent) failed(l peerLoss, peerHeard time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.judgedBoots) > 64 {
		clear(a.judgedBoots) // boots of long ago
	}
	if a.judgedBoots[l.Boot] {
		return false
	}
	a.judgedBoots[l.Boot] = true
	if peerHeard.After(l.At) {
		a.log.Warn("the peer PM was cut off, not failed: the quorum server heard it after its heartbeats stopped", "pm", a.cfg.Peer())
		return false
	}
	return true
}

// keepOff powers an out-of-service PM off when it shows up, once per boot.
func (a *Agent) keepOff(ctx context.Context, id int, o pmOps, seen bool, boot string) {
	a.mu.Lock()
	done := a.keptOff == boot && boot != ""
	a.mu.Unlock()
	switch {
	case seen && !done:
		a.log.Warn("a PM out of service came back: powering it off", "pm", id)
		if err := a.powerPM(ctx, id, "poweroff", nil); err != nil {
			a.log.Error("powering off the PM out of service", "pm", id, "err", err)
			return
		}
		a.mu.Lock()
		a.keptOff = boot
		a.mu.Unlock()
	case !seen && o.BMC != nil && !done:
		// It may be stuck in firmware: make sure it is off.
		if err := a.powerPM(ctx, id, "poweroff", o.BMC); err != nil {
			a.log.Warn("powering off the PM out of service through its BMC", "pm", id, "err", err)
			return
		}
		a.mu.Lock()
		a.keptOff = "bmc"
		a.mu.Unlock()
	}
}

// upkeepShutdown drives a unit Shutdown: the VMs stop (past their timeout
// they are powered off), then the peer powers off, then this PM; once both
// PMs are back the VMs that ran start again.
func (a *Agent) upkeepShutdown(ctx context.Context, uo unitOps, ops map[int]pmOps, peerSeen bool, now time.Time) error {
	recs, err := a.vmRecords()
	if err != nil {
		return err
	}
	switch uo.Shutdown {
	case "vms":
		if now.Sub(uo.ShutdownSince) > uo.VMTimeout {
			for _, r := range recs {
				if r.Resume && r.Run {
					a.log.Warn("unit shutdown: the guest did not shut down in time; powering it off", "vm", r.Name)
					if err := a.updateVM(ctx, r.ID, func(r *vm.Record) error { r.Run = false; return nil }); err != nil {
						return err
					}
				}
			}
		}
		for _, r := range recs {
			if r.Run {
				return nil
			}
		}
		for _, rep := range a.vmReports() {
			for _, v := range rep.VMs {
				if v.Running {
					return nil
				}
			}
		}
		a.log.Warn("unit shutdown: every VM is stopped; powering the PMs off")
		return a.updateOps(ctx, func(pms map[int]*pmOps, u *unitOps) error {
			u.Shutdown = "pms"
			return nil
		})
	case "pms":
		if peerSeen {
			boot := a.mon.View(time.Now()).Peer.BootID
			a.mu.Lock()
			asked := a.askedOff == boot
			a.askedOff = boot
			a.mu.Unlock()
			if asked {
				return nil
			}
			if err := a.updateOps(ctx, func(pms map[int]*pmOps, _ *unitOps) error {
				pms[a.cfg.Peer()].Off, pms[a.cfg.Peer()].OffBoot = true, boot
				return nil
			}); err != nil {
				return err
			}
			return a.powerPM(ctx, a.cfg.Peer(), "shutdown", nil)
		}
		// The peer is off: the database now says so, and this PM follows.
		if err := a.updateOps(ctx, func(pms map[int]*pmOps, u *unitOps) error {
			pms[a.cfg.Node].Off, pms[a.cfg.Node].OffBoot = true, a.opt.BootID
			u.Shutdown = "off"
			return nil
		}); err != nil {
			return err
		}
		a.powerSelf("shutdown")
		return nil
	case "off":
		if !peerSeen {
			return nil
		}
		// Both PMs are back.
		for _, r := range recs {
			if !r.Resume {
				continue
			}
			a.log.Info("unit start: starting the VM that ran at shutdown", "vm", r.Name)
			if err := a.updateVM(ctx, r.ID, func(r *vm.Record) error {
				r.Resume, r.Run, r.StartSeq = false, true, r.StartSeq+1
				return nil
			}); err != nil {
				return err
			}
		}
		return a.updateOps(ctx, func(pms map[int]*pmOps, u *unitOps) error {
			for _, o := range pms {
				o.Off, o.OffBoot = false, ""
			}
			u.Shutdown, u.ShutdownSince = "", time.Time{}
			return nil
		})
	}
	return nil
}

// upkeepRolling drives a Rolling Reboot, one PM at a time: evacuate it
// (Work On), reboot it, wait until it is back and its volumes are in sync,
// then Finalize.
func (a *Agent) upkeepRolling(ctx context.Context, uo unitOps, ops map[int]pmOps, peerSeen bool, peerBoot string) error {
	ro := uo.Rolling
	pm := ro.Order[ro.Index]
	boot := a.opt.BootID
	if pm != a.cfg.Node {
		boot = peerBoot
	}
	up := pm == a.cfg.Node || peerSeen
	set := func(fn func(pms map[int]*pmOps, ro *rolling)) error {
		return a.updateOps(ctx, func(pms map[int]*pmOps, u *unitOps) error {
			if u.Rolling == nil {
				return nil
			}
			fn(pms, u.Rolling)
			if u.Rolling.Index >= len(u.Rolling.Order) {
				u.Rolling = nil
			}
			return nil
		})
	}
	switch ro.Phase {
	case "evacuate":
		if !ops[pm].Maintenance {
			a.log.Info("rolling reboot: Work On", "pm", pm)
			return set(func(pms map[int]*pmOps, _ *rolling) { pms[pm].Maintenance = true })
		}
		recs, err := a.vmRecords()
		if err != nil {
			return err
		}
		for _, r := range recs {
			if r.Run && r.Node == pm {
				return nil // the balancer moves it
			}
		}
		if !up {
			return nil
		}
		a.log.Info("rolling reboot: rebooting", "pm", pm)
		if err := set(func(pms map[int]*pmOps, ro *rolling) {
			pms[pm].Rebooting, pms[pm].RebootedFrom = true, boot
			ro.Phase = "reboot"
		}); err != nil {
			return err
		}
		return a.powerPM(ctx, pm, "reboot", nil)
	case "reboot":
		if !up || boot == ops[pm].RebootedFrom {
			return nil
		}
		return set(func(_ map[int]*pmOps, ro *rolling) { ro.Phase = "return" })
	case "return":
		if !up || !a.volumesInSync() {
			return nil
		}
		a.log.Info("rolling reboot: Finalize", "pm", pm)
		return set(func(pms map[int]*pmOps, ro *rolling) {
			pms[pm].Maintenance, pms[pm].Rebooting, pms[pm].RebootedFrom = false, false, ""
			ro.Index++
			ro.Phase = "evacuate"
		})
	}
	return nil
}

// volumesInSync reports whether every volume has both legs up to date.
func (a *Agent) volumesInSync() bool {
	_, sv, err := a.storageView()
	if err != nil {
		return false
	}
	for _, v := range sv.Volumes {
		if v.State != unit.SyncUpToDate {
			return false
		}
	}
	return true
}

// balance is HA load balancing, one live migration at a time: VMs leave a
// PM in Maintenance, and a VM away from its home PM returns once that PM
// is in service and its volumes are in sync.
func (a *Agent) balance(ctx context.Context, ops map[int]pmOps, peerSeen bool, now time.Time) error {
	a.mu.Lock()
	busy := len(a.migrations) > 0
	a.mu.Unlock()
	if busy || !peerSeen {
		return nil
	}
	recs, err := a.vmRecords()
	if err != nil {
		return err
	}
	reports := a.vmReports()
	inSync := a.volumesInSync()
	for _, r := range recs {
		if r.Migration.Active() {
			return nil
		}
	}
	for _, r := range recs {
		if !r.Run || r.Node == 0 {
			continue
		}
		if m := r.Migration; m != nil && m.Status == vm.MigrationFailed && now.Sub(m.Finished) < migrationBackoff {
			continue
		}
		if nr, ok := reports[r.Node].VM(r.ID); !ok || !nr.Running || nr.Status != "running" {
			continue
		}
		other := 3 - r.Node
		target, why := 0, ""
		switch {
		case ops[r.Node].Maintenance && inService(ops[other], true) && r.Placement.Policy != unit.PlaceManual:
			target, why = other, "evacuating a PM in Maintenance"
		case r.Home != 0 && r.Home != r.Node && inService(ops[r.Home], true) && inSync:
			target, why = r.Home, "returning to its home PM"
		}
		if target == 0 {
			continue
		}
		a.log.Info("load balancing: live migration", "vm", r.Name, "to", target, "why", why)
		if err := a.startMigration(ctx, r.ID, target); err != nil {
			return fmt.Errorf("migrating VM %s: %w", r.Name, err)
		}
		return nil
	}
	return nil
}

// chooseHome picks a new VM's home PM: the operator's for manual and mixed
// placement, else the PM with the least memory of VMs at home there (then
// the fewer vCPUs, then PM 1).
func chooseHome(p vm.Placement, recs []vm.Record, spec vm.Record) int {
	if p.Policy != unit.PlaceAuto && p.PM != 0 {
		return p.PM
	}
	var mem [3]int64
	var cpus [3]int
	for _, r := range recs {
		if r.ID == spec.ID || r.Home < 1 || r.Home > 2 {
			continue
		}
		mem[r.Home] += r.MemoryBytes
		cpus[r.Home] += r.VCPUs
	}
	if mem[2] < mem[1] || mem[2] == mem[1] && cpus[2] < cpus[1] {
		return 2
	}
	return 1
}

// checkPlacement validates an operator's placement.
func checkPlacement(p unit.Placement) (vm.Placement, error) {
	switch p.Policy {
	case "", unit.PlaceAuto:
		if p.PM != 0 {
			return vm.Placement{}, fmt.Errorf("placement auto takes no PM (the unit chooses)")
		}
		return vm.Placement{Policy: unit.PlaceAuto}, nil
	case unit.PlaceManual, unit.PlaceMixed:
		if p.PM != 1 && p.PM != 2 {
			return vm.Placement{}, fmt.Errorf("placement %s needs the PM, 1 or 2", p.Policy)
		}
		return vm.Placement{Policy: p.Policy, PM: p.PM}, nil
	}
	return vm.Placement{}, fmt.Errorf("placement policy %q: use auto, manual or mixed", p.Policy)
}

// admissionAlerts warn when one PM could no longer hold every VM that runs:
// after the loss of either PM the survivor must run them all.
func admissionAlerts(recs []vm.Record, hosts []vm.Host, now time.Time) []unit.Alert {
	if len(hosts) == 0 {
		return nil
	}
	minMem, minCPUs := hosts[0].MemoryBytes, hosts[0].CPUs
	for _, h := range hosts[1:] {
		minMem, minCPUs = min(minMem, h.MemoryBytes), min(minCPUs, h.CPUs)
	}
	var mem int64
	var cpus int
	for _, r := range recs {
		if r.Run {
			mem += r.MemoryBytes
			cpus += r.VCPUs
		}
	}
	var out []unit.Alert
	if avail := minMem - vm.DefaultReservedMemory; mem > avail {
		out = append(out, unit.Alert{ID: "admission/memory", Severity: unit.SevWarning, Source: "unit",
			Message: fmt.Sprintf("One PM could no longer hold every running VM: they need %d MiB of memory, a PM has %d MiB for VMs", mem>>20, max(avail, 0)>>20), Since: now})
	}
	if avail := minCPUs - vm.ReservedVCPUs; cpus > avail && cpus > 0 {
		out = append(out, unit.Alert{ID: "admission/vcpus", Severity: unit.SevInfo, Source: "unit",
			Message: fmt.Sprintf("One PM alone would run the VMs' %d vCPUs on %d CPUs for VMs: they would share CPUs and run slower", cpus, max(avail, 0)), Since: now})
	}
	return out
}

// describe says in words which unit command is in progress.
func (u unitOps) describe() string {
	switch u.Shutdown {
	case "vms":
		return "shutdown: stopping the VMs"
	case "pms":
		return "shutdown: powering the PMs off"
	case "off":
		return "shutdown: done; the VMs start again once both PMs are back"
	}
	if r := u.Rolling; r != nil && r.Index < len(r.Order) {
		words := map[string]string{"evacuate": "moving the VMs off", "reboot": "rebooting", "return": "waiting for the resync of"}[r.Phase]
		return fmt.Sprintf("rolling reboot: %s pm%d (%d of %d)", words, r.Order[r.Index], r.Index+1, len(r.Order))
	}
	return ""
}
