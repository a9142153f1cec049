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
		// blip: the peer is silent but this PM may not take over yet.
		blip bool
		// running: this agent runs the VM's migration.
		running bool
		reports map[int]*vm.NodeReport
		changed bool
		check   func(t *testing.T, r vm.Record)
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
		{name: "a heartbeat blip during a migration run here", rec: func() vm.Record {
			r := base
			r.Node = 1
			r.Migration = &vm.Migration{From: 1, To: 2, Status: vm.MigrationRunning}
			return r
		}(), blip: true, running: true},
		{name: "a silent peer before any migration runs here", rec: func() vm.Record {
			r := base
			r.Node = 1
			r.Migration = &vm.Migration{From: 1, To: 2, Status: vm.MigrationPreparing}
			return r
		}(), blip: true, changed: true, check: func(t *testing.T, r vm.Record) {
			if r.Migration.Status != vm.MigrationFailed {
				t.Errorf("migration %+v, want failed", r.Migration)
			}
		}},
		{name: "the peer is lost after the guest moved to it", rec: func() vm.Record {
			r := base
			r.Migration = &vm.Migration{From: 1, To: 2, Status: vm.MigrationRunning}
			return r
		}(), running: true, changed: true, check: func(t *testing.T, r vm.Record) {
			if r.Node != 1 || r.Migration.Status != vm.MigrationCompleted {
				t.Errorf("node %d migration %+v, want node 1 (failover) and the migration completed", r.Node, r.Migration)
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
			a := &Agent{cfg: a.cfg, log: a.log, migrations: map[int]bool{7: tc.running}}
			takeOver := !tc.peerSeen && !tc.blip
			r := tc.rec
			if got := a.vmUpkeep(&r, tc.peerSeen, takeOver, tc.reports, now, false); got != tc.changed {
				t.Fatalf("changed %v, want %v (record %+v)", got, tc.changed, r)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
			// Applying it again changes nothing: the primary applies it
			// twice (to decide, then inside the transaction).
			if a.vmUpkeep(&r, tc.peerSeen, takeOver, tc.reports, now, false) {
				t.Errorf("a second application changed %+v again", r)
			}
		})
	}
}

func TestLegWritable(t *testing.T) {
	moving := func(node int, status string) vm.Record {
		return vm.Record{ID: 1, Node: node, Migration: &vm.Migration{From: 1, To: 2, Status: status}}
	}
	for _, tc := range []struct {
		name     string
		self     int
		rec      vm.Record
		runsHere bool
		want     bool
	}{
		{name: "runs here", self: 1, rec: vm.Record{Node: 1}, want: true},
		{name: "runs on the peer", self: 2, rec: vm.Record{Node: 1}, want: false},
		{name: "its QEMU here has not quit yet", self: 2, rec: vm.Record{Node: 1}, runsHere: true, want: true},
		{name: "source while preparing", self: 1, rec: moving(1, vm.MigrationPreparing), want: true},
		{name: "target while preparing", self: 2, rec: moving(1, vm.MigrationPreparing), want: true},
		{name: "source while the guest moves", self: 1, rec: moving(1, vm.MigrationRunning), runsHere: true, want: true},
		{name: "target while the guest moves", self: 2, rec: moving(1, vm.MigrationRunning), runsHere: true, want: true},
		// The guest runs on the target and the source's QEMU has quit: the
		// source lets go while the migration is still running, or it would
		// wait for the migration that waits for it.
		{name: "source once the guest runs on the target", self: 1, rec: moving(2, vm.MigrationRunning), want: false},
		{name: "source whose QEMU is quitting", self: 1, rec: moving(2, vm.MigrationRunning), runsHere: true, want: true},
		{name: "target once the guest runs there", self: 2, rec: moving(2, vm.MigrationRunning), runsHere: true, want: true},
		{name: "failed: the source keeps it", self: 1, rec: moving(1, vm.MigrationFailed), want: true},
		{name: "failed: the target lets go", self: 2, rec: moving(1, vm.MigrationFailed), want: false},
		{name: "completed: the source", self: 1, rec: moving(2, vm.MigrationCompleted), want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := legWritable(tc.self, tc.rec, tc.runsHere); got != tc.want {
				t.Errorf("legWritable(pm%d, %+v, runs here %v) = %v, want %v", tc.self, tc.rec, tc.runsHere, got, tc.want)
			}
		})
	}
}
