package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

// world is a fake PM kernel: disks, LVM and DRBD, recording every command.
type world struct {
	disks []unit.Disk
	pvs   map[string]string
	vgs   map[string]*VGInfo
	lvs   map[string][]LVInfo
	drbd  map[int]MinorState
	calls []string
	// fail makes the named command fail.
	fail   map[string]error
	config []Resource
}

func newWorld(disks ...unit.Disk) *world {
	return &world{disks: disks, pvs: map[string]string{}, vgs: map[string]*VGInfo{}, lvs: map[string][]LVInfo{}, drbd: map[int]MinorState{}, fail: map[string]error{}}
}

func (w *world) call(format string, args ...any) error {
	c := fmt.Sprintf(format, args...)
	w.calls = append(w.calls, c)
	name, _, _ := strings.Cut(c, " ")
	return w.fail[name]
}

func (w *world) did(prefix string) bool {
	return slices.ContainsFunc(w.calls, func(c string) bool { return strings.HasPrefix(c, prefix) })
}

// LVM
func (w *world) PVs(context.Context) (map[string]string, error) { return maps(w.pvs), nil }
func (w *world) VGs(context.Context) ([]VGInfo, error) {
	var out []VGInfo
	for _, v := range w.vgs {
		out = append(out, *v)
	}
	return out, nil
}
func (w *world) LVs(_ context.Context, vg string) ([]LVInfo, error) {
	return slices.Clone(w.lvs[vg]), nil
}
func (w *world) CreatePV(_ context.Context, dev string) error {
	if err := w.call("pvcreate %s", dev); err != nil {
		return err
	}
	w.pvs[dev] = ""
	return nil
}
func (w *world) CreateVG(_ context.Context, vg string, devs ...string) error {
	if err := w.call("vgcreate %s %s", vg, strings.Join(devs, ",")); err != nil {
		return err
	}
	w.vgs[vg] = &VGInfo{Name: vg, SizeBytes: 2 << 30, FreeBytes: 2 << 30}
	for _, d := range devs {
		w.pvs[d] = vg
	}
	return nil
}
func (w *world) ExtendVG(_ context.Context, vg, dev string) error {
	w.pvs[dev] = vg
	return w.call("vgextend %s %s", vg, dev)
}
func (w *world) CreateLV(_ context.Context, vg, lv string, size int64) error {
	if err := w.call("lvcreate %s/%s %d", vg, lv, size); err != nil {
		return err
	}
	w.lvs[vg] = append(w.lvs[vg], LVInfo{Name: lv, SizeBytes: size, Devices: []string{"/dev/vdb"}, Active: true})
	return nil
}
func (w *world) ExtendLV(_ context.Context, vg, lv string, size int64) error {
	return w.call("lvextend %s/%s %d", vg, lv, size)
}
func (w *world) RemoveLV(_ context.Context, vg, lv string) error {
	if err := w.call("lvremove %s/%s", vg, lv); err != nil {
		return err
	}
	w.lvs[vg] = slices.DeleteFunc(w.lvs[vg], func(l LVInfo) bool { return l.Name == lv })
	return nil
}
func (w *world) ActivateVG(_ context.Context, vg string) error {
	for i := range w.lvs[vg] {
		w.lvs[vg][i].Active = true
	}
	return w.call("vgchange -ay %s", vg)
}
func (w *world) Snapshot(_ context.Context, vg, origin, name string, size int64) error {
	if err := w.call("snapshot %s/%s %s", vg, origin, name); err != nil {
		return err
	}
	w.lvs[vg] = append(w.lvs[vg], LVInfo{Name: name, Origin: origin, SizeBytes: size, Active: true})
	return nil
}

// Disks
func (w *world) Scan(_ context.Context, pvs map[string]string) ([]unit.Disk, error) {
	out := slices.Clone(w.disks)
	for i := range out {
		if vg, ok := pvs["/dev/"+out[i].Name]; ok && strings.HasPrefix(vg, "dyad_sg") {
			out[i].State = unit.DiskMember
		}
	}
	return out, nil
}
func (w *world) Wipe(_ context.Context, name string) error { return w.call("wipe %s", name) }

