// Package datadisk finds the PM's persistent data partition and mounts it,
// creating it only on a disk that is provably blank. A PM must never
// destroy data it did not write, so every doubt ends in "not touching it"
// and PID 1 falls back to a tmpfs.
package datadisk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dyad-ha/dyad/init/gpt"
)

const (
	// PartitionName is the GPT partition name of the data partition, and
	// Label the ext4 label of its filesystem.
	PartitionName = "dyad-data"
	Label         = "dyad-data"

	// minDiskBytes keeps us off disks too small to hold the unit database,
	// logs and a VCD or two; such a disk is surely not meant for Dyad.
	minDiskBytes = 32 << 20
	// edgeBytes at each end must be zero for a disk to count as blank: they
	// hold every partition table, LVM/MD/filesystem superblock and backup
	// GPT we know of.
	edgeBytes = 1 << 20
	// partitionWait bounds how long the kernel may take to show the new
	// partition after BLKRRPART (normally milliseconds).
	partitionWait = 10 * time.Second
)

// Options says where to look. Empty fields take the defaults of a running PM.
type Options struct {
	SysBlock   string // default /sys/block
	Dev        string // default /dev
	Prefer     string // disk named by dyad.datadisk= (e.g. "vda"); default: the first candidate
	Mkfs       string // default /sbin/mke2fs
	Mountpoint string // default /data
}

// Result says what Ensure found and did. Reason explains, for the console,
// why no data partition is mounted.
type Result struct {
	Disk      string // e.g. "vda"
	Partition string // e.g. "vda1"
	Created   bool
	Mounted   bool
	Reason    string
}

// system is what Ensure needs from the kernel beyond reading sysfs and
// device nodes, which tests can fake with plain files.
type system interface {
	// rereadPartitions asks the kernel to re-read the partition table of the
	// open whole-disk device f.
	rereadPartitions(f *os.File) error
	mkfs(ctx context.Context, mkfs, dev, label string) error
	mount(dev, dir string) error
}

func (o Options) withDefaults() Options {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&o.SysBlock, "/sys/block")
	def(&o.Dev, "/dev")
	def(&o.Mkfs, "/sbin/mke2fs")
	def(&o.Mountpoint, "/data")
	o.Prefer = strings.TrimPrefix(o.Prefer, "/dev/")
	return o
}

// Ensure mounts the data partition at opt.Mountpoint. It uses a partition
// named dyad-data on any candidate disk; failing that, it partitions and
// formats the preferred (or first) disk, but only if that disk is blank.
// When no partition can be used it returns Mounted=false with a Reason and
// a nil error; a non-nil error means an operation failed half way (a write,
// mkfs, mount) and also comes with Mounted=false and Reason set.
func Ensure(ctx context.Context, log *slog.Logger, opt Options) (Result, error) {
	return ensure(ctx, log, opt.withDefaults(), kernel{})
}

type disk struct {
	name string
	size int64 // bytes
}

func ensure(ctx context.Context, log *slog.Logger, opt Options, sys system) (Result, error) {
	disks, err := candidates(opt)
	if err != nil {
		return Result{Reason: err.Error()}, err
	}
	log.Debug("data disk candidates", "disks", disks)

	var target *disk
	for i := range disks {
		d := &disks[i]
		if d.name == opt.Prefer || (opt.Prefer == "" && target == nil) {
			target = d
		}
		part, ok, err := dataPartition(opt, *d)
		if err != nil {
			log.Warn("cannot read partition table", "disk", d.name, "err", err)
			continue
		}
		if ok {
			return mountExisting(ctx, log, opt, sys, *d, part)
		}
	}
	switch {
	case opt.Prefer != "" && target == nil:
		return Result{Reason: fmt.Sprintf("dyad.datadisk=%s: no such disk in %s", opt.Prefer, opt.SysBlock)}, nil
	case target == nil:
		return Result{Reason: "no disk for the data partition in " + opt.SysBlock}, nil
	}
	if target.size < minDiskBytes {
		return Result{Disk: target.name, Reason: fmt.Sprintf("disk %s is too small (%d MiB, need at least %d MiB): not using it",
			target.name, target.size>>20, minDiskBytes>>20)}, nil
	}
	what, err := holdsData(opt, *target)
	if err != nil {
		return Result{Disk: target.name, Reason: err.Error()}, err
	}
	if what != "" {
		return Result{Disk: target.name, Reason: fmt.Sprintf(
			"disk %s holds data (%s): not touching it; use dyad.datadisk= or clear it", target.name, what)}, nil
	}
	return create(ctx, log, opt, sys, *target)
}

