package agent

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/cluster"
	"github.com/dyad-ha/dyad/services/pmconfig"
	"github.com/dyad-ha/dyad/services/store"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/vm"
)

func TestPMAllowed(t *testing.T) {
	bmc := &unit.BMC{Addr: "10.0.0.9", User: "admin"}
	failed := []time.Time{time.Now()}
	for _, tc := range []struct {
		name string
		o    pmOps
		up   bool
		vms  int
		want []string
	}{
		{"running", pmOps{}, true, 2, []string{unit.PMWorkOn}},
		{"evacuating", pmOps{Maintenance: true}, true, 1, []string{unit.PMFinalize}},
		{"in Maintenance, empty", pmOps{Maintenance: true}, true, 0, []string{unit.PMFinalize, unit.PMShutdown, unit.PMPowerOff}},
		{"off with a BMC", pmOps{Maintenance: true, Off: true, BMC: bmc}, false, 0, []string{unit.PMPowerOn}},
		{"off without a BMC", pmOps{Maintenance: true, Off: true}, false, 0, nil},
		{"failed once", pmOps{Failures: failed}, true, 0, []string{unit.PMWorkOn, unit.PMResetDevice}},
		{"out of service", pmOps{Failures: failed, OutOfService: true, BMC: bmc}, false, 0, []string{unit.PMResetDevice}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pmAllowed(tc.o, tc.up, tc.vms); !slices.Equal(got, tc.want) {
				t.Errorf("allowed %q, want %q", got, tc.want)
			}
		})
	}
}

func TestChooseHome(t *testing.T) {
	recs := []vm.Record{
		{ID: 1, Home: 1, MemoryBytes: 1 << 30, VCPUs: 1},
		{ID: 2, Home: 2, MemoryBytes: 512 << 20, VCPUs: 4},
	}
	auto := vm.Placement{Policy: unit.PlaceAuto}
	for _, tc := range []struct {
		name string
		p    vm.Placement
		recs []vm.Record
		want int
	}{
		{"empty unit", auto, nil, 1},
		{"less memory on pm2", auto, recs, 2},
		{"equal memory, fewer vCPUs on pm1", auto, []vm.Record{{ID: 1, Home: 1, MemoryBytes: 1, VCPUs: 1}, {ID: 2, Home: 2, MemoryBytes: 1, VCPUs: 2}}, 1},
		{"manual", vm.Placement{Policy: unit.PlaceManual, PM: 1}, recs, 1},
		{"mixed", vm.Placement{Policy: unit.PlaceMixed, PM: 1}, recs, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := chooseHome(tc.p, tc.recs, vm.Record{ID: 9}); got != tc.want {
				t.Errorf("home %d, want %d", got, tc.want)
			}
		})
	}
}

func TestCheckPlacement(t *testing.T) {
	for _, tc := range []struct {
		in      unit.Placement
		wantErr string
	}{
		{unit.Placement{}, ""},
		{unit.Placement{Policy: "auto"}, ""},
		{unit.Placement{Policy: "auto", PM: 1}, "takes no PM"},
		{unit.Placement{Policy: "manual", PM: 2}, ""},
		{unit.Placement{Policy: "manual"}, "needs the PM"},
		{unit.Placement{Policy: "mixed", PM: 3}, "needs the PM"},
		{unit.Placement{Policy: "pinned", PM: 1}, "use auto, manual or mixed"},
	} {
		_, err := checkPlacement(tc.in)
		if (err == nil) != (tc.wantErr == "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("checkPlacement(%+v) = %v, want %q", tc.in, err, tc.wantErr)
		}
	}
}

func TestAdmissionAlerts(t *testing.T) {
	now := time.Now()
	hosts := []vm.Host{{MemoryBytes: 4 << 30, CPUs: 4}, {MemoryBytes: 3 << 30, CPUs: 8}}
	fits := []vm.Record{{Run: true, MemoryBytes: 1 << 30, VCPUs: 2}, {Run: false, MemoryBytes: 8 << 30, VCPUs: 8}}
	if a := admissionAlerts(fits, hosts, now); len(a) != 0 {
		t.Errorf("VMs that fit on the smaller PM: alerts %+v", a)
	}
	tooBig := []vm.Record{{Run: true, MemoryBytes: 1600 << 20, VCPUs: 2}, {Run: true, MemoryBytes: 1 << 29, VCPUs: 1}}
	a := admissionAlerts(tooBig, hosts, now)
	var ids []string
	for _, al := range a {
		ids = append(ids, al.ID)
	}
	if !slices.Equal(ids, []string{"admission/memory", "admission/vcpus"}) {
		t.Errorf("alerts %q, want memory and vCPUs", ids)
	}
}

