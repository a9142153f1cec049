package storage

import (
	"strings"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

func leg(role, disk, peerDisk, cs string) *LegState {
	return &LegState{Volume: 1, LV: true, Configured: true, Role: role, Disk: disk, PeerDisk: peerDisk, Connection: cs}
}

func TestVolumeState(t *testing.T) {
	init := VolumeRecord{ID: 1, Name: "v", Initialized: true}
	tests := []struct {
		name      string
		rec       VolumeRecord
		l1, l2    *LegState
		want      unit.SyncState
		detailHas string
	}{
		{name: "both up to date", rec: init, l1: leg("Primary", "UpToDate", "UpToDate", "Connected"), l2: leg("Secondary", "UpToDate", "UpToDate", "Connected"), want: unit.SyncUpToDate},
		{name: "new volume, legs inconsistent", rec: VolumeRecord{ID: 1}, l1: leg("Secondary", "Inconsistent", "Inconsistent", "Connected"), l2: leg("Secondary", "Inconsistent", "Inconsistent", "Connected"), want: unit.SyncCreating},
		{name: "initial sync", rec: init, l1: leg("Primary", "UpToDate", "Inconsistent", "SyncSource"), l2: leg("Secondary", "Inconsistent", "UpToDate", "SyncTarget"), want: unit.SyncSyncing, detailHas: "PM 1 copies"},
		{name: "sync seen from the target only", rec: init, l2: leg("Secondary", "Inconsistent", "UpToDate", "SyncTarget"), want: unit.SyncSyncing, detailHas: "PM 1 copies"},
		{name: "peer absent", rec: init, l1: leg("Primary", "UpToDate", "Outdated", "WFConnection"), want: unit.SyncDegraded, detailHas: "only the leg on PM 1"},
		{name: "stale leg alone", rec: init, l1: leg("Secondary", "Consistent", "DUnknown", "WFConnection"), want: unit.SyncOutdated, detailHas: "PM 1 is not known"},
		{name: "outdated leg alone", rec: init, l2: leg("Secondary", "Outdated", "DUnknown", "WFConnection"), want: unit.SyncOutdated},
		{name: "leg failed", rec: init, l1: &LegState{Volume: 1, LV: true, Role: "Primary", Disk: "Diskless", PeerDisk: "UpToDate", Connection: "Connected", Failed: true}, l2: leg("Secondary", "UpToDate", "Diskless", "Connected"), want: unit.SyncDegraded, detailHas: "PM 1 failed"},
		{name: "split brain", rec: init, l1: &LegState{Volume: 1, Role: "Primary", Disk: "UpToDate", Connection: "StandAlone", SplitBrain: true}, l2: leg("Primary", "UpToDate", "DUnknown", "WFConnection"), want: unit.SyncSplitBrain, detailHas: "choose"},
		{name: "split brain being resolved", rec: VolumeRecord{ID: 1, Initialized: true, Resolve: &Resolve{Survivor: 2, At: time.Unix(100, 0)}}, l1: &LegState{Volume: 1, Disk: "UpToDate", Connection: "StandAlone", SplitBrain: true}, want: unit.SyncSplitBrain, detailHas: "vol1_sb100"},
		{name: "deleted", rec: VolumeRecord{ID: 1, Deleted: true}, l1: leg("Primary", "UpToDate", "UpToDate", "Connected"), want: unit.SyncDeleting},
		{name: "nothing reported", rec: init, want: unit.SyncDegraded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, detail := volumeState(tt.rec, [3]*LegState{nil, tt.l1, tt.l2})
			if got != tt.want || !strings.Contains(detail, tt.detailHas) {
				t.Errorf("volumeState = %s %q, want %s containing %q", got, detail, tt.want, tt.detailHas)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	rs := Records{
		Groups: []GroupRecord{{ID: 1, Name: "initial"}},
		Volumes: []VolumeRecord{
			{ID: 1, Name: "db", Group: 1, Minor: 0, SizeBytes: 64 << 20, Initialized: true},
			{ID: 2, Name: "web", Group: 1, Minor: 1, SizeBytes: 8 << 20, Initialized: true, DropSnapshots: []string{"vol2_sb5"}},
		},
	}
	r1 := &Report{Node: 1, At: now,
		Disks:  []unit.Disk{{PM: 1, Name: "vdb", State: unit.DiskMember, Group: 1}, {PM: 1, Name: "vda", State: unit.DiskSystem}},
		Groups: []GroupState{{ID: 1, SizeBytes: 2 << 30, FreeBytes: 1 << 30}},
		Legs: []LegState{
			{Volume: 1, Minor: 0, LV: true, Role: "Primary", Disk: "UpToDate", PeerDisk: "UpToDate", Connection: "Connected", Gen: Generations{Current: 0xABC, Read: true}},
			{Volume: 2, Minor: 1, LV: true, Role: "Primary", Disk: "UpToDate", PeerDisk: "Inconsistent", Connection: "SyncSource",
				Sync: &unit.SyncProgress{Percent: 40, RateBytes: 4 << 20, ETASeconds: 3}},
		}}
	r2 := &Report{Node: 2, At: now,
		Disks:  []unit.Disk{{PM: 2, Name: "vdb", State: unit.DiskMember, Group: 1}},
		Groups: []GroupState{{ID: 1, SizeBytes: 3 << 30, FreeBytes: 512 << 20}},
		Legs: []LegState{
			{Volume: 1, Minor: 0, LV: true, Role: "Secondary", Disk: "UpToDate", PeerDisk: "UpToDate", Connection: "Connected"},
			{Volume: 2, Minor: 1, LV: true, Role: "Secondary", Disk: "Inconsistent", PeerDisk: "UpToDate", Connection: "SyncTarget",
				Snapshots: []unit.Snapshot{{Name: "vol2_sb5", PM: 2}, {Name: "vol2_sb9", PM: 2}}},
		}}
	v := Summarize(rs, map[int]*Report{1: r1, 2: r2}, now)
	if len(v.Groups) != 1 || v.Groups[0].CapacityBytes != 2<<30 || v.Groups[0].FreeBytes != 512<<20 || v.Groups[0].Volumes != 2 || len(v.Groups[0].Disks) != 2 {
		t.Errorf("groups = %+v, want capacity 2 GiB, free 512 MiB (the smaller PM), 2 volumes, 2 disks", v.Groups)
	}
	if len(v.Volumes) != 2 {
		t.Fatalf("volumes = %+v", v.Volumes)
	}
	db, web := v.Volumes[0], v.Volumes[1]
	if db.State != unit.SyncUpToDate || db.Primary != 1 || db.Device != "/dev/drbd0" || len(db.Legs) != 2 || db.Legs[0].Generation != "0000000000000ABC" {
		t.Errorf("db = %+v", db)
	}
	if web.State != unit.SyncSyncing || web.Sync == nil || web.Sync.Source != 1 || web.Sync.Percent != 40 {
		t.Errorf("web = %+v sync %+v", web, web.Sync)
	}
	if len(web.Snapshots) != 1 || web.Snapshots[0].Name != "vol2_sb9" {
		t.Errorf("snapshots = %+v, want only vol2_sb9 (vol2_sb5 is being dropped)", web.Snapshots)
	}
	if len(v.Alerts) != 1 || v.Alerts[0].ID != "volume/2" || !strings.Contains(v.Alerts[0].Message, "40.0%") {
		t.Errorf("alerts = %+v, want one for the resync of web", v.Alerts)
	}

	// PM 2 gone: the primary's leg serves alone.
	v = Summarize(rs, map[int]*Report{1: r1}, now)
	if v.Volumes[0].State != unit.SyncUpToDate && v.Volumes[0].State != unit.SyncDegraded {
		t.Errorf("db without PM 2 = %s", v.Volumes[0].State)
	}
}

func TestSplitSides(t *testing.T) {
	t1, t2 := time.Unix(100, 0), time.Unix(200, 0)
	sides := splitSides([3]*LegState{nil,
		{Gen: Generations{Current: 1, Read: true}, LastPrimary: t1},
		{Gen: Generations{Current: 2, Read: true}, LastPrimary: t2}})
	if len(sides) != 2 || sides[0].LastWriter || !sides[1].LastWriter || sides[1].Generation != "0000000000000002" {
		t.Errorf("sides = %+v, want PM 2 the last writer", sides)
	}
}

func TestNewVolume(t *testing.T) {
	now := time.Unix(1000, 0)
	groups := []unit.StorageGroup{{ID: 1, Name: "initial", FreeBytes: 100 << 20}, {ID: 2, Name: "fast", FreeBytes: 1 << 30}}
	rs := Records{Volumes: []VolumeRecord{{ID: 1, Name: "a", Minor: 0}, {ID: 3, Name: "b", Minor: 2}, {ID: 4, Name: "gone", Minor: 1, Deleted: true}}}
	many := Records{}
	for i := range unit.MaxVolumes {
		many.Volumes = append(many.Volumes, VolumeRecord{ID: i + 1, Name: "v" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Minor: i})
	}
	tests := []struct {
		name    string
		rs      Records
		spec    unit.VolumeSpec
		groups  []unit.StorageGroup
		want    VolumeRecord
		wantErr string
	}{
		{name: "first group with room", rs: rs, spec: unit.VolumeSpec{Name: "c", SizeBytes: 10 << 20}, groups: groups,
			want: VolumeRecord{ID: 5, Name: "c", Group: 1, Minor: 3, SizeBytes: 12 << 20, Created: now.UTC()}},
		{name: "named group", rs: rs, spec: unit.VolumeSpec{Name: "c", SizeBytes: 200 << 20, Group: 2}, groups: groups,
			want: VolumeRecord{ID: 5, Name: "c", Group: 2, Minor: 3, SizeBytes: 200 << 20, Created: now.UTC()}},
		{name: "skips full group", rs: rs, spec: unit.VolumeSpec{Name: "c", SizeBytes: 200 << 20}, groups: groups,
			want: VolumeRecord{ID: 5, Name: "c", Group: 2, Minor: 3, SizeBytes: 200 << 20, Created: now.UTC()}},
		{name: "no room in named group", rs: rs, spec: unit.VolumeSpec{Name: "c", SizeBytes: 200 << 20, Group: 1}, groups: groups, wantErr: "free on both PMs"},
		{name: "no room anywhere", rs: rs, spec: unit.VolumeSpec{Name: "c", SizeBytes: 2 << 30}, groups: groups, wantErr: "no storage group has"},
		{name: "unknown group", rs: rs, spec: unit.VolumeSpec{Name: "c", SizeBytes: 8 << 20, Group: 7}, groups: groups, wantErr: "no storage group 7"},
		{name: "no groups", spec: unit.VolumeSpec{Name: "c", SizeBytes: 8 << 20}, wantErr: "activate disks"},
		{name: "duplicate name", rs: rs, spec: unit.VolumeSpec{Name: "a", SizeBytes: 8 << 20}, groups: groups, wantErr: "exists already"},
		{name: "name of a deleted volume", rs: rs, spec: unit.VolumeSpec{Name: "gone", SizeBytes: 8 << 20}, groups: groups,
			want: VolumeRecord{ID: 5, Name: "gone", Group: 1, Minor: 3, SizeBytes: 8 << 20, Created: now.UTC()}},
		{name: "bad name", rs: rs, spec: unit.VolumeSpec{Name: "a b", SizeBytes: 8 << 20}, groups: groups, wantErr: "volume name"},
		{name: "empty name", rs: rs, spec: unit.VolumeSpec{SizeBytes: 8 << 20}, groups: groups, wantErr: "volume name"},
		{name: "too small", rs: rs, spec: unit.VolumeSpec{Name: "c", SizeBytes: 4095}, groups: groups, wantErr: "smallest"},
		{name: "negative", rs: rs, spec: unit.VolumeSpec{Name: "c", SizeBytes: -1}, groups: groups, wantErr: "smallest"},
		{name: "huge", rs: rs, spec: unit.VolumeSpec{Name: "c", SizeBytes: 1 << 62}, groups: groups, wantErr: "beyond"},
		{name: "limit", rs: many, spec: unit.VolumeSpec{Name: "c", SizeBytes: 8 << 20}, groups: groups, wantErr: "the most it can"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NewVolume(tt.rs, tt.spec, tt.groups, now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tt.want.ID || got.Name != tt.want.Name || got.Group != tt.want.Group || got.Minor != tt.want.Minor || got.SizeBytes != tt.want.SizeBytes || !got.Created.Equal(tt.want.Created) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestGrowVolume(t *testing.T) {
	groups := []unit.StorageGroup{{ID: 1, Name: "initial", FreeBytes: 64 << 20}}
	v := VolumeRecord{ID: 1, Name: "a", Group: 1, SizeBytes: 32 << 20}
	if got, err := GrowVolume(v, 64<<20, groups); err != nil || got.SizeBytes != 64<<20 {
		t.Errorf("grow to 64 MiB = %+v, %v", got, err)
	}
	for _, tt := range []struct {
		size int64
		want string
	}{{16 << 20, "only grows"}, {32 << 20, "only grows"}, {1 << 30, "free on both PMs"}, {1 << 60, "beyond"}} {
		if _, err := GrowVolume(v, tt.size, groups); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("grow to %d: err = %v, want %q", tt.size, err, tt.want)
		}
	}
	if _, err := GrowVolume(VolumeRecord{Deleted: true}, 64<<20, groups); err == nil {
		t.Error("growing a deleted volume succeeded")
	}
}

func TestLVSize(t *testing.T) {
	for _, size := range []int64{4 << 20, 64 << 20, 1 << 30, 100 << 30} {
		lv := lvSize(size)
		if lv%Extent != 0 || lv-size < size/32768+(1<<20) {
			t.Errorf("lvSize(%d) = %d: no room for the metadata or not whole extents", size, lv)
		}
	}
}
