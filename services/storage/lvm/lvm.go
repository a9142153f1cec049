// Package lvm drives LVM2 through the lvm binary: it reports physical
// volumes, volume groups and logical volumes, and creates, grows, snapshots
// and removes them.
//
// The PM runs without udev, lvmetad or dmeventd, and its DRBD devices and
// logical volumes hold guest data LVM must never pick up as physical volumes,
// so every command carries a --config override (see lvmConfig). Commands run
// through a Runner, so tests check the exact argument vector and the real
// adapter, ExecRunner, only starts the binary.
package lvm

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// lvmConfig is the --config override given to every command. Its keys are
// checked against lvm 2.03.16 (lvmconfig --type default):
//
//   - activation: create device nodes without udev (udev_sync, udev_rules)
//     and start no dmeventd monitoring (monitoring).
//   - devices: list and identify devices by scanning /dev rather than asking
//     udev; ignore any /etc/lvm/devices/system.devices so global_filter alone
//     decides (use_devicesfile); keep no /run/lvm/hints, which could go stale
//     without udev events; never scan logical volumes for nested PVs
//     (scan_lvs). global_filter rejects DRBD and device-mapper nodes: a DRBD
//     device shows its backing LV's data, which may be a guest's own PV.
//     scan_lvs=0 is what really keeps LVs out, since LVM accepts a device
//     when any of its names (such as /dev/VG/LV) matches an accept pattern.
//   - global: poll long operations in-process, with no lvmpolld
//     (use_lvmpolld), and send no D-Bus notifications (notify_dbus).
//
// locking_type and use_lvmetad no longer exist in 2.03: file locking in
// /run/lock/lvm is always on, which keeps concurrent commands safe.
const lvmConfig = `activation { udev_sync=0 udev_rules=0 monitoring=0 } ` +
	`devices { obtain_device_list_from_udev=0 use_devicesfile=0 hints="none" scan_lvs=0 ` +
	`global_filter=["r|^/dev/drbd|","r|^/dev/dm-|","r|^/dev/mapper/|","a|.*|"] } ` +
	`global { use_lvmpolld=0 notify_dbus=0 } ` +
	// The image's /etc is in memory: metadata backups there would only
	// grow until the next reboot. The PVs hold the metadata.
	`backup { backup=0 archive=0 }`

// ErrInvalid is wrapped by errors for names, devices or sizes refused before
// any command runs.
var ErrInvalid = errors.New("invalid argument")

// Runner runs the lvm binary with argv (the subcommand and its arguments,
// without the program name) and returns its standard output. On failure it
// returns an error that says why, including what lvm wrote to stderr.
type Runner func(ctx context.Context, argv []string) (stdout []byte, err error)

// LVM runs LVM commands through Run.
type LVM struct {
	Run Runner
}

// New returns an LVM that runs commands with run.
func New(run Runner) *LVM { return &LVM{Run: run} }

// DevicePath is the device node of logical volume lv in volume group vg.
func DevicePath(vg, lv string) string { return "/dev/" + vg + "/" + lv }

// Report field lists; the parsers require exactly these fields.
var (
	pvFields = []string{"pv_name", "vg_name", "pv_size", "pv_free", "pv_uuid", "pv_missing", "pv_attr"}
	vgFields = []string{"vg_name", "vg_size", "vg_free", "vg_extent_size", "pv_count", "lv_count",
		"vg_uuid", "vg_tags", "vg_missing_pv_count", "vg_attr"}
	lvFields = []string{"lv_name", "vg_name", "lv_size", "lv_attr", "origin", "devices", "lv_time",
		"snap_percent", "data_percent", "lv_tags", "lv_uuid"}
)

// run runs subcommand cmd with the common options, then args.
func (l *LVM) run(ctx context.Context, cmd string, args ...string) ([]byte, error) {
	argv := append([]string{cmd, "--config", lvmConfig}, args...)
	out, err := l.Run(ctx, argv)
	if err != nil {
		return out, fmt.Errorf("lvm %s: %w", cmd, err)
	}
	return out, nil
}

// report runs a reporting command in JSON with sizes in plain bytes.
func (l *LVM) report(ctx context.Context, cmd string, fields []string, args ...string) ([]byte, error) {
	a := append([]string{"--reportformat", "json", "--units", "b", "--nosuffix",
		"-o", strings.Join(fields, ",")}, args...)
	return l.run(ctx, cmd, a...)
}

// PVs reports every physical volume LVM sees, in a volume group or not.
func (l *LVM) PVs(ctx context.Context) ([]PV, error) {
	out, err := l.report(ctx, "pvs", pvFields)
	if err != nil {
		return nil, err
	}
	return ParsePVs(out)
}

