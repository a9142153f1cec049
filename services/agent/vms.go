package agent

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dyad-ha/dyad/services/cluster"
	"github.com/dyad-ha/dyad/services/storage"
	"github.com/dyad-ha/dyad/services/store"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/vm"
	"github.com/dyad-ha/dyad/webui"
)

// VMRunner is what the agent needs of the PM's VM runner (vm.Node).
type VMRunner interface {
	Reconcile(ctx context.Context, d vm.NodeDesired)
	Report() vm.NodeReport
	PrepareIncoming(ctx context.Context, r vm.Record, d vm.NodeDesired, listen string) (string, error)
	AbortIncoming(id int)
	Migrate(ctx context.Context, id int, uri string, opt vm.MigrateOptions) (vm.MigrateStats, error)
	DialConsole(ctx context.Context, id int, kind string) (net.Conn, error)
	SerialLog(id int) ([]byte, error)
	Runs(id int) bool
	// Release lets go of the QEMU processes without stopping them.
	Release()
}

const (
	// migrationPortBase + VM id is the port an incoming QEMU listens on.
	migrationPortBase = 49152
	// vmTick is how often each PM reconciles its VMs.
	vmTick = time.Second
)

func (a *Agent) vmSource() webui.VMSource {
	if a.opt.VMs == nil || a.opt.Storage == nil {
		return nil
	}
	return a
}

func (a *Agent) kickVMs() {
	select {
	case a.vmKick <- struct{}{}:
	default:
	}
}

func (a *Agent) vmRecords() ([]vm.Record, error) {
	var recs []vm.Record
	err := a.db.View(func(r store.Reader) error {
		var err error
		recs, err = vm.Load(r)
		return err
	})
	return recs, err
}

// volumeRoles decides, from the VM records, where each volume is
// writable: on the PM that runs (or will run) its VM, on both while the
// VM migrates, and on the unit primary for volumes no VM uses.
func (a *Agent) volumeRoles(unitPrimary bool) (primary, dual func(int) bool) {
	recs, err := a.vmRecords()
	if err != nil {
		a.log.Error("VM records", "err", err)
	}
	owner := map[int]vm.Record{}
	for _, r := range recs {
		for _, v := range r.Volumes {
			owner[v.ID] = r
		}
	}
	self := a.cfg.Node
	verdict := a.Verdict().Verdict
	held := map[int]bool{}
	if a.opt.Storage != nil {
		for _, l := range a.opt.Storage.Report().Legs {
			held[l.Volume] = l.Role == "Primary"
		}
	}
	primary = func(id int) bool {
		r, ok := owner[id]
		switch {
		case verdict == cluster.Lose:
			return false
		case verdict == cluster.Wait:
			// Nothing changes until the lease or the operator decides.
			return held[id]
		case !ok || r.Node == 0:
			return unitPrimary
		}
		return legWritable(self, r, a.opt.VMs != nil && a.opt.VMs.Runs(r.ID))
	}
	dual = func(id int) bool {
		r, ok := owner[id]
		return ok && r.Migration.Active()
	}
	return primary, dual
}

// legWritable reports whether PM self keeps writable the legs of VM r's
// volumes, given whether a QEMU of r runs here.
func legWritable(self int, r vm.Record, runsHere bool) bool {
	switch {
	case runsHere:
		// A QEMU here holds the device open until it has quit.
		return true
	case r.Migration.Active():
		// The target is writable from the start. The source stays writable
		// until the record names the target, that is until the guest runs
		// there; then it lets go, which is what the migration waits for
		// before it ends dual-primary.
		return r.Migration.To == self || r.Node == self
	}
	return r.Node == self
}

// vmDesired is what this PM's VM runner works from.
func (a *Agent) vmDesired(recs []vm.Record) vm.NodeDesired {
	devs := map[int]string{}
	if a.opt.Storage != nil {
		for _, l := range a.opt.Storage.Report().Legs {
			if l.Role == "Primary" && l.Disk == "UpToDate" {
				devs[l.Volume] = fmt.Sprintf("/dev/drbd%d", l.Minor)
			}
		}
	}
	return vm.NodeDesired{VMs: recs, Device: func(id int) (string, bool) {
		d, ok := devs[id]
		return d, ok
	}}
}

