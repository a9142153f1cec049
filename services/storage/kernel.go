package storage

import (
	"context"

	"github.com/dyad-ha/dyad/services/storage/lvm"
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

// VGs implements LVM.
func (k KernelLVM) VGs(ctx context.Context) ([]VGInfo, error) {
	vgs, err := k.L.VGs(ctx)
	if err != nil {
		return nil, err
	}
	pvs, err := k.L.PVs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]VGInfo, 0, len(vgs))
	for _, v := range vgs {
		vi := VGInfo{Name: v.Name, SizeBytes: v.Size, FreeBytes: v.Free, Missing: v.MissingPVs > 0}
		for _, p := range pvs {
			if p.VG == v.Name {
				vi.PVs = append(vi.PVs, p.Name)
			}
		}
		out = append(out, vi)
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
		out = append(out, LVInfo{Name: l.Name, SizeBytes: l.Size, Origin: l.Origin, Devices: l.Devices, Created: l.Created})
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

// Snapshot implements LVM.
func (k KernelLVM) Snapshot(ctx context.Context, vg, origin, name string, size int64) error {
	return k.L.Snapshot(ctx, vg, origin, name, size)
}
