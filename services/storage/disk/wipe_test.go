package disk

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dyad-ha/dyad/services/unit"
)

func scanOne(t *testing.T, tr *tree, name string) Found {
	t.Helper()
	got, err := Scan(context.Background(), tr.opt)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range got {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("disk %s not found", name)
	return Found{}
}

// A sparse regular file stands in for the disk: ReadAt, WriteAt and the
// exclusive open work on it as on a block device.
func TestWipe(t *testing.T) {
	const size = 64 * mib
	head, tail := gptImage(size, 512, "linux")
	middle := []byte("data in the middle is left alone")
	tr := newTree(t)
	tr.disk(fakeDisk{name: "vdb", size: size, dev: "254:16", attrs: map[string]string{"serial": "s-vdb"},
		data: map[int64][]byte{0: head, -EdgeBytes: tail, size / 2: middle, 1024 + 56: {0x53, 0xef}, 65536 + 64: []byte("_BHRfS_M")}})
	before := scanOne(t, tr, "vdb")
	if before.State != unit.DiskForeign || before.Signature != "GPT partition table" {
		t.Fatalf("before: %+v", before)
	}
	if err := Wipe(context.Background(), tr.opt, before); err != nil {
		t.Fatal(err)
	}
	after := scanOne(t, tr, "vdb")
	if after.State != unit.DiskBlank || after.Detail != "" {
		t.Errorf("after: %+v", after)
	}
	b, err := os.ReadFile(filepath.Join(tr.opt.Dev, "vdb"))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != size {
		t.Errorf("file is %d bytes, want %d", len(b), size)
	}
	if !bytes.Equal(b[size/2:size/2+len(middle)], middle) {
		t.Error("Wipe touched the middle of the disk")
	}
}

func TestWipeSmallDisk(t *testing.T) {
	const size = 3 * mib / 2 // the ends overlap
	tr := newTree(t)
	tr.disk(fakeDisk{name: "vdb", size: size, dev: "254:16",
		data: map[int64][]byte{0: []byte("XFSB"), size / 2: {1}, -1: {1}}})
	f := scanOne(t, tr, "vdb")
	if err := Wipe(context.Background(), tr.opt, f); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(tr.opt.Dev, "vdb"))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != size || bytes.ContainsFunc(b, notZero) {
		t.Errorf("after Wipe: %d bytes, not all zero", len(b))
	}
}

func TestWipeRefuses(t *testing.T) {
	const size = 8 * mib
	data := map[int64][]byte{0: []byte("XFSB")}
	tests := []struct {
		name  string
		setup func(tr *tree)
		// change alters the Found handed to Wipe; setup changes the
		// system after the scan.
		change func(f *Found)
		want   string
	}{
		{
			name:  "mounted since the scan",
			setup: func(tr *tree) { tr.mountinfo(`30 22 254:16 / /data rw - xfs /dev/vdb rw`) },
			want:  "system disk (mounted at /data)",
		},
		{
			name:  "member",
			setup: func(tr *tree) { tr.opt.PVs = map[string]string{"/dev/vdb": "dyad_sg1"} },
			want:  "member of dyad_sg1",
		},
		{
			name:  "configured system disk",
			setup: func(tr *tree) { tr.opt.SystemDisks = []string{"vdb"} },
			want:  "system disk",
		},
		{
			name:  "holder appeared",
			setup: func(tr *tree) { tr.holderLinks(filepath.Join(tr.opt.Sys, "block", "vdb"), []string{"dm-7"}) },
			want:  "in use by [dm-7]",
		},
		{
			name:   "another disk now",
			change: func(f *Found) { f.Serial = "old-serial" },
			want:   "changed since it was scanned",
		},
		{
			name:   "another size now",
			change: func(f *Found) { f.SizeBytes *= 2 },
			want:   "changed since it was scanned",
		},
		{
			name:   "not a disk name",
			change: func(f *Found) { f.Name = "../vdb" },
			want:   "not a disk name",
		},
		{
			name:   "not a disk",
			change: func(f *Found) { f.Name = "dm-0" },
			want:   "not a disk name",
		},
		{
			name:   "gone",
			change: func(f *Found) { f.Name = "vdq" },
			want:   "no such disk",
		},
		{
			name:  "read-only",
			setup: func(tr *tree) { tr.write(filepath.Join(tr.opt.Sys, "block", "vdb", "ro"), "1") },
			want:  "read-only",
		},
		{
			name:  "sysfs size disagrees with the device",
			setup: func(tr *tree) { os.Truncate(filepath.Join(tr.opt.Dev, "vdb"), size-512) },
			want:  "sysfs says",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTree(t)
			tr.disk(fakeDisk{name: "vdb", size: size, dev: "254:16", attrs: map[string]string{"serial": "s1"}, data: data})
			f := scanOne(t, tr, "vdb")
			if tt.change != nil {
				tt.change(&f)
			}
			if tt.setup != nil {
				tt.setup(tr)
			}
			err := Wipe(context.Background(), tr.opt, f)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Wipe = %v, want an error containing %q", err, tt.want)
			}
			b, err := os.ReadFile(filepath.Join(tr.opt.Dev, "vdb"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, []byte("XFSB")) {
				t.Error("a refused Wipe wrote to the disk")
			}
		})
	}
}

func TestWipeCancelled(t *testing.T) {
	tr := newTree(t)
	tr.disk(fakeDisk{name: "vdb", size: 8 * mib, dev: "254:16", data: map[int64][]byte{0: []byte("XFSB")}})
	f := scanOne(t, tr, "vdb")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Wipe(ctx, tr.opt, f); err == nil {
		t.Fatal("Wipe with a cancelled context succeeded")
	}
}
