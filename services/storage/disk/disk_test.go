package disk

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dyad-ha/dyad/services/unit"
)

// fakeDisk is a disk in a fake sysfs tree; its device node is a sparse file
// of its size.
type fakeDisk struct {
	name    string
	size    int64
	dev     string            // major:minor
	attrs   map[string]string // path under /sys/block/<name> → content
	parts   []fakePart
	holders []string
	// data is written at offsets into the device file.
	data map[int64][]byte
	// noNode leaves out the device node.
	noNode bool
}

type fakePart struct {
	n       int // partition number; default: position in the list
	name    string
	dev     string
	holders []string
}

// fakeHolder is a device built on disks (dm-0, md127) with its own sysfs
// directory.
type fakeHolder struct {
	name    string
	dev     string
	holders []string
}

type tree struct {
	t    *testing.T
	opt  Options
	root string
}

func newTree(t *testing.T) *tree {
	root := t.TempDir()
	tr := &tree{t: t, root: root, opt: Options{
		Sys:       filepath.Join(root, "sys"),
		Dev:       filepath.Join(root, "dev"),
		Mountinfo: filepath.Join(root, "mountinfo"),
	}}
	tr.mkdir(tr.opt.Sys, "block")
	tr.mkdir(tr.opt.Dev)
	tr.mountinfo("")
	return tr
}

func (tr *tree) mkdir(parts ...string) string {
	tr.t.Helper()
	dir := filepath.Join(parts...)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tr.t.Fatal(err)
	}
	return dir
}