// VGs reports every volume group.
func (l *LVM) VGs(ctx context.Context) ([]VG, error) {
	out, err := l.report(ctx, "vgs", vgFields)
	if err != nil {
		return nil, err
	}
	return ParseVGs(out)
}

// LVs reports the logical volumes of vg, or of every volume group when vg
// is empty. A volume group that does not exist is an error.
func (l *LVM) LVs(ctx context.Context, vg string) ([]LV, error) {
	var args []string
	if vg != "" {
		if err := checkName("volume group", vg); err != nil {
			return nil, err
		}
		args = []string{vg}
	}
	out, err := l.report(ctx, "lvs", lvFields, args...)
	if err != nil {
		return nil, err
	}
	return ParseLVs(out)
}

// CreatePV makes dev a physical volume. Without force, pvcreate is not told
// to answer yes: it finds any file system, partition table or other
// signature, its prompt reads end of file and it refuses, so data is never
// erased by accident. With force (-ff --yes) it wipes the signatures and
// overwrites even a physical volume of another volume group; the caller
// passes it only on an explicit command to erase the disk.
func (l *LVM) CreatePV(ctx context.Context, dev string, force bool) error {
	if err := checkDevice(dev); err != nil {
		return err
	}
	args := []string{dev}
	if force {
		args = []string{"-ff", "--yes", dev}
	}
	_, err := l.run(ctx, "pvcreate", args...)
	return err
}

// RemovePV removes the LVM label from dev, which must be in no volume group.
func (l *LVM) RemovePV(ctx context.Context, dev string) error {
	if err := checkDevice(dev); err != nil {
		return err
	}
	_, err := l.run(ctx, "pvremove", dev)
	return err
}

// CreateVG creates volume group name on devs (at least one) with tags. A
// device that is not yet a physical volume is made one, refusing like
// CreatePV without force if it holds data.
func (l *LVM) CreateVG(ctx context.Context, name string, tags []string, devs ...string) error {
	if err := checkName("volume group", name); err != nil {
		return err
	}
	if len(devs) == 0 {
		return fmt.Errorf("volume group %s: no devices: %w", name, ErrInvalid)
	}
	args, err := tagArgs(tags)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if err := checkDevice(d); err != nil {
			return err
		}
	}
	args = append(args, name)
	args = append(args, devs...)
	_, err = l.run(ctx, "vgcreate", args...)
	return err
}

// ExtendVG adds dev to volume group vg.
func (l *LVM) ExtendVG(ctx context.Context, vg, dev string) error {
	if err := checkName("volume group", vg); err != nil {
		return err
	}
	if err := checkDevice(dev); err != nil {
		return err
	}
	_, err := l.run(ctx, "vgextend", vg, dev)
	return err
}

// ActivateVG activates every logical volume of vg, creating its device
// nodes. LVs on a missing physical volume stay inactive.
func (l *LVM) ActivateVG(ctx context.Context, vg string) error {
	if err := checkName("volume group", vg); err != nil {
		return err
	}
	_, err := l.run(ctx, "vgchange", "-ay", vg)
	return err
}

// CreateLV creates and activates logical volume name of size bytes in vg,
// with tags. Size is rounded up to whole 512-byte sectors (LVM itself rounds
// up to whole extents). Stale signatures at the start are wiped (-Wy) and its
// first sectors zeroed (-Zy), so a new volume never shows an old file
// system or DRBD metadata; --yes answers the wipe prompt.
func (l *LVM) CreateLV(ctx context.Context, vg, name string, size int64, tags ...string) error {
	if err := checkName("volume group", vg); err != nil {
		return err
	}
	if err := checkLVName(name); err != nil {
		return err
	}
	sz, err := sizeArg(size)
	if err != nil {
		return err
	}
	tagv, err := tagArgs(tags)
	if err != nil {
		return err
	}
	args := append([]string{"-ay", "-Wy", "-Zy", "--yes", "-L", sz, "-n", name}, tagv...)
	args = append(args, vg)
	_, err = l.run(ctx, "lvcreate", args...)
	return err
}

// ExtendLV grows logical volume vg/name to newSize bytes (rounded up like
// CreateLV). lvextend fails when the rounded size is not larger than the
// current one.
func (l *LVM) ExtendLV(ctx context.Context, vg, name string, newSize int64) error {
	if err := checkName("volume group", vg); err != nil {
		return err
	}
	if err := checkLVName(name); err != nil {
		return err
	}
	sz, err := sizeArg(newSize)
	if err != nil {
		return err
	}
	_, err = l.run(ctx, "lvextend", "-L", sz, vg+"/"+name)
	return err
}

