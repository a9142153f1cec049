package datadisk

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/dyad-ha/dyad/init/gpt"
	"golang.org/x/sys/unix"
)

// fakeKernel plays the kernel on a fake sysfs tree whose disks are regular
// files: a partition table re-read publishes the partitions of the GPT that
// is really on the file, named as Linux names them.
type fakeKernel struct {
	opt         Options
	hidePart    bool // the kernel never shows new partitions
	mkfsErr     error
	mountErr    error
	rereads     []string
	mkfsed      []string
	mounts      []string
	wroteLabels []string
}

func linuxPartName(disk string, n int) string {
	if unicode.IsDigit(rune(disk[len(disk)-1])) {
		return fmt.Sprintf("%sp%d", disk, n)
	}
	return fmt.Sprintf("%s%d", disk, n)
}

func (k *fakeKernel) rereadPartitions(f *os.File) error {
	disk := filepath.Base(f.Name())
	k.rereads = append(k.rereads, disk)
	if k.hidePart {
		return nil
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	t, err := gpt.Read(f, st.Size())
	if err != nil {
		return err
	}
	for _, p := range t.Partitions {
		publishPartition(k.opt, disk, p.Number)
	}
	return nil
}

func publishPartition(opt Options, disk string, n int) {
	name := linuxPartName(disk, n)
	dir := filepath.Join(opt.SysBlock, disk, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		panic(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "partition"), []byte(strconv.Itoa(n)+"\n"), 0o644); err != nil {
		panic(err)
	}
	if err := os.WriteFile(filepath.Join(opt.Dev, name), nil, 0o644); err != nil {
		panic(err)
	}
}

func (k *fakeKernel) mkfs(_ context.Context, mkfs, dev, label string) error {
	k.mkfsed = append(k.mkfsed, filepath.Base(dev))
	k.wroteLabels = append(k.wroteLabels, label)
	return k.mkfsErr
}

func (k *fakeKernel) mount(dev, dir string) error {
	if _, err := os.Stat(dev); err != nil {
		return err
	}
	k.mounts = append(k.mounts, filepath.Base(dev)+" "+dir)
	return k.mountErr
}

// fakeDisk is one entry of the fake /sys/block.
type fakeDisk struct {
	name      string
	mib       int64
	removable bool
	fill      func(f *os.File, size int64) // default: blank
	known     bool                         // the kernel already lists its partitions
	// kernelParts are partition numbers the kernel lists whatever is on
	// the disk, holders the devices built on it (dm-0, md0).
	kernelParts []int
	holders     []string
}

func gptWith(names ...string) func(*os.File, int64) {
	return func(f *os.File, size int64) {
		typ, _ := gpt.ParseGUID(gpt.LinuxFilesystem)
		t := gpt.Table{}
		for i, n := range names {
			t.Partitions = append(t.Partitions, gpt.Partition{
				Number: i + 1, Type: typ, Name: n,
				FirstLBA: 2048 * uint64(i+1), LastLBA: 2048*uint64(i+2) - 1,
			})
		}
		if err := gpt.Write(f, size, t); err != nil {
			panic(err)
		}
	}
}

func bytesAt(off int64, b ...byte) func(*os.File, int64) {
	return func(f *os.File, size int64) {
		if off < 0 {
			off += size
		}
		if _, err := f.WriteAt(b, off); err != nil {
			panic(err)
		}
	}
}

func setup(t *testing.T, disks []fakeDisk) Options {
	t.Helper()
	root := t.TempDir()
	opt := Options{
		SysBlock:   filepath.Join(root, "sys/block"),
		Dev:        filepath.Join(root, "dev"),
		Mkfs:       "/sbin/mke2fs",
		Mountpoint: filepath.Join(root, "data"),
	}
	for _, d := range disks {
		dir := filepath.Join(opt.SysBlock, d.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(opt.Dev, 0o755); err != nil {
			t.Fatal(err)
		}
		size := d.mib << 20
		rem := "0\n"
		if d.removable {
			rem = "1\n"
		}
		for file, v := range map[string]string{"size": fmt.Sprintf("%d\n", size/512), "removable": rem} {
			if err := os.WriteFile(filepath.Join(dir, file), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		f, err := os.Create(filepath.Join(opt.Dev, d.name))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		if d.fill != nil {
			d.fill(f, size)
		}
		f.Close()
		for _, n := range d.kernelParts {
			publishPartition(opt, d.name, n)
		}
		for _, h := range d.holders {
			if err := os.MkdirAll(filepath.Join(dir, "holders", h), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if d.known {
			tab, err := readGPT(opt, d.name)
			if err == nil {
				for _, p := range tab.Partitions {
					publishPartition(opt, d.name, p.Number)
				}
			}
		}
	}
	return opt
}

func readGPT(opt Options, name string) (gpt.Table, error) {
	f, err := os.Open(filepath.Join(opt.Dev, name))
	if err != nil {
		return gpt.Table{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return gpt.Table{}, err
	}
	return gpt.Read(f, st.Size())
}

// fingerprint changes whenever anything is written to the sparse disk file
// at path: new data allocates blocks, and the edges (where the allocated
// test data and partition tables live) are compared byte for byte.
func fingerprint(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%d blocks;", st.Blocks)
	for _, off := range []int64{0, st.Size - 2<<20} {
		if _, err := io.Copy(h, io.NewSectionReader(f, max(off, 0), 2<<20)); err != nil {
			t.Fatal(err)
		}
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func TestEnsure(t *testing.T) {
	blank := func(name string) fakeDisk { return fakeDisk{name: name, mib: 64} }
	notTouching := func(disk, what string) string {
		return fmt.Sprintf("disk %s holds data (%s): not touching it; use dyad.datadisk= or clear it", disk, what)
	}
	tests := []struct {
		name    string
		disks   []fakeDisk
		prefer  string
		kernel  fakeKernel
		want    Result
		wantErr string
		mkfs    []string // partitions formatted
		mounted string   // partition mounted
	}{
		{
			name:  "blank virtio disk",
			disks: []fakeDisk{blank("vda")},
			want:  Result{Disk: "vda", Partition: "vda1", Created: true, Mounted: true},
			mkfs:  []string{"vda1"}, mounted: "vda1",
		},
		{
			name:  "blank NVMe disk",
			disks: []fakeDisk{blank("nvme0n1")},
			want:  Result{Disk: "nvme0n1", Partition: "nvme0n1p1", Created: true, Mounted: true},
			mkfs:  []string{"nvme0n1p1"}, mounted: "nvme0n1p1",
		},
		{
			name:  "first disk by name",
			disks: []fakeDisk{blank("vda"), blank("sda")},
			want:  Result{Disk: "sda", Partition: "sda1", Created: true, Mounted: true},
			mkfs:  []string{"sda1"}, mounted: "sda1",
		},
		{
			name: "existing partition on a later disk wins over a blank first disk",
			disks: []fakeDisk{blank("vda"),
				{name: "vdb", mib: 64, fill: gptWith("boot", PartitionName), known: true}},
			want:    Result{Disk: "vdb", Partition: "vdb2", Mounted: true},
			mounted: "vdb2",
		},
		{
			name:    "existing partition the kernel has not listed yet",
			disks:   []fakeDisk{{name: "vda", mib: 64, fill: gptWith(PartitionName)}},
			want:    Result{Disk: "vda", Partition: "vda1", Mounted: true},
			mounted: "vda1",
		},
		{
			name:   "preferred disk",
			disks:  []fakeDisk{blank("vda"), blank("vdb")},
			prefer: "vdb",
			want:   Result{Disk: "vdb", Partition: "vdb1", Created: true, Mounted: true},
			mkfs:   []string{"vdb1"}, mounted: "vdb1",
		},
		{
			name:   "preferred disk given as a path",
			disks:  []fakeDisk{blank("vda"), blank("vdb")},
			prefer: "/dev/vdb",
			want:   Result{Disk: "vdb", Partition: "vdb1", Created: true, Mounted: true},
			mkfs:   []string{"vdb1"}, mounted: "vdb1",
		},
		{
			name:   "preferred disk is used even if its kind is skipped otherwise",
			disks:  []fakeDisk{blank("vda"), blank("loop0")},
			prefer: "loop0",
			want:   Result{Disk: "loop0", Partition: "loop0p1", Created: true, Mounted: true},
			mkfs:   []string{"loop0p1"}, mounted: "loop0p1",
		},
		{
			name:   "preferred disk missing",
			disks:  []fakeDisk{blank("vda")},
			prefer: "vdc",
			want:   Result{Reason: "dyad.datadisk=vdc: no such disk in SYS"},
		},
		{
			name:   "preferred disk holds data although another is blank",
			disks:  []fakeDisk{blank("vda"), {name: "vdb", mib: 64, fill: bytesAt(4096, 1)}},
			prefer: "vdb",
			want:   Result{Disk: "vdb", Reason: notTouching("vdb", "non-zero bytes at offset 4096")},
		},
		{
			name: "only disks that are not a PM's own",
			disks: []fakeDisk{blank("loop0"), blank("ram0"), blank("sr0"), blank("zram0"), blank("dm-0"),
				blank("md127"), blank("drbd0"), blank("nbd0"), blank("fd0"),
				{name: "sdb", mib: 64, removable: true}, {name: "vdz", mib: 0}},
			want: Result{Reason: "no disk for the data partition in SYS"},
		},
		{
			name:  "data at the start",
			disks: []fakeDisk{{name: "vda", mib: 64, fill: bytesAt(1000, 0xff)}},
			want:  Result{Disk: "vda", Reason: notTouching("vda", "non-zero bytes at offset 1000")},
		},
		{
			name:  "data in the last MiB",
			disks: []fakeDisk{{name: "vda", mib: 64, fill: bytesAt(-1, 1)}},
			want:  Result{Disk: "vda", Reason: notTouching("vda", fmt.Sprintf("non-zero bytes at offset %d", 64<<20-1))},
		},
		{
			name:  "MBR",
			disks: []fakeDisk{{name: "vda", mib: 64, fill: bytesAt(510, 0x55, 0xAA)}},
			want:  Result{Disk: "vda", Reason: notTouching("vda", "MBR signature")},
		},
		{
			name:  "GPT of another system",
			disks: []fakeDisk{{name: "vda", mib: 64, fill: gptWith("EFI", "root")}},
			want:  Result{Disk: "vda", Reason: notTouching("vda", "GPT with 2 partitions, none named dyad-data")},
		},
		{
			name: "damaged GPT",
			disks: []fakeDisk{{name: "vda", mib: 64, fill: func(f *os.File, size int64) {
				gptWith(PartitionName)(f, size)
				bytesAt(512+60, 0xff)(f, size)      // primary disk GUID, under the CRC
				bytesAt(size-512+60, 0xff)(f, size) // same in the backup
			}}},
			want: Result{Disk: "vda", Reason: notTouching("vda",
				"damaged GPT: primary GPT: header at LBA 1: CRC32 …")},
		},
		{
			name:  "blank bytes but the kernel lists partitions",
			disks: []fakeDisk{{name: "vda", mib: 64, kernelParts: []int{2, 1}}},
			want:  Result{Disk: "vda", Reason: notTouching("vda", "the kernel lists partitions vda1 vda2")},
		},
		{
			name:  "blank bytes but a device is built on the disk",
			disks: []fakeDisk{{name: "vda", mib: 64, holders: []string{"dm-0"}}},
			want:  Result{Disk: "vda", Reason: notTouching("vda", "in use by dm-0")},
		},
		{
			name:  "too small",
			disks: []fakeDisk{{name: "vda", mib: 16}},
			want:  Result{Disk: "vda", Reason: "disk vda is too small (16 MiB, need at least 32 MiB): not using it"},
		},
		{
			name:    "mkfs fails",
			disks:   []fakeDisk{blank("vda")},
			kernel:  fakeKernel{mkfsErr: errors.New("mke2fs exploded")},
			want:    Result{Disk: "vda", Partition: "vda1"},
			wantErr: "data partition on vda: mke2fs exploded",
			mkfs:    []string{"vda1"},
		},
		{
			name:    "mount of an existing partition fails",
			disks:   []fakeDisk{{name: "vda", mib: 64, fill: gptWith(PartitionName), known: true}},
			kernel:  fakeKernel{mountErr: errors.New("wrong fs type")},
			want:    Result{Disk: "vda", Partition: "vda1"},
			wantErr: "data partition on vda: wrong fs type",
			mounted: "vda1",
		},
		{
			name:    "kernel never shows the new partition",
			disks:   []fakeDisk{blank("vda")},
			kernel:  fakeKernel{hidePart: true},
			want:    Result{Disk: "vda"},
			wantErr: "partition 1 of vda did not appear",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opt := setup(t, tt.disks)
			opt.Prefer = tt.prefer
			opt = opt.withDefaults()
			before := make(map[string]string)
			for _, d := range tt.disks {
				before[d.name] = fingerprint(t, filepath.Join(opt.Dev, d.name))
			}
			k := tt.kernel
			k.opt = opt
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			got, err := ensure(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), opt, &k)

			if tt.wantErr == "" && err != nil {
				t.Fatalf("ensure: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("ensure error %v, want one containing %q", err, tt.wantErr)
			}
			want := tt.want
			want.Reason = strings.ReplaceAll(want.Reason, "SYS", opt.SysBlock)
			if tt.wantErr != "" {
				want.Reason = err.Error()
			}
			// "…" in a wanted Reason stands for text we do not pin (checksums).
			pre, post, _ := strings.Cut(want.Reason, "…")
			if !strings.HasPrefix(got.Reason, pre) || !strings.HasSuffix(got.Reason, post) || len(got.Reason) < len(pre)+len(post) {
				t.Errorf("Reason\n got %q\nwant %q", got.Reason, want.Reason)
			}
			got.Reason, want.Reason = "", ""
			if got != want {
				t.Errorf("ensure = %+v, want %+v", got, want)
			}
			if strings.Join(k.mkfsed, ",") != strings.Join(tt.mkfs, ",") {
				t.Errorf("mkfs on %v, want %v", k.mkfsed, tt.mkfs)
			}
			for _, l := range k.wroteLabels {
				if l != Label {
					t.Errorf("mkfs label %q, want %q", l, Label)
				}
			}
			wantMount := ""
			if tt.mounted != "" {
				wantMount = tt.mounted + " " + opt.Mountpoint
			}
			if strings.Join(k.mounts, ",") != wantMount {
				t.Errorf("mounts %v, want %q", k.mounts, wantMount)
			}

			for _, d := range tt.disks {
				changed := before[d.name] != fingerprint(t, filepath.Join(opt.Dev, d.name))
				writes := tt.want.Created || len(tt.mkfs) > 0 || tt.kernel.hidePart
				if wrote := d.name == got.Disk && writes; changed != wrote {
					t.Errorf("disk %s changed=%v, want %v", d.name, changed, wrote)
				}
			}
			if got.Created {
				tab, err := readGPT(opt, got.Disk)
				if err != nil {
					t.Fatalf("created table: %v", err)
				}
				p, ok := tab.Find(PartitionName)
				if !ok || p.Number != 1 || p.FirstLBA != 2048 {
					t.Errorf("created table %+v", tab)
				}
			}
		})
	}
}
