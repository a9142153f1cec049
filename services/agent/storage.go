package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dyad-ha/dyad/services/cluster"
	"github.com/dyad-ha/dyad/services/pmconfig"
	"github.com/dyad-ha/dyad/services/storage"
	"github.com/dyad-ha/dyad/services/storage/drbdhelper"
	"github.com/dyad-ha/dyad/services/store"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/webui"
)

// Storage is what the agent needs of the PM's storage reconciler.
type Storage interface {
	Reconcile(ctx context.Context, d storage.Desired) storage.Report
	Report() storage.Report
	Outdate(ctx context.Context, volume int) error
	SplitBrain(volume int)
	LegFailed(minor int)
	PeerFenced(volume int)
}

// storageSource is the console's storage API: nil on a PM without storage.
func (a *Agent) storageSource() webui.StorageSource {
	if a.opt.Storage == nil {
		return nil
	}
	return a
}

// ReplicationAddrs are the addresses of node 1 and node 2 that carry the
// mirrors: the first sync link when one is configured, else priv0.
func ReplicationAddrs(cfg pmconfig.Config) [2]netip.Addr {
	for _, path := range heartbeatPaths(cfg) {
		if m := syncPath.FindStringSubmatch(path); m != nil {
			k, _ := strconv.Atoi(m[1])
			return [2]netip.Addr{syncAddr(k, 1).Addr(), syncAddr(k, 2).Addr()}
		}
	}
	return [2]netip.Addr{pmconfig.Priv0Addr(1).Addr(), pmconfig.Priv0Addr(2).Addr()}
}

// storageRecords reads the desired storage from this PM's copy of the unit
// database.
func (a *Agent) storageRecords() (storage.Records, error) {
	var rs storage.Records
	err := a.db.View(func(r store.Reader) error {
		var err error
		rs, err = storage.Load(r)
		return err
	})
	return rs, err
}

// reconcileStorage brings this PM's disks, volume groups and mirrors to the
// unit database's desired set. Both PMs run it on their own copy of the
// database; volumes are writable on the primary.
func (a *Agent) reconcileStorage(ctx context.Context) {
	if a.opt.Storage == nil {
		return
	}
	rs, err := a.storageRecords()
	if err != nil {
		a.log.Error("storage records", "err", err)
		return
	}
	primary, dual := a.volumeRoles(a.Role() == unit.RolePrimary)
	v := a.mon.View(time.Now())
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	a.opt.Storage.Reconcile(ctx, storage.Desired{
		Records:     rs,
		Primary:     primary,
		DualPrimary: dual,
		PeerLost:    !v.Seen,
		Forced:      !v.Seen && a.isForced(),
	})
	// A VM may be waiting for its volumes.
	a.kickVMs()
}

// storageReports are both PMs' last storage reports; the peer's only while
// it is heard.
func (a *Agent) storageReports() map[int]*storage.Report {
	out := map[int]*storage.Report{}
	if a.opt.Storage == nil {
		return out
	}
	self := a.opt.Storage.Report()
	if !self.At.IsZero() {
		out[a.cfg.Node] = &self
	}
	if a.mon.View(time.Now()).Seen {
		a.mu.Lock()
		peer := a.peerReport.Storage
		a.mu.Unlock()
		if peer != nil {
			out[a.cfg.Peer()] = peer
		}
	}
	return out
}

func (a *Agent) storageView() (storage.Records, storage.View, error) {
	rs, err := a.storageRecords()
	if err != nil {
		return rs, storage.View{}, err
	}
	return rs, storage.Summarize(rs, a.storageReports(), time.Now().UTC()), nil
}