// candidates lists the whole disks that may hold the data partition, sorted
// by name; opt.Prefer comes first and is exempt from the filters because
// the operator named it.
func candidates(opt Options) ([]disk, error) {
	entries, err := os.ReadDir(opt.SysBlock)
	if err != nil {
		return nil, fmt.Errorf("list disks: %w", err)
	}
	var disks []disk
	for _, e := range entries {
		name := e.Name()
		preferred := name == opt.Prefer
		if !preferred && (notADisk(name) || readSysInt(opt, name, "removable") == 1) {
			continue
		}
		sectors := readSysInt(opt, name, "size")
		if sectors <= 0 {
			continue // no medium, or not a block device
		}
		d := disk{name: name, size: sectors * 512}
		if preferred {
			disks = append([]disk{d}, disks...)
		} else {
			disks = append(disks, d)
		}
	}
	return disks, nil
}

// notADisk reports block devices that are never a PM's own disk: RAM and
// loop devices, optical and floppy drives, and devices Dyad or its
// neighbours build on top of real disks.
func notADisk(name string) bool {
	for _, p := range []string{"ram", "loop", "sr", "fd", "zram", "dm-", "md", "drbd", "nbd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// readSysInt reads a decimal sysfs attribute, -1 when absent or garbled.
func readSysInt(opt Options, parts ...string) int64 {
	b, err := os.ReadFile(filepath.Join(append([]string{opt.SysBlock}, parts...)...))
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// dataPartition looks for the dyad-data partition in d's GPT.
func dataPartition(opt Options, d disk) (gpt.Partition, bool, error) {
	f, err := os.Open(filepath.Join(opt.Dev, d.name))
	if err != nil {
		return gpt.Partition{}, false, err
	}
	defer f.Close()
	t, err := gpt.Read(f, d.size)
	if errors.Is(err, gpt.ErrNotGPT) {
		return gpt.Partition{}, false, nil
	}
	if err != nil {
		return gpt.Partition{}, false, err
	}
	p, ok := t.Find(PartitionName)
	return p, ok, nil
}

// holdsData describes what makes disk d not blank, or returns "". The
// kernel's view comes first: partitions it lists or a device built on the
// disk mean data in a form the checks of the disk's bytes below may not know.
func holdsData(opt Options, d disk) (string, error) {
	parts, err := kernelPartitions(opt, d.name)
	if err != nil {
		return "", fmt.Errorf("inspect disk: %w", err)
	}
	if len(parts) > 0 {
		names := slices.Sorted(maps.Values(parts))
		return fmt.Sprintf("the kernel lists partitions %s", strings.Join(names, " ")), nil
	}
	holders, err := os.ReadDir(filepath.Join(opt.SysBlock, d.name, "holders"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("inspect disk: %w", err)
	}
	if len(holders) > 0 {
		return fmt.Sprintf("in use by %s", holders[0].Name()), nil
	}

	dev, size := filepath.Join(opt.Dev, d.name), d.size
	f, err := os.Open(dev)
	if err != nil {
		return "", fmt.Errorf("inspect disk: %w", err)
	}
	defer f.Close()
	switch t, err := gpt.Read(f, size); {
	case err == nil:
		return fmt.Sprintf("GPT with %d partitions, none named %s", len(t.Partitions), PartitionName), nil
	case !errors.Is(err, gpt.ErrNotGPT):
		return "damaged GPT: " + err.Error(), nil
	}
	for _, off := range []int64{0, size - edgeBytes} {
		b := make([]byte, edgeBytes)
		if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("inspect disk %s at offset %d: %w", dev, off, err)
		}
		if off == 0 && b[510] == 0x55 && b[511] == 0xAA {
			return "MBR signature", nil
		}
		if i := bytes.IndexFunc(b, func(r rune) bool { return r != 0 }); i >= 0 {
			return fmt.Sprintf("non-zero bytes at offset %d", off+int64(i)), nil
		}
	}
	return "", nil
}

func mountExisting(ctx context.Context, log *slog.Logger, opt Options, sys system, d disk, p gpt.Partition) (Result, error) {
	res := Result{Disk: d.name}
	part, err := partitionName(opt, d.name, p.Number)
	if err != nil {
		return fail(res, err)
	}
	if part == "" {
		// The kernel skipped or lost the table (e.g. a disk hot-added with
		// a table written elsewhere); ask it to look again.
		log.Info("data partition not known to the kernel; re-reading the partition table", "disk", d.name)
		if part, err = reread(ctx, opt, sys, d.name, p.Number); err != nil {
			return fail(res, err)
		}
	}
	res.Partition = part
	if err := sys.mount(filepath.Join(opt.Dev, part), opt.Mountpoint); err != nil {
		return fail(res, err)
	}
	res.Mounted = true
	log.Info("data partition mounted", "partition", part, "mountpoint", opt.Mountpoint)
	return res, nil
}

func create(ctx context.Context, log *slog.Logger, opt Options, sys system, d disk) (Result, error) {
	res := Result{Disk: d.name}
	t, err := gpt.SinglePartition(d.size, PartitionName)
	if err != nil {
		return fail(res, err)
	}
	log.Warn("creating the data partition on a blank disk", "disk", d.name, "bytes", d.size)
	if err := writeTable(filepath.Join(opt.Dev, d.name), d.size, t); err != nil {
		return fail(res, err)
	}
	part, err := reread(ctx, opt, sys, d.name, 1)
	if err != nil {
		return fail(res, err)
	}
	res.Partition = part
	dev := filepath.Join(opt.Dev, part)
	if err := sys.mkfs(ctx, opt.Mkfs, dev, Label); err != nil {
		return fail(res, err)
	}
	res.Created = true
	if err := sys.mount(dev, opt.Mountpoint); err != nil {
		return fail(res, err)
	}
	res.Mounted = true
	log.Info("data partition created and mounted", "partition", part, "mountpoint", opt.Mountpoint)
	return res, nil
}

func fail(res Result, err error) (Result, error) {
	err = fmt.Errorf("data partition on %s: %w", res.Disk, err)
	res.Reason = err.Error()
	return res, err
}

// writeTable writes t to the disk at dev. The exclusive open fails if
// anything (a mount, LVM, DRBD) holds the disk.
func writeTable(dev string, size int64, t gpt.Table) error {
	f, err := os.OpenFile(dev, os.O_RDWR|os.O_EXCL, 0)
	if err != nil {
		return err
	}
	if err := gpt.Write(f, size, t); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", dev, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", dev, err)
	}
	return f.Close()
}

// reread asks the kernel to re-read the partition table of disk name and
// waits until partition number n shows up in sysfs and in opt.Dev. It
// returns the partition's device name.
func reread(ctx context.Context, opt Options, sys system, name string, n int) (string, error) {
	// A plain open: the kernel claims the disk itself for the scan, and
	// some kernels refuse BLKRRPART through an exclusive descriptor.
	dev := filepath.Join(opt.Dev, name)
	f, err := os.Open(dev)
	if err != nil {
		return "", err
	}
	err = sys.rereadPartitions(f)
	f.Close()
	if err != nil {
		return "", fmt.Errorf("re-read partition table of %s: %w", dev, err)
	}

	ctx, cancel := context.WithTimeout(ctx, partitionWait)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		part, err := partitionName(opt, name, n)
		if err != nil {
			return "", err
		}
		if part != "" {
			if _, err := os.Stat(filepath.Join(opt.Dev, part)); err == nil {
				return part, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("partition %d of %s did not appear in %s and %s: %w", n, name, opt.SysBlock, opt.Dev, ctx.Err())
		case <-tick.C:
		}
	}
}

// partitionName finds the kernel's name for partition n of disk (vda1,
// nvme0n1p1, loop0p1) in sysfs rather than guessing the naming rule, or ""
// when the kernel does not know the partition.
func partitionName(opt Options, name string, n int) (string, error) {
	parts, err := kernelPartitions(opt, name)
	return parts[n], err
}

// kernelPartitions returns the names of the partitions of disk name the
// kernel knows, by partition number.
func kernelPartitions(opt Options, name string) (map[int]string, error) {
	entries, err := os.ReadDir(filepath.Join(opt.SysBlock, name))
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", name, err)
	}
	parts := make(map[int]string)
	for _, e := range entries {
		if n := readSysInt(opt, name, e.Name(), "partition"); n > 0 {
			parts[int(n)] = e.Name()
		}
	}
	return parts, nil
}
