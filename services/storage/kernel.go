package storage

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/dyad-ha/dyad/services/storage/disk"
	"github.com/dyad-ha/dyad/services/storage/drbd"
	"github.com/dyad-ha/dyad/services/storage/lvm"
	"github.com/dyad-ha/dyad/services/unit"
)

// KernelLVM is the LVM of the PM, through the lvm command.
type KernelLVM struct{ L *lvm.LVM }

// PVs implements LVM.
func (k KernelLVM) PVs(ctx context.Context) (map[string]string, error) {
	pvs, err := k.L.PVs(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(pvs))
	for _, p := range pvs {
		out[p.Name] = p.VG
	}
	return out, nil
}

// VGs implements LVM. The physical volumes of each group are left to the
// caller, which has listed them already.
func (k KernelLVM) VGs(ctx context.Context) ([]VGInfo, error) {
	vgs, err := k.L.VGs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]VGInfo, 0, len(vgs))
	for _, v := range vgs {
		out = append(out, VGInfo{Name: v.Name, SizeBytes: v.Size, FreeBytes: v.Free, Missing: v.MissingPVs > 0})
	}
	return out, nil
}

// LVs implements LVM.
func (k KernelLVM) LVs(ctx context.Context, vg string) ([]LVInfo, error) {
	lvs, err := k.L.LVs(ctx, vg)
	if err != nil {
		return nil, err
	}
	out := make([]LVInfo, 0, len(lvs))
	for _, l := range lvs {
		out = append(out, LVInfo{Name: l.Name, SizeBytes: l.Size, Origin: l.Origin, Devices: l.Devices, Created: l.Created, Active: l.Active()})
	}
	return out, nil
}

// CreatePV implements LVM. It never forces: a disk is erased, if the
// operator said so, before it becomes a physical volume.
func (k KernelLVM) CreatePV(ctx context.Context, dev string) error {
	return k.L.CreatePV(ctx, dev, false)
}

// CreateVG implements LVM.
func (k KernelLVM) CreateVG(ctx context.Context, vg string, devs ...string) error {
	return k.L.CreateVG(ctx, vg, []string{"dyad"}, devs...)
}

// ExtendVG implements LVM.
func (k KernelLVM) ExtendVG(ctx context.Context, vg, dev string) error {
	return k.L.ExtendVG(ctx, vg, dev)
}

// CreateLV implements LVM.
func (k KernelLVM) CreateLV(ctx context.Context, vg, lv string, size int64) error {
	return k.L.CreateLV(ctx, vg, lv, size)
}

// ExtendLV implements LVM.
func (k KernelLVM) ExtendLV(ctx context.Context, vg, lv string, size int64) error {
	return k.L.ExtendLV(ctx, vg, lv, size)
}

// RemoveLV implements LVM.
func (k KernelLVM) RemoveLV(ctx context.Context, vg, lv string) error {
	return k.L.RemoveLV(ctx, vg, lv)
}

// ActivateVG implements LVM.
func (k KernelLVM) ActivateVG(ctx context.Context, vg string) error { return k.L.ActivateVG(ctx, vg) }

// Snapshot implements LVM.
func (k KernelLVM) Snapshot(ctx context.Context, vg, origin, name string, size int64) error {
	return k.L.Snapshot(ctx, vg, origin, name, size)
}

// KernelDisks are the PM's disks as sysfs and their contents show them.
type KernelDisks struct {
	// Opt says where to look; its PVs field is filled on each call.
	Opt disk.Options
	PM  int
}

// Scan implements Disks.
func (k KernelDisks) Scan(ctx context.Context, pvs map[string]string) ([]unit.Disk, error) {
	opt := k.Opt
	opt.PVs = pvs
	found, err := disk.Scan(ctx, opt)
	if err != nil {
		return nil, err
	}
	out := make([]unit.Disk, 0, len(found))
	for _, f := range found {
		out = append(out, f.Disk(k.PM))
	}
	return out, nil
}

