package lvm

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

// recorder is a fake Runner that keeps every argv and answers with out/err.
type recorder struct {
	calls [][]string
	out   []byte
	err   error
}

func (r *recorder) run(_ context.Context, argv []string) ([]byte, error) {
	r.calls = append(r.calls, slices.Clone(argv))
	return r.out, r.err
}

// common is what every argv starts with after the subcommand.
func common(cmd string, args ...string) []string {
	return append([]string{cmd, "--config", lvmConfig}, args...)
}

// TestConfig pins the override byte for byte: every key was checked against
// lvm 2.03.16 (lvmconfig --validate accepts it), so a change must be
// deliberate.
func TestConfig(t *testing.T) {
	const want = `activation { udev_sync=0 udev_rules=0 monitoring=0 } ` +
		`devices { obtain_device_list_from_udev=0 use_devicesfile=0 hints="none" scan_lvs=0 ` +
		`global_filter=["r|^/dev/drbd|","r|^/dev/dm-|","r|^/dev/mapper/|","a|.*|"] } ` +
		`global { use_lvmpolld=0 notify_dbus=0 } backup { backup=0 archive=0 }`
	if lvmConfig != want {
		t.Fatalf("lvmConfig = %s\nwant %s", lvmConfig, want)
	}
	for _, obsolete := range []string{"locking_type", "use_lvmetad"} {
		if strings.Contains(lvmConfig, obsolete) {
			t.Errorf("config uses %s, which lvm 2.03 no longer has", obsolete)
		}
	}
}

func TestCommandArgv(t *testing.T) {
	reportOpts := func(fields string) []string {
		return []string{"--reportformat", "json", "--units", "b", "--nosuffix", "-o", fields}
	}
	const (
		pvf = "pv_name,vg_name,pv_size,pv_free,pv_uuid,pv_missing,pv_attr"
		vgf = "vg_name,vg_size,vg_free,vg_extent_size,pv_count,lv_count,vg_uuid,vg_tags,vg_missing_pv_count,vg_attr"
		lvf = "lv_name,vg_name,lv_size,lv_attr,origin,devices,lv_time,snap_percent,data_percent,lv_tags,lv_uuid"
	)
	emptyReport := func(kind string) []byte { return []byte(`{"report":[{"` + kind + `":[]}]}`) }
	tests := []struct {
		name string
		out  []byte
		do   func(*LVM) error
		want []string
	}{
		{"CreatePV", nil, func(l *LVM) error { return l.CreatePV(t.Context(), "/dev/vdb", false) },
			common("pvcreate", "/dev/vdb")},
		{"CreatePV force", nil, func(l *LVM) error { return l.CreatePV(t.Context(), "/dev/disk/by-id/virtio-d2", true) },
			common("pvcreate", "-ff", "--yes", "/dev/disk/by-id/virtio-d2")},
		{"RemovePV", nil, func(l *LVM) error { return l.RemovePV(t.Context(), "/dev/vdc") },
			common("pvremove", "/dev/vdc")},
		{"CreateVG", nil, func(l *LVM) error {
			return l.CreateVG(t.Context(), "dyad_sg1", []string{"dyad", "sg1"}, "/dev/vdb", "/dev/vdc")
		}, common("vgcreate", "--addtag", "dyad", "--addtag", "sg1", "dyad_sg1", "/dev/vdb", "/dev/vdc")},
		{"CreateVG no tags", nil, func(l *LVM) error { return l.CreateVG(t.Context(), "dyad_sg2", nil, "/dev/vdd") },
			common("vgcreate", "dyad_sg2", "/dev/vdd")},
		{"ExtendVG", nil, func(l *LVM) error { return l.ExtendVG(t.Context(), "dyad_sg1", "/dev/vdd") },
			common("vgextend", "dyad_sg1", "/dev/vdd")},
		{"ActivateVG", nil, func(l *LVM) error { return l.ActivateVG(t.Context(), "dyad_sg1") },
			common("vgchange", "-ay", "dyad_sg1")},
		{"CreateLV", nil, func(l *LVM) error { return l.CreateLV(t.Context(), "dyad_sg1", "vol3", 10<<30, "dyad", "vm_web") },
			common("lvcreate", "-ay", "-Wy", "-Zy", "--yes", "-L", "10737418240b", "-n", "vol3",
				"--addtag", "dyad", "--addtag", "vm_web", "dyad_sg1")},
		{"CreateLV rounds to sectors", nil, func(l *LVM) error { return l.CreateLV(t.Context(), "dyad_sg1", "vol4", 1000) },
			common("lvcreate", "-ay", "-Wy", "-Zy", "--yes", "-L", "1024b", "-n", "vol4", "dyad_sg1")},
		{"ExtendLV", nil, func(l *LVM) error { return l.ExtendLV(t.Context(), "dyad_sg1", "vol3", 20<<30) },
			common("lvextend", "-L", "21474836480b", "dyad_sg1/vol3")},
		{"RemoveLV", nil, func(l *LVM) error { return l.RemoveLV(t.Context(), "dyad_sg1", "vol3_sb1741940813") },
			common("lvremove", "-f", "dyad_sg1/vol3_sb1741940813")},
		{"Snapshot", nil, func(l *LVM) error {
			return l.Snapshot(t.Context(), "dyad_sg1", "vol3", "vol3_sb1741940813", 1<<30)
		}, common("lvcreate", "-s", "-L", "1073741824b", "-n", "vol3_sb1741940813", "dyad_sg1/vol3")},
		{"PVs", emptyReport("pv"), func(l *LVM) error { _, err := l.PVs(t.Context()); return err },
			common("pvs", reportOpts(pvf)...)},
		{"VGs", emptyReport("vg"), func(l *LVM) error { _, err := l.VGs(t.Context()); return err },
			common("vgs", reportOpts(vgf)...)},
		{"LVs of a VG", emptyReport("lv"), func(l *LVM) error { _, err := l.LVs(t.Context(), "dyad_sg1"); return err },
			common("lvs", append(reportOpts(lvf), "dyad_sg1")...)},
		{"LVs of all VGs", emptyReport("lv"), func(l *LVM) error { _, err := l.LVs(t.Context(), ""); return err },
			common("lvs", reportOpts(lvf)...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{out: tc.out}
			if err := tc.do(New(r.run)); err != nil {
				t.Fatal(err)
			}
			if len(r.calls) != 1 {
				t.Fatalf("%d calls, want 1", len(r.calls))
			}
			if !slices.Equal(r.calls[0], tc.want) {
				t.Errorf("argv\n got %q\nwant %q", r.calls[0], tc.want)
			}
		})
	}
}

