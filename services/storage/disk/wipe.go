package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/dyad-ha/dyad/services/unit"
	"golang.org/x/sys/unix"
)

// Wipe is the erase an operator asked for: it zeroes the first and last
// EdgeBytes of disk d, which removes every partition table, label and
// superblock Identify knows, so that the disk scans blank. It looks at the
// disk again first and refuses when it is a system disk or a member, when
// something is built on it, or when it is not the disk that was scanned
// (another size or serial: disks were swapped or renamed since).
func Wipe(ctx context.Context, opt Options, d Found) error {
	opt = opt.withDefaults()
	now, err := rescan(ctx, opt, d.Name)
	if err != nil {
		return fmt.Errorf("erase %s: %w", d.Name, err)
	}
	switch {
	case now.SizeBytes != d.SizeBytes || now.Serial != d.Serial:
		return fmt.Errorf("erase %s: the disk changed since it was scanned (size %d, serial %q; was %d, %q)",
			d.Name, now.SizeBytes, now.Serial, d.SizeBytes, d.Serial)
	case now.State == unit.DiskSystem:
		return fmt.Errorf("erase %s: refusing to erase a system disk (%s)", d.Name, now.Detail)
	case now.State == unit.DiskMember:
		return fmt.Errorf("erase %s: refusing to erase a member of %s; remove it from its storage group first", d.Name, now.VG)
	case len(now.Holders) > 0:
		return fmt.Errorf("erase %s: refusing to erase a disk in use by %v", d.Name, now.Holders)
	case now.ReadOnly:
		return fmt.Errorf("erase %s: the disk is read-only", d.Name)
	}
	if err := zeroEnds(ctx, now.Path, now.SizeBytes); err != nil {
		return fmt.Errorf("erase %s: %w", d.Name, err)
	}
	return nil
}

// rescan inspects and classifies one disk the way Scan does.
func rescan(ctx context.Context, opt Options, name string) (Found, error) {
	if err := ctx.Err(); err != nil {
		return Found{}, err
	}
	if name == "" || name != filepath.Base(name) || notADisk(name) {
		return Found{}, fmt.Errorf("%q is not a disk name", name)
	}
	mi, err := os.ReadFile(opt.Mountinfo)
	if err != nil {
		return Found{}, fmt.Errorf("read mount table: %w", err)
	}
	f, ok := inspect(opt, name)
	if !ok {
		return Found{}, errors.New("no such disk (or no medium)")
	}
	classify(opt, &f, parseMountinfo(string(mi)), pvsByName(opt.PVs))
	return f, nil
}

// zeroEnds writes zeros over the first and last EdgeBytes of the disk at
// path and makes the kernel forget the partitions it knew. The exclusive
// open fails if anything (a mount, swap, LVM, DRBD) holds the disk or one
// of its partitions, which closes the gap since rescan looked.
func zeroEnds(ctx context.Context, path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_EXCL, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if end != size {
		return fmt.Errorf("%s is %d bytes, sysfs says %d", path, end, size)
	}
	n := min(size, EdgeBytes)
	zeros := make([]byte, n)
	for _, off := range []int64{0, size - n} {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := f.WriteAt(zeros, off); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		return nil // a regular file (tests) has no partitions to forget
	}
	return rereadPartitions(path)
}

// rereadPartitions asks the kernel to re-read the (now empty) partition
// table, through a plain descriptor: some kernels refuse BLKRRPART on an
// exclusive one.
func rereadPartitions(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); err != nil {
		return fmt.Errorf("erased, but the kernel did not re-read the partition table: %w", err)
	}
	return nil
}
