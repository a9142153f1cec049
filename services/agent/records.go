package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/dyad-ha/dyad/services/cluster"
	"github.com/dyad-ha/dyad/services/store"
	"github.com/dyad-ha/dyad/services/unit"
)

const bucketPMs = "pms"

// pmRecord is a PM as the unit database keeps it. Live facts (role, paths,
// uptime) are not stored: they come from heartbeats.
type pmRecord struct {
	ID           int             `json:"id"`
	State        unit.PMState    `json:"state"`
	Activity     string          `json:"activity,omitempty"`
	BootID       string          `json:"boot_id,omitempty"`
	ImageVersion string          `json:"image_version,omitempty"`
	Addresses    []string        `json:"addresses,omitempty"`
	Hardware     json.RawMessage `json:"hardware,omitempty"`
	// Changed is when State last changed.
	Changed time.Time `json:"changed"`
}

func (r pmRecord) same(o pmRecord) bool {
	return r.State == o.State && r.Activity == o.Activity && r.BootID == o.BootID &&
		r.ImageVersion == o.ImageVersion && string(r.Hardware) == string(o.Hardware) &&
		fmt.Sprint(r.Addresses) == fmt.Sprint(o.Addresses)
}

func (a *Agent) records() (map[int]pmRecord, error) {
	out := map[int]pmRecord{}
	err := a.db.View(func(r store.Reader) error {
		return r.ForEach(bucketPMs, func(k string, v []byte) error {
			var rec pmRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("pm record %s: %w", k, err)
			}
			out[rec.ID] = rec
			return nil
		})
	})
	return out, err
}

// replicator is where changes go before they are acknowledged: the peer
// when it is heard, nobody when it is lost (the primary then runs alone and
// the peer gets a full copy when it returns).
func (a *Agent) replicator() store.Replicator {
	a.mu.Lock()
	provisional := a.provisional
	a.mu.Unlock()
	if provisional {
		return refuse{ErrNoQuorum}
	}
	if !a.mon.View(time.Now()).Seen {
		return nil
	}
	return &store.HTTPReplicator{
		Client: a.peerC, Source: a.db,
		URLs: func() []string { return a.peerURLs("peer/v1/db/") },
		// A silently cut path fails over to the next one quickly.
		AttemptTimeout: 2 * time.Second,
	}
}

// reconcile brings the unit database in line with what the primary sees.
// Only the primary writes; a write fails (and is retried next round) when the
// peer is heard but cannot take the change.
func (a *Agent) reconcile(ctx context.Context) {
	if a.Role() != unit.RolePrimary || a.Verdict().Verdict != cluster.Run {
		// A primary alone without the right to run VMs records nothing:
		// its peer may be running the unit with a newer database.
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	now := time.Now()
	v := a.mon.View(now)
	rep := a.replicator()

	if hr, ok := rep.(*store.HTTPReplicator); ok {
		a.mu.Lock()
		synced := a.syncedBoot == v.Peer.BootID
		a.mu.Unlock()
		if !synced {
			if err := hr.Sync(ctx); err != nil {
				a.replicationFailed("bringing the peer's unit database in step", err)
				return
			}
			a.mu.Lock()
			a.syncedBoot = v.Peer.BootID
			a.mu.Unlock()
			a.log.Info("peer's unit database in step", "peer_boot", v.Peer.BootID)
		}
	}

	recs, err := a.records()
	if err != nil {
		a.log.Error("read pm records", "err", err)
		return
	}
	want := map[int]pmRecord{}
	self := a.self()
	want[a.cfg.Node] = pmRecord{ID: a.cfg.Node, State: unit.PMRunning, BootID: self.BootID,
		ImageVersion: self.ImageVersion, Addresses: self.Addresses, Hardware: self.Hardware}

	peer := a.cfg.Peer()
	old, known := recs[peer]
	switch {
	case v.Seen:
		// Every round: the report carries the peer's live links too.
		r, err := a.fetchPeer(ctx)
		if err != nil {
			a.log.Warn("peer self report", "err", err)
			return
		}
		a.mu.Lock()
		a.peerReport = r
		a.mu.Unlock()
		if err := a.reconcileNetworks(ctx, rep, r.Pairings); err != nil {
			a.replicationFailed("shared networks", err)
			return
		}
		rec := old
		rec.ID, rec.State, rec.Activity = peer, unit.PMRunning, ""
		rec.BootID, rec.ImageVersion, rec.Addresses, rec.Hardware = r.BootID, r.ImageVersion, r.Addresses, r.Hardware
		want[peer] = rec
	case v.Lost || (known && old.State == unit.PMRunning):
		// Silent on every path, whether lost while we watched or found so
		// when this PM took over.
		rec := old
		rec.ID, rec.State, rec.Activity = peer, unit.PMBroken, "failed: no heartbeat on any path"
		want[peer] = rec
	case !known:
		want[peer] = pmRecord{ID: peer, State: unit.PMOff, Activity: "not seen since this PM started"}
	}

	if err := a.reconcileStorageRecords(ctx, rep); err != nil {
		a.replicationFailed("storage records", err)
	}
	if err := a.reconcileVMRecords(ctx, rep); err != nil {
		a.replicationFailed("VM records", err)
	}
	if err := a.reconcileOps(ctx); err != nil {
		a.replicationFailed("unit operations", err)
	}
	err = a.db.Update(ctx, rep, func(w store.Writer) error {
		for id, rec := range want {
			if cur, ok := recs[id]; ok && cur.same(rec) {
				continue
			}
			rec.Changed = now
			if cur, ok := recs[id]; ok && cur.State == rec.State {
				rec.Changed = cur.Changed
			}
			b, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := w.Put(bucketPMs, strconv.Itoa(id), b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		a.replicationFailed("unit database update", err)
		return
	}
	if err := a.db.EnsureUser(ctx, rep, "admin", "admin"); err != nil {
		a.replicationFailed("default console user", err)
	}
}

// replicationFailed logs a failed change and, when the peer refused it as
// coming from a deposed primary, has the election loop step down.
func (a *Agent) replicationFailed(what string, err error) {
	a.log.Warn(what, "err", err)
	if errors.Is(err, store.ErrDeposed) {
		a.mu.Lock()
		a.deposed = true
		a.mu.Unlock()
	}
}

// refuse is the replicator of a PM that may not change the unit database.
type refuse struct{ err error }

func (r refuse) Replicate(context.Context, store.Batch) error { return r.err }

// commit changes the unit database as fn says, replicated to the peer
// first. A peer that dies while the change is on its way fails the
// replication; once the heartbeats too say it is gone, the change is made
// alone, as every change is while the peer is lost (it gets the whole
// database when it returns).
func (a *Agent) commit(ctx context.Context, fn func(w store.Writer) error) error {
	rep := a.replicator()
	err := a.db.Update(ctx, rep, fn)
	if err == nil || rep == nil || errors.Is(err, store.ErrDeposed) || errors.Is(err, ErrNoQuorum) {
		return err
	}
	deadline := time.Now().Add(DeadAfter + BeatInterval)
	for time.Now().Before(deadline) && a.mon.View(time.Now()).Seen {
		select {
		case <-ctx.Done():
			return err
		case <-time.After(BeatInterval):
		}
	}
	if a.mon.View(time.Now()).Seen {
		return err
	}
	a.log.Warn("the peer was lost while a change was replicated; making it alone", "err", err)
	return a.commit(ctx, fn)
}
