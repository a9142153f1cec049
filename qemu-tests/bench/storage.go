package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/dyad-ha/dyad/qemu-tests/harness"
	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/storage"
	"github.com/dyad-ha/dyad/services/storage/drbd"
	"github.com/dyad-ha/dyad/services/storage/lvm"
	"github.com/dyad-ha/dyad/services/unit"
)

// volumeSyncTimeout covers a first sync and a resync of the bench volume.
const volumeSyncTimeout = 4 * time.Minute

// onPM runs the lvm command on pm through the test channel, so the bench
// uses the same argv as the agent.
func onPM(pm *harness.PM) lvm.Runner {
	return func(ctx context.Context, argv []string) ([]byte, error) {
		res, err := pm.Exec(ctx, append([]string{"/sbin/lvm"}, argv...)...)
		if err != nil {
			return nil, err
		}
		if res.Exit != 0 {
			return res.Stdout, fmt.Errorf("lvm %s: exit %d: %s", argv[0], res.Exit, strings.TrimSpace(string(res.Stderr)))
		}
		return res.Stdout, nil
	}
}

func waitVolume(ctx context.Context, poll *apiclient.Client, id int, what string, ok func(unit.Volume) bool) (unit.Volume, error) {
	var v unit.Volume
	err := harness.WaitFor(ctx, volumeSyncTimeout, what, func(ctx context.Context) (bool, error) {
		var err error
		if v, err = poll.Volume(ctx, id); err != nil {
			return false, err
		}
		if !ok(v) {
			return false, fmt.Errorf("volume is %s (%s)", v.State, v.Detail)
		}
		return true, nil
	})
	return v, err
}

// storageBench measures, inside the PM where a mirrored volume is
// writable, the cost of the mirror against a plain logical volume of the
// same volume group, and how much a resync copies after the peer was off.
// It removes what it created.
func storageBench(ctx context.Context, log *slog.Logger, u *harness.Unit, poll *apiclient.Client) (_ []sample, err error) {
	err = harness.WaitFor(ctx, volumeSyncTimeout, "the initial storage group", func(ctx context.Context) (bool, error) {
		gs, err := poll.StorageGroups(ctx)
		if err != nil {
			return false, err
		}
		if len(gs) == 0 || gs[0].FreeBytes < 256<<20 {
			return false, fmt.Errorf("storage groups %+v", gs)
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	v, err := poll.CreateVolume(ctx, unit.VolumeSpec{Name: "bench", SizeBytes: 64 << 20})
	if err != nil {
		return nil, err
	}
	syncStart := time.Now()
	if v, err = waitVolume(ctx, poll, v.ID, "the bench volume's first sync", func(v unit.Volume) bool { return v.State == unit.SyncUpToDate && v.Primary != 0 }); err != nil {
		return nil, err
	}
	s := []sample{{"volume_first_sync_seconds", time.Since(syncStart).Seconds(), "s"}}
	p := v.Primary
	pm := u.PM(p)
	vg := storage.VGName(v.Group)
	l := lvm.New(onPM(pm))
	if err := l.CreateLV(ctx, vg, "benchraw", 64<<20); err != nil {
		return nil, err
	}
	defer func() {
		err = errors.Join(err, l.RemoveLV(context.WithoutCancel(ctx), vg, "benchraw"))
		if derr := poll.DeleteVolume(context.WithoutCancel(ctx), v.ID); derr != nil {
			err = errors.Join(err, derr)
			return
		}
		err = errors.Join(err, harness.WaitFor(ctx, time.Minute, "the bench volume to go", func(ctx context.Context) (bool, error) {
			vols, err := poll.Volumes(ctx)
			return err == nil && len(vols) == 0, err
		}))
	}()
	raw := lvm.DevicePath(vg, "benchraw")

	// The same writes on both devices, alternating, so drift in the host's
	// load hits both alike.
	var rawSeq, repSeq, rawLat, repLat []float64
	for range 3 {
		r, err := pm.DirectWrite(ctx, raw, 0, 1<<20, 32, true, false)
		if err != nil {
			return nil, err
		}
		m, err := pm.DirectWrite(ctx, v.Device, 0, 1<<20, 32, true, false)
		if err != nil {
			return nil, err
		}
		rawSeq, repSeq = append(rawSeq, r.MBps()), append(repSeq, m.MBps())
		r, err = pm.DirectWrite(ctx, raw, 32<<20, 4096, 200, true, true)
		if err != nil {
			return nil, err
		}
		m, err = pm.DirectWrite(ctx, v.Device, 32<<20, 4096, 200, true, true)
		if err != nil {
			return nil, err
		}
		rawLat, repLat = append(rawLat, float64(r.P50)), append(repLat, float64(m.P50))
	}
	log.Info("storage bench", "raw_MBps", rawSeq, "mirror_MBps", repSeq, "raw_4k_p50_ns", rawLat, "mirror_4k_p50_ns", repLat)
	s = append(s,
		sample{"repl_seq_write_ratio", median(repSeq) / median(rawSeq), "ratio"},
		sample{"repl_4k_write_latency_ratio", median(repLat) / median(rawLat), "ratio"},
		sample{"raw_lv_seq_write_mbps", median(rawSeq), "MB/s"},
		sample{"raw_lv_4k_write_p50_ms", median(rawLat) / 1e6, "ms"},
	)

	// Resync: the peer off, 8 MiB written, the peer back.
	peer := u.PM(3 - p)
	if err := peer.PowerOff(ctx); err != nil {
		return nil, err
	}
	if _, err := waitVolume(ctx, poll, v.ID, "the volume to lose its mirror", func(v unit.Volume) bool { return v.State == unit.SyncDegraded }); err != nil {
		return nil, err
	}
	const dirty = 8 << 20
	if _, err := pm.WritePattern(ctx, v.Device, 40<<20, dirty, 1, true); err != nil {
		return nil, err
	}
	if err := peer.PowerOn(ctx); err != nil {
		return nil, err
	}
	if _, err := waitVolume(ctx, poll, v.ID, "the resync", func(v unit.Volume) bool { return v.State == unit.SyncUpToDate }); err != nil {
		return nil, err
	}
	b, err := peer.ReadFile(ctx, "/proc/drbd")
	if err != nil {
		return nil, err
	}
	proc, err := drbd.ParseProc(b)
	if err != nil {
		return nil, err
	}
	d, ok := proc.Device(v.Minor)
	if !ok {
		return nil, fmt.Errorf("minor %d not in pm%d's /proc/drbd", v.Minor, 3-p)
	}
	s = append(s, sample{"resync_bytes_ratio", float64(d.ReceivedBytes()) / dirty, "ratio"})
	// The next measurements need the unit formed again.
	_, err = waitSteady(ctx, poll, bootTimeout, "the unit formed again after the resync")
	return s, err
}