// RemoveLV removes logical volume vg/name without asking (-f). An open LV
// is refused by LVM; an origin is removed with all its snapshots.
func (l *LVM) RemoveLV(ctx context.Context, vg, name string) error {
	if err := checkName("volume group", vg); err != nil {
		return err
	}
	if err := checkLVName(name); err != nil {
		return err
	}
	_, err := l.run(ctx, "lvremove", "-f", vg+"/"+name)
	return err
}

// Snapshot creates a classic copy-on-write snapshot name of vg/origin whose
// copy-on-write area holds cowSize bytes (rounded up like CreateLV). The
// snapshot becomes invalid if more than that of the origin changes.
// lvcreate rejects -W and -Z for snapshots, so they are not passed.
func (l *LVM) Snapshot(ctx context.Context, vg, origin, name string, cowSize int64) error {
	if err := checkName("volume group", vg); err != nil {
		return err
	}
	if err := checkLVName(origin); err != nil {
		return err
	}
	if err := checkLVName(name); err != nil {
		return err
	}
	sz, err := sizeArg(cowSize)
	if err != nil {
		return err
	}
	_, err = l.run(ctx, "lvcreate", "-s", "-L", sz, "-n", name, vg+"/"+origin)
	return err
}

// sizeArg is the -L argument for size bytes: bytes with the "b" unit,
// rounded up to a multiple of 512, which LVM requires of byte sizes.
func sizeArg(size int64) (string, error) {
	if size <= 0 || size > math.MaxInt64-511 {
		return "", fmt.Errorf("size %d: %w", size, ErrInvalid)
	}
	size = (size + 511) &^ 511
	return strconv.FormatInt(size, 10) + "b", nil
}

// tagArgs turns tags into --addtag options.
func tagArgs(tags []string) ([]string, error) {
	var args []string
	for _, t := range tags {
		if err := checkTag(t); err != nil {
			return nil, err
		}
		args = append(args, "--addtag", t)
	}
	return args, nil
}

// maxNameLen bounds VG and LV names; LVM allows 127 bytes for
// "VG-LV" in the device-mapper name, so two 64-byte names always fit.
const maxNameLen = 64

// nameChars reports whether s is non-empty, at most max bytes, uses only
// the characters LVM allows in names and does not start with '-', which
// lvm would take for an option.
func nameChars(s string, max int) bool {
	if s == "" || len(s) > max || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '_', c == '.', c == '+', c == '-':
		default:
			return false
		}
	}
	return true
}

// checkName validates a volume group name; what names it in errors.
func checkName(what, s string) error {
	if !nameChars(s, maxNameLen) || s == "." || s == ".." {
		return fmt.Errorf("%s name %q: %w", what, s, ErrInvalid)
	}
	return nil
}

// lvReserved are the prefixes and infixes LVM keeps for its internal LVs; a
// name using one would be refused by lvcreate anyway.
var (
	lvReservedPrefixes = []string{"snapshot", "pvmove"}
	lvReservedInfixes  = []string{"_cdata", "_cmeta", "_corig", "_iorig", "_mimage", "_mlog",
		"_pmspare", "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig"}
)

// checkLVName validates a logical volume name.
func checkLVName(s string) error {
	if err := checkName("logical volume", s); err != nil {
		return err
	}
	for _, p := range lvReservedPrefixes {
		if strings.HasPrefix(s, p) {
			return fmt.Errorf("logical volume name %q: reserved prefix %q: %w", s, p, ErrInvalid)
		}
	}
	for _, p := range lvReservedInfixes {
		if strings.Contains(s, p) {
			return fmt.Errorf("logical volume name %q: reserved %q: %w", s, p, ErrInvalid)
		}
	}
	return nil
}

// checkTag validates a tag. LVM allows a few more characters; these are
// enough and safe.
func checkTag(s string) error {
	if !nameChars(s, 128) {
		return fmt.Errorf("tag %q: %w", s, ErrInvalid)
	}
	return nil
}

// checkDevice validates a device path: absolute, under /dev, clean (no
// "//", ".", ".." or trailing slash) and made of the characters device and
// by-id names use.
func checkDevice(dev string) error {
	bad := func(why string) error { return fmt.Errorf("device %q: %s: %w", dev, why, ErrInvalid) }
	rest, ok := strings.CutPrefix(dev, "/dev/")
	if !ok || rest == "" || len(dev) > 255 {
		return bad("not a path under /dev")
	}
	for _, part := range strings.Split(rest, "/") {
		if part == "" || part == "." || part == ".." {
			return bad("not a clean path")
		}
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("_.+-:@=/", c) >= 0:
		default:
			return bad("unexpected character")
		}
	}
	return nil
}