// DRBD
func (w *world) Configure(_ context.Context, rs []Resource) error {
	w.config = rs
	return nil
}
func (w *world) Status(context.Context) (map[int]MinorState, error) {
	out := map[int]MinorState{}
	for k, v := range w.drbd {
		out[k] = v
	}
	return out, nil
}
func (w *world) Generations(_ context.Context, minor int) (Generations, error) {
	return Generations{Current: UUIDJustCreated, Read: true}, nil
}
func minorOf(res string) int {
	var m int
	fmt.Sscanf(res, "r%d", &m)
	return m - 1 // volume id N is on minor N-1 in these tests
}
func (w *world) CreateMD(_ context.Context, res string) error { return w.call("create-md %s", res) }
func (w *world) Up(_ context.Context, res string) error {
	if err := w.call("up %s", res); err != nil {
		return err
	}
	w.drbd[minorOf(res)] = MinorState{Connection: "WFConnection", Role: "Secondary", PeerRole: "Unknown", Disk: "Inconsistent", PeerDisk: "DUnknown"}
	return nil
}
func (w *world) Down(_ context.Context, res string) error {
	delete(w.drbd, minorOf(res))
	return w.call("down %s", res)
}
func (w *world) Attach(_ context.Context, res string) error { return w.call("attach %s", res) }
func (w *world) Connect(_ context.Context, res string, discard bool) error {
	return w.call("connect %s discard=%v", res, discard)
}
func (w *world) Primary(_ context.Context, res string, force bool) error {
	if err := w.call("primary %s force=%v", res, force); err != nil {
		return err
	}
	st := w.drbd[minorOf(res)]
	st.Role = "Primary"
	w.drbd[minorOf(res)] = st
	return nil
}
func (w *world) Secondary(_ context.Context, res string) error {
	st := w.drbd[minorOf(res)]
	st.Role = "Secondary"
	w.drbd[minorOf(res)] = st
	return w.call("secondary %s", res)
}
func (w *world) Resize(_ context.Context, res string) error  { return w.call("resize %s", res) }
func (w *world) Outdate(_ context.Context, res string) error { return w.call("outdate %s", res) }
func (w *world) Adjust(_ context.Context, res string) error  { return w.call("adjust %s", res) }

