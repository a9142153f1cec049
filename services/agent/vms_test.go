package agent

import (
	"log/slog"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/pmconfig"
	"github.com/dyad-ha/dyad/services/vm"
)

func TestVMUpkeep(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	a := &Agent{cfg: pmconfig.Config{Node: 1}, log: slog.New(slog.DiscardHandler)}
	base := vm.Record{ID: 7, Name: "db", Node: 2, Run: true, StartSeq: 3}
	report := func(node int, r vm.VMReport) map[int]*vm.NodeReport {
		r.ID = 7
		return map[int]*vm.NodeReport{node: {Node: node, VMs: []vm.VMReport{r}}}
	}
	for _, tc := range []struct {
		name     string
		rec      vm.Record
		peerSeen bool
		reports  map[int]*vm.NodeReport
		changed  bool
		check    func(t *testing.T, r vm.Record)
	}{
		{name: "peer running it is heard", rec: base, peerSeen: true, reports: report(2, vm.VMReport{Running: true, StartSeq: 3})},
		{name: "failover: the peer is lost", rec: base, changed: true, check: func(t *testing.T, r vm.Record) {
			if r.Node != 1 || !r.Run {
				t.Errorf("node %d run %v, want node 1 running", r.Node, r.Run)
			}
		}},
		{name: "a VM on this PM stays", rec: func() vm.Record { r := base; r.Node = 1; return r }()},
		{name: "migration to a lost peer fails", rec: func() vm.Record {
			r := base
			r.Node = 1
			r.Migration = &vm.Migration{From: 1, To: 2, Status: vm.MigrationRunning}
			return r
		}(), changed: true, check: func(t *testing.T, r vm.Record) {
			if r.Node != 1 || r.Migration.Status != vm.MigrationFailed {
				t.Errorf("node %d migration %+v, want node 1 and failed", r.Node, r.Migration)
			}
		}},
		{name: "a migration left by a previous primary, guest on the target", rec: func() vm.Record {
			r := base
			r.Node = 1
			r.Migration = &vm.Migration{From: 1, To: 2, Status: vm.MigrationRunning}
			return r
		}(), peerSeen: true, changed: true, reports: report(2, vm.VMReport{Running: true, Incoming: true, Status: "running"}),
			check: func(t *testing.T, r vm.Record) {
				if r.Node != 2 || r.Migration.Status != vm.MigrationCompleted {
					t.Errorf("node %d migration %+v, want node 2 and completed", r.Node, r.Migration)
				}
			}},
		{name: "a migration left by a previous primary, guest on the source", rec: func() vm.Record {
			r := base
			r.Node = 1
			r.Migration = &vm.Migration{From: 1, To: 2, Status: vm.MigrationRunning}
			return r
		}(), peerSeen: true, changed: true, reports: map[int]*vm.NodeReport{
			1: {Node: 1, VMs: []vm.VMReport{{ID: 7, Running: true, Status: "running"}}},
			2: {Node: 2, VMs: []vm.VMReport{{ID: 7, Running: true, Incoming: true, Status: "inmigrate"}}},
		},
			check: func(t *testing.T, r vm.Record) {
				if r.Node != 1 || r.Migration.Status != vm.MigrationFailed {
					t.Errorf("node %d migration %+v, want node 1 and failed", r.Node, r.Migration)
				}
			}},
		{name: "guest shut itself down", rec: base, peerSeen: true, changed: true,
			reports: report(2, vm.VMReport{LastExit: &vm.Exit{Kind: vm.ExitGuestShutdown, StartSeq: 3}}),
			check: func(t *testing.T, r vm.Record) {
				if r.Run {
					t.Error("still wanted running")
				}
			}},
		{name: "shutdown of an earlier start is old news", rec: base, peerSeen: true,
			reports: report(2, vm.VMReport{LastExit: &vm.Exit{Kind: vm.ExitGuestShutdown, StartSeq: 2}})},
		{name: "crashes are recorded once", rec: func() vm.Record { r := base; r.Crashes = []time.Time{now.Add(-time.Minute)}; return r }(), peerSeen: true, changed: true,
			reports: report(2, vm.VMReport{Running: true, Crashes: []vm.Crash{{At: now.Add(-time.Minute), StartSeq: 3}, {At: now, StartSeq: 3}, {At: now.Add(-2 * time.Minute), StartSeq: 2}}}),
			check: func(t *testing.T, r vm.Record) {
				if len(r.Crashes) != 2 {
					t.Errorf("crashes %v, want the two of this start", r.Crashes)
				}
			}},
		{name: "the PM's MTBF verdict makes it Critical", rec: base, peerSeen: true, changed: true,
			reports: report(2, vm.VMReport{Critical: true}),
			check: func(t *testing.T, r vm.Record) {
				if !r.Critical {
					t.Error("not Critical")
				}
			}},
		{name: "old crashes are pruned", rec: func() vm.Record { r := base; r.Crashes = []time.Time{now.Add(-2 * time.Hour)}; return r }(), peerSeen: true, changed: true,
			check: func(t *testing.T, r vm.Record) {
				if len(r.Crashes) != 0 {
					t.Errorf("crashes %v kept", r.Crashes)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rec
			if got := a.vmUpkeep(&r, tc.peerSeen, !tc.peerSeen, tc.reports, now, false); got != tc.changed {
				t.Fatalf("changed %v, want %v (record %+v)", got, tc.changed, r)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
			// Applying it again changes nothing: the primary applies it
			// twice (to decide, then inside the transaction).
			if a.vmUpkeep(&r, tc.peerSeen, !tc.peerSeen, tc.reports, now, false) {
				t.Errorf("a second application changed %+v again", r)
			}
		})
	}
}