// reconcileStorageRecords is the primary's upkeep of the storage records:
// the initial storage group, and forgetting what both PMs have finished.
func (a *Agent) reconcileStorageRecords(ctx context.Context, rep store.Replicator) error {
	if a.opt.Storage == nil {
		return nil
	}
	rs, err := a.storageRecords()
	if err != nil {
		return err
	}
	reports := a.storageReports()
	both := reports[1] != nil && reports[2] != nil
	var groups []storage.GroupRecord
	var puts []storage.VolumeRecord
	var drops []int
	if len(rs.Groups) == 0 && both {
		// The unit's first storage group takes the blank disks of both
		// PMs, as an installer would; later disks join on command.
		g := storage.GroupRecord{ID: 1, Name: "initial", Disks: map[int][]storage.DiskRef{}, Created: time.Now().UTC()}
		for _, n := range []int{1, 2} {
			for _, d := range reports[n].Disks {
				if d.State == unit.DiskBlank {
					g.Disks[n] = append(g.Disks[n], storage.DiskRef{Name: d.Name, Serial: d.Serial})
				}
			}
		}
		if len(g.Disks[1]) > 0 && len(g.Disks[2]) > 0 {
			a.log.Info("creating the initial storage group from the blank disks of both PMs", "pm1", g.Disks[1], "pm2", g.Disks[2])
			groups = append(groups, g)
		}
	}
	for _, v := range rs.Volumes {
		legs := 0
		forced, split, connected := false, false, 0
		var snaps []string
		for _, n := range []int{1, 2} {
			l, ok := reports[n].Leg(v.ID)
			if !ok {
				continue
			}
			legs++
			forced = forced || l.Forced
			split = split || l.SplitBrain
			if l.Connection == "Connected" || strings.HasPrefix(l.Connection, "Sync") {
				connected++
			}
			for _, s := range l.Snapshots {
				snaps = append(snaps, s.Name)
			}
		}
		switch {
		case v.Deleted && both && legs == 0:
			drops = append(drops, v.ID)
			continue
		case v.Deleted:
			continue
		}
		changed := false
		if !v.Initialized && forced {
			v.Initialized, changed = true, true
		}
		if v.Resolve != nil && both && !split && connected == 2 {
			a.log.Info("split brain resolved", "volume", v.Name, "survivor", v.Resolve.Survivor)
			v.Resolve, changed = nil, true
		}
		if len(v.DropSnapshots) > 0 && both {
			keep := slices.DeleteFunc(slices.Clone(v.DropSnapshots), func(s string) bool { return !slices.Contains(snaps, s) })
			if len(keep) != len(v.DropSnapshots) {
				v.DropSnapshots, changed = keep, true
			}
		}
		if changed {
			puts = append(puts, v)
		}
	}
	if len(groups) == 0 && len(puts) == 0 && len(drops) == 0 {
		return nil
	}
	return a.db.Update(ctx, rep, func(w store.Writer) error {
		for _, g := range groups {
			if err := storage.PutGroup(w, g); err != nil {
				return err
			}
		}
		for _, v := range puts {
			if err := storage.PutVolume(w, v); err != nil {
				return err
			}
		}
		for _, id := range drops {
			if err := storage.DeleteVolume(w, id); err != nil {
				return err
			}
		}
		return nil
	})
}

// errStorage is the answer of the storage API on a PM without storage.
var errStorage = fmt.Errorf("%w: this PM runs without storage", webui.ErrConflict)

// Volumes implements webui.StorageSource.
func (a *Agent) Volumes(ctx context.Context) ([]unit.Volume, error) {
	_, v, err := a.storageView()
	if v.Volumes == nil {
		v.Volumes = []unit.Volume{}
	}
	return v.Volumes, err
}

// Volume implements webui.StorageSource.
func (a *Agent) Volume(ctx context.Context, id int) (unit.Volume, error) {
	vols, err := a.Volumes(ctx)
	if err != nil {
		return unit.Volume{}, err
	}
	i := slices.IndexFunc(vols, func(v unit.Volume) bool { return v.ID == id })
	if i < 0 {
		return unit.Volume{}, fmt.Errorf("%w: no volume %d", webui.ErrNotFound, id)
	}
	return vols[i], nil
}