func (tr *tree) write(path, content string) {
	tr.t.Helper()
	tr.mkdir(filepath.Dir(path))
	if err := os.WriteFile(path, []byte(content+"\n"), 0o644); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *tree) mountinfo(lines ...string) {
	tr.t.Helper()
	if err := os.WriteFile(tr.opt.Mountinfo, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *tree) holderLinks(dir string, holders []string) {
	tr.mkdir(dir, "holders")
	for _, h := range holders {
		tr.mkdir(dir, "holders", h)
	}
}

func (tr *tree) disk(d fakeDisk) {
	tr.t.Helper()
	dir := tr.mkdir(tr.opt.Sys, "block", d.name)
	tr.write(filepath.Join(dir, "size"), strconv.FormatInt(d.size/512, 10))
	if d.dev != "" {
		tr.write(filepath.Join(dir, "dev"), d.dev)
	}
	for p, v := range d.attrs {
		tr.write(filepath.Join(dir, p), v)
	}
	tr.holderLinks(dir, d.holders)
	for i, p := range d.parts {
		pdir := tr.mkdir(dir, p.name)
		if p.n == 0 {
			p.n = i + 1
		}
		tr.write(filepath.Join(pdir, "partition"), strconv.Itoa(p.n))
		tr.write(filepath.Join(pdir, "dev"), p.dev)
		tr.holderLinks(pdir, p.holders)
	}
	tr.mkdir(dir, "queue") // a directory without a partition file
	if d.noNode {
		return
	}
	f, err := os.Create(filepath.Join(tr.opt.Dev, d.name))
	if err != nil {
		tr.t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(d.size); err != nil {
		tr.t.Fatal(err)
	}
	for off, b := range d.data {
		if off < 0 {
			off += d.size
		}
		if _, err := f.WriteAt(b, off); err != nil {
			tr.t.Fatal(err)
		}
	}
}

func (tr *tree) holder(h fakeHolder) {
	dir := tr.mkdir(tr.opt.Sys, "block", h.name)
	tr.write(filepath.Join(dir, "size"), "2048")
	tr.write(filepath.Join(dir, "dev"), h.dev)
	tr.holderLinks(dir, h.holders)
}

const mib = 1 << 20

func TestScan(t *testing.T) {
	gptHead, gptTail := gptImage(64*mib, 512, "dyad-data")
	otherHead, otherTail := gptImage(64*mib, 512, "linux")

	tr := newTree(t)
	tr.disk(fakeDisk{name: "vda", size: 64 * mib, dev: "254:0",
		parts: []fakePart{{name: "vda1", dev: "254:1"}},
		data:  map[int64][]byte{0: gptHead, -EdgeBytes: gptTail}})
	tr.disk(fakeDisk{name: "vdb", size: 64 * mib, dev: "254:16",
		attrs: map[string]string{"serial": "dyad-disk-2", "queue/rotational": "1"}})
	tr.disk(fakeDisk{name: "sdb", size: 64 * mib, dev: "8:16",
		attrs: map[string]string{"device/model": "QEMU HARDDISK   ", "device/wwid": "naa.5000c500a1b2c3d4", "removable": "1"},
		parts: []fakePart{{n: 2, name: "sdb2", dev: "8:18"}, {n: 1, name: "sdb1", dev: "8:17"}},
		data:  map[int64][]byte{0: otherHead, -EdgeBytes: otherTail}})
	tr.disk(fakeDisk{name: "vdc", size: 64 * mib, dev: "254:32", holders: []string{"dm-1"},
		data: map[int64][]byte{512: []byte("LABELONE"), 512 + 24: []byte("LVM2 001")}})
	tr.holder(fakeHolder{name: "dm-1", dev: "253:1"})
	tr.disk(fakeDisk{name: "vdd", size: 64 * mib, dev: "254:48",
		parts: []fakePart{{name: "vdd1", dev: "254:49", holders: []string{"dm-2"}}}})
	tr.holder(fakeHolder{name: "dm-2", dev: "253:2", holders: []string{"dm-3"}})
	tr.holder(fakeHolder{name: "dm-3", dev: "253:3"})
	tr.disk(fakeDisk{name: "vde", size: 64 * mib, dev: "254:64", holders: []string{"dm-4"},
		attrs: map[string]string{"device/serial": "S1"},
		data:  map[int64][]byte{512: []byte("LABELONE"), 512 + 24: []byte("LVM2 001")}})
	tr.holder(fakeHolder{name: "dm-4", dev: "253:4", holders: []string{"drbd3"}})
	tr.holder(fakeHolder{name: "drbd3", dev: "147:3"})
	tr.disk(fakeDisk{name: "vdf", size: 64 * mib, dev: "254:80",
		data: map[int64][]byte{512: []byte("LABELONE"), 512 + 24: []byte("LVM2 001")}})
	tr.disk(fakeDisk{name: "vdg", size: 64 * mib, dev: "254:96"})
	tr.disk(fakeDisk{name: "vdh", size: 64 * mib, dev: "254:112",
		data: map[int64][]byte{65536 + 64: []byte("_BHRfS_M")}})
	tr.disk(fakeDisk{name: "vdi", size: 64 * mib, dev: "254:128", attrs: map[string]string{"ro": "1"},
		data: map[int64][]byte{-1: {0x01}}})
	tr.disk(fakeDisk{name: "vdj", size: 64 * mib, dev: "254:144", noNode: true})
	tr.disk(fakeDisk{name: "nvme0n1", size: 3 * mib / 2, dev: "259:0",
		attrs: map[string]string{"wwid": "eui.0025388b71b2c3d4", "device/serial": "  S4EWNX0N123456  ", "device/model": "Samsung SSD 970"}})
	// Not disks, or no medium: skipped.
	for _, n := range []string{"loop0", "ram0", "zram0", "dm-0", "drbd0", "sr0", "fd0", "md127", "nbd0"} {
		tr.disk(fakeDisk{name: n, size: mib, dev: "1:1"})
	}
	tr.disk(fakeDisk{name: "sdz", size: 0, dev: "8:240"})

	tr.mountinfo(
		`22 1 0:21 / / rw,relatime - rootfs rootfs rw`,
		`30 22 254:1 / /data rw,relatime shared:1 - ext4 /dev/vda1 rw`,
		`31 22 253:3 / /mnt/with\040space rw - xfs /dev/mapper/x rw`,
		`32 22 0:45 / /srv rw - btrfs /dev/vdh rw`,
		`garbage line`,
	)
	tr.opt.PVs = map[string]string{"/dev/vde": "dyad_sg2", "/dev/vdf": "vg_old", "/dev/vdc": "dyad_sgx"}
	tr.opt.SystemDisks = []string{"/dev/vdg"}

	got, err := Scan(context.Background(), tr.opt)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		state  unit.DiskState
		detail string
	}
	wants := map[string]want{
		"nvme0n1": {unit.DiskBlank, ""},
		"sdb":     {unit.DiskForeign, "GPT partition table; partitions sdb1 sdb2"},
		"vda":     {unit.DiskSystem, "mounted at /data"},
		"vdb":     {unit.DiskBlank, ""},
		"vdc":     {unit.DiskMember, ""}, // dyad_sgx: a group VG without a number
		"vdd":     {unit.DiskSystem, "dm-3 is mounted at /mnt/with space"},
		"vde":     {unit.DiskMember, ""},
		"vdf":     {unit.DiskForeign, "LVM2 physical volume; LVM physical volume vdf of volume group vg_old"},
		"vdg":     {unit.DiskSystem, "configured as a system disk"},
		"vdh":     {unit.DiskSystem, "mounted at /srv"},
		"vdi":     {unit.DiskForeign, "non-zero data"},
		"vdj":     {unit.DiskForeign, "cannot read: open "},
	}
	var names []string
	for _, f := range got {
		names = append(names, f.Name)
		w, ok := wants[f.Name]
		if !ok {
			t.Errorf("unexpected disk %s", f.Name)
			continue
		}
		if f.State != w.state || !strings.HasPrefix(f.Detail, w.detail) || (w.detail == "" && f.Detail != "") {
			t.Errorf("%s: state %s, detail %q; want %s, %q", f.Name, f.State, f.Detail, w.state, w.detail)
		}
	}
	if want := slices.Sorted(maps.Keys(wants)); !slices.Equal(names, want) {
		t.Errorf("disks %v, want %v", names, want)
	}

	byName := make(map[string]Found)
	for _, f := range got {
		byName[f.Name] = f
	}
	vdb := byName["vdb"]
	if vdb.Serial != "dyad-disk-2" || !vdb.Rotational || vdb.SizeBytes != 64*mib || vdb.Path != filepath.Join(tr.opt.Dev, "vdb") || vdb.DevNum != "254:16" {
		t.Errorf("vdb = %+v", vdb)
	}
	sdb := byName["sdb"]
	if sdb.Serial != "naa.5000c500a1b2c3d4" || sdb.Model != "QEMU HARDDISK" || !sdb.Removable || !slices.Equal(sdb.Partitions, []string{"sdb1", "sdb2"}) {
		t.Errorf("sdb = %+v", sdb)
	}
	if n := byName["nvme0n1"]; n.Serial != "S4EWNX0N123456" || n.Model != "Samsung SSD 970" || n.SizeBytes != 3*mib/2 {
		t.Errorf("nvme0n1 = %+v", n)
	}
	if vde := byName["vde"]; vde.Group != 2 || vde.VG != "dyad_sg2" || !slices.Equal(vde.Holders, []string{"dm-4"}) || vde.Signature != "" {
		t.Errorf("vde = %+v", vde)
	}
	if vdd := byName["vdd"]; !slices.Equal(vdd.Holders, []string{"dm-2"}) {
		t.Errorf("vdd holders = %v", vdd.Holders)
	}
	if vdi := byName["vdi"]; !vdi.ReadOnly {
		t.Errorf("vdi = %+v", vdi)
	}
	if d := byName["vde"].Disk(2); d != (unit.Disk{PM: 2, Name: "vde", Serial: "S1", SizeBytes: 64 * mib, State: unit.DiskMember, Group: 2}) {
		t.Errorf("vde.Disk(2) = %+v", d)
	}
}

// The holder checks hold without reading: a disk whose partition holds a
// device is foreign even when its bytes are zero.
func TestScanHolders(t *testing.T) {
	tr := newTree(t)
	tr.disk(fakeDisk{name: "vdb", size: 8 * mib, dev: "254:16", holders: []string{"md0"}})
	tr.disk(fakeDisk{name: "vdc", size: 8 * mib, dev: "254:32",
		parts: []fakePart{{name: "vdc1", dev: "254:33", holders: []string{"dm-0", "md0"}}}})
	got, err := Scan(context.Background(), tr.opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d disks", len(got))
	}
	for _, f := range got {
		if f.State != unit.DiskForeign || !strings.Contains(f.Detail, "in use by") {
			t.Errorf("%s: %s %q", f.Name, f.State, f.Detail)
		}
	}
	if h := got[1].Holders; !slices.Equal(h, []string{"dm-0", "md0"}) {
		t.Errorf("vdc holders %v", h)
	}
}

type failingDevice struct{}

func (failingDevice) ReadAt([]byte, int64) (int, error) { return 0, errors.New("input/output error") }
func (failingDevice) Close() error                      { return nil }

type shortDevice struct{}

func (shortDevice) ReadAt(b []byte, off int64) (int, error) { return len(b) / 2, nil }
func (shortDevice) Close() error                            { return nil }

func TestScanUnreadable(t *testing.T) {
	for _, tt := range []struct {
		name string
		dev  Device
		want string
	}{
		{"I/O error", failingDevice{}, "cannot read: read 1048576 bytes at offset 0: input/output error"},
		{"short read", shortDevice{}, "cannot read: read 1048576 bytes at offset 0: unexpected EOF"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTree(t)
			tr.disk(fakeDisk{name: "vdb", size: 8 * mib, dev: "254:16"})
			tr.opt.Open = func(string) (Device, error) { return tt.dev, nil }
			got, err := Scan(context.Background(), tr.opt)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].State != unit.DiskForeign || got[0].Detail != tt.want {
				t.Errorf("got %+v", got)
			}
		})
	}
}