func TestAuditLog(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "unit.db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a := &Agent{db: db, log: slog.New(slog.DiscardHandler), mon: nil}
	l := auditLog{a}
	ctx := context.Background()
	for i := range auditKeep + 5 {
		local := func(ctx context.Context, fn func(store.Writer) error) error { return db.Update(ctx, nil, fn) }
		if err := l.appendTo(ctx, local, unit.AuditRecord{User: "admin", Action: "POST /x", Status: 200 + i%2}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := l.List(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Seq != auditKeep+5 || got[2].Seq != auditKeep+3 {
		t.Fatalf("newest 3: %+v", got)
	}
	all, err := l.List(ctx, 10*auditKeep)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != auditKeep || all[len(all)-1].Seq != 6 {
		t.Fatalf("kept %d records, oldest %d; want %d from 6", len(all), all[len(all)-1].Seq, auditKeep)
	}
}

// The primary counts its peer's unintended losses; the third within the
// hour takes the peer out of service. A loss an operator asked for is none.
func TestPeerFailures(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "unit.db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a := &Agent{
		cfg: pmconfig.Config{Node: 1}, db: db, log: slog.New(slog.DiscardHandler),
		mon: cluster.NewMonitor(time.Second, "priv0"), start: time.Now(),
		migrations: map[int]bool{}, judgedBoots: map[string]bool{}, opt: Options{BootID: "self-boot"},
	}
	ctx := context.Background()
	lose := func(boot string) pmOps {
		t.Helper()
		a.peerLosses = append(a.peerLosses, peerLoss{Boot: boot, At: time.Now().UTC()})
		if err := a.reconcileOps(ctx); err != nil {
			t.Fatal(err)
		}
		ops, _, err := a.opsRecords()
		if err != nil {
			t.Fatal(err)
		}
		return ops[2]
	}
	if o := lose("b1"); len(o.Failures) != 1 || o.OutOfService {
		t.Fatalf("after one failure: %+v", o)
	}
	if o := lose("b1"); len(o.Failures) != 1 {
		t.Fatalf("one boot failed twice: %+v", o)
	}
	// Cut off: the quorum server heard the peer after it went silent here,
	// and the same boot lost again as it resets is no failure either.
	a.peerLosses = append(a.peerLosses, peerLoss{Boot: "cut", At: time.Now().UTC().Add(-time.Second)})
	a.lease.PeerHeard = time.Now()
	if o := lose("cut"); len(o.Failures) != 1 {
		t.Fatalf("a peer cut off counted as failed: %+v", o)
	}
	a.lease.PeerHeard = time.Time{}
	if err := a.updateOps(ctx, func(pms map[int]*pmOps, _ *unitOps) error {
		pms[2].Off, pms[2].OffBoot = true, "b2"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if o := lose("b2"); len(o.Failures) != 1 {
		t.Fatalf("a shutdown an operator asked for counted as a failure: %+v", o)
	}
	if o := lose("b3"); len(o.Failures) != 2 || o.OutOfService {
		t.Fatalf("after two failures: %+v", o)
	}
	if o := lose("b4"); len(o.Failures) != 3 || !o.OutOfService {
		t.Fatalf("after three failures: %+v, want out of service", o)
	}
	// Reset Device (the command's effect on the record).
	if err := a.updateOps(ctx, func(pms map[int]*pmOps, _ *unitOps) error {
		pms[2].Failures, pms[2].OutOfService = nil, false
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if o := lose("b5"); len(o.Failures) != 1 || o.OutOfService {
		t.Fatalf("after Reset Device and one failure: %+v", o)
	}
}

// The PMs switch quorum servers together: the secondary follows the
// primary's proposal, the proposal counts once the secondary announces it,
// and a PM alone in the middle of a switch counts on neither server.
func TestAgreeQuorumServer(t *testing.T) {
	a := &Agent{cfg: pmconfig.Config{Node: 1, Quorum: []string{"q1:7413", "q2:7413"}}, log: slog.New(slog.DiscardHandler)}
	peer := func(q int) cluster.View {
		return cluster.View{Seen: true, EverSeen: true, Peer: cluster.Beat{Quorum: q}}
	}
	lost := cluster.View{Lost: true, EverSeen: true}
	steps := []struct {
		name    string
		v       cluster.View
		primary bool
		propose int // set a.quorumProposed before the step; -1 leaves it
		use     int
		ok      bool
	}{
		{"both on the preferred", peer(1), true, -1, 0, true},
		{"the primary proposes the alternate", peer(1), true, 1, 0, true},
		{"lost before the secondary follows", lost, true, -1, 0, false},
		{"the secondary announces it", peer(2), true, -1, 1, true},
		{"lost after the switch", lost, true, -1, 1, true},
	}
	for _, s := range steps {
		if s.propose >= 0 {
			a.quorumProposed = s.propose
		}
		use, ok := a.agreeQuorumServer(s.v, s.primary)
		if use != s.use || ok != s.ok {
			t.Fatalf("%s: use %d ok %v, want %d %v", s.name, use, ok, s.use, s.ok)
		}
	}
	b := &Agent{cfg: pmconfig.Config{Node: 2, Quorum: []string{"q1:7413", "q2:7413"}}, log: slog.New(slog.DiscardHandler)}
	if use, ok := b.agreeQuorumServer(peer(2), false); use != 1 || !ok || b.quorumProposed != 1 {
		t.Fatalf("the secondary did not follow the primary: use %d ok %v proposed %d", use, ok, b.quorumProposed)
	}
}
