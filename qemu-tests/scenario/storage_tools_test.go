package scenario

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/qemu-tests/harness"
)

// Paths of the storage tools in the image (CONTRACTS: image paths).
const (
	lvmPath       = "/sbin/lvm"
	drbdadmPath   = "/lib/drbd/drbdadm-84"
	drbdsetupPath = "/lib/drbd/drbdsetup-84"
)

// toolTimeout bounds one storage command under software emulation.
const toolTimeout = 2 * time.Minute

// r1Config is a single-volume DRBD 8.4 resource in the form the storage
// service writes: floating sections, so that drbdadm picks the one whose
// address is local (127.0.0.1 here, the PM has no peer) by itself.
const r1Config = `resource r1 {
  protocol C;
  device /dev/drbd1 minor 1;
  disk /dev/dyad_sg1/vol1;
  meta-disk internal;
  floating ipv4 127.0.0.1:7801;
  floating ipv4 169.254.42.2:7801;
}
`

// lvReport is the part of `lvm lvs --reportformat json` the test reads.
type lvReport struct {
	Report []struct {
		LV []map[string]string `json:"lv"`
	} `json:"report"`
}

// TestStorageToolsRun runs the image's LVM and DRBD tools for real on one
// PM with its two blank data disks (vdb, vdc), the way the storage service
// calls them: no udev, no shell, devtmpfs at /dev, PATH=/bin:/sbin.
func TestStorageToolsRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	u := harness.StartT(t, harness.Options{N: 1})
	pm := u.PM(1)
	if err := harness.WaitFor(ctx, bootTimeout, "pm1's test channel", func(ctx context.Context) (bool, error) {
		err := pm.Ping(ctx)
		return err == nil, err
	}); err != nil {
		t.Fatal(err)
	}

	run := func(argv ...string) harness.ExecResult {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, toolTimeout)
		defer cancel()
		res, err := pm.Exec(c, argv...)
		if err != nil {
			t.Fatalf("%v\nstdout:\n%s", err, res.Stdout)
		}
		return res
	}
	read := func(path string) string {
		t.Helper()
		b, err := pm.ReadFile(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// exists tells whether path opens, reading its first block.
	exists := func(path string) bool {
		_, err := pm.Sum(ctx, path, 0, 4096)
		return err == nil
	}
	sum := func(path string, n int64) string {
		t.Helper()
		s, err := pm.Sum(ctx, path, 0, n)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	write := func(path string, n, seed int64) string {
		t.Helper()
		s, err := pm.WritePattern(ctx, path, 0, n, seed, true)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	lvs := func() map[string]map[string]string {
		t.Helper()
		res := run(lvmPath, "lvs", "--reportformat", "json", "-a", "--units", "b", "--nosuffix",
			"-o", "lv_name,vg_name,lv_size,lv_attr,origin,lv_path,lv_dm_path")
		var r lvReport
		if err := json.Unmarshal(res.Stdout, &r); err != nil {
			t.Fatalf("lvs JSON: %v\n%s", err, res.Stdout)
		}
		byName := map[string]map[string]string{}
		for _, rep := range r.Report {
			for _, lv := range rep.LV {
				byName[lv["lv_name"]] = lv
			}
		}
		return byName
	}

	// Init loaded the in-tree DRBD 8.4 module at boot.
	if v := read("/proc/drbd"); !strings.HasPrefix(v, "version: 8.4.") {
		t.Fatalf("/proc/drbd = %q, want DRBD 8.4 loaded", v)
	}
	t.Logf("drbd usermode_helper at boot: %q", strings.TrimSpace(read("/sys/module/drbd/parameters/usermode_helper")))

	// Each part builds on the one before.
	if !t.Run("lvm", func(t *testing.T) {
		// The image's lvm.conf: no udev, no dmeventd, no PVs on DRBD.
		conf := string(run(lvmPath, "lvmconfig", "activation/udev_sync", "activation/udev_rules", "activation/monitoring", "devices/global_filter").Stdout)
		for _, want := range []string{"udev_sync=0", "udev_rules=0", "monitoring=0", `global_filter="r|^/dev/drbd|"`} {
			if !strings.Contains(conf, want) {
				t.Errorf("lvmconfig lacks %s:\n%s", want, conf)
			}
		}
		run(lvmPath, "pvcreate", "/dev/vdb", "/dev/vdc")
		run(lvmPath, "vgcreate", "dyad_sg1", "/dev/vdb", "/dev/vdc")
		run(lvmPath, "lvcreate", "-L", "64m", "-n", "vol1", "dyad_sg1")
		// What the storage service may pass on top changes nothing.
		run(lvmPath, "lvcreate", "--config", "activation{udev_sync=0 udev_rules=0 monitoring=0}", "-L", "64m", "-n", "vol2", "dyad_sg1")
		for _, p := range []string{"/dev/dyad_sg1/vol1", "/dev/mapper/dyad_sg1-vol1", "/dev/dyad_sg1/vol2"} {
			if !exists(p) {
				t.Errorf("%s does not open after lvcreate", p)
			}
		}
		lv := lvs()["vol1"]
		if lv["vg_name"] != "dyad_sg1" || lv["lv_size"] != "67108864" || lv["lv_path"] != "/dev/dyad_sg1/vol1" ||
			lv["lv_dm_path"] != "/dev/mapper/dyad_sg1-vol1" || !strings.HasPrefix(lv["lv_attr"], "-wi-a") {
			t.Errorf("lvs reports vol1 as %v", lv)
		}

		// A classic COW snapshot keeps the data the origin had when it
		// was taken.
		const n = 1 << 20
		before := write("/dev/dyad_sg1/vol1", n, 1)
		run(lvmPath, "lvcreate", "-s", "-L", "16m", "-n", "vol1_sb1700000000", "dyad_sg1/vol1")
		after := write("/dev/dyad_sg1/vol1", n, 2)
		if got := sum("/dev/dyad_sg1/vol1_sb1700000000", n); got != before || got == after {
			t.Errorf("snapshot holds %s; the origin held %s when it was taken, %s after", got, before, after)
		}
		if snap := lvs()["vol1_sb1700000000"]; snap["origin"] != "vol1" || !strings.HasPrefix(snap["lv_attr"], "s") {
			t.Errorf("lvs reports the snapshot as %v", snap)
		}
		run(lvmPath, "lvremove", "-y", "dyad_sg1/vol1_sb1700000000")
		if exists("/dev/dyad_sg1/vol1_sb1700000000") {
			t.Error("the snapshot's device node outlived lvremove")
		}
		if _, ok := lvs()["vol1_sb1700000000"]; ok {
			t.Error("lvs still lists the removed snapshot")
		}
		if got := sum("/dev/dyad_sg1/vol1", n); got != after {
			t.Errorf("origin holds %s after the snapshot went, want %s", got, after)
		}
	}) {
		return
	}

	if !t.Run("drbd", func(t *testing.T) {
		const conf = "/run/dyad/drbd/r1.res"
		if err := pm.WriteFile(ctx, conf, []byte(r1Config)); err != nil {
			t.Fatal(err)
		}
		adm := func(args ...string) harness.ExecResult {
			t.Helper()
			return run(append([]string{drbdadmPath, "-c", conf}, args...)...)
		}
		// --force: the LV may hold meta-data of an earlier volume, and
		// without a terminal drbdmeta would not ask but cancel.
		adm("create-md", "--force", "r1")
		c, cancelAgain := context.WithTimeout(ctx, toolTimeout)
		again, err := pm.Exec(c, drbdadmPath, "-c", conf, "create-md", "r1")
		cancelAgain()
		t.Logf("create-md over existing meta-data without --force: %v", err)
		if again.Exit == 0 || !strings.Contains(string(again.Stdout)+string(again.Stderr), "Operation cancelled") {
			t.Errorf("create-md without --force over existing meta-data did not cancel: exit %d\n%s%s", again.Exit, again.Stdout, again.Stderr)
		}

		adm("up", "r1")
		// The connection goes Unconnected, then WFConnection (it can never
		// connect: no peer, and 127.0.0.1 cannot reach 169.254.42.2).
		if st := read("/proc/drbd"); !strings.Contains(st, "ro:Secondary/Unknown ds:Inconsistent/DUnknown C") {
			t.Errorf("after up, /proc/drbd = %s", st)
		}
		gi := strings.TrimSpace(string(run(drbdsetupPath, "get-gi", "1").Stdout))
		if f := strings.Split(gi, ":"); len(f) != 11 {
			t.Errorf("get-gi 1 = %q, want 4 UUIDs and 7 flags", gi)
		}
		run(drbdsetupPath, "primary", "1", "--force")
		if st := read("/proc/drbd"); !strings.Contains(st, "ro:Primary/Unknown ds:UpToDate/DUnknown") {
			t.Errorf("after primary --force, /proc/drbd = %s", st)
		}
		// Internal meta-data sits at the end: data written through the
		// DRBD device lands at the same offsets of the LV.
		const n = 1 << 20
		written := write("/dev/drbd1", n, 3)
		if got, lv := sum("/dev/drbd1", n), sum("/dev/dyad_sg1/vol1", n); got != written || lv != written {
			t.Errorf("wrote %s to /dev/drbd1; it reads %s, the LV %s", written, got, lv)
		}
		for _, dev := range []string{"/dev/drbd1", "/dev/dyad_sg1/vol2"} {
			r, err := pm.DirectWrite(ctx, dev, 0, 4096, 256, true, true)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("4 KiB O_DIRECT|O_DSYNC writes to %s: %.2f MB/s, p50 %s, p95 %s, max %s", dev, r.MBps(), r.P50, r.P95, r.Max)
		}

		adm("disconnect", "r1")
		if st := read("/proc/drbd"); !strings.Contains(st, "1: cs:StandAlone ro:Primary/Unknown") {
			t.Errorf("after disconnect, /proc/drbd = %s", st)
		}
		run(drbdsetupPath, "secondary", "1")
		adm("down", "r1")
		if st := read("/proc/drbd"); strings.Contains(st, " 1: cs:") {
			t.Errorf("after down, /proc/drbd = %s", st)
		}
	}) {
		return
	}

	// A failed data disk: every I/O on an LV it holds ends in EIO, and
	// LVM reports the PV missing.
	t.Run("failed disk", func(t *testing.T) {
		if err := pm.FailDisk(ctx, harness.DataDiskID(0)); err != nil {
			t.Fatal(err)
		}
		if _, err := pm.WritePattern(ctx, "/dev/dyad_sg1/vol1", 0, 4096, 4, true); err == nil || !strings.Contains(err.Error(), "input/output error") {
			t.Errorf("write to an LV on the failed disk: %v, want an I/O error", err)
		}
		c, cancelLVS := context.WithTimeout(ctx, toolTimeout)
		res, err := pm.Exec(c, lvmPath, "pvs", "--reportformat", "json", "-o", "pv_name,pv_attr")
		cancelLVS()
		if err != nil || !strings.Contains(string(res.Stdout), `"pv_name":"[unknown]"`) {
			t.Errorf("pvs with the failed disk: %v\n%s%s", err, res.Stdout, res.Stderr)
		}
		if err := pm.FailDisk(ctx, harness.DataDiskID(0)); err == nil {
			t.Error("failing a disk twice succeeded")
		}
		if err := pm.FailDisk(ctx, "nope"); err == nil {
			t.Error("FailDisk accepted an unknown disk")
		}
	})
}
