package webui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

// fakeStorage keeps volumes in memory. err, when set, fails every call;
// changes counts the calls that reached a changing method.
type fakeStorage struct {
	mu      sync.Mutex
	vols    []unit.Volume
	groups  []unit.StorageGroup
	disks   []unit.Disk
	err     error
	changes int
}

func testStorage() *fakeStorage {
	t0 := time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC)
	return &fakeStorage{
		vols: []unit.Volume{
			{
				ID: 1, Name: "web-boot", Group: 1, SizeBytes: 1 << 30, Minor: 0, Device: "/dev/drbd0",
				State: unit.SyncUpToDate, Primary: 1, Created: t0,
				Legs: []unit.Leg{
					{PM: 1, Role: "Primary", Disk: "UpToDate", Connection: "Connected"},
					{PM: 2, Role: "Secondary", Disk: "UpToDate", Connection: "Connected"},
				},
			},
			{
				ID: 2, Name: "db-data", Group: 1, SizeBytes: 64 << 20, Minor: 1, State: unit.SyncSyncing, Primary: 2, Created: t0,
				Sync: &unit.SyncProgress{Percent: 42.7, RateBytes: 10 << 20, ETASeconds: 12, OutOfSyncBytes: 30 << 20, Source: 2},
				Legs: []unit.Leg{
					{PM: 1, Role: "Secondary", Disk: "Inconsistent", Connection: "SyncTarget"},
					{PM: 2, Role: "Primary", Disk: "UpToDate", Connection: "SyncSource"},
				},
			},
			{
				ID: 3, Name: "split", Group: 1, SizeBytes: 4 << 20, Minor: 2, State: unit.SyncSplitBrain, Created: t0,
				SplitBrain: []unit.SplitSide{{PM: 1, Generation: "AAAA"}, {PM: 2, Generation: "BBBB", LastWriter: true}},
				Snapshots:  []unit.Snapshot{{Name: "vol3_sb1700000000", PM: 1, SizeBytes: 4 << 20, Reason: "split brain"}},
			},
		},
		groups: []unit.StorageGroup{{
			ID: 1, Name: "sg1", CapacityBytes: 20 << 30, FreeBytes: 15 << 30, Volumes: 3,
			Disks: []unit.Disk{{PM: 1, Name: "vdb", State: unit.DiskMember, Group: 1}, {PM: 2, Name: "vdb", State: unit.DiskMember, Group: 1}},
		}},
		disks: []unit.Disk{
			{PM: 1, Name: "vda", State: unit.DiskSystem, SizeBytes: 8 << 30},
			{PM: 1, Name: "vdb", State: unit.DiskMember, Group: 1, SizeBytes: 20 << 30},
			{PM: 1, Name: "vdc", State: unit.DiskForeign, SizeBytes: 20 << 30, Detail: "ext4 file system"},
			{PM: 2, Name: "vdc", State: unit.DiskBlank, SizeBytes: 20 << 30},
		},
	}
}

func (f *fakeStorage) find(id int) (int, error) {
	for i, v := range f.vols {
		if v.ID == id {
			return i, nil
		}
	}
	return 0, ErrNotFound
}

func (f *fakeStorage) Volumes(context.Context) ([]unit.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return f.vols, nil
}

func (f *fakeStorage) Volume(_ context.Context, id int) (unit.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return unit.Volume{}, f.err
	}
	i, err := f.find(id)
	if err != nil {
		return unit.Volume{}, err
	}
	return f.vols[i], nil
}

func (f *fakeStorage) CreateVolume(_ context.Context, spec unit.VolumeSpec) (unit.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changes++
	if f.err != nil {
		return unit.Volume{}, f.err
	}
	if spec.Group > 1 {
		return unit.Volume{}, fmt.Errorf("storage group %d: %w", spec.Group, ErrNotFound)
	}
	for _, v := range f.vols {
		if v.Name == spec.Name {
			return unit.Volume{}, fmt.Errorf("%w: a volume named %q exists", ErrConflict, spec.Name)
		}
	}
	if spec.SizeBytes > 15<<30 {
		return unit.Volume{}, fmt.Errorf("%w: %d bytes do not fit: storage group 1 has 15 GiB free", ErrInvalid, spec.SizeBytes)
	}
	v := unit.Volume{ID: len(f.vols) + 1, Name: spec.Name, Group: 1, SizeBytes: spec.SizeBytes, State: unit.SyncCreating}
	f.vols = append(f.vols, v)
	return v, nil
}

