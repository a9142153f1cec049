package scenario

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/qemu-tests/harness"
	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/storage/drbd"
	"github.com/dyad-ha/dyad/services/unit"
)

// syncTimeout covers a first full sync of a test volume between two PMs
// under software emulation (about 4 MiB/s).
const syncTimeout = 3 * time.Minute

// waitVolume polls volume id until cond accepts it.
func waitVolume(t *testing.T, ctx context.Context, c *apiclient.Client, id int, timeout time.Duration, what string, cond func(v unit.Volume) error) unit.Volume {
	t.Helper()
	var v unit.Volume
	err := harness.WaitFor(ctx, timeout, what, func(ctx context.Context) (bool, error) {
		var err error
		if v, err = c.Volume(ctx, id); err != nil {
			return false, err
		}
		if err := cond(v); err != nil {
			return false, fmt.Errorf("%w (volume %s: %s %s, primary pm%d, legs %s)", err, v.Name, v.State, v.Detail, v.Primary, legsString(v))
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func legsString(v unit.Volume) string {
	var b strings.Builder
	for _, l := range v.Legs {
		fmt.Fprintf(&b, "[pm%d %s %s %s %s]", l.PM, l.Role, l.Disk, l.Connection, l.Detail)
	}
	return b.String()
}

// mirroredVolume waits for the unit and its initial storage group, creates
// a volume and waits until both legs hold the same data. It returns the
// volume and the PM where it is writable.
func mirroredVolume(t *testing.T, ctx context.Context, c *apiclient.Client, name string, size int64) (unit.Volume, int) {
	t.Helper()
	waitFormed(t, ctx, c)
	err := harness.WaitFor(ctx, 2*time.Minute, "the initial storage group on both PMs", func(ctx context.Context) (bool, error) {
		gs, err := c.StorageGroups(ctx)
		if err != nil {
			return false, err
		}
		return met(len(gs) == 1 && gs[0].FreeBytes > size && len(gs[0].Disks) == 4, "storage groups %+v", gs)
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.CreateVolume(ctx, unit.VolumeSpec{Name: name, SizeBytes: size})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("volume %s (id %d) on minor %d", v.Name, v.ID, v.Minor)
	v = waitVolume(t, ctx, c, v.ID, syncTimeout, "the first sync of the volume", func(v unit.Volume) error {
		if v.State != unit.SyncUpToDate || v.Primary == 0 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	return v, v.Primary
}

// leg returns volume v's leg on PM pm.
func legOn(v unit.Volume, pm int) (unit.Leg, bool) {
	i := slices.IndexFunc(v.Legs, func(l unit.Leg) bool { return l.PM == pm })
	if i < 0 {
		return unit.Leg{}, false
	}
	return v.Legs[i], true
}

// procMinor reads the kernel's DRBD state of minor on pm.
func procMinor(ctx context.Context, pm *harness.PM, minor int) (drbd.Device, error) {
	b, err := pm.ReadFile(ctx, "/proc/drbd")
	if err != nil {
		return drbd.Device{}, err
	}
	p, err := drbd.ParseProc(b)
	if err != nil {
		return drbd.Device{}, err
	}
	for _, d := range p.Devices {
		if d.Minor == minor {
			return d, nil
		}
	}
	return drbd.Device{}, fmt.Errorf("minor %d not in /proc/drbd:\n%s", minor, b)
}

// failover creates a volume, writes a pattern on the PM where it is
// writable and powers that PM off; the survivor must take the volume over
// and read back exactly the pattern.
func failover(t *testing.T, ctx context.Context, u *harness.Unit, c *apiclient.Client) (v unit.Volume, lost, survivor int) {
	v, lost = mirroredVolume(t, ctx, c, "mirror", 32<<20)
	survivor = 3 - lost
	// Grown while both legs are up: both logical volumes, then the mirror.
	if _, err := c.GrowVolume(ctx, v.ID, 48<<20); err != nil {
		t.Fatal(err)
	}
	err := harness.WaitFor(ctx, syncTimeout, "the volume to grow to 48 MiB", func(ctx context.Context) (bool, error) {
		n, err := deviceBytes(ctx, u.PM(lost), v.Minor)
		if err != nil {
			return false, err
		}
		if v, err = c.Volume(ctx, v.ID); err != nil {
			return false, err
		}
		if n < 48<<20 || v.State != unit.SyncUpToDate {
			return met(false, "device of %d bytes, volume %s", n, v.State)
		}
		// The unit's view lags the kernel by a report: the resync of the
		// grown part must be over on the survivor's leg itself.
		d, err := procMinor(ctx, u.PM(survivor), v.Minor)
		if err != nil {
			return false, err
		}
		return met(d.CS == drbd.Connected && d.IsUpToDate() && d.PeerIsUpToDate(), "pm%d: %s %s/%s", survivor, d.CS, d.Disk, d.PeerDisk)
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 8 << 20
	sum, err := u.PM(lost).WritePattern(ctx, v.Device, 4096, n, 42, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d bytes (sha256 %s) on pm%d; powering it off", n, sum[:12], lost)
	if err := u.PM(lost).PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	v = waitVolume(t, ctx, c, v.ID, 2*time.Minute, fmt.Sprintf("pm%d to make the volume writable", survivor), func(v unit.Volume) error {
		if v.Primary != survivor || v.State != unit.SyncDegraded {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	got, err := u.PM(survivor).Sum(ctx, v.Device, 4096, n)
	if err != nil {
		t.Fatal(err)
	}
	if got != sum {
		t.Fatalf("pm%d reads sha256 %s after failover, pm%d wrote %s", survivor, got, lost, sum)
	}
	return v, lost, survivor
}

// deviceBytes is the size of /dev/drbd<minor> on pm.
func deviceBytes(ctx context.Context, pm *harness.PM, minor int) (int64, error) {
	b, err := pm.ReadFile(ctx, fmt.Sprintf("/sys/block/drbd%d/size", minor))
	if err != nil {
		return 0, err
	}
	var sectors int64
	_, err = fmt.Sscan(string(b), &sectors)
	return sectors * 512, err
}

func TestVolumeMirrors(t *testing.T) {
	ctx := t.Context()
	u, c := startUnit(t, 2)
	v, lost, survivor := failover(t, ctx, u, c)
	t.Logf("pm%d serves volume %s with pm%d's data after pm%d's loss", survivor, v.Name, lost, lost)
	res, err := u.PM(survivor).Exec(ctx, "/bin/dyadctl", "--url", mgmtURL, "volume", "list")
	if err != nil || res.Exit != 0 || !strings.Contains(string(res.Stdout), "mirror") || !strings.Contains(string(res.Stdout), "Degraded") {
		t.Errorf("dyadctl volume list: %v exit %d\n%s%s", err, res.Exit, res.Stdout, res.Stderr)
	}
	un, err := c.Unit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(un.Alerts, func(a unit.Alert) bool { return a.ID == fmt.Sprintf("volume/%d", v.ID) }) {
		t.Errorf("no alert for the volume that lost its mirror: %+v", un.Alerts)
	}
}

func TestStalePeerNeverPromotes(t *testing.T) {
	ctx := t.Context()
	u, c := startUnit(t, 2)
	v, stale, survivor := failover(t, ctx, u, c)
	// New data the stale PM does not have.
	newer, err := u.PM(survivor).WritePattern(ctx, v.Device, 0, 1<<20, 43, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("powering off pm%d and booting the stale pm%d alone", survivor, stale)
	if err := u.PM(survivor).PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	if err := u.PM(stale).PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	pm := u.PM(stale)
	// Alone, the stale PM becomes primary of the unit and tries to make the
	// volume writable; DRBD refuses (its leg is not known to be current and
	// the peer cannot be outdated) and the console says why.
	v = waitVolume(t, ctx, c, v.ID, 4*time.Minute, fmt.Sprintf("pm%d to refuse its outdated leg", stale), func(v unit.Volume) error {
		l, ok := legOn(v, stale)
		if v.State != unit.SyncOutdated || v.Primary != 0 || !ok || !strings.Contains(l.Detail, "will not make this leg writable") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	d, err := procMinor(ctx, pm, v.Minor)
	if err != nil {
		t.Fatal(err)
	}
	if d.Role != "Secondary" || d.IsUpToDate() {
		t.Errorf("stale pm%d's leg is %s/%s, want Secondary and not UpToDate", stale, d.Role, d.Disk)
	}
	t.Logf("stale pm%d: %s", stale, v.Detail)

	// The PM with the current data returns: the unit takes its side and the
	// stale leg is brought up to date from it.
	if err := u.PM(survivor).PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	v = waitVolume(t, ctx, c, v.ID, 4*time.Minute, "the volume in sync from the current leg", func(v unit.Volume) error {
		if v.State != unit.SyncUpToDate || v.Primary == 0 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if got, err := u.PM(v.Primary).Sum(ctx, v.Device, 0, 1<<20); err != nil || got != newer {
		t.Errorf("pm%d reads %s (%v), the current data is %s", v.Primary, got, err, newer)
	}
}

func TestResyncDirtyOnly(t *testing.T) {
	ctx := t.Context()
	u, c := startUnit(t, 2)
	v, p := mirroredVolume(t, ctx, c, "resync", 64<<20)
	s := 3 - p
	if err := u.PM(s).PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, ctx, c, v.ID, 2*time.Minute, "the primary to lose the mirror", func(v unit.Volume) error {
		if v.State != unit.SyncDegraded {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	const n = 8 << 20
	if _, err := u.PM(p).WritePattern(ctx, v.Device, 16<<20, n, 7, true); err != nil {
		t.Fatal(err)
	}
	if d, err := procMinor(ctx, u.PM(p), v.Minor); err == nil {
		t.Logf("pm%d marks %d KiB out of sync", p, d.OOS)
	}
	if err := u.PM(s).PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, ctx, c, v.ID, syncTimeout, "the resync to end", func(v unit.Volume) error {
		if v.State != unit.SyncUpToDate {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	d, err := procMinor(ctx, u.PM(s), v.Minor)
	if err != nil {
		t.Fatal(err)
	}
	got := d.NR * 1024
	const granularity = 64 << 10
	t.Logf("pm%d received %d bytes for %d bytes written while it was off (ratio %.3f)", s, got, n, float64(got)/n)
	if got > n*11/10+granularity || got < n {
		t.Errorf("resync moved %d bytes for %d dirty bytes, want between %d and %d", got, n, n, n*11/10+granularity)
	}

	// Deleting removes both legs, then the volume.
	if err := c.DeleteVolume(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	err = harness.WaitFor(ctx, time.Minute, "the volume to go", func(ctx context.Context) (bool, error) {
		vols, err := c.Volumes(ctx)
		return met(err == nil && len(vols) == 0, "volumes %+v, %v", vols, err)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, pm := range []int{p, s} {
		if _, err := u.PM(pm).Sum(ctx, "/dev/dyad_sg1/"+fmt.Sprintf("vol%d", v.ID), 0, 4096); err == nil {
			t.Errorf("pm%d still has the deleted volume's logical volume", pm)
		}
	}
}

// A split brain cannot arise by itself any more (TestPartitionOneWriter):
// here an operator forces quorum on a PM that cannot prove its peer down,
// which is the risk Force Quorum warns of.
func TestSplitBrainDetected(t *testing.T) {
	ctx := t.Context()
	u := harness.StartT(t, harness.Options{N: 2, NoQuorum: true})
	c := client(u)
	v, p := mirroredVolume(t, ctx, c, "split", 32<<20)
	s := 3 - p
	t.Logf("cutting every link of pm%d", p)
	if err := u.PM(p).SetAllLinks(ctx, false); err != nil {
		t.Fatal(err)
	}
	// Without a quorum server the primary keeps running and the
	// secondary fences itself; back alone, it waits for its peer.
	err := harness.WaitFor(ctx, formTimeout, fmt.Sprintf("pm%d alone, waiting for quorum", s), func(ctx context.Context) (bool, error) {
		un, err := c.Unit(ctx)
		if err != nil {
			return false, err
		}
		return met(un.Primary == s && un.Quorum.Verdict == "wait", "primary %d, quorum %+v", un.Primary, un.Quorum)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(u.PM(s).SerialLog(), fenceLine) {
		t.Errorf("pm%d did not fence itself", s)
	}
	if _, err := c.ForceQuorum(ctx); err != nil {
		t.Fatal(err)
	}
	err = harness.WaitFor(ctx, 2*time.Minute, fmt.Sprintf("pm%d to make the volume writable too", s), func(ctx context.Context) (bool, error) {
		d, err := procMinor(ctx, u.PM(s), v.Minor)
		if err != nil {
			return false, err
		}
		return met(d.Role == "Primary", "pm%d's leg is %s", s, d.Role)
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 4 << 20
	sums := map[int]string{}
	for _, pm := range []int{p, s} {
		sum, err := u.PM(pm).WritePattern(ctx, v.Device, 0, n, int64(pm), true)
		if err != nil {
			t.Fatal(err)
		}
		sums[pm] = sum
	}
	t.Logf("both PMs wrote; reconnecting pm%d", p)
	if err := u.PM(p).SetAllLinks(ctx, true); err != nil {
		t.Fatal(err)
	}
	v = waitVolume(t, ctx, c, v.ID, 3*time.Minute, "the split brain to show", func(v unit.Volume) error {
		if v.State != unit.SyncSplitBrain || len(v.SplitBrain) != 2 {
			return fmt.Errorf("not yet")
		}
		if v.SplitBrain[0].Generation == v.SplitBrain[1].Generation {
			return fmt.Errorf("both sides show generation %s", v.SplitBrain[0].Generation)
		}
		return nil
	})
	t.Logf("split brain: %+v", v.SplitBrain)
	// Nothing was discarded: each PM's leg holds what it wrote.
	for _, pm := range []int{p, s} {
		l, _ := legOn(v, pm)
		got, err := u.PM(pm).Sum(ctx, l.Backing, 0, n)
		if err != nil {
			t.Fatal(err)
		}
		if got != sums[pm] {
			t.Errorf("pm%d's leg %s holds %s, it wrote %s", pm, l.Backing, got, sums[pm])
		}
	}
	// The operator keeps the side of the PM now primary.
	un, err := c.Unit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	keep := un.Primary
	loser := 3 - keep
	if _, err := c.ResolveSplitBrain(ctx, v.ID, keep); err != nil {
		t.Fatal(err)
	}
	v = waitVolume(t, ctx, c, v.ID, syncTimeout, "the resolution to sync the legs", func(v unit.Volume) error {
		if v.State != unit.SyncUpToDate || len(v.Snapshots) != 1 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	snap := v.Snapshots[0]
	if snap.PM != loser {
		t.Errorf("snapshot %+v, want it on the losing pm%d", snap, loser)
	}
	l, _ := legOn(v, loser)
	snapDev := l.Backing[:strings.LastIndexByte(l.Backing, '/')+1] + snap.Name
	if got, err := u.PM(loser).Sum(ctx, snapDev, 0, n); err != nil || got != sums[loser] {
		t.Errorf("snapshot %s holds %s (%v), the losing side wrote %s", snapDev, got, err, sums[loser])
	}
	if got, err := u.PM(loser).Sum(ctx, l.Backing, 0, n); err != nil || got != sums[keep] {
		t.Errorf("pm%d's leg holds %s (%v) after the resolution, the kept side wrote %s", loser, got, err, sums[keep])
	}
	if _, err := c.DeleteSnapshot(ctx, v.ID, snap.Name); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, ctx, c, v.ID, time.Minute, "the snapshot to go", func(v unit.Volume) error {
		if len(v.Snapshots) != 0 {
			return fmt.Errorf("snapshots %+v", v.Snapshots)
		}
		return nil
	})
}

func TestLegFailureDetach(t *testing.T) {
	ctx := t.Context()
	u, c := startUnit(t, 2)
	v, p := mirroredVolume(t, ctx, c, "legfail", 32<<20)
	s := 3 - p
	l, _ := legOn(v, p)
	if len(l.Disks) == 0 {
		t.Fatalf("leg on pm%d names no disk: %+v", p, l)
	}
	drive := map[string]string{"/dev/vdb": "data0", "/dev/vdc": "data1"}[l.Disks[0]]
	t.Logf("failing disk %s (%s) under pm%d's leg", l.Disks[0], drive, p)
	if err := u.PM(p).FailDisk(ctx, drive); err != nil {
		t.Fatal(err)
	}
	const n = 4 << 20
	sum, err := u.PM(p).WritePattern(ctx, v.Device, 0, n, 5, true)
	if err != nil {
		t.Fatalf("writing to the volume after its leg's disk failed: %v", err)
	}
	if got, err := u.PM(p).Sum(ctx, v.Device, 0, n); err != nil || got != sum {
		t.Errorf("reading back on pm%d: %s %v, wrote %s", p, got, err, sum)
	}
	v = waitVolume(t, ctx, c, v.ID, time.Minute, "the failed leg to be detached", func(v unit.Volume) error {
		l, _ := legOn(v, p)
		if !l.Failed || v.State != unit.SyncDegraded || v.Primary != p {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	ls, _ := legOn(v, s)
	if got, err := u.PM(s).Sum(ctx, ls.Backing, 0, n); err != nil || got != sum {
		t.Errorf("pm%d's leg holds %s (%v), pm%d wrote %s", s, got, err, p, sum)
	}
	un, err := c.Unit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(un.Alerts, func(a unit.Alert) bool { return a.ID == fmt.Sprintf("volume/%d/leg/%d", v.ID, p) }) {
		t.Errorf("no alert for the failed leg: %+v", un.Alerts)
	}
}

func TestForeignDiskActivation(t *testing.T) {
	ctx := t.Context()
	// PM 2's third data disk holds a file system before the unit exists.
	u := harness.StartT(t, harness.Options{N: 2, DataDisks: 3, DataDiskMiB: 256,
		PrepareDataDisk: func(pm, disk int, path string) error {
			if pm != 2 || disk != 2 {
				return nil
			}
			out, err := exec.CommandContext(ctx, "mke2fs", "-F", "-q", "-t", "ext4", path).CombinedOutput()
			if err != nil {
				return fmt.Errorf("mke2fs: %v: %s", err, out)
			}
			return nil
		}})
	c := client(u)
	waitFormed(t, ctx, c)
	var disks []unit.Disk
	err := harness.WaitFor(ctx, 2*time.Minute, "the initial storage group of the blank disks only", func(ctx context.Context) (bool, error) {
		var err error
		if disks, err = c.Disks(ctx); err != nil {
			return false, err
		}
		members := 0
		for _, d := range disks {
			if d.State == unit.DiskMember {
				members++
			}
		}
		return met(members == 5, "%d member disks in %+v", members, disks)
	})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(disks, func(d unit.Disk) bool { return d.PM == 2 && d.Name == "vdd" })
	if i < 0 || disks[i].State != unit.DiskForeign || !strings.Contains(disks[i].Detail, "ext4") {
		t.Fatalf("pm2's vdd is %+v, want foreign with an ext4 file system", disks)
	}

	// Without the word that it erases, the disk is refused, by the CLI too.
	// (Exec fails on a non-zero exit, with the command's output.)
	if _, err := u.PM(1).Exec(ctx, "/bin/dyadctl", "--url", mgmtURL, "disk", "activate", "2", "vdd"); err == nil || !strings.Contains(err.Error(), "run again with --erase") {
		t.Errorf("dyadctl disk activate without --erase: %v", err)
	}
	if _, err := c.ActivateDisk(ctx, 2, "vdd", 1, false); err == nil || !strings.Contains(err.Error(), "holds data") {
		t.Errorf("activating a foreign disk without erase: %v", err)
	}
	before, err := c.StorageGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := u.PM(1).Exec(ctx, "/bin/dyadctl", "--url", mgmtURL, "disk", "activate", "2", "vdd", "--group", "1", "--erase")
	if err != nil || res.Exit != 0 {
		t.Fatalf("dyadctl disk activate --erase: %v exit %d\n%s%s", err, res.Exit, res.Stdout, res.Stderr)
	}
	err = harness.WaitFor(ctx, time.Minute, "pm2's vdd to join the storage group", func(ctx context.Context) (bool, error) {
		disks, err := c.Disks(ctx)
		if err != nil {
			return false, err
		}
		i := slices.IndexFunc(disks, func(d unit.Disk) bool { return d.PM == 2 && d.Name == "vdd" })
		return met(i >= 0 && disks[i].State == unit.DiskMember && disks[i].Group == 1, "disks %+v", disks)
	})
	if err != nil {
		t.Fatal(err)
	}
	after, err := c.StorageGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("storage group capacity %s before, %s after", unit.FormatBytes(before[0].CapacityBytes), unit.FormatBytes(after[0].CapacityBytes))
	if after[0].CapacityBytes <= before[0].CapacityBytes {
		t.Errorf("capacity %d after adding a disk to the smaller PM, was %d", after[0].CapacityBytes, before[0].CapacityBytes)
	}
}