// reconcileVMs brings this PM's QEMU processes to the unit database.
func (a *Agent) reconcileVMs(ctx context.Context) {
	if a.opt.VMs == nil {
		return
	}
	recs, err := a.vmRecords()
	if err != nil {
		a.log.Error("VM records", "err", err)
		return
	}
	switch a.Verdict().Verdict {
	case cluster.Lose:
		recs = nil
	case cluster.Wait:
		// Keep what runs here, start nothing.
		recs = slices.DeleteFunc(recs, func(r vm.Record) bool { return !a.opt.VMs.Runs(r.ID) })
	}
	a.opt.VMs.Reconcile(ctx, a.vmDesired(recs))
}

// vmReports are both PMs' VM reports; the peer's only while it is heard.
func (a *Agent) vmReports() map[int]*vm.NodeReport {
	out := map[int]*vm.NodeReport{}
	if a.opt.VMs == nil {
		return out
	}
	self := a.opt.VMs.Report()
	out[a.cfg.Node] = &self
	if a.mon.View(time.Now()).Seen {
		a.mu.Lock()
		peer := a.peerReport.VMs
		a.mu.Unlock()
		if peer != nil {
			out[a.cfg.Peer()] = peer
		}
	}
	return out
}

// reconcileVMRecords is the primary's upkeep of the VM records: failover
// of the VMs of a lost PM, and what the PMs saw of their guests (a guest
// that shut itself down, crashes and the MTBF verdict).
func (a *Agent) reconcileVMRecords(ctx context.Context, rep store.Replicator) error {
	if a.opt.VMs == nil {
		return nil
	}
	recs, err := a.vmRecords()
	if err != nil {
		return err
	}
	v := a.mon.View(time.Now())
	reports := a.vmReports()
	now := time.Now().UTC()
	// upkeep changes r as the PMs' reports say; it is applied once to see
	// whether anything changes and again inside the transaction, to the
	// record as it is then: an operator's change made meanwhile stays.
	takeOver := !v.Seen && a.mayTakeOver(now)
	upkeep := func(r *vm.Record, log bool) bool {
		return a.vmUpkeep(r, v.Seen, takeOver, reports, now, log)
	}
	var ids []int
	for _, r := range recs {
		if upkeep(&r, false) {
			ids = append(ids, r.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	err = a.db.Update(ctx, rep, func(w store.Writer) error {
		for _, id := range ids {
			b := w.Get(vm.BucketVMs, strconv.Itoa(id))
			if b == nil {
				continue
			}
			var r vm.Record
			if err := json.Unmarshal(b, &r); err != nil {
				return err
			}
			if upkeep(&r, true) {
				if err := vm.Put(w, r); err != nil {
					return err
				}
			}
		}
		return nil
	})
	a.kickStorage()
	a.kickVMs()
	return err
}

// vmUpkeep applies to r what the primary learns from the PMs: failover of
// the VMs of a lost PM, a guest that shut itself down, crashes and the
// MTBF verdict. It reports whether r changed.
func (a *Agent) vmUpkeep(r *vm.Record, peerSeen, takeOver bool, reports map[int]*vm.NodeReport, now time.Time, log bool) bool {
	self, peer := a.cfg.Node, a.cfg.Peer()
	changed := false
	// A silent peer ends a migration; before failover moves the VM, where
	// it ran decides how. A blip of the heartbeats is not a loss: the
	// migration running here ends by itself if the peer is really gone.
	if m := r.Migration; !peerSeen && m.Active() {
		switch {
		case r.Node == m.To:
			// The guest ran on the target before the peer went silent:
			// the move itself is done, whatever becomes of the peer.
			m.Status, m.Finished = vm.MigrationCompleted, now
			changed = true
		case takeOver || !a.migrationRunning(r.ID):
			m.Status, m.Error, m.Finished = vm.MigrationFailed, "the peer PM was lost", now
			changed = true
		}
	}
	if takeOver && r.Node == peer {
		// Failover: the peer is silent on every path. The volumes are
		// promoted here only if DRBD and the storage rules agree this
		// leg is current, and the VM starts once they are.
		if log {
			a.log.Warn("failover: the VM's PM is lost; running it here", "vm", r.Name, "from", peer)
		}
		r.Node, changed = self, true
	}
	if m := r.Migration; m.Active() && !a.migrationRunning(r.ID) {
		// The primary that ran this migration stepped down: finish its
		// record from where the guest is.
		src, _ := reports[m.From].VM(r.ID)
		dst, _ := reports[m.To].VM(r.ID)
		switch {
		case dst.Running && dst.Status == "running":
			if log {
				a.log.Warn("finishing a migration left by the previous primary: the guest runs on the target", "vm", r.Name, "to", m.To)
			}
			r.Node, m.Status, m.Finished = m.To, vm.MigrationCompleted, now
			changed = true
		case src.Running && src.Status == "running", !dst.Running:
			if log {
				a.log.Warn("abandoning a migration left by the previous primary", "vm", r.Name)
			}
			m.Status, m.Error, m.Finished = vm.MigrationFailed, "interrupted: the unit's primary changed", now
			changed = true
		}
	}
	if nr, ok := reports[r.Node].VM(r.ID); ok {
		if ex := nr.LastExit; ex != nil && ex.Kind == vm.ExitGuestShutdown && ex.StartSeq >= r.StartSeq && r.Run && !nr.Running {
			if log {
				a.log.Info("the guest shut down", "vm", r.Name)
			}
			r.Run, changed = false, true
		}
		for _, c := range nr.Crashes {
			if c.StartSeq >= r.StartSeq && !slices.ContainsFunc(r.Crashes, c.At.Equal) {
				r.Crashes, changed = append(r.Crashes, c.At), true
			}
		}
		if nr.Critical && !r.Critical && r.Run {
			if log {
				a.log.Warn("the VM crashed too often; Critical until Reset Device", "vm", r.Name)
			}
			r.Critical, changed = true, true
		}
	}
	if pruned := (vm.MTBF{}).Prune(r.Crashes, now); len(pruned) != len(r.Crashes) {
		r.Crashes, changed = pruned, true
	}
	return changed
}

// vmAlerts are the VM alerts of the unit.
func vmAlerts(vms []unit.VM, now time.Time) []unit.Alert {
	var out []unit.Alert
	for _, v := range vms {
		var sev unit.Severity
		var msg string
		switch vm.State(v.State) {
		case vm.Alert:
			sev, msg = unit.SevWarning, fmt.Sprintf("VM %s is running but not fully redundant", v.Name)
		case vm.Crashed:
			sev, msg = unit.SevWarning, fmt.Sprintf("VM %s crashed and is being restarted (%d crashes within the hour)", v.Name, v.Crashes)
		case vm.Critical:
			sev, msg = unit.SevCritical, fmt.Sprintf("VM %s crashed too often and stays down until Reset Device", v.Name)
		default:
			continue
		}
		out = append(out, unit.Alert{ID: fmt.Sprintf("vm/%d/%s", v.ID, strings.ToLower(v.State)), Severity: sev, Source: "vm", Message: msg, Since: now})
	}
	return out
}

// vmView summarizes the records and reports.
func (a *Agent) vmView() ([]vm.Record, []unit.VM, error) {
	recs, err := a.vmRecords()
	if err != nil {
		return nil, nil, err
	}
	vols := map[int]unit.Volume{}
	if _, sv, err := a.storageView(); err == nil {
		for _, v := range sv.Volumes {
			vols[v.ID] = v
		}
	}
	s := vm.Situation{Reports: a.vmReports(), Volumes: vols, BothPMs: a.mon.View(time.Now()).Seen, Now: time.Now()}
	return recs, vm.Summarize(recs, s), nil
}

// VMs implements webui.VMSource.
func (a *Agent) VMs(ctx context.Context) ([]unit.VM, error) {
	_, vms, err := a.vmView()
	return vms, err
}

// VM implements webui.VMSource.
func (a *Agent) VM(ctx context.Context, id int) (unit.VM, error) {
	_, vms, err := a.vmView()
	if err != nil {
		return unit.VM{}, err
	}
	i := slices.IndexFunc(vms, func(v unit.VM) bool { return v.ID == id })
	if i < 0 {
		return unit.VM{}, fmt.Errorf("VM %d: %w", id, webui.ErrNotFound)
	}
	return vms[i], nil
}

// hosts are the PMs' sizes for the resource rules, from their inventories.
func (a *Agent) hosts() []vm.Host {
	recs, err := a.records()
	if err != nil {
		return nil
	}
	var out []vm.Host
	for _, n := range []int{1, 2} {
		r, ok := recs[n]
		if !ok || len(r.Hardware) == 0 {
			continue
		}
		var hw struct {
			CPU struct {
				Threads int `json:"threads"`
			} `json:"cpu"`
			Memory struct {
				TotalBytes int64 `json:"total_bytes"`
			} `json:"memory"`
		}
		if json.Unmarshal(r.Hardware, &hw) == nil && hw.Memory.TotalBytes > 0 {
			out = append(out, vm.Host{MemoryBytes: hw.Memory.TotalBytes, CPUs: hw.CPU.Threads})
		}
	}
	return out
}

func (a *Agent) resourceUnit(recs []vm.Record, except int) vm.Unit {
	u := vm.Unit{PMs: a.hosts()}
	for _, r := range recs {
		if r.ID != except {
			u.VMs = append(u.VMs, specOf(r, nil))
		}
	}
	if nets, err := a.sharedNetworks(); err == nil {
		for _, n := range nets {
			u.Networks = append(u.Networks, n.Name)
		}
	}
	return u
}

// specOf is r as the resource rules see it; sizes are the volumes' sizes.
func specOf(r vm.Record, sizes map[int]int64) vm.Spec {
	s := vm.Spec{Name: r.Name, VCPUs: r.VCPUs, MemoryBytes: r.MemoryBytes, Is64Bit: r.Is64Bit}
	for _, v := range r.Volumes {
		s.Volumes = append(s.Volumes, vm.Volume{Name: "volume" + strconv.Itoa(v.ID), SizeBytes: max(sizes[v.ID], storage.MinVolumeBytes), Boot: v.Boot})
	}
	for _, n := range r.NICs {
		s.NICs = append(s.NICs, vm.NIC{Network: n.Network})
	}
	return s
}

// CreateVM implements webui.VMSource.
func (a *Agent) CreateVM(ctx context.Context, req unit.VMCreate) (unit.VM, error) {
	recs, err := a.vmRecords()
	if err != nil {
		return unit.VM{}, err
	}
	boot := req.Boot
	if boot == "" {
		boot = vm.BootDisk
	}
	var place unit.Placement
	if req.Placement != nil {
		place = *req.Placement
	}
	placement, err := checkPlacement(place)
	if err != nil {
		return unit.VM{}, fmt.Errorf("%w: %w", webui.ErrInvalid, err)
	}
	if boot != vm.BootDisk && boot != vm.BootCD && boot != vm.BootTestGuest {
		return unit.VM{}, fmt.Errorf("%w: boot source %q: use disk, cd or test-guest", webui.ErrInvalid, req.Boot)
	}
	if boot == vm.BootCD && req.CD == "" {
		return unit.VM{}, fmt.Errorf("%w: boot source cd needs a CD image", webui.ErrInvalid)
	}
	if req.CD != "" {
		if err := vm.CheckCD(req.CD); err != nil {
			return unit.VM{}, fmt.Errorf("%w: %w", webui.ErrInvalid, err)
		}
	}
	id := 1
	for _, r := range recs {
		id = max(id, r.ID+1)
	}
	rec := vm.Record{ID: id, UUID: newUUID(), Name: req.Name, Created: time.Now().UTC(), VCPUs: req.VCPUs,
		MemoryBytes: req.MemoryMiB << 20, Is64Bit: req.Is64Bit, Boot: boot, CD: req.CD}
	spec := vm.Spec{Name: req.Name, VCPUs: req.VCPUs, MemoryBytes: req.MemoryMiB << 20, Is64Bit: req.Is64Bit}
	for i, v := range req.Volumes {
		size := v.SizeMiB << 20
		name := v.Name
		if v.Existing > 0 {
			vol, err := a.attachable(ctx, recs, v.Existing)
			if err != nil {
				return unit.VM{}, err
			}
			size, name = vol.SizeBytes, vol.Name
		}
		if name == "" {
			name = fmt.Sprintf("%s-%d", req.Name, i)
		}
		spec.Volumes = append(spec.Volumes, vm.Volume{Name: name, SizeBytes: size, Boot: v.Boot})
	}
	for i, n := range req.NICs {
		mac := vm.NICMAC(a.cfg.UnitKey, id, i)
		if n.MAC != "" {
			m, err := net.ParseMAC(n.MAC)
			if err != nil {
				return unit.VM{}, fmt.Errorf("%w: NIC %d: %v", webui.ErrInvalid, i, err)
			}
			mac = m
		}
		spec.NICs = append(spec.NICs, vm.NIC{Network: n.Network, MAC: mac})
		rec.NICs = append(rec.NICs, vm.NICRecord{Network: n.Network, MAC: mac.String()})
	}
	warnings, err := vm.Validate(spec, a.resourceUnit(recs, 0))
	if err != nil {
		return unit.VM{}, err
	}
	// New volumes first: a VM is recorded only with volumes that exist.
	for _, v := range req.Volumes {
		ref := vm.VolumeRef{ID: v.Existing, Boot: v.Boot}
		if v.Existing == 0 {
			name := v.Name
			if name == "" {
				name = req.Name + "-boot"
			}
			vol, err := a.CreateVolume(ctx, unit.VolumeSpec{Name: name, SizeBytes: v.SizeMiB << 20, Group: v.Group})
			if err != nil {
				return unit.VM{}, fmt.Errorf("volume %s: %w", name, err)
			}
			ref.ID = vol.ID
		}
		rec.Volumes = append(rec.Volumes, ref)
	}
	rec.Placement = placement
	rec.Home = chooseHome(placement, recs, rec)
	rec.Node = rec.Home
	if rec.Node != a.cfg.Node && !a.mon.View(time.Now()).Seen {
		rec.Node = a.cfg.Node
	}
	if req.Start {
		rec.Run, rec.StartSeq = true, 1
	}
	if err := a.commit(ctx, func(w store.Writer) error { return vm.Put(w, rec) }); err != nil {
		return unit.VM{}, fmt.Errorf("recording the VM: %w", err)
	}
	a.log.Info("VM created", "vm", rec.Name, "id", rec.ID, "vcpus", rec.VCPUs, "memory", rec.MemoryBytes, "warnings", warnings)
	a.kickStorage()
	a.kickVMs()
	v, err := a.VM(ctx, rec.ID)
	v.Warnings = append(v.Warnings, warnings...)
	return v, err
}

// attachable returns volume id if it exists and no VM uses it.
func (a *Agent) attachable(ctx context.Context, recs []vm.Record, id int) (unit.Volume, error) {
	vol, err := a.Volume(ctx, id)
	if err != nil {
		return vol, err
	}
	for _, r := range recs {
		if r.Uses(id) {
			return vol, fmt.Errorf("%w: volume %s is attached to VM %s", webui.ErrConflict, vol.Name, r.Name)
		}
	}
	return vol, nil
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// updateVM changes VM id's record inside one transaction; fn refuses with
// an error and then nothing changes.
func (a *Agent) updateVM(ctx context.Context, id int, fn func(r *vm.Record) error) error {
	err := a.commit(ctx, func(w store.Writer) error {
		b := w.Get(vm.BucketVMs, strconv.Itoa(id))
		if b == nil {
			return fmt.Errorf("VM %d: %w", id, webui.ErrNotFound)
		}
		var r vm.Record
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		if err := fn(&r); err != nil {
			return err
		}
		return vm.Put(w, r)
	})
	a.kickStorage()
	a.kickVMs()
	return err
}

// Command implements webui.VMSource.
func (a *Agent) Command(ctx context.Context, id int, name string, args unit.VMAction) (unit.VM, error) {
	cur, err := a.VM(ctx, id)
	if err != nil {
		return cur, err
	}
	cmd := vm.Command(name)
	if err := vm.Check(vm.State(cur.State), cmd); err != nil {
		var na *vm.NotAllowedError
		if errors.As(err, &na) {
			return cur, err
		}
		return cur, fmt.Errorf("%w: %w", webui.ErrInvalid, err)
	}
	self, peer := a.cfg.Node, a.cfg.Peer()
	switch cmd {
	case vm.Start, vm.BootFromCD:
		if cmd == vm.BootFromCD && args.CD == "" && cur.CD == "" {
			return cur, fmt.Errorf("%w: Boot From CD needs a CD image", webui.ErrInvalid)
		}
		if args.CD != "" {
			if err := vm.CheckCD(args.CD); err != nil {
				return cur, fmt.Errorf("%w: %w", webui.ErrInvalid, err)
			}
		}
		err = a.updateVM(ctx, id, func(r *vm.Record) error {
			r.Run, r.StartSeq, r.StartCD = true, r.StartSeq+1, cmd == vm.BootFromCD
			if args.CD != "" {
				r.CD = args.CD
			}
			if r.Node != self && !(r.Node == peer && a.mon.View(time.Now()).Seen) {
				r.Node = self
			}
			return nil
		})
	case vm.Shutdown:
		timeout := time.Duration(args.TimeoutSeconds) * time.Second
		if timeout <= 0 {
			timeout = 2 * time.Minute
		}
		err = a.updateVM(ctx, id, func(r *vm.Record) error {
			r.ShutdownSeq, r.ShutdownTimeout = r.ShutdownSeq+1, timeout
			return nil
		})
	case vm.PowerOff:
		err = a.updateVM(ctx, id, func(r *vm.Record) error { r.Run = false; return nil })
	case vm.Dump:
		err = a.updateVM(ctx, id, func(r *vm.Record) error { r.DumpSeq++; return nil })
	case vm.ResetDevice:
		err = a.updateVM(ctx, id, func(r *vm.Record) error {
			r.Critical, r.Crashes, r.Run, r.StartSeq = false, nil, true, r.StartSeq+1
			return nil
		})
	case vm.Migrate:
		// The operator chose the PM: it becomes the VM's home, or load
		// balancing would move the VM straight back.
		to := args.To
		if to == 0 {
			to = 3 - cur.Node
		}
		if err = a.startMigration(ctx, id, to); err == nil {
			err = a.updateVM(ctx, id, func(r *vm.Record) error {
				r.Home = to
				if r.Placement.Policy == unit.PlaceManual || r.Placement.Policy == unit.PlaceMixed {
					r.Placement.PM = to
				}
				return nil
			})
		}
	default:
		return cur, fmt.Errorf("%w: %s is not available in this version", webui.ErrConflict, cmd)
	}
	if err != nil {
		return cur, err
	}
	a.log.Info("VM command", "vm", cur.Name, "command", cmd)
	return a.VM(ctx, id)
}

// ConfigVM implements webui.VMSource.
func (a *Agent) ConfigVM(ctx context.Context, id int, req unit.VMConfig) (unit.VM, error) {
	cur, err := a.VM(ctx, id)
	if err != nil {
		return cur, err
	}
	placementOnly := req.Placement != nil && req.VCPUs == nil && req.MemoryMiB == nil && len(req.AddVolumes) == 0 &&
		len(req.Detach) == 0 && len(req.Delete) == 0 && req.NICs == nil
	if err := vm.Check(vm.State(cur.State), vm.Config); err != nil && !placementOnly {
		// Load balancing is no provisioning: it changes in any state.
		return cur, err
	}
	recs, err := a.vmRecords()
	if err != nil {
		return cur, err
	}
	i := slices.IndexFunc(recs, func(r vm.Record) bool { return r.ID == id })
	if i < 0 {
		return cur, fmt.Errorf("VM %d: %w", id, webui.ErrNotFound)
	}
	r := recs[i]
	sizes := map[int]int64{}
	for _, v := range cur.Volumes {
		sizes[v.VolumeID] = v.SizeBytes
	}
	if req.VCPUs != nil {
		r.VCPUs = *req.VCPUs
	}
	if req.MemoryMiB != nil {
		r.MemoryBytes = *req.MemoryMiB << 20
	}
	for _, d := range slices.Concat(req.Detach, req.Delete) {
		j := slices.IndexFunc(r.Volumes, func(v vm.VolumeRef) bool { return v.ID == d })
		switch {
		case j < 0:
			return cur, fmt.Errorf("%w: volume %d is not attached to VM %s", webui.ErrInvalid, d, r.Name)
		case r.Volumes[j].Boot:
			return cur, fmt.Errorf("%w: volume %d is the boot volume of VM %s; it cannot be detached or deleted on its own", webui.ErrInvalid, d, r.Name)
		}
		r.Volumes = slices.Delete(r.Volumes, j, j+1)
	}
	for _, v := range req.AddVolumes {
		if v.Boot {
			return cur, fmt.Errorf("%w: VM %s has a boot volume already", webui.ErrInvalid, r.Name)
		}
		if v.Existing > 0 {
			vol, err := a.attachable(ctx, recs, v.Existing)
			if err != nil {
				return cur, err
			}
			sizes[vol.ID] = vol.SizeBytes
		}
	}
	if req.NICs != nil {
		r.NICs = nil
		for k, n := range *req.NICs {
			mac := vm.NICMAC(a.cfg.UnitKey, id, k).String()
			if n.MAC != "" {
				m, err := net.ParseMAC(n.MAC)
				if err != nil {
					return cur, fmt.Errorf("%w: NIC %d: %v", webui.ErrInvalid, k, err)
				}
				mac = m.String()
			}
			r.NICs = append(r.NICs, vm.NICRecord{Network: n.Network, MAC: mac})
		}
	}
	if req.Placement != nil {
		p, err := checkPlacement(*req.Placement)
		if err != nil {
			return cur, fmt.Errorf("%w: %w", webui.ErrInvalid, err)
		}
		r.Placement, r.Home = p, chooseHome(p, recs, r)
	}
	spec := specOf(r, sizes)
	for _, v := range req.AddVolumes {
		if v.Existing == 0 {
			spec.Volumes = append(spec.Volumes, vm.Volume{Name: v.Name, SizeBytes: v.SizeMiB << 20})
		} else {
			spec.Volumes = append(spec.Volumes, vm.Volume{Name: "volume" + strconv.Itoa(v.Existing), SizeBytes: sizes[v.Existing]})
		}
	}
	if _, err := vm.Validate(spec, a.resourceUnit(recs, id)); err != nil {
		return cur, err
	}
	for _, v := range req.AddVolumes {
		ref := vm.VolumeRef{ID: v.Existing}
		if v.Existing == 0 {
			vol, err := a.CreateVolume(ctx, unit.VolumeSpec{Name: v.Name, SizeBytes: v.SizeMiB << 20, Group: v.Group})
			if err != nil {
				return cur, fmt.Errorf("volume %s: %w", v.Name, err)
			}
			ref.ID = vol.ID
		}
		r.Volumes = append(r.Volumes, ref)
	}
	err = a.updateVM(ctx, id, func(cur *vm.Record) error {
		// Only the provisioning changes; what the PMs did meanwhile stays.
		cur.VCPUs, cur.MemoryBytes, cur.Volumes, cur.NICs = r.VCPUs, r.MemoryBytes, r.Volumes, r.NICs
		cur.Placement, cur.Home = r.Placement, r.Home
		return nil
	})
	if err != nil {
		return unit.VM{}, err
	}
	for _, d := range req.Delete {
		if err := a.DeleteVolume(ctx, d); err != nil {
			a.log.Warn("deleting a detached volume", "volume", d, "err", err)
		}
	}
	a.log.Info("VM reconfigured", "vm", r.Name)
	return a.VM(ctx, id)
}

// RemoveVM implements webui.VMSource.
func (a *Agent) RemoveVM(ctx context.Context, id int, deleteData bool) error {
	cur, err := a.VM(ctx, id)
	if err != nil {
		return err
	}
	if err := vm.Check(vm.State(cur.State), vm.Remove); err != nil {
		return err
	}
	err = a.commit(ctx, func(w store.Writer) error { return vm.Delete(w, id) })
	if err != nil {
		return err
	}
	a.kickVMs()
	for _, v := range cur.Volumes {
		if v.Boot || deleteData {
			if err := a.DeleteVolume(ctx, v.VolumeID); err != nil {
				a.log.Warn("deleting a removed VM's volume", "volume", v.VolumeID, "err", err)
			}
		}
	}
	a.log.Info("VM removed", "vm", cur.Name, "data_deleted", deleteData)
	return nil
}

// usedBy names the VM using volume id, "" for none.
func (a *Agent) usedBy(id int) string {
	recs, _ := a.vmRecords()
	for _, r := range recs {
		if r.Uses(id) {
			return r.Name
		}
	}
	return ""
}

// DialConsole implements webui.VMSource: locally when the VM runs here,
// else through the peer API.
func (a *Agent) DialConsole(ctx context.Context, id int, kind string) (net.Conn, error) {
	cur, err := a.VM(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := vm.Check(vm.State(cur.State), vm.Console); err != nil {
		return nil, err
	}
	if kind != "serial" && kind != "vnc" {
		return nil, fmt.Errorf("%w: console %q: use serial or vnc", webui.ErrInvalid, kind)
	}
	if a.opt.VMs.Runs(id) {
		c, err := a.opt.VMs.DialConsole(ctx, id, kind)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", webui.ErrConflict, err)
		}
		return c, nil
	}
	return a.dialPeerConsole(ctx, id, kind)
}

// SerialLog implements webui.VMSource.
func (a *Agent) SerialLog(ctx context.Context, id int) ([]byte, error) {
	cur, err := a.VM(ctx, id)
	if err != nil {
		return nil, err
	}
	if cur.Node == a.cfg.Node || cur.Node == 0 || !a.mon.View(time.Now()).Seen {
		return a.opt.VMs.SerialLog(id)
	}
	return a.peerSerialLog(ctx, id)
}

// migrationListen is where VM id's incoming QEMU on PM node listens: its
// address on the replication link.
func (a *Agent) migrationListen(node, id int) string {
	ip := ReplicationAddrs(a.cfg)[node-1]
	return netip.AddrPortFrom(ip, uint16(migrationPortBase+id%16000)).String()
}

// Attach implements vm.Taps: a VM's tap joins the bridge of the shared
// network it names.
func (a *Agent) Attach(ctx context.Context, tap, network string) error {
	nets, err := a.sharedNetworks()
	if err != nil {
		return err
	}
	i := slices.IndexFunc(nets, func(n sharedNetwork) bool { return n.Name == network })
	if i < 0 {
		return fmt.Errorf("no shared network named %q", network)
	}
	if a.opt.Enslave == nil {
		return errors.New("this PM cannot attach taps")
	}
	return a.opt.Enslave(ctx, tap, bridgeName(nets[i].ID))
}

// migrationRunning reports whether this PM runs the migration of VM id.
func (a *Agent) migrationRunning(id int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.migrations[id]
}