func (f *fakeStorage) GrowVolume(_ context.Context, id int, size int64) (unit.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changes++
	i, err := f.find(id)
	if err != nil {
		return unit.Volume{}, err
	}
	if size <= f.vols[i].SizeBytes {
		return unit.Volume{}, fmt.Errorf("%w: volume %d is %d bytes already; a volume only grows", ErrInvalid, id, f.vols[i].SizeBytes)
	}
	f.vols[i].SizeBytes = size
	return f.vols[i], nil
}

func (f *fakeStorage) DeleteVolume(_ context.Context, id int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changes++
	i, err := f.find(id)
	if err != nil {
		return fmt.Errorf("volume %d: %w", id, err)
	}
	if f.vols[i].Primary != 0 {
		return fmt.Errorf("%w: volume %d is in use by a VM", ErrConflict, id)
	}
	f.vols[i].State = unit.SyncDeleting
	return nil
}

func (f *fakeStorage) ResolveSplitBrain(_ context.Context, id, survivor int) (unit.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changes++
	i, err := f.find(id)
	if err != nil {
		return unit.Volume{}, err
	}
	if f.vols[i].State != unit.SyncSplitBrain {
		return unit.Volume{}, fmt.Errorf("%w: volume %d is not in split brain", ErrConflict, id)
	}
	if survivor != 1 && survivor != 2 {
		return unit.Volume{}, fmt.Errorf("%w: PM %d holds no leg of volume %d", ErrInvalid, survivor, id)
	}
	f.vols[i].State = unit.SyncSyncing
	f.vols[i].SplitBrain = nil
	return f.vols[i], nil
}

func (f *fakeStorage) DeleteSnapshot(_ context.Context, id int, name string) (unit.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changes++
	i, err := f.find(id)
	if err != nil {
		return unit.Volume{}, err
	}
	for j, s := range f.vols[i].Snapshots {
		if s.Name == name {
			f.vols[i].Snapshots = append(f.vols[i].Snapshots[:j], f.vols[i].Snapshots[j+1:]...)
			return f.vols[i], nil
		}
	}
	return unit.Volume{}, fmt.Errorf("volume %d has no snapshot %q: %w", id, name, ErrNotFound)
}

func (f *fakeStorage) StorageGroups(context.Context) ([]unit.StorageGroup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return f.groups, nil
}

func (f *fakeStorage) Disks(context.Context) ([]unit.Disk, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return f.disks, nil
}

func (f *fakeStorage) ActivateDisk(_ context.Context, pm int, disk string, group int, erase bool) (unit.Disk, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changes++
	for i, d := range f.disks {
		if d.PM != pm || d.Name != disk {
			continue
		}
		switch d.State {
		case unit.DiskForeign:
			if !erase {
				return unit.Disk{}, fmt.Errorf("%w: disk %s of PM %d holds data (%s); activating it erases it", ErrConflict, disk, pm, d.Detail)
			}
		case unit.DiskBlank:
		default:
			return unit.Disk{}, fmt.Errorf("%w: disk %s of PM %d is a %s disk", ErrConflict, disk, pm, d.State)
		}
		if group == 0 {
			group = 1
		}
		f.disks[i].State, f.disks[i].Group, f.disks[i].Detail = unit.DiskMember, group, ""
		return f.disks[i], nil
	}
	return unit.Disk{}, ErrNotFound
}