// TestCreateLVArgvLiteral spells one argv out in full, so the shared prefix
// helper cannot hide a mistake.
func TestCreateLVArgvLiteral(t *testing.T) {
	r := &recorder{}
	if err := New(r.run).CreateLV(t.Context(), "dyad_sg1", "vol3", 4<<20); err != nil {
		t.Fatal(err)
	}
	want := []string{"lvcreate", "--config",
		`activation { udev_sync=0 udev_rules=0 monitoring=0 } devices { obtain_device_list_from_udev=0 use_devicesfile=0 hints="none" scan_lvs=0 global_filter=["r|^/dev/drbd|","r|^/dev/dm-|","r|^/dev/mapper/|","a|.*|"] } global { use_lvmpolld=0 notify_dbus=0 } backup { backup=0 archive=0 }`,
		"-ay", "-Wy", "-Zy", "--yes", "-L", "4194304b", "-n", "vol3", "dyad_sg1"}
	if !slices.Equal(r.calls[0], want) {
		t.Errorf("argv\n got %q\nwant %q", r.calls[0], want)
	}
}

func TestInvalidRunsNothing(t *testing.T) {
	long := strings.Repeat("a", 65)
	tests := []struct {
		name string
		do   func(*LVM) error
	}{
		{"pv relative", func(l *LVM) error { return l.CreatePV(t.Context(), "vdb", true) }},
		{"pv outside /dev", func(l *LVM) error { return l.CreatePV(t.Context(), "/tmp/vdb", true) }},
		{"pv bare /dev/", func(l *LVM) error { return l.CreatePV(t.Context(), "/dev/", true) }},
		{"pv dotdot", func(l *LVM) error { return l.CreatePV(t.Context(), "/dev/../etc/passwd", true) }},
		{"pv double slash", func(l *LVM) error { return l.CreatePV(t.Context(), "/dev//vdb", true) }},
		{"pv trailing slash", func(l *LVM) error { return l.CreatePV(t.Context(), "/dev/vdb/", true) }},
		{"pv space", func(l *LVM) error { return l.CreatePV(t.Context(), "/dev/vd b", true) }},
		{"pv newline", func(l *LVM) error { return l.RemovePV(t.Context(), "/dev/vdb\n") }},
		{"pv comma", func(l *LVM) error { return l.RemovePV(t.Context(), "/dev/vdb,/dev/vdc") }},
		{"vg empty", func(l *LVM) error { return l.CreateVG(t.Context(), "", nil, "/dev/vdb") }},
		{"vg dash", func(l *LVM) error { return l.CreateVG(t.Context(), "-ff", nil, "/dev/vdb") }},
		{"vg slash", func(l *LVM) error { return l.CreateVG(t.Context(), "a/b", nil, "/dev/vdb") }},
		{"vg dot", func(l *LVM) error { return l.ActivateVG(t.Context(), ".") }},
		{"vg dotdot", func(l *LVM) error { return l.ActivateVG(t.Context(), "..") }},
		{"vg too long", func(l *LVM) error { return l.ActivateVG(t.Context(), long) }},
		{"vg no devices", func(l *LVM) error { return l.CreateVG(t.Context(), "dyad_sg1", nil) }},
		{"vg bad device", func(l *LVM) error { return l.CreateVG(t.Context(), "dyad_sg1", nil, "/dev/vdb", "sdc") }},
		{"vg bad tag", func(l *LVM) error { return l.CreateVG(t.Context(), "dyad_sg1", []string{"a b"}, "/dev/vdb") }},
		{"vg dash tag", func(l *LVM) error { return l.CreateVG(t.Context(), "dyad_sg1", []string{"-x"}, "/dev/vdb") }},
		{"extend bad vg", func(l *LVM) error { return l.ExtendVG(t.Context(), "x y", "/dev/vdb") }},
		{"extend bad dev", func(l *LVM) error { return l.ExtendVG(t.Context(), "dyad_sg1", "/dev/") }},
		{"lv zero size", func(l *LVM) error { return l.CreateLV(t.Context(), "dyad_sg1", "vol1", 0) }},
		{"lv negative size", func(l *LVM) error { return l.CreateLV(t.Context(), "dyad_sg1", "vol1", -512) }},
		{"lv overflow size", func(l *LVM) error { return l.CreateLV(t.Context(), "dyad_sg1", "vol1", 1<<63-1) }},
		{"lv bad name", func(l *LVM) error { return l.CreateLV(t.Context(), "dyad_sg1", "vol 1", 1<<20) }},
		{"lv reserved prefix", func(l *LVM) error { return l.CreateLV(t.Context(), "dyad_sg1", "snapshot0", 1<<20) }},
		{"lv reserved infix", func(l *LVM) error { return l.CreateLV(t.Context(), "dyad_sg1", "vol1_rimage_0", 1<<20) }},
		{"lv bad tag", func(l *LVM) error { return l.CreateLV(t.Context(), "dyad_sg1", "vol1", 1<<20, "") }},
		{"lv bad vg", func(l *LVM) error { return l.CreateLV(t.Context(), "", "vol1", 1<<20) }},
		{"extend lv size", func(l *LVM) error { return l.ExtendLV(t.Context(), "dyad_sg1", "vol1", 0) }},
		{"extend lv name", func(l *LVM) error { return l.ExtendLV(t.Context(), "dyad_sg1", "-f", 1<<20) }},
		{"remove lv name", func(l *LVM) error { return l.RemoveLV(t.Context(), "dyad_sg1", "") }},
		{"remove lv vg", func(l *LVM) error { return l.RemoveLV(t.Context(), "dyad/sg1", "vol1") }},
		{"snapshot origin", func(l *LVM) error { return l.Snapshot(t.Context(), "dyad_sg1", "", "s", 1<<20) }},
		{"snapshot name", func(l *LVM) error { return l.Snapshot(t.Context(), "dyad_sg1", "vol1", "a:b", 1<<20) }},
		{"snapshot size", func(l *LVM) error { return l.Snapshot(t.Context(), "dyad_sg1", "vol1", "vol1_sb1", -1) }},
		{"lvs bad vg", func(l *LVM) error { _, err := l.LVs(t.Context(), "--all"); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{}
			err := tc.do(New(r.run))
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
			if len(r.calls) != 0 {
				t.Errorf("ran %q", r.calls)
			}
		})
	}
}