// Wipe implements Disks: it scans again and erases the disk only if it is
// still the one the operator saw.
func (k KernelDisks) Wipe(ctx context.Context, name string) error {
	found, err := disk.Scan(ctx, k.Opt)
	if err != nil {
		return err
	}
	for _, f := range found {
		if f.Name == name {
			return disk.Wipe(ctx, k.Opt, f)
		}
	}
	return fmt.Errorf("disk %s is gone", name)
}

// KernelDRBD is the PM's DRBD, through drbdadm-84 and /proc/drbd.
type KernelDRBD struct {
	A *drbd.Admin
	// Addrs are the replication addresses of node 1 and node 2.
	Addrs [2]netip.Addr
}

// Configure implements DRBD: it writes the resource file when it changed.
func (k KernelDRBD) Configure(ctx context.Context, rs []Resource) error {
	out := make([]drbd.Resource, 0, len(rs))
	for _, r := range rs {
		out = append(out, drbd.Resource{Name: r.Name, Minor: r.Minor, Disk: r.Disk, Port: r.Port, Addrs: k.Addrs, DualPrimary: r.DualPrimary})
	}
	b, err := drbd.Marshal(out...)
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(k.A.Config); err == nil && bytes.Equal(old, b) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(k.A.Config), 0o755); err != nil {
		return err
	}
	tmp := k.A.Config + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, k.A.Config)
}

// Status implements DRBD.
func (k KernelDRBD) Status(ctx context.Context) (map[int]MinorState, error) {
	p, err := k.A.Proc(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[int]MinorState, len(p.Devices))
	for _, d := range p.Devices {
		st := MinorState{Connection: string(d.CS), Role: d.Role, PeerRole: d.PeerRole, Disk: d.Disk, PeerDisk: d.PeerDisk,
			SentKiB: int64(d.NS), ReceivedKiB: int64(d.NR), OutOfSyncKiB: int64(d.OOS)}
		if s := d.Sync; s != nil && !s.Verify {
			st.Sync = &unit.SyncProgress{Percent: s.Percent, RateBytes: s.SpeedBytes(), ETASeconds: int64(s.Finish.Seconds()), OutOfSyncBytes: s.LeftBytes()}
		}
		out[d.Minor] = st
	}
	return out, nil
}

// Generations implements DRBD.
func (k KernelDRBD) Generations(ctx context.Context, minor int) (Generations, error) {
	gi, err := k.A.GetGI(ctx, minor)
	if err != nil {
		return Generations{}, err
	}
	return Generations{Current: gi.Current, Bitmap: gi.Bitmap, History: [2]uint64{gi.History1, gi.History2}, Read: true}, nil
}

// CreateMD implements DRBD.
func (k KernelDRBD) CreateMD(ctx context.Context, res string) error { return k.A.CreateMD(ctx, res) }

// Up implements DRBD.
func (k KernelDRBD) Up(ctx context.Context, res string) error { return k.A.Up(ctx, res) }

// Down implements DRBD.
func (k KernelDRBD) Down(ctx context.Context, res string) error { return k.A.Down(ctx, res) }

// Attach implements DRBD.
func (k KernelDRBD) Attach(ctx context.Context, res string) error { return k.A.Attach(ctx, res) }

// Connect implements DRBD.
func (k KernelDRBD) Connect(ctx context.Context, res string, discard bool) error {
	return k.A.Connect(ctx, res, discard)
}

// Primary implements DRBD.
func (k KernelDRBD) Primary(ctx context.Context, res string, force bool) error {
	return k.A.Primary(ctx, res, force)
}

// Secondary implements DRBD.
func (k KernelDRBD) Secondary(ctx context.Context, res string) error { return k.A.Secondary(ctx, res) }

// Resize implements DRBD.
func (k KernelDRBD) Adjust(ctx context.Context, res string) error { return k.A.Adjust(ctx, res) }

// Resize grows the mirror.
func (k KernelDRBD) Resize(ctx context.Context, res string) error { return k.A.Resize(ctx, res) }

// Outdate implements DRBD.
func (k KernelDRBD) Outdate(ctx context.Context, res string) error { return k.A.Outdate(ctx, res) }
