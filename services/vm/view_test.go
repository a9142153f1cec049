package vm

import (
	"slices"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

func TestSummarizeStates(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	base := Record{ID: 1, Name: "web", Node: 1, VCPUs: 1, MemoryBytes: 256 * MiB, Volumes: []VolumeRef{{ID: 5, Boot: true}}, StartSeq: 1}
	synced := map[int]unit.Volume{5: {ID: 5, Name: "web-boot", State: unit.SyncUpToDate}}
	degraded := map[int]unit.Volume{5: {ID: 5, Name: "web-boot", State: unit.SyncDegraded}}
	running := VMReport{ID: 1, Running: true, Booted: true, Status: "running", StartSeq: 1}
	rep := func(v VMReport) map[int]*NodeReport {
		return map[int]*NodeReport{1: {Node: 1, VMs: []VMReport{v}}}
	}
	with := func(fn func(r *Record)) Record { r := base; fn(&r); return r }
	for _, tc := range []struct {
		name    string
		rec     Record
		reports map[int]*NodeReport
		vols    map[int]unit.Volume
		both    bool
		want    State
	}{
		{"volume being created", with(func(r *Record) { r.StartSeq = 0 }), nil, map[int]unit.Volume{5: {State: unit.SyncCreating}}, true, Busy},
		{"first sync", with(func(r *Record) { r.StartSeq = 0 }), nil, map[int]unit.Volume{5: {State: unit.SyncSyncing}}, true, Busy},
		{"volume missing", base, nil, nil, true, Busy},
		{"stopped", base, nil, synced, true, Stopped},
		{"start asked, no QEMU yet", with(func(r *Record) { r.Run = true }), rep(VMReport{ID: 1}), synced, true, Booting},
		{"QEMU up, no guest I/O", with(func(r *Record) { r.Run = true }), rep(VMReport{ID: 1, Running: true, StartSeq: 1}), synced, true, Booting},
		{"running", with(func(r *Record) { r.Run = true }), rep(running), synced, true, Running},
		{"running without the peer", with(func(r *Record) { r.Run = true }), rep(running), synced, false, Alert},
		{"running on a degraded volume", with(func(r *Record) { r.Run = true }), rep(running), degraded, true, Alert},
		{"shutting down", with(func(r *Record) { r.Run = true }), rep(func() VMReport { v := running; v.Stopping = true; return v }()), synced, true, Stopping},
		{"shutdown timed out", with(func(r *Record) { r.Run = true }), rep(func() VMReport { v := running; v.ShutdownTimedOut = true; return v }()), synced, true, Running},
		{"dumping", with(func(r *Record) { r.Run = true }), rep(func() VMReport { v := running; v.Dumping = true; return v }()), synced, true, Dumping},
		{"guest shut down, record not yet updated", with(func(r *Record) { r.Run = true }), rep(VMReport{ID: 1, LastExit: &Exit{Kind: ExitGuestShutdown, StartSeq: 1}}), synced, true, Stopped},
		{"crashed, restarting", with(func(r *Record) { r.Run = true }), rep(VMReport{ID: 1, LastExit: &Exit{Kind: ExitCrash, StartSeq: 1}}), synced, true, Crashed},
		{"crash of an earlier start", with(func(r *Record) { r.Run = true; r.StartSeq = 2 }), rep(VMReport{ID: 1, LastExit: &Exit{Kind: ExitCrash, StartSeq: 1}}), synced, true, Booting},
		{"critical", with(func(r *Record) { r.Run = true; r.Critical = true }), rep(VMReport{ID: 1}), synced, true, Critical},
		{"critical seen by the PM first", with(func(r *Record) { r.Run = true }), rep(VMReport{ID: 1, Critical: true}), synced, true, Critical},
		{"migrating", with(func(r *Record) { r.Run = true; r.Migration = &Migration{From: 1, To: 2, Status: MigrationRunning} }), rep(running), synced, true, Running},
		{"first sync stopped by a lost leg", with(func(r *Record) { r.StartSeq = 0 }), nil, degraded, true, Busy},
		{"new VM with a PM away", with(func(r *Record) { r.StartSeq = 0 }), nil, degraded, false, Stopped},
		{"target holds the guest, not yet taken over", with(func(r *Record) {
			r.Run = true
			r.Node = 2
			r.Migration = &Migration{From: 1, To: 2, Status: MigrationRunning}
		}),
			map[int]*NodeReport{2: {Node: 2, VMs: []VMReport{{ID: 1, Running: true, Incoming: true}}}}, synced, true, Running},
		{"incoming QEMU is not the VM running", with(func(r *Record) { r.Run = true }), rep(VMReport{ID: 1, Running: true, Incoming: true}), synced, true, Booting},
		{"running while the volume resyncs", with(func(r *Record) { r.Run = true }), rep(running), map[int]unit.Volume{5: {State: unit.SyncSyncing}}, true, Alert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Summarize([]Record{tc.rec}, Situation{Reports: tc.reports, Volumes: tc.vols, BothPMs: tc.both, Now: now})
			if len(got) != 1 {
				t.Fatalf("%d VMs", len(got))
			}
			v := got[0]
			if State(v.State) != tc.want {
				t.Fatalf("state %s (%s), want %s", v.State, v.Activity, tc.want)
			}
			var want []string
			for _, c := range Allowed(tc.want) {
				want = append(want, string(c))
			}
			if !slices.Equal(v.Allowed, want) && !(len(want) == 0 && len(v.Allowed) == 0) {
				t.Errorf("allowed %v, want %v", v.Allowed, want)
			}
		})
	}
}
