package datadisk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/init/gpt"
	"golang.org/x/sys/unix"
)

// needLoop skips unless loop devices can be attached here.
func needLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices, BLKRRPART and mount(2)")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop device support on this host: %v", err)
	}
}

// sparseImage creates a sparse file of size bytes.
func sparseImage(t *testing.T, size int64) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return f
}

// attachLoop attaches length bytes of backing from offset (0: to the end)
// to a free loop device and returns its name, e.g. "loop3". partscan asks
// the kernel to read partition tables on it.
func attachLoop(t *testing.T, backing *os.File, offset, length uint64, partscan bool) string {
	t.Helper()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	info := unix.LoopInfo64{Offset: offset, Sizelimit: length}
	if partscan {
		info.Flags = unix.LO_FLAGS_PARTSCAN
	}
	// Other tests on the host may race us for the free device: retry.
	for range 10 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			t.Fatalf("LOOP_CTL_GET_FREE: %v", err)
		}
		name := fmt.Sprintf("loop%d", n)
		loop, err := os.OpenFile("/dev/"+name, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = unix.IoctlLoopConfigure(int(loop.Fd()), &unix.LoopConfig{Fd: uint32(backing.Fd()), Info: info})
		if errors.Is(err, unix.EBUSY) {
			loop.Close()
			continue
		}
		if err != nil {
			loop.Close()
			t.Fatalf("LOOP_CONFIGURE %s: %v", name, err)
		}
		t.Cleanup(func() {
			if err := unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_CLR_FD, 0); err != nil {
				t.Errorf("detach %s: %v", name, err)
			}
			loop.Close()
		})
		return name
	}
	t.Fatal("no free loop device after 10 tries")
	return ""
}

// needPartitionScan skips unless the host kernel lists the partitions of a
// GPT-partitioned loop device. Kernels built without partition table
// parsers (the Firecracker kernel of our CI host has none) never do.
func needPartitionScan(t *testing.T) {
	t.Helper()
	const size = 8 << 20
	img := sparseImage(t, size)
	tab, err := gpt.SinglePartition(size, "probe")
	if err != nil {
		t.Fatal(err)
	}
	if err := gpt.Write(img, size, tab); err != nil {
		t.Fatal(err)
	}
	name := attachLoop(t, img, 0, 0, true) // LOOP_CONFIGURE scans synchronously
	if _, err := os.Stat(filepath.Join("/sys/block", name, name+"p1")); err != nil {
		t.Skipf("host kernel does not list partitions of a GPT-partitioned loop device (no GPT partition parser?): %v; "+
			"TestEnsureWithLoopPartitions and the QEMU tier cover the rest", err)
	}
}

// TestEnsureOnLoopDevice runs Ensure with the real kernel adapter end to
// end: GPT written to a block device, BLKRRPART, the partition appearing in
// sysfs and devtmpfs, real mke2fs, mount(2); then a second boot finds and
// mounts the same partition without formatting it.
func TestEnsureOnLoopDevice(t *testing.T) {
	mkfs := needTools(t)
	needLoop(t)
	needPartitionScan(t)
	const size = 64 << 20
	img := sparseImage(t, size)
	name := attachLoop(t, img, 0, 0, true)

	// Only the loop device is visible: Ensure must not even read the host's
	// own disks. Loop devices are skipped unless named, so name it.
	sysBlock := t.TempDir()
	if err := os.Symlink(filepath.Join("/sys/block", name), filepath.Join(sysBlock, name)); err != nil {
		t.Fatal(err)
	}
	opt := Options{SysBlock: sysBlock, Prefer: name, Mkfs: mkfs, Mountpoint: filepath.Join(t.TempDir(), "data")}
	bootTwice(t, opt.withDefaults(), kernel{}, img, size, name, name+"p1")
	if start := readSysInt(opt, name, name+"p1", "start"); start != 2048 {
		t.Errorf("kernel sees %sp1 starting at sector %d, want 2048", name, start)
	}
}

// loopPartitions is the real kernel adapter plus the one thing the host
// kernel may lack, partition table parsing: after the real BLKRRPART it
// publishes each GPT partition as a loop device over the same image at the
// partition's offset, in a sysfs and /dev laid out like the kernel's.
type loopPartitions struct {
	kernel
	t   *testing.T
	opt Options
	img *os.File
}

func (k loopPartitions) rereadPartitions(f *os.File) error {
	if err := k.kernel.rereadPartitions(f); err != nil {
		return err
	}
	disk := filepath.Base(f.Name())
	tab, err := gpt.Read(f, readSysInt(k.opt, disk, "size")*512) // through the block device
	if err != nil {
		return err
	}
	for _, p := range tab.Partitions {
		part := fmt.Sprintf("%sp%d", disk, p.Number)
		dir := filepath.Join(k.opt.SysBlock, disk, part)
		if _, err := os.Stat(dir); err == nil {
			continue
		}
		loop := attachLoop(k.t, k.img, p.FirstLBA*512, (p.LastLBA-p.FirstLBA+1)*512, false)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "partition"), []byte(fmt.Sprintln(p.Number)), 0o644); err != nil {
			return err
		}
		if err := os.Symlink("/dev/"+loop, filepath.Join(k.opt.Dev, part)); err != nil {
			return err
		}
	}
	return nil
}

