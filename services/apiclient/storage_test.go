package apiclient_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/webui"
)

// fakeStorage records the last call that changed something.
type fakeStorage struct {
	mu     sync.Mutex
	vols   []unit.Volume
	groups []unit.StorageGroup
	disks  []unit.Disk
	last   string
}

var t0 = time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC)

func testStorage() *fakeStorage {
	return &fakeStorage{
		vols: []unit.Volume{{
			ID: 1, Name: "boot", Group: 1, SizeBytes: 64 << 20, State: unit.SyncSyncing, Primary: 1, Created: t0,
			Sync:      &unit.SyncProgress{Percent: 42, ETASeconds: 12, Source: 1},
			Legs:      []unit.Leg{{PM: 1, Role: "Primary", Disk: "UpToDate", Connection: "SyncSource"}, {PM: 2, Role: "Secondary", Disk: "Inconsistent", Connection: "SyncTarget"}},
			Snapshots: []unit.Snapshot{{Name: "vol1_sb1700000000", PM: 2, SizeBytes: 64 << 20, Created: t0}},
		}},
		groups: []unit.StorageGroup{{ID: 1, Name: "sg1", CapacityBytes: 10 << 30, FreeBytes: 9 << 30, Volumes: 1, Disks: []unit.Disk{{PM: 1, Name: "vdb", State: unit.DiskMember, Group: 1}}}},
		disks:  []unit.Disk{{PM: 1, Name: "vdc", State: unit.DiskForeign, Detail: "ext4 file system", SizeBytes: 1 << 30}},
	}
}

func (f *fakeStorage) record(format string, args ...any) {
	f.mu.Lock()
	f.last = fmt.Sprintf(format, args...)
	f.mu.Unlock()
}

func (f *fakeStorage) Volumes(context.Context) ([]unit.Volume, error) { return f.vols, nil }

func (f *fakeStorage) Volume(_ context.Context, id int) (unit.Volume, error) {
	for _, v := range f.vols {
		if v.ID == id {
			return v, nil
		}
	}
	return unit.Volume{}, webui.ErrNotFound
}

func (f *fakeStorage) CreateVolume(_ context.Context, spec unit.VolumeSpec) (unit.Volume, error) {
	f.record("create %s %d %d", spec.Name, spec.SizeBytes, spec.Group)
	if spec.SizeBytes > 9<<30 {
		return unit.Volume{}, fmt.Errorf("%w: storage group 1 has 9 GiB free", webui.ErrInvalid)
	}
	return unit.Volume{ID: 2, Name: spec.Name, SizeBytes: spec.SizeBytes, Group: 1, State: unit.SyncCreating}, nil
}

func (f *fakeStorage) GrowVolume(ctx context.Context, id int, size int64) (unit.Volume, error) {
	f.record("grow %d %d", id, size)
	v, err := f.Volume(ctx, id)
	v.SizeBytes = size
	return v, err
}

func (f *fakeStorage) DeleteVolume(_ context.Context, id int) error {
	f.record("delete %d", id)
	if id == 1 {
		return fmt.Errorf("%w: volume 1 is the boot volume of VM web", webui.ErrConflict)
	}
	return nil
}

func (f *fakeStorage) ResolveSplitBrain(ctx context.Context, id, survivor int) (unit.Volume, error) {
	f.record("resolve %d %d", id, survivor)
	return unit.Volume{}, fmt.Errorf("%w: volume %d is not in split brain", webui.ErrConflict, id)
}

func (f *fakeStorage) DeleteSnapshot(ctx context.Context, id int, name string) (unit.Volume, error) {
	f.record("delete snapshot %d %s", id, name)
	v, err := f.Volume(ctx, id)
	v.Snapshots = nil
	return v, err
}

func (f *fakeStorage) StorageGroups(context.Context) ([]unit.StorageGroup, error) {
	return f.groups, nil
}

func (f *fakeStorage) Disks(context.Context) ([]unit.Disk, error) { return f.disks, nil }

func (f *fakeStorage) ActivateDisk(_ context.Context, pm int, disk string, group int, erase bool) (unit.Disk, error) {
	f.record("activate %d %s %d %v", pm, disk, group, erase)
	if !erase {
		return unit.Disk{}, fmt.Errorf("%w: disk %s of PM %d holds data (ext4 file system); activating it erases it", webui.ErrConflict, disk, pm)
	}
	return unit.Disk{PM: pm, Name: disk, State: unit.DiskMember, Group: max(group, 1)}, nil
}