func maps(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func newTestNode(t *testing.T, w *world, dir string) *Node {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	n, err := NewNode(1, w, w, w, dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

var group1 = GroupRecord{ID: 1, Name: "initial", Disks: map[int][]DiskRef{
	1: {{Name: "vdb", Serial: "S-B"}, {Name: "vdc", Serial: "S-C"}},
	2: {{Name: "vdb", Serial: "P-B"}},
}}

func blankDisks() []unit.Disk {
	return []unit.Disk{
		{Name: "vda", Serial: "S-A", State: unit.DiskSystem},
		{Name: "vdb", Serial: "S-B", State: unit.DiskBlank},
		{Name: "vdc", Serial: "S-C", State: unit.DiskBlank},
	}
}

func always(v bool) func(int) bool { return func(int) bool { return v } }

func TestNodeCreatesGroupAndVolume(t *testing.T) {
	w := newWorld(blankDisks()...)
	n := newTestNode(t, w, "")
	ctx := context.Background()
	vol := VolumeRecord{ID: 1, Name: "db", Group: 1, Minor: 0, SizeBytes: 64 << 20}
	d := Desired{Records: Records{Groups: []GroupRecord{group1}, Volumes: []VolumeRecord{vol}}, Primary: always(true)}
	rep := n.Reconcile(ctx, d)
	for _, want := range []string{"pvcreate /dev/vdb", "pvcreate /dev/vdc", "vgcreate dyad_sg1 /dev/vdb,/dev/vdc", "lvcreate dyad_sg1/vol1", "create-md r1", "up r1"} {
		if !w.did(want) {
			t.Errorf("no %q in %q", want, w.calls)
		}
	}
	if w.did("pvcreate /dev/vda") || w.did("wipe") {
		t.Errorf("touched the system disk or wiped: %q", w.calls)
	}
	if len(rep.Groups) != 1 || fmt.Sprint(rep.Groups[0].PVs) != "[/dev/vdb /dev/vdc]" || len(rep.Legs) != 1 || !rep.Legs[0].LV {
		t.Errorf("report = %+v", rep)
	}
	if len(w.config) != 1 || w.config[0] != (Resource{Name: "r1", Minor: 0, Disk: "/dev/dyad_sg1/vol1", Port: 7800}) {
		t.Errorf("resources = %+v", w.config)
	}
	// Alone and never synced: waits for the peer's leg (not PeerLost).
	if w.did("primary") || rep.Legs[0].Error == "" {
		t.Errorf("promoted a new volume without the peer: %q, error %q", w.calls, rep.Legs[0].Error)
	}

	// The peer connects with an empty leg too: this PM becomes the source
	// of the first sync, forced once.
	w.drbd[0] = MinorState{Connection: "Connected", Role: "Secondary", PeerRole: "Secondary", Disk: "Inconsistent", PeerDisk: "Inconsistent"}
	w.calls = nil
	rep = n.Reconcile(ctx, d)
	if !w.did("primary r1 force=true") || !rep.Legs[0].Forced {
		t.Errorf("first sync: calls %q, leg %+v", w.calls, rep.Legs[0])
	}
	if w.did("create-md") || w.did("lvcreate") || w.did("vgcreate") || w.did("pvcreate") {
		t.Errorf("second round redid work: %q", w.calls)
	}
}

func TestNodeNeverForcesAnInitializedVolume(t *testing.T) {
	w := newWorld(blankDisks()...)
	w.pvs = map[string]string{"/dev/vdb": "dyad_sg1"}
	w.vgs["dyad_sg1"] = &VGInfo{Name: "dyad_sg1", SizeBytes: 1 << 30, FreeBytes: 1 << 29}
	w.lvs["dyad_sg1"] = []LVInfo{{Name: "vol1", SizeBytes: lvSize(64 << 20)}}
	// In sync with the peer earlier in this boot, so the agent leaves the
	// decision to DRBD; now the leg is Consistent and the peer unknown.
	n := newTestNode(t, w, "")
	vol := VolumeRecord{ID: 1, Name: "db", Group: 1, Minor: 0, SizeBytes: 64 << 20, Initialized: true}
	w.drbd[0] = MinorState{Connection: "Connected", Role: "Secondary", PeerRole: "Primary", Disk: "UpToDate", PeerDisk: "UpToDate"}
	n.Reconcile(context.Background(), Desired{Records: Records{Groups: []GroupRecord{group1}, Volumes: []VolumeRecord{vol}}, Primary: always(false)})
	if !w.did("vgchange -ay dyad_sg1") {
		t.Errorf("the inactive volume group of a fresh boot was not activated: %q", w.calls)
	}
	w.drbd[0] = MinorState{Connection: "WFConnection", Role: "Secondary", PeerRole: "Unknown", Disk: "Consistent", PeerDisk: "DUnknown"}
	w.fail["primary"] = errors.New("State change failed: (-2) Need access to UpToDate data")
	w.calls = nil
	rep := n.Reconcile(context.Background(), Desired{Records: Records{Groups: []GroupRecord{group1}, Volumes: []VolumeRecord{vol}}, Primary: always(true), PeerLost: true})
	if w.did("primary r1 force=true") || !w.did("primary r1 force=false") {
		t.Errorf("calls %q: want one unforced promotion attempt", w.calls)
	}
	if w.did("create-md") {
		t.Errorf("created metadata on an existing leg: %q", w.calls)
	}
	// Each try runs DRBD's fence-peer helper: no new try until the leg's
	// state changes, and the refusal stays reported.
	d := Desired{Records: Records{Groups: []GroupRecord{group1}, Volumes: []VolumeRecord{vol}}, Primary: always(true), PeerLost: true}
	w.calls = nil
	rep = n.Reconcile(context.Background(), d)
	if w.did("primary") || !strings.Contains(rep.Legs[0].Error, "Need access to UpToDate data") {
		t.Errorf("second round: calls %q, error %q", w.calls, rep.Legs[0].Error)
	}
	w.drbd[0] = MinorState{Connection: "Connected", Role: "Secondary", PeerRole: "Secondary", Disk: "Consistent", PeerDisk: "UpToDate"}
	delete(w.fail, "primary")
	w.calls = nil
	n.Reconcile(context.Background(), d)
	if !w.did("primary r1 force=false") {
		t.Errorf("after the peer returned: calls %q, want a new try", w.calls)
	}
	if !strings.Contains(rep.Legs[0].Error, "Need access to UpToDate data") {
		t.Errorf("leg error = %q", rep.Legs[0].Error)
	}
}

func TestNodeForeignDisk(t *testing.T) {
	disks := blankDisks()
	disks[1].State, disks[1].Detail = unit.DiskForeign, "ext4 file system"
	g := GroupRecord{ID: 1, Name: "initial", Disks: map[int][]DiskRef{1: {{Name: "vdb", Serial: "S-B"}}}}
	w := newWorld(disks...)
	rep := newTestNode(t, w, "").Reconcile(context.Background(), Desired{Records: Records{Groups: []GroupRecord{g}}})
	if w.did("wipe") || w.did("pvcreate") || len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "holds data (ext4 file system)") {
		t.Errorf("foreign disk without consent: calls %q problems %q", w.calls, rep.Problems)
	}
	g.Disks[1][0].Erase = true
	w = newWorld(disks...)
	newTestNode(t, w, "").Reconcile(context.Background(), Desired{Records: Records{Groups: []GroupRecord{g}}})
	if !w.did("wipe vdb") || !w.did("pvcreate /dev/vdb") || !w.did("vgcreate dyad_sg1 /dev/vdb") {
		t.Errorf("foreign disk with consent: calls %q", w.calls)
	}
}

func memberWorld() *world {
	w := newWorld(blankDisks()...)
	w.pvs = map[string]string{"/dev/vdb": "dyad_sg1", "/dev/vdc": "dyad_sg1"}
	w.vgs["dyad_sg1"] = &VGInfo{Name: "dyad_sg1", SizeBytes: 1 << 30, FreeBytes: 1 << 29}
	w.lvs["dyad_sg1"] = []LVInfo{{Name: "vol1", SizeBytes: lvSize(64 << 20)}}
	return w
}

func TestNodeSplitBrain(t *testing.T) {
	ctx := context.Background()
	vol := VolumeRecord{ID: 1, Name: "db", Group: 1, Minor: 0, SizeBytes: 64 << 20, Initialized: true}
	standalone := MinorState{Connection: "StandAlone", Role: "Primary", PeerRole: "Unknown", Disk: "UpToDate", PeerDisk: "DUnknown"}

	w := memberWorld()
	w.drbd[0] = standalone
	n := newTestNode(t, w, "")
	n.SplitBrain(1)
	d := Desired{Records: Records{Groups: []GroupRecord{group1}, Volumes: []VolumeRecord{vol}}, Primary: always(true)}
	rep := n.Reconcile(ctx, d)
	if w.did("connect") || !rep.Legs[0].SplitBrain {
		t.Errorf("unresolved split brain: calls %q, leg %+v", w.calls, rep.Legs[0])
	}

	// The operator keeps PM 2's side: this PM snapshots its leg, steps
	// down and reconnects discarding its data.
	vol.Resolve = &Resolve{Survivor: 2, At: time.Unix(1700000000, 0)}
	d.Volumes = []VolumeRecord{vol}
	w.calls = nil
	rep = n.Reconcile(ctx, d)
	want := []string{"snapshot dyad_sg1/vol1 vol1_sb1700000000", "secondary r1", "connect r1 discard=true"}
	for i, c := range want {
		j := slices.IndexFunc(w.calls, func(s string) bool { return strings.HasPrefix(s, c) })
		if j < 0 || i > 0 && j < slices.IndexFunc(w.calls, func(s string) bool { return strings.HasPrefix(s, want[i-1]) }) {
			t.Fatalf("calls %q, want %q in order", w.calls, want)
		}
	}
	if w.did("primary") {
		t.Errorf("the losing side was promoted again: %q", w.calls)
	}
	// The snapshot cannot be made: nothing is discarded.
	w2 := memberWorld()
	w2.drbd[0] = standalone
	w2.fail["snapshot"] = errors.New("Insufficient free space")
	n2 := newTestNode(t, w2, "")
	n2.SplitBrain(1)
	rep = n2.Reconcile(ctx, d)
	if w2.did("connect") || !strings.Contains(rep.Legs[0].Error, "not discarded") {
		t.Errorf("snapshot failed: calls %q, error %q", w2.calls, rep.Legs[0].Error)
	}

	// The survivor reconnects normally; once connected the split brain
	// is over.
	w3 := memberWorld()
	w3.drbd[0] = standalone
	n3, _ := NewNode(2, w3, w3, w3, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	n3.SplitBrain(1)
	n3.Reconcile(ctx, d)
	if !w3.did("connect r1 discard=false") || w3.did("snapshot") {
		t.Errorf("survivor: calls %q", w3.calls)
	}
	w3.drbd[0] = MinorState{Connection: "SyncSource", Role: "Primary", Disk: "UpToDate", PeerDisk: "Inconsistent"}
	if rep := n3.Reconcile(ctx, d); rep.Legs[0].SplitBrain {
		t.Errorf("split brain still reported after reconnecting: %+v", rep.Legs[0])
	}
}

func TestNodeLegFailure(t *testing.T) {
	w := memberWorld()
	w.drbd[0] = MinorState{Connection: "Connected", Role: "Primary", PeerRole: "Secondary", Disk: "UpToDate", PeerDisk: "UpToDate"}
	n := newTestNode(t, w, "")
	d := Desired{Records: Records{Groups: []GroupRecord{group1}, Volumes: []VolumeRecord{{ID: 1, Name: "db", Group: 1, SizeBytes: 64 << 20, Initialized: true}}}, Primary: always(true)}
	n.Reconcile(context.Background(), d)
	// An I/O error: DRBD detached the disk.
	w.drbd[0] = MinorState{Connection: "Connected", Role: "Primary", PeerRole: "Secondary", Disk: "Diskless", PeerDisk: "UpToDate"}
	w.calls = nil
	rep := n.Reconcile(context.Background(), d)
	if w.did("attach") || !rep.Legs[0].Failed {
		t.Errorf("failed leg: calls %q, leg %+v", w.calls, rep.Legs[0])
	}
	// A leg that was never attached in this boot is attached.
	w2 := memberWorld()
	w2.drbd[0] = MinorState{Connection: "Connected", Role: "Secondary", Disk: "Diskless", PeerDisk: "UpToDate"}
	newTestNode(t, w2, "").Reconcile(context.Background(), d)
	if !w2.did("attach r1") {
		t.Errorf("diskless at start: calls %q, want attach", w2.calls)
	}
}

func TestNodeDeletes(t *testing.T) {
	w := memberWorld()
	w.lvs["dyad_sg1"] = append(w.lvs["dyad_sg1"], LVInfo{Name: "vol1_sb5", Origin: "vol1"})
	w.drbd[0] = MinorState{Connection: "Connected", Role: "Secondary", Disk: "UpToDate", PeerDisk: "UpToDate"}
	n := newTestNode(t, w, "")
	d := Desired{Records: Records{Groups: []GroupRecord{group1}, Volumes: []VolumeRecord{{ID: 1, Name: "db", Group: 1, SizeBytes: 64 << 20, Deleted: true}}}}
	rep := n.Reconcile(context.Background(), d)
	for _, want := range []string{"down r1", "lvremove dyad_sg1/vol1_sb5", "lvremove dyad_sg1/vol1"} {
		if !w.did(want) {
			t.Errorf("no %q in %q", want, w.calls)
		}
	}
	if len(rep.Legs) != 0 {
		t.Errorf("legs after delete = %+v", rep.Legs)
	}
}

func TestNodeRemembersFreshVolumeAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	w := newWorld(blankDisks()...)
	w.fail["create-md"] = errors.New("agent stopped")
	d := Desired{Records: Records{Groups: []GroupRecord{group1}, Volumes: []VolumeRecord{{ID: 1, Name: "db", Group: 1, SizeBytes: 64 << 20}}}}
	newTestNode(t, w, dir).Reconcile(context.Background(), d)
	delete(w.fail, "create-md")
	w.calls = nil
	newTestNode(t, w, dir).Reconcile(context.Background(), d)
	if !w.did("create-md r1") || w.did("lvcreate") {
		t.Errorf("after restart: calls %q, want create-md again and no new LV", w.calls)
	}
	w.drbd = map[int]MinorState{}
	w.calls = nil
	newTestNode(t, w, dir).Reconcile(context.Background(), d)
	if w.did("create-md") {
		t.Errorf("metadata created twice: %q", w.calls)
	}
}

func TestNodeAloneSinceBootNeedsItsOwnFencing(t *testing.T) {
	ctx := context.Background()
	vol := VolumeRecord{ID: 1, Name: "db", Group: 1, Minor: 0, SizeBytes: 64 << 20, Initialized: true}
	// DRBD calls the leg UpToDate from a stale "peer outdated" flag.
	alone := MinorState{Connection: "WFConnection", Role: "Secondary", PeerRole: "Unknown", Disk: "UpToDate", PeerDisk: "Outdated"}
	d := Desired{Records: Records{Groups: []GroupRecord{group1}, Volumes: []VolumeRecord{vol}}, Primary: always(true), PeerLost: true}

	w := memberWorld()
	w.drbd[0] = alone
	rep := newTestNode(t, w, "").Reconcile(ctx, d)
	if w.did("primary") || !rep.Legs[0].Stale || !strings.Contains(rep.Legs[0].Error, "has not been in sync with its peer") {
		t.Errorf("alone since boot, never fenced: calls %q, leg %+v", w.calls, rep.Legs[0])
	}
	if st, _ := volumeState(vol, [3]*LegState{nil, &rep.Legs[0], nil}); st != unit.SyncOutdated {
		t.Errorf("state of the stale leg = %s, want Outdated", st)
	}

	// This PM outdated the peer itself before it restarted: its leg is
	// the newest and may serve alone.
	dir := t.TempDir()
	w = memberWorld()
	w.drbd[0] = MinorState{Connection: "Connected", Role: "Primary", PeerRole: "Secondary", Disk: "UpToDate", PeerDisk: "UpToDate"}
	n := newTestNode(t, w, dir)
	n.PeerFenced(1)
	w.drbd[0] = alone
	n = newTestNode(t, w, dir)
	if n.Reconcile(ctx, d); !w.did("primary r1 force=false") {
		t.Errorf("after fencing the peer: calls %q, want a promotion", w.calls)
	}
	// Connected and in sync again: the fencing no longer counts.
	w.drbd[0] = MinorState{Connection: "Connected", Role: "Primary", PeerRole: "Secondary", Disk: "UpToDate", PeerDisk: "UpToDate"}
	n.Reconcile(ctx, Desired{Records: d.Records, Primary: always(true)})
	w.drbd[0] = alone
	w.calls = nil
	if rep := newTestNode(t, w, dir).Reconcile(ctx, d); w.did("primary") || !rep.Legs[0].Stale {
		t.Errorf("fencing forgotten after the resync: calls %q, leg %+v", w.calls, rep.Legs[0])
	}
}