func newStorageServer(t testing.TB, st StorageSource) *Server {
	t.Helper()
	s, err := New(Config{
		Source:     &fakeSource{unit: testUnit()},
		Storage:    st,
		Users:      fakeUsers{users: map[string]string{"admin": "admin"}},
		SessionKey: testKey,
		Node:       1,
		Role:       func() unit.Role { return unit.RolePrimary },
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestStorageNotAvailable(t *testing.T) {
	h := newTestServer(t, &fakeSource{unit: testUnit()}).Handler()
	routes := []struct{ method, path, body string }{
		{"GET", "/api/v1/volumes", ""},
		{"GET", "/api/v1/volumes/1", ""},
		{"POST", "/api/v1/volumes", `{"name":"a","size_bytes":4096}`},
		{"POST", "/api/v1/volumes/1/actions/grow", `{"size_bytes":8192}`},
		{"DELETE", "/api/v1/volumes/1", ""},
		{"POST", "/api/v1/volumes/1/actions/resolve", `{"survivor":1}`},
		{"DELETE", "/api/v1/volumes/1/snapshots/x", ""},
		{"GET", "/api/v1/storage-groups", ""},
		{"GET", "/api/v1/disks", ""},
		{"POST", "/api/v1/disks/actions/activate", `{"pm":1,"disk":"vdb"}`},
	}
	for _, r := range routes {
		w := do(t, h, r.method, r.path, r.body, withBasic("admin", "admin"))
		if w.Code != http.StatusServiceUnavailable || errorMessage(t, w) != "storage not available" {
			t.Errorf("%s %s: %d %s, want 503 storage not available", r.method, r.path, w.Code, w.Body)
		}
		// Not logged in: 401 first, whatever the storage.
		if w := do(t, h, r.method, r.path, r.body); w.Code != http.StatusUnauthorized {
			t.Errorf("%s %s without login: %d, want 401", r.method, r.path, w.Code)
		}
	}
}

func TestStorageAPI(t *testing.T) {
	big := `{"name":"x","size_bytes":1,"pad":"` + strings.Repeat("a", maxStorageBody) + `"}`
	tests := []struct {
		name                 string
		method, target, body string
		srcErr               error
		want                 int
		wantBody             string
		changes              int // calls that must reach a changing method
	}{
		{name: "list", method: "GET", target: "/api/v1/volumes", want: 200, wantBody: `"name":"db-data"`},
		{name: "show", method: "GET", target: "/api/v1/volumes/2", want: 200, wantBody: `"percent":42.7`},
		{name: "show unknown", method: "GET", target: "/api/v1/volumes/9", want: 404, wantBody: "volume 9 not found"},
		{name: "show bad id", method: "GET", target: "/api/v1/volumes/abc", want: 400, wantBody: `invalid volume id \"abc\"`},
		{name: "show zero id", method: "GET", target: "/api/v1/volumes/0", want: 400, wantBody: "want a positive integer"},
		{name: "show negative id", method: "GET", target: "/api/v1/volumes/-2", want: 400, wantBody: "want a positive integer"},
		{name: "show huge id", method: "GET", target: "/api/v1/volumes/99999999999999999999", want: 400, wantBody: "invalid volume id"},
		{name: "list source error", method: "GET", target: "/api/v1/volumes", srcErr: errors.New("store closed"), want: 500, wantBody: "cannot list volumes: store closed"},
		{name: "groups", method: "GET", target: "/api/v1/storage-groups", want: 200, wantBody: `"free_bytes":16106127360`},
		{name: "groups source error", method: "GET", target: "/api/v1/storage-groups", srcErr: errors.New("store closed"), want: 500, wantBody: "store closed"},
		{name: "disks", method: "GET", target: "/api/v1/disks", want: 200, wantBody: `"detail":"ext4 file system"`},

		{name: "create", method: "POST", target: "/api/v1/volumes", body: `{"name":"new.vol_1","size_bytes":67108864}`, want: 201, wantBody: `"state":"Creating"`, changes: 1},
		{name: "create in group", method: "POST", target: "/api/v1/volumes", body: `{"name":"g","size_bytes":4096,"group":1}`, want: 201, wantBody: `"name":"g"`, changes: 1},
		{name: "create unknown group", method: "POST", target: "/api/v1/volumes", body: `{"name":"g","size_bytes":4096,"group":7}`, want: 404, wantBody: "storage group 7: not found", changes: 1},
		{name: "create duplicate", method: "POST", target: "/api/v1/volumes", body: `{"name":"web-boot","size_bytes":4096}`, want: 409, wantBody: `a volume named \"web-boot\" exists`, changes: 1},
		{name: "create too big", method: "POST", target: "/api/v1/volumes", body: `{"name":"huge","size_bytes":1099511627776}`, want: 400, wantBody: "do not fit", changes: 1},
		{name: "create source error", method: "POST", target: "/api/v1/volumes", body: `{"name":"a","size_bytes":1}`, srcErr: errors.New("lvm died"), want: 500, wantBody: `cannot create volume \"a\": lvm died`, changes: 1},
		{name: "create empty body", method: "POST", target: "/api/v1/volumes", want: 400, wantBody: "invalid body: empty"},
		{name: "create not JSON", method: "POST", target: "/api/v1/volumes", body: `name=a`, want: 400, wantBody: "invalid JSON body"},
		{name: "create array", method: "POST", target: "/api/v1/volumes", body: `[]`, want: 400, wantBody: "invalid JSON body"},
		{name: "create unknown field", method: "POST", target: "/api/v1/volumes", body: `{"name":"a","size_bytes":1,"mirror":false}`, want: 400, wantBody: `unknown field \"mirror\"`},
		{name: "create trailing object", method: "POST", target: "/api/v1/volumes", body: `{"name":"a","size_bytes":1}{}`, want: 400, wantBody: "trailing data"},
		{name: "create trailing bracket", method: "POST", target: "/api/v1/volumes", body: `{"name":"a","size_bytes":1}]`, want: 400, wantBody: "trailing data"},
		{name: "create size as string", method: "POST", target: "/api/v1/volumes", body: `{"name":"a","size_bytes":"1G"}`, want: 400, wantBody: "cannot unmarshal string"},
		{name: "create size fraction", method: "POST", target: "/api/v1/volumes", body: `{"name":"a","size_bytes":1.5}`, want: 400, wantBody: "invalid JSON body"},
		{name: "create size overflow", method: "POST", target: "/api/v1/volumes", body: `{"name":"a","size_bytes":9223372036854775808}`, want: 400, wantBody: "invalid JSON body"},
		{name: "create zero size", method: "POST", target: "/api/v1/volumes", body: `{"name":"a","size_bytes":0}`, want: 400, wantBody: "invalid size_bytes 0"},
		{name: "create negative size", method: "POST", target: "/api/v1/volumes", body: `{"name":"a","size_bytes":-4096}`, want: 400, wantBody: "invalid size_bytes -4096"},
		{name: "create no size", method: "POST", target: "/api/v1/volumes", body: `{"name":"a"}`, want: 400, wantBody: `missing field \"size_bytes\"`},
		{name: "create no name", method: "POST", target: "/api/v1/volumes", body: `{"size_bytes":1}`, want: 400, wantBody: `missing field \"name\"`},
		{name: "create empty name", method: "POST", target: "/api/v1/volumes", body: `{"name":"","size_bytes":1}`, want: 400, wantBody: "invalid volume name"},
		{name: "create long name", method: "POST", target: "/api/v1/volumes", body: `{"name":"` + strings.Repeat("a", 65) + `","size_bytes":1}`, want: 400, wantBody: "invalid volume name"},
		{name: "create name with slash", method: "POST", target: "/api/v1/volumes", body: `{"name":"a/b","size_bytes":1}`, want: 400, wantBody: "invalid volume name"},
		{name: "create name like an option", method: "POST", target: "/api/v1/volumes", body: `{"name":"--force","size_bytes":1}`, want: 400, wantBody: "invalid volume name"},
		{name: "create negative group", method: "POST", target: "/api/v1/volumes", body: `{"name":"a","size_bytes":1,"group":-1}`, want: 400, wantBody: "invalid group -1"},
		{name: "create null", method: "POST", target: "/api/v1/volumes", body: `null`, want: 400, wantBody: "missing field"},
		{name: "create oversized body", method: "POST", target: "/api/v1/volumes", body: big, want: 400, wantBody: "larger than 65536 bytes"},

		{name: "grow", method: "POST", target: "/api/v1/volumes/1/actions/grow", body: `{"size_bytes":2147483648}`, want: 202, wantBody: `"size_bytes":2147483648`, changes: 1},
		{name: "grow smaller", method: "POST", target: "/api/v1/volumes/1/actions/grow", body: `{"size_bytes":4096}`, want: 400, wantBody: "only grows", changes: 1},
		{name: "grow unknown", method: "POST", target: "/api/v1/volumes/9/actions/grow", body: `{"size_bytes":4096}`, want: 404, wantBody: "volume 9 not found", changes: 1},
		{name: "grow bad id", method: "POST", target: "/api/v1/volumes/x/actions/grow", body: `{"size_bytes":4096}`, want: 400, wantBody: "invalid volume id"},
		{name: "grow no size", method: "POST", target: "/api/v1/volumes/1/actions/grow", body: `{}`, want: 400, wantBody: `missing field \"size_bytes\"`},
		{name: "grow zero", method: "POST", target: "/api/v1/volumes/1/actions/grow", body: `{"size_bytes":0}`, want: 400, wantBody: "invalid size_bytes"},
		{name: "grow unknown field", method: "POST", target: "/api/v1/volumes/1/actions/grow", body: `{"size":1}`, want: 400, wantBody: "unknown field"},
		{name: "grow trailing", method: "POST", target: "/api/v1/volumes/1/actions/grow", body: `{"size_bytes":1} 2`, want: 400, wantBody: "trailing data"},

		{name: "delete", method: "DELETE", target: "/api/v1/volumes/3", want: 202, wantBody: `{"id":3,"status":"deleting"}`, changes: 1},
		{name: "delete in use", method: "DELETE", target: "/api/v1/volumes/1", want: 409, wantBody: "in use by a VM", changes: 1},
		{name: "delete unknown", method: "DELETE", target: "/api/v1/volumes/9", want: 404, wantBody: "volume 9: not found", changes: 1},
		{name: "delete bad id", method: "DELETE", target: "/api/v1/volumes/1.0", want: 400, wantBody: "invalid volume id"},

		{name: "resolve", method: "POST", target: "/api/v1/volumes/3/actions/resolve", body: `{"survivor":2}`, want: 202, wantBody: `"state":"Syncing"`, changes: 1},
		{name: "resolve not split", method: "POST", target: "/api/v1/volumes/1/actions/resolve", body: `{"survivor":2}`, want: 409, wantBody: "not in split brain", changes: 1},
		{name: "resolve unknown PM", method: "POST", target: "/api/v1/volumes/3/actions/resolve", body: `{"survivor":3}`, want: 400, wantBody: "PM 3 holds no leg", changes: 1},
		{name: "resolve no survivor", method: "POST", target: "/api/v1/volumes/3/actions/resolve", body: `{}`, want: 400, wantBody: `missing field \"survivor\"`},
		{name: "resolve zero survivor", method: "POST", target: "/api/v1/volumes/3/actions/resolve", body: `{"survivor":0}`, want: 400, wantBody: "invalid survivor 0"},
		{name: "resolve survivor as string", method: "POST", target: "/api/v1/volumes/3/actions/resolve", body: `{"survivor":"pm2"}`, want: 400, wantBody: "invalid JSON body"},

		{name: "delete snapshot", method: "DELETE", target: "/api/v1/volumes/3/snapshots/vol3_sb1700000000", want: 202, wantBody: `"id":3`, changes: 1},
		{name: "delete snapshot unknown", method: "DELETE", target: "/api/v1/volumes/3/snapshots/nope", want: 404, wantBody: `volume 3 has no snapshot \"nope\"`, changes: 1},
		{name: "delete snapshot of unknown volume", method: "DELETE", target: "/api/v1/volumes/9/snapshots/nope", want: 404, wantBody: `snapshot \"nope\" of volume 9 not found`, changes: 1},
		{name: "delete snapshot bad name", method: "DELETE", target: "/api/v1/volumes/3/snapshots/-v", want: 400, wantBody: "invalid snapshot name"},
		{name: "delete snapshot dot name", method: "DELETE", target: "/api/v1/volumes/3/snapshots/..", want: 400, wantBody: "invalid snapshot name"},

		{name: "activate blank", method: "POST", target: "/api/v1/disks/actions/activate", body: `{"pm":2,"disk":"vdc","group":1}`, want: 200, wantBody: `"state":"member"`, changes: 1},
		{name: "activate foreign without erase", method: "POST", target: "/api/v1/disks/actions/activate", body: `{"pm":1,"disk":"vdc"}`, want: 409, wantBody: "holds data (ext4 file system)", changes: 1},
		{name: "activate foreign with erase", method: "POST", target: "/api/v1/disks/actions/activate", body: `{"pm":1,"disk":"vdc","group":1,"erase":true}`, want: 200, wantBody: `"group":1`, changes: 1},
		{name: "activate system disk", method: "POST", target: "/api/v1/disks/actions/activate", body: `{"pm":1,"disk":"vda","erase":true}`, want: 409, wantBody: "system disk", changes: 1},
		{name: "activate unknown disk", method: "POST", target: "/api/v1/disks/actions/activate", body: `{"pm":1,"disk":"vdz"}`, want: 404, wantBody: "disk vdz of PM 1 not found", changes: 1},
		{name: "activate no pm", method: "POST", target: "/api/v1/disks/actions/activate", body: `{"disk":"vdc"}`, want: 400, wantBody: `missing field \"pm\"`},
		{name: "activate no disk", method: "POST", target: "/api/v1/disks/actions/activate", body: `{"pm":1}`, want: 400, wantBody: `missing field \"disk\"`},
		{name: "activate disk path", method: "POST", target: "/api/v1/disks/actions/activate", body: `{"pm":1,"disk":"/dev/vdc"}`, want: 400, wantBody: "invalid disk"},
		{name: "activate erase as string", method: "POST", target: "/api/v1/disks/actions/activate", body: `{"pm":1,"disk":"vdc","erase":"yes"}`, want: 400, wantBody: "invalid JSON body"},
		{name: "activate unknown field", method: "POST", target: "/api/v1/disks/actions/activate", body: `{"pm":1,"disk":"vdc","force":true}`, want: 400, wantBody: "unknown field"},
		{name: "activate negative group", method: "POST", target: "/api/v1/disks/actions/activate", body: `{"pm":1,"disk":"vdc","group":-1}`, want: 400, wantBody: "invalid group"},

		{name: "wrong method", method: "PUT", target: "/api/v1/volumes/1", want: 405, wantBody: "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := testStorage()
			st.err = tt.srcErr
			h := newStorageServer(t, st).Handler()
			w := do(t, h, tt.method, tt.target, tt.body, withBasic("admin", "admin"))
			if w.Code != tt.want || !strings.Contains(w.Body.String(), tt.wantBody) {
				t.Errorf("%d %s, want %d with %q", w.Code, w.Body, tt.want, tt.wantBody)
			}
			if tt.want >= 400 {
				errorMessage(t, w)
			}
			if st.changes != tt.changes {
				t.Errorf("%d calls reached a changing method, want %d", st.changes, tt.changes)
			}
		})
	}
}

func TestCreateVolumeLocation(t *testing.T) {
	st := testStorage()
	h := newStorageServer(t, st).Handler()
	w := do(t, h, "POST", "/api/v1/volumes", `{"name":"data","size_bytes":1073741824}`, withBasic("admin", "admin"))
	if w.Code != http.StatusCreated || w.Header().Get("Location") != "/api/v1/volumes/4" {
		t.Fatalf("status %d Location %q, want 201 /api/v1/volumes/4", w.Code, w.Header().Get("Location"))
	}
	var v unit.Volume
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil || v.ID != 4 || v.Name != "data" || v.SizeBytes != 1<<30 {
		t.Errorf("created %+v, %v", v, err)
	}
	if w := do(t, h, "GET", "/api/v1/volumes/4", "", withBasic("admin", "admin")); w.Code != 200 {
		t.Errorf("GET Location: %d", w.Code)
	}
}

func TestStorageEmptyListsAreArrays(t *testing.T) {
	h := newStorageServer(t, &fakeStorage{}).Handler()
	for _, p := range []string{"/api/v1/volumes", "/api/v1/storage-groups", "/api/v1/disks"} {
		w := do(t, h, "GET", p, "", withBasic("admin", "admin"))
		if got := strings.TrimSpace(w.Body.String()); w.Code != 200 || got != "[]" {
			t.Errorf("GET %s = %d %s, want []", p, w.Code, got)
		}
	}
}

// TestStorageCrossOrigin checks that another site's page cannot make a
// logged-in browser change the storage.
func TestStorageCrossOrigin(t *testing.T) {
	st := testStorage()
	h := newStorageServer(t, st).Handler()
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/api/v1/volumes", `{"name":"evil","size_bytes":4096}`},
		{"DELETE", "/api/v1/volumes/3", ""},
		{"POST", "/api/v1/volumes/3/actions/resolve", `{"survivor":1}`},
		{"POST", "/api/v1/disks/actions/activate", `{"pm":1,"disk":"vdc","erase":true}`},
	} {
		w := do(t, h, r.method, r.path, r.body, ck, withHeader("Sec-Fetch-Site", "cross-site"), withHeader("Content-Type", "text/plain"))
		if w.Code != http.StatusForbidden {
			t.Errorf("cross-site %s %s: %d, want 403", r.method, r.path, w.Code)
		}
	}
	if st.changes != 0 {
		t.Errorf("%d cross-site calls reached the storage", st.changes)
	}
	w := do(t, h, "DELETE", "/api/v1/volumes/3", "", ck, withHeader("Sec-Fetch-Site", "same-origin"))
	if w.Code != http.StatusAccepted {
		t.Errorf("same-origin DELETE: %d %s", w.Code, w.Body)
	}
}

func TestVolumeState(t *testing.T) {
	sync := func(p float64, eta int64) *unit.SyncProgress { return &unit.SyncProgress{Percent: p, ETASeconds: eta} }
	tests := []struct {
		v    unit.Volume
		want string
	}{
		{unit.Volume{State: unit.SyncUpToDate}, "UpToDate"},
		{unit.Volume{State: unit.SyncSyncing, Sync: sync(42.7, 12)}, "Syncing 42% (ETA 12s)"},
		{unit.Volume{State: unit.SyncSyncing, Sync: sync(99.99, 0)}, "Syncing 99%"},
		{unit.Volume{State: unit.SyncSyncing, Sync: sync(100, 1)}, "Syncing 99% (ETA 1s)"},
		{unit.Volume{State: unit.SyncSyncing, Sync: sync(-3, 3725)}, "Syncing 0% (ETA 1h 2m)"},
		{unit.Volume{State: unit.SyncSyncing}, "Syncing"},
		{unit.Volume{State: unit.SyncDegraded, Sync: sync(10, 10)}, "Degraded"},
		{unit.Volume{}, "unknown"},
	}
	for _, tt := range tests {
		if got := tt.v.StateText(); got != tt.want {
			t.Errorf("volumeState(%s %+v) = %q, want %q", tt.v.State, tt.v.Sync, got, tt.want)
		}
	}
}

func TestDashboardStorage(t *testing.T) {
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	t.Run("renders volumes and groups", func(t *testing.T) {
		h := newStorageServer(t, testStorage()).Handler()
		w := do(t, h, "GET", "/", "", ck)
		if w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
		body := w.Body.String()
		for _, want := range []string{
			`id="storage"`, "web-boot", "db-data", "1 GiB", "64 MiB", "Syncing 42% (ETA 12s)", "sync-syncing",
			"sync-splitbrain", "PM 1 Inconsistent", "PM 2 UpToDate", ">PM 2<", ">none<",
			"sg1", "20 GiB", "15 GiB", "PM 1 vdb, PM 2 vdb", `id="volume-rows"`, `id="group-rows"`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("dashboard lacks %q", want)
			}
		}
		if t.Failed() {
			t.Logf("dashboard:\n%s", body)
		}
	})
	t.Run("empty", func(t *testing.T) {
		h := newStorageServer(t, &fakeStorage{}).Handler()
		body := do(t, h, "GET", "/", "", ck).Body.String()
		if !strings.Contains(body, "No volumes.") || !strings.Contains(body, "No storage groups.") {
			t.Errorf("empty storage not shown:\n%s", body)
		}
	})
	t.Run("storage error keeps the page", func(t *testing.T) {
		h := newStorageServer(t, &fakeStorage{err: errors.New("lvm hung")}).Handler()
		w := do(t, h, "GET", "/", "", ck)
		if w.Code != 200 || !strings.Contains(w.Body.String(), "cannot read storage state: lvm hung") || !strings.Contains(w.Body.String(), "pm1") {
			t.Errorf("status %d body %s, want 200 with the unit and the storage error", w.Code, w.Body)
		}
	})
	t.Run("escapes names", func(t *testing.T) {
		st := testStorage()
		st.vols[0].Name = "<img src=x>"
		body := do(t, newStorageServer(t, st).Handler(), "GET", "/", "", ck).Body.String()
		if strings.Contains(body, "<img src=x>") {
			t.Errorf("volume name not escaped")
		}
	})
	t.Run("no storage source", func(t *testing.T) {
		body := do(t, newTestServer(t, &fakeSource{unit: testUnit()}).Handler(), "GET", "/", "", ck).Body.String()
		if strings.Contains(body, `id="storage"`) {
			t.Errorf("storage section without a StorageSource")
		}
	})
}