func newStorageClient(t *testing.T, st webui.StorageSource) *apiclient.Client {
	t.Helper()
	s, err := webui.New(webui.Config{
		Source: &fakeSource{unit: testUnit()}, Storage: st, Users: users{},
		SessionKey: []byte("0123456789abcdef0123456789abcdef"),
		Node:       1, Role: func() unit.Role { return unit.RolePrimary },
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return apiclient.New(ts.URL, "admin", "admin", ts.Client())
}

func TestClientStorage(t *testing.T) {
	st := testStorage()
	c := newStorageClient(t, st)
	ctx := t.Context()

	vols, err := c.Volumes(ctx)
	if err != nil || !reflect.DeepEqual(vols, st.vols) {
		t.Errorf("Volumes = %+v, %v", vols, err)
	}
	v, err := c.Volume(ctx, 1)
	if err != nil || !reflect.DeepEqual(v, st.vols[0]) {
		t.Errorf("Volume(1) = %+v, %v", v, err)
	}
	groups, err := c.StorageGroups(ctx)
	if err != nil || !reflect.DeepEqual(groups, st.groups) {
		t.Errorf("StorageGroups = %+v, %v", groups, err)
	}
	disks, err := c.Disks(ctx)
	if err != nil || !reflect.DeepEqual(disks, st.disks) {
		t.Errorf("Disks = %+v, %v", disks, err)
	}

	changes := []struct {
		name     string
		call     func() (any, error)
		want     any
		wantCall string
	}{
		{
			name: "create",
			call: func() (any, error) {
				return c.CreateVolume(ctx, unit.VolumeSpec{Name: "data", SizeBytes: 1 << 30, Group: 1})
			},
			want:     unit.Volume{ID: 2, Name: "data", SizeBytes: 1 << 30, Group: 1, State: unit.SyncCreating},
			wantCall: "create data 1073741824 1",
		},
		{
			name:     "create any group",
			call:     func() (any, error) { return c.CreateVolume(ctx, unit.VolumeSpec{Name: "data", SizeBytes: 4096}) },
			want:     unit.Volume{ID: 2, Name: "data", SizeBytes: 4096, Group: 1, State: unit.SyncCreating},
			wantCall: "create data 4096 0",
		},
		{
			name: "grow",
			call: func() (any, error) { v, err := c.GrowVolume(ctx, 1, 128<<20); return v.SizeBytes, err },
			want: int64(128 << 20), wantCall: "grow 1 134217728",
		},
		{
			name: "delete",
			call: func() (any, error) { return nil, c.DeleteVolume(ctx, 2) },
			want: nil, wantCall: "delete 2",
		},
		{
			name: "delete snapshot",
			call: func() (any, error) {
				v, err := c.DeleteSnapshot(ctx, 1, "vol1_sb1700000000")
				return len(v.Snapshots), err
			},
			want: 0, wantCall: "delete snapshot 1 vol1_sb1700000000",
		},
		{
			name: "activate",
			call: func() (any, error) { return c.ActivateDisk(ctx, 1, "vdc", 0, true) },
			want: unit.Disk{PM: 1, Name: "vdc", State: unit.DiskMember, Group: 1}, wantCall: "activate 1 vdc 0 true",
		},
	}
	for _, tt := range changes {
		got, err := tt.call()
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s = %+v, %v; want %+v", tt.name, got, err, tt.want)
		}
		if st.last != tt.wantCall {
			t.Errorf("%s reached the storage as %q, want %q", tt.name, st.last, tt.wantCall)
		}
	}
}

func TestClientStorageErrors(t *testing.T) {
	c := newStorageClient(t, testStorage())
	ctx := t.Context()
	tests := []struct {
		name       string
		call       func() error
		wantStatus int
		wantMsg    string // the server's message, verbatim
	}{
		{"unknown volume", func() error { _, err := c.Volume(ctx, 7); return err }, 404, "volume 7 not found"},
		{"bad volume id", func() error { _, err := c.Volume(ctx, 0); return err }, 400, `invalid volume id "0": want a positive integer`},
		{"too big", func() error {
			_, err := c.CreateVolume(ctx, unit.VolumeSpec{Name: "big", SizeBytes: 10 << 30})
			return err
		}, 400, "invalid request: storage group 1 has 9 GiB free"},
		{"bad name", func() error { _, err := c.CreateVolume(ctx, unit.VolumeSpec{Name: "a b", SizeBytes: 1}); return err }, 400, `invalid volume name "a b"`},
		{"zero size", func() error { _, err := c.GrowVolume(ctx, 1, 0); return err }, 400, "invalid size_bytes 0: want a positive number of bytes"},
		{"in use", func() error { return c.DeleteVolume(ctx, 1) }, 409, "conflict: volume 1 is the boot volume of VM web"},
		{"not split", func() error { _, err := c.ResolveSplitBrain(ctx, 1, 2); return err }, 409, "conflict: volume 1 is not in split brain"},
		{"foreign without erase", func() error { _, err := c.ActivateDisk(ctx, 1, "vdc", 0, false); return err }, 409,
			"conflict: disk vdc of PM 1 holds data (ext4 file system); activating it erases it"},
		{"snapshot name with slash", func() error { _, err := c.DeleteSnapshot(ctx, 1, "a/b"); return err }, 404, "no such API endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var apiErr *apiclient.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T), want *APIError", err, err)
			}
			if apiErr.StatusCode != tt.wantStatus || !strings.HasPrefix(apiErr.Message, tt.wantMsg) {
				t.Errorf("APIError = %d %q, want %d %q", apiErr.StatusCode, apiErr.Message, tt.wantStatus, tt.wantMsg)
			}
		})
	}
}

func TestClientNoStorage(t *testing.T) {
	c := newStorageClient(t, nil)
	_, err := c.Volumes(t.Context())
	var apiErr *apiclient.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 || apiErr.Message != "storage not available" {
		t.Errorf("Volumes without storage: %v, want 503 storage not available", err)
	}
}
