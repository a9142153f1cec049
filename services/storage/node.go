package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

// LVM is what the reconciler needs of LVM on its PM.
type LVM interface {
	// PVs maps each physical volume's device path to its volume group ("" for none).
	PVs(ctx context.Context) (map[string]string, error)
	VGs(ctx context.Context) ([]VGInfo, error)
	LVs(ctx context.Context, vg string) ([]LVInfo, error)
	CreatePV(ctx context.Context, dev string) error
	CreateVG(ctx context.Context, vg string, devs ...string) error
	ExtendVG(ctx context.Context, vg, dev string) error
	CreateLV(ctx context.Context, vg, lv string, size int64) error
	ExtendLV(ctx context.Context, vg, lv string, size int64) error
	RemoveLV(ctx context.Context, vg, lv string) error
	Snapshot(ctx context.Context, vg, origin, name string, size int64) error
	// ActivateVG makes the logical volumes of vg usable (after a boot).
	ActivateVG(ctx context.Context, vg string) error
}

// VGInfo is a volume group.
type VGInfo struct {
	Name      string
	SizeBytes int64
	FreeBytes int64
	Missing   bool
}

// LVInfo is a logical volume.
type LVInfo struct {
	Name      string
	SizeBytes int64
	Origin    string // the origin of a snapshot
	Devices   []string
	Created   time.Time
	// Active is true when the kernel has the volume's device.
	Active bool
}

// DRBD is what the reconciler needs of DRBD on its PM.
type DRBD interface {
	// Configure makes rs the resources drbdadm knows (the resource file).
	Configure(ctx context.Context, rs []Resource) error
	// Status reads the kernel's state of every configured minor.
	Status(ctx context.Context) (map[int]MinorState, error)
	Generations(ctx context.Context, minor int) (Generations, error)
	CreateMD(ctx context.Context, res string) error
	Up(ctx context.Context, res string) error
	Down(ctx context.Context, res string) error
	Attach(ctx context.Context, res string) error
	Connect(ctx context.Context, res string, discardMyData bool) error
	Primary(ctx context.Context, res string, force bool) error
	Secondary(ctx context.Context, res string) error
	Resize(ctx context.Context, res string) error
	// Adjust applies the resource file's options to a running resource.
	Adjust(ctx context.Context, res string) error
	Outdate(ctx context.Context, res string) error
}

// Resource is a volume's DRBD resource on this PM.
type Resource struct {
	Name  string
	Minor int
	Disk  string
	Port  int
	// DualPrimary allows both legs writable (a live migration).
	DualPrimary bool
}

// MinorState is the kernel's state of a DRBD minor.
type MinorState struct {
	Connection, Role, PeerRole, Disk, PeerDisk string
	SentKiB, ReceivedKiB, OutOfSyncKiB         int64
	Sync                                       *unit.SyncProgress
}

// Disks finds the PM's disks and erases one on command.
type Disks interface {
	// Scan lists the whole disks with their state; pvs maps PV device
	// paths to volume groups.
	Scan(ctx context.Context, pvs map[string]string) ([]unit.Disk, error)
	// Wipe erases the signatures of the named disk.
	Wipe(ctx context.Context, name string) error
}

// Desired is what the unit wants of this PM's storage.
type Desired struct {
	Records
	// Primary reports whether this PM should hold volume id writable.
	Primary func(id int) bool
	// PeerLost is true when the peer PM is known to be gone: a volume
	// that was never synced may then start from this PM's leg alone.
	PeerLost bool
	// Forced: an operator forced quorum on this PM, which takes its legs
	// as current without the peer. A Consistent leg is promoted (DRBD asks
	// the fence-peer helper, which answers that the peer is fenced); an
	// Outdated one still is not: it knows the peer is newer.
	Forced bool
	// DualPrimary reports whether volume id may be writable on both PMs at
	// once: only while the VM using it live-migrates. Nil means never.
	DualPrimary func(id int) bool
}

func (d Desired) dual(id int) bool { return d.DualPrimary != nil && d.DualPrimary(id) }