// StorageGroups implements webui.StorageSource.
func (a *Agent) StorageGroups(ctx context.Context) ([]unit.StorageGroup, error) {
	_, v, err := a.storageView()
	if v.Groups == nil {
		v.Groups = []unit.StorageGroup{}
	}
	return v.Groups, err
}

// Disks implements webui.StorageSource.
func (a *Agent) Disks(ctx context.Context) ([]unit.Disk, error) {
	_, v, err := a.storageView()
	if v.Disks == nil {
		v.Disks = []unit.Disk{}
	}
	return v.Disks, err
}

// updateVolume changes the record of volume id with fn and returns the
// volume as the API shows it.
func (a *Agent) updateVolume(ctx context.Context, id int, fn func(rs storage.Records, v storage.VolumeRecord, view storage.View) (storage.VolumeRecord, error)) (unit.Volume, error) {
	if a.opt.Storage == nil {
		return unit.Volume{}, errStorage
	}
	rs, view, err := a.storageView()
	if err != nil {
		return unit.Volume{}, err
	}
	v, ok := rs.Volume(id)
	if !ok {
		return unit.Volume{}, fmt.Errorf("%w: no volume %d", webui.ErrNotFound, id)
	}
	v, err = fn(rs, v, view)
	if err != nil {
		return unit.Volume{}, err
	}
	if err := a.commit(ctx, func(w store.Writer) error { return storage.PutVolume(w, v) }); err != nil {
		return unit.Volume{}, fmt.Errorf("recording the change: %w", err)
	}
	a.kickStorage()
	return a.Volume(ctx, id)
}

// CreateVolume implements webui.StorageSource.
func (a *Agent) CreateVolume(ctx context.Context, spec unit.VolumeSpec) (unit.Volume, error) {
	if a.opt.Storage == nil {
		return unit.Volume{}, errStorage
	}
	rs, view, err := a.storageView()
	if err != nil {
		return unit.Volume{}, err
	}
	v, err := storage.NewVolume(rs, spec, view.Groups, time.Now())
	if err != nil {
		return unit.Volume{}, fmt.Errorf("%w: %w", webui.ErrInvalid, err)
	}
	if err := a.commit(ctx, func(w store.Writer) error { return storage.PutVolume(w, v) }); err != nil {
		return unit.Volume{}, fmt.Errorf("recording the volume: %w", err)
	}
	a.log.Info("volume created", "volume", v.Name, "id", v.ID, "bytes", v.SizeBytes, "group", v.Group, "minor", v.Minor)
	a.kickStorage()
	return a.Volume(ctx, v.ID)
}

// GrowVolume implements webui.StorageSource.
func (a *Agent) GrowVolume(ctx context.Context, id int, size int64) (unit.Volume, error) {
	return a.updateVolume(ctx, id, func(_ storage.Records, v storage.VolumeRecord, view storage.View) (storage.VolumeRecord, error) {
		v, err := storage.GrowVolume(v, size, view.Groups)
		if err != nil {
			return v, fmt.Errorf("%w: %w", webui.ErrInvalid, err)
		}
		return v, nil
	})
}

// DeleteVolume implements webui.StorageSource.
func (a *Agent) DeleteVolume(ctx context.Context, id int) error {
	_, err := a.updateVolume(ctx, id, func(_ storage.Records, v storage.VolumeRecord, _ storage.View) (storage.VolumeRecord, error) {
		if v.Deleted {
			return v, fmt.Errorf("%w: volume %s is being deleted already", webui.ErrConflict, v.Name)
		}
		if vmName := a.usedBy(v.ID); vmName != "" {
			return v, fmt.Errorf("%w: volume %s is attached to VM %s; detach it or remove the VM first", webui.ErrConflict, v.Name, vmName)
		}
		v.Deleted = true
		return v, nil
	})
	return err
}

