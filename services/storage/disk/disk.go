// Package disk finds the whole disks of a PM and tells what each is to the
// unit: the PM's own (system), a member of a storage group, blank and free
// to use, or foreign. A foreign disk holds data Dyad did not put there, so
// every doubt (a partition, a holder, an unreadable end, one non-zero byte)
// makes a disk foreign rather than blank; only an operator's explicit erase
// (Wipe) turns it into a blank one.
package disk

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/dyad-ha/dyad/services/unit"
)

const (
	// DataPartition is the GPT name of the partition PID 1 keeps the PM's
	// data on (init/datadisk); a disk holding it is a system disk.
	DataPartition = "dyad-data"
	// GroupVGPrefix starts the name of the LVM volume group of every
	// storage group (dyad_sg<N>).
	GroupVGPrefix = "dyad_sg"
)

// Device is an open disk to read from.
type Device interface {
	io.ReaderAt
	io.Closer
}

// Options says where to look. Empty fields take the values of a running PM.
type Options struct {
	Sys       string // sysfs root; default /sys
	Dev       string // device nodes; default /dev
	Mountinfo string // default /proc/self/mountinfo
	// SystemDisks names disks that are the PM's own whatever they hold
	// (kernel names such as "vda", or /dev paths).
	SystemDisks []string
	// PVs maps each LVM physical volume (device path as LVM reports it)
	// to its volume group, "" for none. The caller gathers it with LVM.
	PVs map[string]string
	// Open opens a disk for reading; default os.Open.
	Open func(path string) (Device, error)
}

func (o Options) withDefaults() Options {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&o.Sys, "/sys")
	def(&o.Dev, "/dev")
	def(&o.Mountinfo, "/proc/self/mountinfo")
	if o.Open == nil {
		o.Open = func(path string) (Device, error) { return os.Open(path) }
	}
	return o
}

// Found is one whole disk and what it is to the unit.
type Found struct {
	Name       string // kernel name, e.g. "vdb"
	Path       string // device node, e.g. /dev/vdb
	DevNum     string // major:minor
	SizeBytes  int64
	Serial     string
	Model      string
	Removable  bool
	ReadOnly   bool
	Rotational bool
	// Partitions are the kernel names of the partitions the kernel knows,
	// by partition number.
	Partitions []string
	// Holders are the devices built on the disk or its partitions
	// (dm-0, md127, drbd3), sorted.
	Holders []string

	State unit.DiskState
	// VG is the LVM volume group the disk (or a partition) belongs to and
	// Group the storage group number it names (members only; 0 if the
	// name has no number).
	VG    string
	Group int
	// Signature is what Identify found at the disk's ends ("" for zeros;
	// not read for system and member disks).
	Signature string
	// Detail says why the disk is system or foreign.
	Detail string
}

// Disk is f in the unit's model, for PM pm.
func (f Found) Disk(pm int) unit.Disk {
	return unit.Disk{
		PM:        pm,
		Name:      f.Name,
		Serial:    f.Serial,
		Model:     f.Model,
		SizeBytes: f.SizeBytes,
		State:     f.State,
		Group:     f.Group,
		Detail:    f.Detail,
	}
}

// Scan lists the PM's whole disks, sorted by name, and classifies them. It
// fails only when it cannot list the disks or read the mount table, without
// which a mounted disk could pass for a foreign one; a disk it cannot read
// is reported foreign.
func Scan(ctx context.Context, opt Options) ([]Found, error) {
	opt = opt.withDefaults()
	entries, err := os.ReadDir(filepath.Join(opt.Sys, "block"))
	if err != nil {
		return nil, fmt.Errorf("list disks: %w", err)
	}
	mi, err := os.ReadFile(opt.Mountinfo)
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	mounts := parseMountinfo(string(mi))
	pvs := pvsByName(opt.PVs)

	var found []Found
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if notADisk(e.Name()) {
			continue
		}
		f, ok := inspect(opt, e.Name())
		if !ok {
			continue
		}
		classify(opt, &f, mounts, pvs)
		found = append(found, f)
	}
	slices.SortFunc(found, func(a, b Found) int { return cmp.Compare(a.Name, b.Name) })
	return found, nil
}