// Node reconciles one PM's storage. Its methods are safe for concurrent use.
type Node struct {
	self     int
	lvm      LVM
	drbd     DRBD
	disks    Disks
	stateDir string
	log      *slog.Logger

	mu sync.Mutex
	// local is what this PM remembers of its legs across agent restarts.
	local map[int]*legMemory
	// attached are minors whose disk was attached in this boot: a leg that
	// is diskless afterwards was detached by an I/O error.
	attached map[int]bool
	failed   map[int]bool
	// synced are minors whose legs were connected and both UpToDate in
	// this boot: this leg was current when it last saw the peer.
	synced map[int]bool
	// dual is the allow-two-primaries value last applied per minor.
	dual   map[int]bool
	report Report
	// lastLVs are the logical volumes per group LVM last listed.
	lastLVs map[int][]LVInfo
	// refused is the leg state in which DRBD last refused to promote a
	// volume: the promotion is tried again only when the state changes,
	// not every round (each try runs the fence-peer helper).
	refused map[int]refusal
	// lastErr is the last error logged per volume, to log each once.
	lastErr map[int]string
}

type refusal struct {
	st  MinorState
	err string
}

// legMemory is kept in the state directory.
type legMemory struct {
	// Fresh is set between creating the logical volume and creating its
	// DRBD metadata: only a fresh volume gets new metadata.
	Fresh       bool      `json:"fresh,omitempty"`
	LastPrimary time.Time `json:"last_primary,omitzero"`
	SplitBrain  bool      `json:"split_brain,omitempty"`
	Forced      bool      `json:"forced,omitempty"`
	// PeerFenced is set when this PM outdated the peer's leg (fence-peer)
	// and cleared when the legs are connected and in sync again: only then
	// may the leg be made writable after a boot without the peer.
	PeerFenced bool `json:"peer_fenced,omitempty"`
}

// NewNode returns the reconciler of node self. stateDir keeps what the
// PM must remember of its legs (on the data partition).
func NewNode(self int, lvm LVM, drbd DRBD, disks Disks, stateDir string, log *slog.Logger) (*Node, error) {
	n := &Node{self: self, lvm: lvm, drbd: drbd, disks: disks, stateDir: stateDir, log: log,
		local: map[int]*legMemory{}, attached: map[int]bool{}, failed: map[int]bool{}, synced: map[int]bool{}, dual: map[int]bool{},
		refused: map[int]refusal{}, lastErr: map[int]string{}}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("storage state: %w", err)
	}
	b, err := os.ReadFile(n.statePath())
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("storage state: %w", err)
	default:
		if err := json.Unmarshal(b, &n.local); err != nil {
			// A torn or damaged file loses memories that only guard
			// against redoing work: keep it for inspection and go on.
			log.Error("storage state unreadable; starting afresh", "file", n.statePath(), "err", err)
			os.Rename(n.statePath(), n.statePath()+".bad")
			n.local = map[int]*legMemory{}
		}
	}
	return n, nil
}

func (n *Node) statePath() string { return filepath.Join(n.stateDir, "legs.json") }

// saveLocal writes the leg memories; n.mu is held.
func (n *Node) saveLocal() error {
	b, err := json.Marshal(n.local)
	if err != nil {
		return err
	}
	tmp := n.statePath() + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, n.statePath())
}

func (n *Node) mem(id int) *legMemory {
	m := n.local[id]
	if m == nil {
		m = &legMemory{}
		n.local[id] = m
	}
	return m
}

// remember changes a leg memory and writes it to disk.
func (n *Node) remember(id int, fn func(m *legMemory)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	fn(n.mem(id))
	if err := n.saveLocal(); err != nil {
		n.log.Error("storage state", "err", err)
	}
}

// Report is the last round's report.
func (n *Node) Report() Report {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.report
}

// SplitBrain records that DRBD found a split brain on minor's volume.
func (n *Node) SplitBrain(id int) {
	n.log.Error("split brain detected; the volume stays disconnected until the operator picks the side to keep", "volume", id)
	n.remember(id, func(m *legMemory) { m.SplitBrain = true })
}

// PeerFenced records that this PM outdated the peer's leg of volume id.
func (n *Node) PeerFenced(id int) {
	n.remember(id, func(m *legMemory) { m.PeerFenced = true })
}