// ResolveSplitBrain implements webui.StorageSource.
func (a *Agent) ResolveSplitBrain(ctx context.Context, id, survivor int) (unit.Volume, error) {
	return a.updateVolume(ctx, id, func(_ storage.Records, v storage.VolumeRecord, view storage.View) (storage.VolumeRecord, error) {
		if survivor != 1 && survivor != 2 {
			return v, fmt.Errorf("%w: survivor must be PM 1 or 2, not %d", webui.ErrInvalid, survivor)
		}
		i := slices.IndexFunc(view.Volumes, func(u unit.Volume) bool { return u.ID == id })
		if i < 0 || view.Volumes[i].State != unit.SyncSplitBrain {
			return v, fmt.Errorf("%w: volume %s is not in split brain", webui.ErrConflict, v.Name)
		}
		if len(view.Volumes[i].SplitBrain) < 2 {
			return v, fmt.Errorf("%w: volume %s: both PMs must be up to resolve its split brain", webui.ErrConflict, v.Name)
		}
		if v.Resolve != nil {
			return v, fmt.Errorf("%w: volume %s is being resolved already (keeping PM %d's side)", webui.ErrConflict, v.Name, v.Resolve.Survivor)
		}
		v.Resolve = &storage.Resolve{Survivor: survivor, At: time.Now().UTC()}
		a.log.Warn("split brain resolution", "volume", v.Name, "survivor", survivor, "snapshot", v.Resolve.SnapshotName(v.ID))
		return v, nil
	})
}

// DeleteSnapshot implements webui.StorageSource.
func (a *Agent) DeleteSnapshot(ctx context.Context, id int, name string) (unit.Volume, error) {
	return a.updateVolume(ctx, id, func(_ storage.Records, v storage.VolumeRecord, view storage.View) (storage.VolumeRecord, error) {
		i := slices.IndexFunc(view.Volumes, func(u unit.Volume) bool { return u.ID == id })
		if i < 0 || !slices.ContainsFunc(view.Volumes[i].Snapshots, func(s unit.Snapshot) bool { return s.Name == name }) {
			return v, fmt.Errorf("%w: volume %s has no snapshot %q", webui.ErrNotFound, v.Name, name)
		}
		v.DropSnapshots = append(v.DropSnapshots, name)
		return v, nil
	})
}

// ActivateDisk implements webui.StorageSource.
func (a *Agent) ActivateDisk(ctx context.Context, pm int, name string, group int, erase bool) (unit.Disk, error) {
	if a.opt.Storage == nil {
		return unit.Disk{}, errStorage
	}
	rs, view, err := a.storageView()
	if err != nil {
		return unit.Disk{}, err
	}
	i := slices.IndexFunc(view.Disks, func(d unit.Disk) bool { return d.PM == pm && d.Name == name })
	if i < 0 {
		return unit.Disk{}, fmt.Errorf("%w: PM %d has no disk %q (or does not report)", webui.ErrNotFound, pm, name)
	}
	d := view.Disks[i]
	switch d.State {
	case unit.DiskMember:
		return d, fmt.Errorf("%w: disk %s of PM %d is in storage group %d already", webui.ErrConflict, name, pm, d.Group)
	case unit.DiskSystem:
		return d, fmt.Errorf("%w: disk %s of PM %d is its system disk", webui.ErrConflict, name, pm)
	case unit.DiskFailed:
		return d, fmt.Errorf("%w: disk %s of PM %d failed: %s", webui.ErrConflict, name, pm, d.Detail)
	case unit.DiskForeign:
		if !erase {
			return d, fmt.Errorf("%w: disk %s of PM %d holds data (%s); activating it erases it: repeat with erase", webui.ErrConflict, name, pm, d.Detail)
		}
	}
	var g storage.GroupRecord
	switch found, ok := rs.Group(group); {
	case ok:
		g = found
	case group == 0 && len(rs.Groups) > 0:
		g = rs.Groups[0]
	case group == 0 || group == len(rs.Groups)+1:
		g = storage.GroupRecord{ID: len(rs.Groups) + 1, Name: "group" + strconv.Itoa(len(rs.Groups)+1), Disks: map[int][]storage.DiskRef{}, Created: time.Now().UTC()}
	default:
		return d, fmt.Errorf("%w: no storage group %d", webui.ErrNotFound, group)
	}
	for _, refs := range g.Disks {
		for _, r := range refs {
			if r.Serial != "" && r.Serial == d.Serial {
				return d, fmt.Errorf("%w: disk %s (serial %s) is joining storage group %s already", webui.ErrConflict, name, d.Serial, g.Name)
			}
		}
	}
	if g.Disks == nil {
		g.Disks = map[int][]storage.DiskRef{}
	}
	g.Disks[pm] = append(g.Disks[pm], storage.DiskRef{Name: d.Name, Serial: d.Serial, Erase: erase && d.State == unit.DiskForeign})
	if err := a.commit(ctx, func(w store.Writer) error { return storage.PutGroup(w, g) }); err != nil {
		return d, fmt.Errorf("recording the disk: %w", err)
	}
	a.log.Info("disk activated", "pm", pm, "disk", name, "group", g.ID, "erase", erase && d.State == unit.DiskForeign)
	a.kickStorage()
	return d, nil
}