// notADisk reports block devices that are never a PM's own disk: RAM, loop
// and network block devices, optical and floppy drives, and devices built
// on top of real disks (device mapper, software RAID, DRBD).
func notADisk(name string) bool {
	for _, p := range []string{"loop", "ram", "zram", "dm-", "drbd", "sr", "fd", "md", "nbd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// inspect reads what sysfs says about disk name; ok is false for a device
// without a medium (size 0), which holds nothing and can hold nothing.
func inspect(opt Options, name string) (f Found, ok bool) {
	dir := filepath.Join(opt.Sys, "block", name)
	sectors, err := strconv.ParseInt(readAttr(dir, "size"), 10, 64)
	if err != nil || sectors <= 0 {
		return Found{}, false
	}
	f = Found{
		Name:       name,
		Path:       filepath.Join(opt.Dev, name),
		DevNum:     readAttr(dir, "dev"),
		SizeBytes:  sectors * 512, // sysfs counts 512-byte sectors whatever the disk's sector size
		Model:      readAttr(dir, "device", "model"),
		Removable:  readAttr(dir, "removable") == "1",
		ReadOnly:   readAttr(dir, "ro") == "1",
		Rotational: readAttr(dir, "queue", "rotational") == "1",
		Serial:     serial(dir),
	}
	holders := holdersOf(dir)
	type part struct {
		n    int
		name string
	}
	var parts []part
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		n, err := strconv.Atoi(readAttr(dir, e.Name(), "partition"))
		if err != nil {
			continue
		}
		parts = append(parts, part{n, e.Name()})
		holders = append(holders, holdersOf(filepath.Join(dir, e.Name()))...)
	}
	slices.SortFunc(parts, func(a, b part) int { return cmp.Compare(a.n, b.n) })
	for _, p := range parts {
		f.Partitions = append(f.Partitions, p.name)
	}
	slices.Sort(holders)
	f.Holders = slices.Compact(holders)
	return f, true
}

// serial finds the disk's serial number where its driver puts it:
// virtio-blk in the disk's own directory, SCSI, SATA and NVMe in or under
// the device, with a WWID as the last resort.
func serial(dir string) string {
	for _, p := range [][]string{{"serial"}, {"device", "serial"}, {"device", "wwid"}, {"wwid"}} {
		if s := readAttr(dir, p...); s != "" {
			return s
		}
	}
	// SCSI unit serial number VPD page: 4-byte header, then the serial.
	if b, err := os.ReadFile(filepath.Join(dir, "device", "vpd_pg80")); err == nil && len(b) > 4 && b[1] == 0x80 {
		n := min(int(b[3]), len(b)-4)
		return strings.Trim(string(b[4:4+n]), " \x00")
	}
	return ""
}

// readAttr reads a sysfs attribute, "" when absent.
func readAttr(dir string, path ...string) string {
	b, err := os.ReadFile(filepath.Join(append([]string{dir}, path...)...))
	if err != nil {
		return ""
	}
	return strings.Trim(string(b), " \t\n\x00")
}

func holdersOf(dir string) []string {
	var names []string
	entries, _ := os.ReadDir(filepath.Join(dir, "holders"))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// pvsByName keys the physical volumes by kernel device name, which is what
// sysfs shows: LVM may report /dev/vdb or a /dev/disk/by-id link to it.
func pvsByName(pvs map[string]string) map[string]string {
	byName := make(map[string]string, len(pvs))
	for path, vg := range pvs {
		if r, err := filepath.EvalSymlinks(path); err == nil {
			path = r
		}
		byName[filepath.Base(path)] = vg
	}
	return byName
}

// classify sets f's State, VG, Group, Signature and Detail. The checks go
// from what the PM itself depends on to what the disk's bytes say, so a
// disk in use is never read and never called blank.
func classify(opt Options, f *Found, mounts []mount, pvs map[string]string) {
	names := append([]string{f.Name}, f.Partitions...)
	devs := []string{f.DevNum}
	for _, p := range f.Partitions {
		devs = append(devs, readAttr(filepath.Join(opt.Sys, "block", f.Name, p), "dev"))
	}
	if point := mountedAt(mounts, names, devs); point != "" {
		f.State, f.Detail = unit.DiskSystem, "mounted at "+point
		return
	}
	for _, s := range opt.SystemDisks {
		if strings.TrimPrefix(s, "/dev/") == f.Name {
			f.State, f.Detail = unit.DiskSystem, "configured as a system disk"
			return
		}
	}
	var pvNote string
	for _, n := range names {
		vg, ok := pvs[n]
		switch {
		case !ok:
			continue
		case strings.HasPrefix(vg, GroupVGPrefix):
			f.State, f.VG = unit.DiskMember, vg
			f.Group, _ = strconv.Atoi(strings.TrimPrefix(vg, GroupVGPrefix))
			return
		case vg == "":
			pvNote = "LVM physical volume " + n + " without a volume group"
		default:
			pvNote = "LVM physical volume " + n + " of volume group " + vg
		}
	}
	if h, point := mountedHolder(opt, mounts, f.Holders); point != "" {
		f.State, f.Detail = unit.DiskSystem, fmt.Sprintf("%s is mounted at %s", h, point)
		return
	}

	head, tail, err := readEnds(opt, f.Path, f.SizeBytes)
	if err != nil {
		f.State, f.Detail = unit.DiskForeign, "cannot read: "+err.Error()
		return
	}
	if parts, ok := partitionNames(head, tail, f.SizeBytes); ok && slices.Contains(parts, DataPartition) {
		f.State, f.Detail = unit.DiskSystem, "holds the "+DataPartition+" partition"
		return
	}
	f.Signature = Identify(head, tail)
	if f.Signature == "" && len(f.Partitions) == 0 && len(f.Holders) == 0 && pvNote == "" {
		f.State = unit.DiskBlank
		return
	}
	var why []string
	for _, s := range []string{f.Signature, pvNote} {
		if s != "" {
			why = append(why, s)
		}
	}
	if len(f.Partitions) > 0 {
		why = append(why, "partitions "+strings.Join(f.Partitions, " "))
	}
	if len(f.Holders) > 0 {
		why = append(why, "in use by "+strings.Join(f.Holders, " "))
	}
	f.State, f.Detail = unit.DiskForeign, strings.Join(why, "; ")
}

// mountedAt returns where one of the devices is mounted, by device number
// or by mount source (btrfs shows an anonymous device number).
func mountedAt(mounts []mount, names, devs []string) string {
	for _, m := range mounts {
		if slices.Contains(devs, m.dev) {
			return m.point
		}
		if strings.HasPrefix(m.source, "/dev/") && slices.Contains(names, filepath.Base(m.source)) {
			return m.point
		}
	}
	return ""
}

// mountedHolder follows holders (a partition's dm-crypt, an LV on a PV,
// the DRBD device on that LV) and returns one that is mounted, with where.
func mountedHolder(opt Options, mounts []mount, holders []string) (string, string) {
	seen := make(map[string]bool)
	queue := slices.Clone(holders)
	// The bound stops a cycle a broken sysfs tree might have.
	for len(queue) > 0 && len(seen) < 256 {
		h := queue[0]
		queue = queue[1:]
		if seen[h] {
			continue
		}
		seen[h] = true
		dir := filepath.Join(opt.Sys, "block", h)
		if point := mountedAt(mounts, []string{h}, []string{readAttr(dir, "dev")}); point != "" {
			return h, point
		}
		queue = append(queue, holdersOf(dir)...)
	}
	return "", ""
}

// readEnds reads the first and last EdgeBytes of the disk (all of it when
// smaller).
func readEnds(opt Options, path string, size int64) (head, tail []byte, err error) {
	d, err := opt.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer d.Close()
	n := min(size, EdgeBytes)
	head, tail = make([]byte, n), make([]byte, n)
	for _, r := range []struct {
		b   []byte
		off int64
	}{{head, 0}, {tail, size - n}} {
		got, err := d.ReadAt(r.b, r.off)
		if got == len(r.b) {
			continue
		}
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, nil, fmt.Errorf("read %d bytes at offset %d: %w", len(r.b), r.off, err)
	}
	return head, tail, nil
}