// FuzzStorageBodies checks that no body crashes the storage decoders and
// that an accepted body always carries valid values.
func FuzzStorageBodies(f *testing.F) {
	for _, s := range []string{
		`{"name":"a","size_bytes":4096}`, `{"name":"a","size_bytes":4096,"group":2}`, `{"name":"","size_bytes":1}`,
		`{"name":"a","size_bytes":-1}`, `{"name":"a","size_bytes":1}]`, `{"size_bytes":1.5}`, `{"survivor":2}`,
		`{"survivor":"2"}`, `{"pm":1,"disk":"vdb","group":1,"erase":true}`, `{"pm":1,"disk":"../sda"}`, `null`, `[]`, ``,
		`{"NAME":"a","Size_Bytes":1}`, `{"name":"a","name":"b","size_bytes":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if spec, err := parseVolumeSpec(body); err == nil {
			if !nameChars(spec.Name, maxVolumeName) || spec.SizeBytes <= 0 || spec.Group < 0 {
				t.Fatalf("parseVolumeSpec accepted %+v", spec)
			}
		}
		if size, err := parseGrow(body); err == nil && size <= 0 {
			t.Fatalf("parseGrow accepted %d", size)
		}
		if pm, err := parseResolve(body); err == nil && pm < 1 {
			t.Fatalf("parseResolve accepted %d", pm)
		}
		if req, err := parseActivate(body); err == nil {
			if req.PM < 1 || req.Group < 0 || !objectName(req.Disk, maxDiskName) || strings.ContainsAny(req.Disk, "/\x00") {
				t.Fatalf("parseActivate accepted %+v", req)
			}
		}
	})
}

func TestParseActivateDefaults(t *testing.T) {
	got, err := parseActivate([]byte(`{"pm":2,"disk":"nvme0n1"}`))
	if want := (activateRequest{PM: 2, Disk: "nvme0n1"}); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("parseActivate = %+v, %v; want %+v", got, err, want)
	}
}