func TestValidNames(t *testing.T) {
	for _, s := range []string{"dyad_sg1", "vol3", "vol3_sb1741940813", "a", "A.b+c-d", strings.Repeat("x", 64)} {
		if err := checkLVName(s); err != nil {
			t.Errorf("checkLVName(%q): %v", s, err)
		}
	}
	for _, d := range []string{"/dev/vdb", "/dev/nvme0n1", "/dev/disk/by-id/virtio-d2", "/dev/disk/by-path/pci-0000:00:05.0", "/dev/loop0"} {
		if err := checkDevice(d); err != nil {
			t.Errorf("checkDevice(%q): %v", d, err)
		}
	}
}

func TestRunErrorWrapped(t *testing.T) {
	boom := errors.New("exit status 5: Volume group \"dyad_sg1\" not found")
	r := &recorder{err: boom}
	l := New(r.run)
	if err := l.ActivateVG(t.Context(), "dyad_sg1"); !errors.Is(err, boom) || !strings.Contains(err.Error(), "vgchange") {
		t.Errorf("ActivateVG err = %v", err)
	}
	// A report command that fails is an error even if stdout holds a report
	// (lvs of a missing VG prints an empty one and exits 5).
	r.out = mustRead(t, "testdata/lvs_empty.json")
	if lvs, err := l.LVs(t.Context(), "nosuchvg"); !errors.Is(err, boom) || lvs != nil {
		t.Errorf("LVs = %v, %v", lvs, err)
	}
}

func TestReportMethodsParse(t *testing.T) {
	r := &recorder{out: mustRead(t, "testdata/lvs.json")}
	lvs, err := New(r.run).LVs(t.Context(), "dyad_sg1")
	if err != nil {
		t.Fatal(err)
	}
	if len(lvs) != 3 || lvs[1].Name != "vol5" {
		t.Errorf("LVs = %+v", lvs)
	}
	r.out = []byte("not json")
	if _, err := New(r.run).PVs(t.Context()); err == nil {
		t.Error("PVs accepted garbage")
	}
	if _, err := New(r.run).VGs(t.Context()); err == nil {
		t.Error("VGs accepted garbage")
	}
}

func TestDevicePath(t *testing.T) {
	if got := DevicePath("dyad_sg1", "vol3"); got != "/dev/dyad_sg1/vol3" {
		t.Errorf("DevicePath = %q", got)
	}
}

func mustRead(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