// kickStorage runs the storage reconciler soon rather than at its next tick.
func (a *Agent) kickStorage() {
	select {
	case a.storageKick <- struct{}{}:
	default:
	}
}

// serveOutdate is the peer's request to outdate this PM's leg of a volume
// (resource-level fencing): the peer lost the mirror's connection but still
// hears this PM, so this leg must not become Primary with old data.
func (a *Agent) serveOutdate(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil || id <= 0 || a.opt.Storage == nil {
		http.Error(w, "bad volume", http.StatusBadRequest)
		return
	}
	if err := a.opt.Storage.Outdate(r.Context(), id); err != nil {
		a.log.Warn("outdating this leg on the peer's request failed", "volume", id, "err", err)
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	a.log.Warn("this leg is outdated on the peer's request", "volume", id)
	w.WriteHeader(http.StatusNoContent)
}

// Fence-peer answers of DRBD's helper protocol.
const (
	fenceFailed      = 1
	fenceOutdated    = 4
	fencePeerPrimary = 6
	fenceStonithed   = 7
)

// fenceWait bounds fence-peer: DRBD holds the volume's I/O (fencing
// resource-and-stonith) until the answer, and a PM that can neither
// outdate its peer nor prove its right to run within it keeps it held.
const fenceWait = time.Minute

// fencePeer answers DRBD's fence-peer call for a volume: the peer's leg
// must be outdated before this PM writes without it. With the peer heard,
// its agent outdates the leg; with the peer silent on every path, this PM
// writes alone only with the right to run VMs (DESIGN.md §6), and waits
// while the lease is undecided. I/O stays frozen meanwhile, so a PM that
// loses never acknowledges a write its peer lacks.
func (a *Agent) fencePeer(ctx context.Context, id int) int {
	ctx, cancel := context.WithTimeout(ctx, fenceWait)
	defer cancel()
	var errs []error
	for {
		if !a.mon.View(time.Now()).Seen {
			switch au := a.authority(); au.Verdict {
			case cluster.Run:
				// "Stonithed", not "unreachable": the peer lost the right to
				// write (its lease ran out and it reset itself, its BMC says
				// it is off, or an operator forced quorum). DRBD then takes
				// this leg as current even if it is only Consistent, with one
				// new data generation; "unreachable" would leave a Consistent
				// leg to primary --force, which makes two and so a split
				// brain when the peer returns.
				a.log.Warn("fence-peer: the peer is silent on every path and this PM may run alone", "volume", id, "reason", au.Reason)
				return fenceStonithed
			case cluster.Lose:
				a.log.Error("fence-peer: the peer is silent and this PM lost the right to run; the volume's I/O stays frozen", "volume", id, "reason", au.Reason)
				return fenceFailed
			}
		} else {
			code, err := a.outdatePeer(ctx, id)
			if err == nil {
				return code
			}
			errs = append(errs, err)
		}
		select {
		case <-ctx.Done():
			a.log.Error("fence-peer: could not outdate the peer's leg", "volume", id, "err", errors.Join(errs...))
			return fenceFailed
		case <-time.After(cluster.JudgeInterval):
		}
	}
}

// outdatePeer asks the peer's agent to outdate its leg of volume id.
func (a *Agent) outdatePeer(ctx context.Context, id int) (int, error) {
	status, err := a.postPeer(ctx, fmt.Sprintf("peer/v1/storage/volumes/%d/outdate", id), nil)
	switch {
	case err == nil && status == http.StatusNoContent:
		a.log.Warn("fence-peer: the peer's leg is outdated", "volume", id)
		return fenceOutdated, nil
	case err == nil:
		if l, ok := a.peerStorageLeg(id); ok && l.Role == "Primary" {
			return fencePeerPrimary, nil
		}
		return 0, fmt.Errorf("the peer answered %d", status)
	}
	return 0, err
}

// postPeer POSTs body to the peer's API on the first path that answers
// and returns the status of that answer.
func (a *Agent) postPeer(ctx context.Context, suffix string, body []byte) (int, error) {
	var errs []error
	for _, u := range a.peerURLs(suffix) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
		resp, err := a.peerC.Do(req)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	return 0, fmt.Errorf("no path to the peer answers: %w", errors.Join(errs...))
}

func (a *Agent) peerStorageLeg(id int) (storage.LegState, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.peerReport.Storage.Leg(id)
}

// serveDRBDHelper answers the DRBD kernel module's helper calls, which
// /bin/dyad-drbd-helper forwards over a unix socket at path.
func (a *Agent) serveDRBDHelper(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("drbd helper socket: %w", err)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("drbd helper socket: %w", err)
	}
	go func() {
		if err := drbdhelper.Serve(ctx, a.log, ln, a.drbdHelper); err != nil && ctx.Err() == nil {
			a.log.Error("drbd helper socket", "err", err)
		}
	}()
	return nil
}