func TestScanErrors(t *testing.T) {
	tr := newTree(t)
	tr.opt.Mountinfo = filepath.Join(tr.root, "missing")
	if _, err := Scan(context.Background(), tr.opt); err == nil {
		t.Error("Scan without a mount table succeeded")
	}
	tr = newTree(t)
	tr.opt.Sys = filepath.Join(tr.root, "nosys")
	if _, err := Scan(context.Background(), tr.opt); err == nil {
		t.Error("Scan without sysfs succeeded")
	}
	tr = newTree(t)
	tr.disk(fakeDisk{name: "vdb", size: mib, dev: "254:16"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Scan(ctx, tr.opt); !errors.Is(err, context.Canceled) {
		t.Errorf("Scan with a cancelled context: %v", err)
	}
}

func TestParseMountinfo(t *testing.T) {
	got := parseMountinfo(`36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
37 35 254:1 / /a\040b\134c rw shared:2 unbindable - ext4 /dev/vd\040a1 rw
38 35 0:5 / /proc rw - proc proc rw
39 35 x / /bad rw - proc proc rw
40 35 1:2 / /nosep rw proc proc rw
41 35 1:3 / /short rw - proc
42 35 1:4 / /trailing\04 rw - tmpfs tmpfs rw
`)
	want := []mount{
		{"98:0", "/mnt2", "/dev/root"},
		{"254:1", `/a b\c`, "/dev/vd a1"},
		{"0:5", "/proc", "proc"},
		{"1:4", `/trailing\04`, "tmpfs"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add("30 22 254:1 / /data rw,relatime shared:1 - ext4 /dev/vda1 rw\n")
	f.Add(`37 35 254:1 / /a\040b\134c rw shared:2 - ext4 /dev/vd\040a1 rw`)
	f.Add("1 2 3:4 a b c - \\")
	f.Fuzz(func(t *testing.T, s string) {
		for _, m := range parseMountinfo(s) {
			if !strings.Contains(m.dev, ":") {
				t.Fatalf("mount %+v without a major:minor", m)
			}
		}
	})
}