// TestEnsureWithLoopPartitions runs the real adapter on a real block device
// (exclusive open, GPT write, BLKRRPART, mke2fs, mount(2)) where only the
// kernel's partition scan is stood in for, so it runs on hosts whose kernel
// has no partition parsers. It proves the filesystem lands at the offset
// the GPT gives.
func TestEnsureWithLoopPartitions(t *testing.T) {
	mkfs := needTools(t)
	needLoop(t)
	const size = 64 << 20
	img := sparseImage(t, size)
	// Without partition scanning a loop device refuses BLKRRPART (EINVAL),
	// as a real disk never does.
	name := attachLoop(t, img, 0, 0, true)

	root := t.TempDir()
	opt := Options{
		SysBlock:   filepath.Join(root, "sys/block"),
		Dev:        filepath.Join(root, "dev"),
		Prefer:     name,
		Mkfs:       mkfs,
		Mountpoint: filepath.Join(root, "data"),
	}
	for _, dir := range []string{filepath.Join(opt.SysBlock, name), opt.Dev} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, attr := range []string{"size", "removable"} {
		b, err := os.ReadFile(filepath.Join("/sys/block", name, attr))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(opt.SysBlock, name, attr), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/dev/"+name, filepath.Join(opt.Dev, name)); err != nil {
		t.Fatal(err)
	}
	bootTwice(t, opt, loopPartitions{t: t, opt: opt, img: img}, img, size, name, name+"p1")
}

func needTools(t *testing.T) (mkfs string) {
	t.Helper()
	mkfs, err := exec.LookPath("mke2fs")
	if err != nil {
		t.Skip("mke2fs (Debian package e2fsprogs) is not installed")
	}
	return mkfs
}

// bootTwice runs ensure on a blank disk (it must create and mount the data
// partition), checks the result on the image itself, then runs it again as
// on the next boot (it must mount the same filesystem, data intact).
func bootTwice(t *testing.T, opt Options, sys system, img *os.File, size int64, disk, part string) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	unmount := func() {
		if err := unix.Unmount(opt.Mountpoint, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			t.Errorf("unmount %s: %v", opt.Mountpoint, err)
		}
	}
	t.Cleanup(unmount)

	res, err := ensure(ctx, log, opt, sys)
	if err != nil {
		t.Fatalf("first boot: %v", err)
	}
	if want := (Result{Disk: disk, Partition: part, Created: true, Mounted: true}); res != want {
		t.Fatalf("first boot = %+v, want %+v", res, want)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(opt.Mountpoint, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.EXT4_SUPER_MAGIC {
		t.Errorf("%s has filesystem type %#x, want ext4", opt.Mountpoint, st.Type)
	}
	marker := filepath.Join(opt.Mountpoint, "marker")
	if err := os.WriteFile(marker, []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	unmount()

	tab, err := gpt.Read(img, size)
	p, ok := tab.Find(PartitionName)
	if err != nil || !ok || p.Number != 1 || p.FirstLBA != 2048 {
		t.Fatalf("GPT on the image: %+v, %v", tab, err)
	}
	// The ext4 superblock sits 1024 bytes into the partition.
	sb := make([]byte, 1024)
	if _, err := img.ReadAt(sb, int64(p.FirstLBA)*512+1024); err != nil {
		t.Fatal(err)
	}
	if magic, label := binary.LittleEndian.Uint16(sb[56:]), string(bytes.TrimRight(sb[120:136], "\x00")); magic != 0xEF53 || label != Label {
		t.Errorf("at the partition offset: superblock magic %#x label %q, want ext4 labelled %q", magic, label, Label)
	}
	if fsck, err := exec.LookPath("e2fsck"); err == nil {
		if out, err := exec.Command(fsck, "-fn", filepath.Join(opt.Dev, part)).CombinedOutput(); err != nil {
			t.Errorf("e2fsck -fn: %v\n%s", err, out)
		}
	}

	res, err = ensure(ctx, log, opt, sys)
	if err != nil {
		t.Fatalf("second boot: %v", err)
	}
	if want := (Result{Disk: disk, Partition: part, Mounted: true}); res != want {
		t.Fatalf("second boot = %+v, want %+v", res, want)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "kept" {
		t.Errorf("data written on the first boot: %q, %v", b, err)
	}
}

// TestRereadRefusesRegularFile shows the real BLKRRPART adapter reports
// failure instead of pretending, on something that is not a disk.
func TestRereadRefusesRegularFile(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "not-a-disk"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := (kernel{}).rereadPartitions(f); !errors.Is(err, unix.ENOTTY) {
		t.Errorf("BLKRRPART on a regular file: %v, want ENOTTY", err)
	}
}