// LegFailed records that DRBD detached the leg of minor after an I/O error.
func (n *Node) LegFailed(minor int) {
	n.mu.Lock()
	n.failed[minor] = true
	n.mu.Unlock()
}

// round collects one reconcile round's findings.
type round struct {
	problems []string
}

func (r *round) problem(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// Reconcile brings the PM's disks, volume groups, logical volumes and DRBD
// resources to d and reports what they are. Every step is idempotent, so a
// round cut short is finished by the next.
func (n *Node) Reconcile(ctx context.Context, d Desired) (rep Report) {
	rep = Report{Node: n.self, At: time.Now().UTC(), Disks: []unit.Disk{}, Groups: []GroupState{}, Legs: []LegState{}}
	var r round
	defer func() {
		rep.Problems = r.problems
		n.mu.Lock()
		n.report = rep
		n.mu.Unlock()
	}()

	// Without LVM's answers (a failing disk can make it fail) the mirrors
	// are still watched and reported, from the last logical volumes seen.
	lvmOK := true
	pvs, err := n.lvm.PVs(ctx)
	if err != nil {
		r.problem("listing physical volumes: %v", err)
		lvmOK = false
	}
	var vgs []VGInfo
	if lvmOK {
		if vgs, err = n.lvm.VGs(ctx); err != nil {
			r.problem("listing volume groups: %v", err)
			lvmOK = false
		}
	}
	disks, err := n.disks.Scan(ctx, pvs)
	if err != nil {
		r.problem("listing disks: %v", err)
	}
	if lvmOK {
		for _, g := range d.Groups {
			if !n.ensureGroup(ctx, &r, g, disks, pvs, vgs) {
				continue
			}
			if vgs, err = n.lvm.VGs(ctx); err != nil {
				r.problem("listing volume groups: %v", err)
				lvmOK = false
				break
			}
			if pvs, err = n.lvm.PVs(ctx); err == nil {
				disks, _ = n.disks.Scan(ctx, pvs)
			}
		}
	}
	for i := range disks {
		disks[i].PM = n.self
		if vg := pvs["/dev/"+disks[i].Name]; vg != "" {
			for _, g := range d.Groups {
				if vg == g.VG() {
					disks[i].Group = g.ID
				}
			}
		}
	}
	if disks != nil {
		rep.Disks = disks
	}
	lvs := map[int][]LVInfo{}
	for _, g := range d.Groups {
		i := slices.IndexFunc(vgs, func(v VGInfo) bool { return v.Name == g.VG() })
		if i < 0 {
			continue
		}
		var members []string
		for dev, vg := range pvs {
			if vg == g.VG() {
				members = append(members, dev)
			}
		}
		slices.Sort(members)
		rep.Groups = append(rep.Groups, GroupState{ID: g.ID, SizeBytes: vgs[i].SizeBytes, FreeBytes: vgs[i].FreeBytes, PVs: members, Missing: vgs[i].Missing})
		l, err := n.lvm.LVs(ctx, g.VG())
		if err == nil && slices.ContainsFunc(l, func(lv LVInfo) bool { return !lv.Active }) {
			// After a boot LVM leaves the volumes inactive.
			n.log.Info("activating volume group", "vg", g.VG())
			if err := n.lvm.ActivateVG(ctx, g.VG()); err != nil {
				r.problem("activating %s: %v", g.VG(), err)
			}
			l, err = n.lvm.LVs(ctx, g.VG())
		}
		if err != nil {
			r.problem("listing logical volumes of %s: %v", g.VG(), err)
			lvmOK = false
		} else {
			lvs[g.ID] = l
		}
	}
	n.mu.Lock()
	if lvmOK {
		n.lastLVs = lvs
	} else {
		lvs = n.lastLVs
	}
	n.mu.Unlock()

	// Logical volumes first, so the resource file only names disks that exist.
	var res []Resource
	for _, v := range d.Volumes {
		if v.Deleted {
			continue
		}
		if _, ok := lvs[v.Group]; !ok {
			continue // this PM has no volume group for it (yet)
		}
		if lvmOK && n.ensureLV(ctx, &r, v, lvs) {
			l, err := n.lvm.LVs(ctx, VGName(v.Group))
			if err != nil {
				r.problem("listing logical volumes of %s: %v", VGName(v.Group), err)
				continue
			}
			lvs[v.Group] = l
		}
		if findLV(lvs[v.Group], LVName(v.ID)) != nil {
			res = append(res, Resource{Name: ResourceName(v.ID), Minor: v.Minor, Disk: "/dev/" + VGName(v.Group) + "/" + LVName(v.ID), Port: Port(v.Minor), DualPrimary: d.dual(v.ID)})
		}
	}
	// Minors of deleted volumes stay in the file until they are down.
	status, err := n.drbd.Status(ctx)
	if err != nil {
		r.problem("reading DRBD state: %v", err)
		return rep
	}
	for _, v := range d.Volumes {
		if st, ok := status[v.Minor]; v.Deleted && ok && st.Connection != "Unconfigured" {
			if lv := findLV(lvs[v.Group], LVName(v.ID)); lv != nil {
				res = append(res, Resource{Name: ResourceName(v.ID), Minor: v.Minor, Disk: "/dev/" + VGName(v.Group) + "/" + LVName(v.ID), Port: Port(v.Minor)})
			}
		}
	}
	if lvmOK {
		if err := n.drbd.Configure(ctx, res); err != nil {
			r.problem("writing the DRBD resource file: %v", err)
			return rep
		}
	}
	for _, v := range d.Volumes {
		if v.Deleted {
			if !lvmOK || n.removeLeg(ctx, &r, v, status, lvs[v.Group]) {
				rep.Legs = append(rep.Legs, LegState{Volume: v.ID, Minor: v.Minor, LV: true})
			}
			continue
		}
		if _, ok := lvs[v.Group]; !ok {
			continue
		}
		leg := n.reconcileLeg(ctx, v, d, status[v.Minor], lvs[v.Group])
		n.mu.Lock()
		if leg.Error != n.lastErr[v.ID] {
			if leg.Error != "" {
				n.log.Warn("volume leg", "volume", v.Name, "problem", leg.Error)
			} else {
				n.log.Info("volume leg recovered", "volume", v.Name)
			}
			n.lastErr[v.ID] = leg.Error
		}
		n.mu.Unlock()
		rep.Legs = append(rep.Legs, leg)
	}
	return rep
}

func findLV(lvs []LVInfo, name string) *LVInfo {
	for i := range lvs {
		if lvs[i].Name == name {
			return &lvs[i]
		}
	}
	return nil
}

// ensureGroup makes this PM's disks of g its volume group. It reports
// whether it changed anything.
func (n *Node) ensureGroup(ctx context.Context, r *round, g GroupRecord, disks []unit.Disk, pvs map[string]string, vgs []VGInfo) bool {
	vg := g.VG()
	exists := slices.ContainsFunc(vgs, func(v VGInfo) bool { return v.Name == vg })
	changed := false
	var add []string
	for _, ref := range g.Disks[n.self] {
		i := slices.IndexFunc(disks, func(d unit.Disk) bool {
			return ref.Serial != "" && d.Serial == ref.Serial || ref.Serial == "" && d.Name == ref.Name
		})
		if i < 0 {
			if !exists {
				r.problem("disk %s of storage group %s is missing", refName(ref), g.Name)
			}
			continue
		}
		d := disks[i]
		dev := "/dev/" + d.Name
		if vg, ok := pvs[dev]; ok && vg == "" {
			// Prepared in an earlier round that ended before the volume
			// group took it.
			add = append(add, dev)
			continue
		}
		switch d.State {
		case unit.DiskMember:
			if pvs[dev] != vg && pvs[dev] != "" {
				r.problem("disk %s of storage group %s belongs to volume group %s", d.Name, g.Name, pvs[dev])
				continue
			}
			if pvs[dev] == vg {
				continue
			}
		case unit.DiskSystem:
			r.problem("disk %s is the system disk; it cannot join storage group %s", d.Name, g.Name)
			continue
		case unit.DiskForeign:
			if !ref.Erase {
				r.problem("disk %s holds data (%s); activate it with erase to use it", d.Name, d.Detail)
				continue
			}
			n.log.Warn("erasing disk on the operator's command", "disk", d.Name, "found", d.Detail)
			if err := n.disks.Wipe(ctx, d.Name); err != nil {
				r.problem("erasing disk %s: %v", d.Name, err)
				continue
			}
			changed = true
		case unit.DiskFailed:
			r.problem("disk %s of storage group %s failed: %s", d.Name, g.Name, d.Detail)
			continue
		}
		if pvs[dev] == "" && d.State != unit.DiskMember || d.State == unit.DiskForeign {
			if err := n.lvm.CreatePV(ctx, dev); err != nil {
				r.problem("preparing disk %s: %v", d.Name, err)
				continue
			}
			changed = true
		}
		add = append(add, dev)
	}
	if len(add) == 0 {
		return changed
	}
	if !exists {
		n.log.Info("creating volume group", "vg", vg, "disks", add)
		if err := n.lvm.CreateVG(ctx, vg, add...); err != nil {
			r.problem("creating volume group of %s: %v", g.Name, err)
		}
		return true
	}
	for _, dev := range add {
		n.log.Info("extending volume group", "vg", vg, "disk", dev)
		if err := n.lvm.ExtendVG(ctx, vg, dev); err != nil {
			r.problem("adding %s to %s: %v", dev, g.Name, err)
		}
	}
	return true
}

func refName(r DiskRef) string {
	if r.Serial != "" {
		return fmt.Sprintf("%s (serial %s)", r.Name, r.Serial)
	}
	return r.Name
}

// ensureLV creates or grows volume v's logical volume. It reports whether
// it changed anything.
func (n *Node) ensureLV(ctx context.Context, r *round, v VolumeRecord, lvs map[int][]LVInfo) bool {
	vg, name, want := VGName(v.Group), LVName(v.ID), lvSize(v.SizeBytes)
	lv := findLV(lvs[v.Group], name)
	if lv == nil {
		// The memory comes first: if the PM stops between the two steps
		// the volume is still known to be fresh.
		n.remember(v.ID, func(m *legMemory) { m.Fresh = true })
		n.log.Info("creating logical volume", "volume", v.Name, "lv", vg+"/"+name, "bytes", want)
		if err := n.lvm.CreateLV(ctx, vg, name, want); err != nil {
			r.problem("creating the leg of volume %s: %v", v.Name, err)
			return false
		}
		return true
	}
	if lv.SizeBytes < want {
		n.log.Info("growing logical volume", "volume", v.Name, "lv", vg+"/"+name, "from", lv.SizeBytes, "to", want)
		if err := n.lvm.ExtendLV(ctx, vg, name, want); err != nil {
			r.problem("growing the leg of volume %s: %v", v.Name, err)
			return false
		}
		return true
	}
	return false
}

// removeLeg takes down and removes a deleted volume's leg and its
// snapshots. It reports whether anything of the leg remains.
func (n *Node) removeLeg(ctx context.Context, r *round, v VolumeRecord, status map[int]MinorState, lvs []LVInfo) bool {
	res := ResourceName(v.ID)
	if st, ok := status[v.Minor]; ok && st.Connection != "Unconfigured" {
		if err := n.drbd.Down(ctx, res); err != nil {
			r.problem("taking down volume %s: %v", v.Name, err)
			return true
		}
	}
	remains := false
	for _, lv := range lvs {
		if lv.Origin == LVName(v.ID) || strings.HasPrefix(lv.Name, LVName(v.ID)+"_sb") {
			if err := n.lvm.RemoveLV(ctx, VGName(v.Group), lv.Name); err != nil {
				r.problem("removing snapshot %s: %v", lv.Name, err)
				remains = true
			}
		}
	}
	if findLV(lvs, LVName(v.ID)) != nil {
		n.log.Info("removing logical volume", "volume", v.Name)
		if err := n.lvm.RemoveLV(ctx, VGName(v.Group), LVName(v.ID)); err != nil {
			r.problem("removing the leg of volume %s: %v", v.Name, err)
			remains = true
		}
	}
	n.mu.Lock()
	delete(n.local, v.ID)
	delete(n.attached, v.Minor)
	delete(n.failed, v.Minor)
	n.saveLocal()
	n.mu.Unlock()
	return remains
}

// reconcileLeg brings volume v's DRBD resource on this PM to what d wants.
func (n *Node) reconcileLeg(ctx context.Context, v VolumeRecord, d Desired, st MinorState, lvs []LVInfo) LegState {
	leg := LegState{Volume: v.ID, Minor: v.Minor}
	lv := findLV(lvs, LVName(v.ID))
	if lv == nil {
		leg.Error = "the logical volume does not exist"
		return leg
	}
	leg.LV, leg.SizeBytes, leg.Disks = true, lv.SizeBytes, lv.Devices
	for _, s := range lvs {
		if s.Origin != LVName(v.ID) {
			continue
		}
		if slices.Contains(v.DropSnapshots, s.Name) {
			n.log.Info("removing snapshot on the operator's command", "volume", v.Name, "snapshot", s.Name)
			if err := n.lvm.RemoveLV(ctx, VGName(v.Group), s.Name); err != nil {
				leg.Error = fmt.Sprintf("removing snapshot %s: %v", s.Name, err)
			}
			continue
		}
		leg.Snapshots = append(leg.Snapshots, unit.Snapshot{Name: s.Name, PM: n.self, SizeBytes: s.SizeBytes, Created: s.Created, Reason: "losing side of a split brain"})
	}
	res := ResourceName(v.ID)
	n.mu.Lock()
	m := *n.mem(v.ID)
	failed := n.failed[v.Minor]
	n.mu.Unlock()
	fail := func(format string, args ...any) LegState {
		leg.Error = fmt.Sprintf(format, args...)
		return leg
	}

	if st.Connection == "" || st.Connection == "Unconfigured" {
		if m.Fresh {
			n.log.Info("creating DRBD metadata", "volume", v.Name, "resource", res)
			if err := n.drbd.CreateMD(ctx, res); err != nil {
				return fail("creating the mirror metadata: %v", err)
			}
			n.remember(v.ID, func(m *legMemory) { m.Fresh = false })
		}
		if failed {
			return fail("the leg's disk failed in this boot; it is not attached again until the PM restarts")
		}
		n.log.Info("bringing up volume", "volume", v.Name, "resource", res)
		if err := n.drbd.Up(ctx, res); err != nil {
			return fail("bringing up the mirror: %v", err)
		}
		var err error
		if st, err = n.status(ctx, v.Minor); err != nil {
			return fail("%v", err)
		}
	}
	n.fill(ctx, &leg, st)

	switch {
	case st.Disk == "Diskless" && (failed || n.wasAttached(v.Minor)):
		n.LegFailed(v.Minor)
		leg.Failed = true
	case st.Disk == "Diskless":
		n.log.Info("attaching the leg's disk", "volume", v.Name)
		if err := n.drbd.Attach(ctx, res); err != nil {
			return fail("attaching the leg's disk: %v", err)
		}
	case st.Disk != "" && st.Disk != "Attaching" && st.Disk != "Failed":
		n.mu.Lock()
		n.attached[v.Minor] = true
		n.mu.Unlock()
	}

	if m.SplitBrain && st.Connection != "StandAlone" && st.Connection != "" {
		// Connected again (a resolution, or the operator by hand): the
		// split brain is over.
		if isSyncing(st.Connection) || st.Connection == "Connected" {
			n.log.Info("split brain over: the legs are connected again", "volume", v.Name)
			n.remember(v.ID, func(m *legMemory) { m.SplitBrain = false })
			m.SplitBrain = false
		}
	}
	leg.SplitBrain = m.SplitBrain
	if st.Connection == "StandAlone" {
		switch {
		case m.SplitBrain && v.Resolve == nil:
			// Wait for the operator: reconnecting would only find the
			// split brain again.
		case m.SplitBrain && v.Resolve.Survivor != n.self:
			if err := n.keepLosingSide(ctx, v, lvs); err != nil {
				return fail("%v", err)
			}
			n.log.Warn("discarding this side of the split brain on the operator's command; it is kept as a snapshot", "volume", v.Name, "snapshot", v.Resolve.SnapshotName(v.ID))
			if err := n.drbd.Connect(ctx, res, true); err != nil {
				return fail("reconnecting as the losing side: %v", err)
			}
		default:
			if err := n.drbd.Connect(ctx, res, false); err != nil {
				return fail("connecting to the peer: %v", err)
			}
		}
	}

	inSync := st.Connection == "Connected" && st.PeerDisk == "UpToDate" && st.Disk == "UpToDate"
	if inSync {
		n.mu.Lock()
		n.synced[v.Minor] = true
		n.mu.Unlock()
	}
	if m.PeerFenced && inSync {
		n.remember(v.ID, func(m *legMemory) { m.PeerFenced = false })
		m.PeerFenced = false
	}
	dual := d.dual(v.ID)
	n.mu.Lock()
	applied := n.dual[v.Minor]
	n.mu.Unlock()
	if applied != dual && leg.Configured {
		// allow-two-primaries is a net option: adjust applies the resource
		// file's new value to the running connection. A leg brought up by
		// this boot took "no" from the file.
		n.log.Info("setting dual-primary", "volume", v.Name, "dual", dual)
		if err := n.drbd.Adjust(ctx, res); err != nil {
			return fail("setting allow-two-primaries %v: %v", dual, err)
		}
		n.mu.Lock()
		n.dual[v.Minor] = dual
		n.mu.Unlock()
	}
	n.mu.Lock()
	current := n.synced[v.Minor] || m.PeerFenced || st.Connection == "Connected" || isSyncing(st.Connection) ||
		d.Forced && st.Disk != "Outdated"
	n.mu.Unlock()
	want := d.Primary != nil && d.Primary(v.ID) && !(m.SplitBrain && v.Resolve != nil && v.Resolve.Survivor != n.self)
	switch {
	case want && st.Role != "Primary" && v.Initialized && !current:
		// DRBD's own record that the peer is outdated is written lazily
		// (a primary that dies just after a resync may keep a stale one).
		// Without the legs connected, only this PM's own fencing of the
		// peer, or having been in sync with it in this boot, proves its
		// leg current.
		leg.Stale = true
		return fail("will not make this leg writable: since it booted this PM has not been in sync with its peer and did not outdate the peer's leg, so its own leg may be stale; waiting for the peer")
	case want && st.Role != "Primary":
		force := false
		if !v.Initialized && st.Disk == "Inconsistent" {
			// The first sync needs a source; only a volume that never held
			// data may be forced, and only when the peer's leg is just as
			// empty or the peer is gone.
			force = st.Connection == "Connected" && st.PeerDisk == "Inconsistent" ||
				d.PeerLost && leg.Gen.Read && leg.Gen.Current&^1 == UUIDJustCreated
		}
		if !v.Initialized && !force && st.Disk != "UpToDate" {
			return fail("waiting for both legs before the first sync")
		}
		n.mu.Lock()
		last, tried := n.refused[v.ID]
		n.mu.Unlock()
		if tried && last.st == stateKey(st) {
			return fail("%s", last.err)
		}
		n.log.Info("promoting volume", "volume", v.Name, "force", force)
		if err := n.drbd.Primary(ctx, res, force); err != nil {
			msg := fmt.Sprintf("will not make this leg writable: %v", err)
			n.mu.Lock()
			n.refused[v.ID] = refusal{st: stateKey(st), err: msg}
			n.mu.Unlock()
			return fail("%s", msg)
		}
		n.mu.Lock()
		delete(n.refused, v.ID)
		n.mu.Unlock()
		if force {
			n.remember(v.ID, func(m *legMemory) { m.Forced = true })
		}
		n.remember(v.ID, func(m *legMemory) { m.LastPrimary = time.Now().UTC() })
		if st2, err := n.status(ctx, v.Minor); err == nil {
			n.fill(ctx, &leg, st2)
		}
	case !want && st.Role == "Primary":
		n.log.Info("demoting volume", "volume", v.Name)
		if err := n.drbd.Secondary(ctx, res); err != nil {
			return fail("making the leg read-only: %v", err)
		}
		n.remember(v.ID, func(m *legMemory) { m.LastPrimary = time.Now().UTC() })
		if st2, err := n.status(ctx, v.Minor); err == nil {
			n.fill(ctx, &leg, st2)
		}
	case st.Role == "Primary" && time.Since(m.LastPrimary) > 10*time.Second:
		n.remember(v.ID, func(m *legMemory) { m.LastPrimary = time.Now().UTC() })
	}
	if st.Role == "Primary" && st.Connection == "Connected" && st.PeerDisk == "UpToDate" && lv.SizeBytes >= lvSize(v.SizeBytes) {
		// Growing takes both legs' logical volumes; DRBD refuses until the
		// peer's is grown too and the next round tries again.
		if devSize, err := deviceBytes(v.Minor); err == nil && devSize < v.SizeBytes {
			n.log.Info("growing the mirror", "volume", v.Name, "from", devSize, "to", v.SizeBytes)
			if err := n.drbd.Resize(ctx, res); err != nil {
				leg.Error = fmt.Sprintf("growing the mirror: %v", err)
			}
		}
	}
	n.mu.Lock()
	mm := n.mem(v.ID)
	leg.LastPrimary, leg.Forced = mm.LastPrimary, mm.Forced
	n.mu.Unlock()
	return leg
}

// stateKey is the part of a leg's state that decides whether DRBD lets it
// become Primary.
func stateKey(st MinorState) MinorState {
	return MinorState{Connection: st.Connection, Role: st.Role, PeerRole: st.PeerRole, Disk: st.Disk, PeerDisk: st.PeerDisk}
}

func (n *Node) wasAttached(minor int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.attached[minor]
}

func (n *Node) status(ctx context.Context, minor int) (MinorState, error) {
	all, err := n.drbd.Status(ctx)
	if err != nil {
		return MinorState{}, fmt.Errorf("reading DRBD state: %w", err)
	}
	return all[minor], nil
}

// fill copies the kernel's state of the leg into leg.
func (n *Node) fill(ctx context.Context, leg *LegState, st MinorState) {
	leg.Configured = st.Connection != "" && st.Connection != "Unconfigured"
	leg.Connection, leg.Role, leg.PeerRole, leg.Disk, leg.PeerDisk = st.Connection, st.Role, st.PeerRole, st.Disk, st.PeerDisk
	leg.SentKiB, leg.ReceivedKiB, leg.OutOfSyncKiB = st.SentKiB, st.ReceivedKiB, st.OutOfSyncKiB
	leg.Sync = st.Sync
	if leg.Configured && st.Disk != "Diskless" {
		if g, err := n.drbd.Generations(ctx, leg.Minor); err == nil {
			leg.Gen = g
		}
	}
}

// keepLosingSide snapshots the losing leg of a split brain before its data
// is replaced, and makes the leg read-only.
func (n *Node) keepLosingSide(ctx context.Context, v VolumeRecord, lvs []LVInfo) error {
	snap := v.Resolve.SnapshotName(v.ID)
	if findLV(lvs, snap) == nil {
		lv := findLV(lvs, LVName(v.ID))
		n.log.Info("keeping the losing side of the split brain", "volume", v.Name, "snapshot", snap)
		if err := n.lvm.Snapshot(ctx, VGName(v.Group), LVName(v.ID), snap, lv.SizeBytes); err != nil {
			return fmt.Errorf("cannot keep the losing side as snapshot %s, so it is not discarded: %w", snap, err)
		}
	}
	st, err := n.status(ctx, v.Minor)
	if err != nil {
		return err
	}
	if st.Role == "Primary" {
		if err := n.drbd.Secondary(ctx, ResourceName(v.ID)); err != nil {
			return fmt.Errorf("making the losing side read-only: %w", err)
		}
	}
	return nil
}

// Outdate marks this PM's leg of volume id outdated, on the peer's request
// (resource-level fencing): it then refuses to become Primary until it has
// synced from the peer.
func (n *Node) Outdate(ctx context.Context, id int) error {
	return n.drbd.Outdate(ctx, ResourceName(id))
}

// deviceBytes is the size of /dev/drbd<minor> as the kernel sees it.
func deviceBytes(minor int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/drbd%d/size", minor))
	if err != nil {
		return 0, err
	}
	var sectors int64
	if _, err := fmt.Sscan(string(b), &sectors); err != nil {
		return 0, err
	}
	return sectors * 512, nil
}

// UUIDJustCreated is the current generation of freshly created DRBD
// metadata (the low bit is a flag).
const UUIDJustCreated = 4