// drbdHelper answers one DRBD helper call with its exit code.
func (a *Agent) drbdHelper(ctx context.Context, c drbdhelper.Call) int {
	a.log.Info("drbd helper call", "cmd", c.Cmd, "arg", c.Arg)
	volume := func() (int, bool) {
		if id, err := strconv.Atoi(strings.TrimPrefix(c.Resource, "r")); err == nil && c.Resource != "" {
			return id, true
		}
		rs, err := a.storageRecords()
		if err != nil {
			return 0, false
		}
		for _, v := range rs.Volumes {
			if v.Minor == c.Minor && !v.Deleted {
				return v.ID, true
			}
		}
		return 0, false
	}
	switch c.Cmd {
	case drbdhelper.CmdFencePeer:
		id, ok := volume()
		if !ok {
			a.log.Error("fence-peer for an unknown resource", "arg", c.Arg)
			return fenceFailed
		}
		code := a.fencePeer(ctx, id)
		if code == fenceOutdated || code == fenceStonithed {
			a.opt.Storage.PeerFenced(id)
		}
		return code
	case drbdhelper.CmdSplitBrain, drbdhelper.CmdInitialSplitBrain:
		if id, ok := volume(); ok {
			a.opt.Storage.SplitBrain(id)
			a.kickStorage()
		}
	case drbdhelper.CmdLocalIOError:
		if c.Minor >= 0 {
			a.opt.Storage.LegFailed(c.Minor)
			a.kickStorage()
		}
	}
	return 0
}
