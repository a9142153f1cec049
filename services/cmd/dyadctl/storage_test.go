package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/webui"
)

// fakeStorage serves fixed volumes and records the changing calls.
type fakeStorage struct {
	mu     sync.Mutex
	vols   []unit.Volume
	groups []unit.StorageGroup
	disks  []unit.Disk
	calls  []string
}

func testStorage() *fakeStorage {
	return &fakeStorage{
		vols: []unit.Volume{
			{
				ID: 1, Name: "web-boot", Group: 1, SizeBytes: 1 << 30, Minor: 0, Device: "/dev/drbd0", State: unit.SyncUpToDate, Primary: 1, Created: t0,
				Legs: []unit.Leg{
					{PM: 1, Role: "Primary", Disk: "UpToDate", Connection: "Connected", Backing: "/dev/dyad_sg1/vol1", Disks: []string{"vdb"}, LastPrimary: t0},
					{PM: 2, Role: "Secondary", Disk: "UpToDate", Connection: "Connected", Backing: "/dev/dyad_sg1/vol1", Disks: []string{"vdb", "vdc"}},
				},
			},
			{
				ID: 2, Name: "db-data", Group: 1, SizeBytes: 64 << 20, Minor: 1, Device: "/dev/drbd1", State: unit.SyncSyncing, Primary: 2, Created: t0,
				Sync: &unit.SyncProgress{Percent: 42.7, RateBytes: 10 << 20, ETASeconds: 12, OutOfSyncBytes: 30 << 20, Source: 2},
				Legs: []unit.Leg{
					{PM: 1, Role: "Secondary", Disk: "Inconsistent", Connection: "SyncTarget"},
					{PM: 2, Role: "Primary", Disk: "UpToDate", Connection: "SyncSource"},
				},
			},
			{
				ID: 3, Name: "scratch", Group: 2, SizeBytes: 3 << 29, Minor: 2, State: unit.SyncSplitBrain, Created: t0,
				Detail: "both legs were written while the PMs were apart",
				Legs: []unit.Leg{
					{PM: 1, Role: "Secondary", Disk: "UpToDate", Connection: "StandAlone"},
					{PM: 2, Role: "Secondary", Disk: "Failed", Connection: "StandAlone", Failed: true, Detail: "I/O error"},
				},
				SplitBrain: []unit.SplitSide{{PM: 1, Generation: "AAAA", LastPrimary: t0}, {PM: 2, Generation: "BBBB", LastWriter: true}},
				Snapshots:  []unit.Snapshot{{Name: "vol3_sb1700000000", PM: 1, SizeBytes: 3 << 29, Created: t0, Reason: "split brain"}},
			},
			{ID: 4, Name: "2", Group: 1, SizeBytes: 4096, State: unit.SyncCreating},
		},
		groups: []unit.StorageGroup{
			{ID: 1, Name: "sg1", CapacityBytes: 20 << 30, FreeBytes: 15 << 30, Volumes: 2, Disks: []unit.Disk{{PM: 1, Name: "vdb"}, {PM: 2, Name: "vdb"}}},
			{ID: 2, Name: "sg2", CapacityBytes: 10 << 30, FreeBytes: 10<<30 - 3<<29, Volumes: 1},
		},
		disks: []unit.Disk{
			{PM: 1, Name: "vda", SizeBytes: 8 << 30, State: unit.DiskSystem, Model: "QEMU HARDDISK", Serial: "QM1"},
			{PM: 1, Name: "vdb", SizeBytes: 20 << 30, State: unit.DiskMember, Group: 1},
			{PM: 1, Name: "vdc", SizeBytes: 20 << 30, State: unit.DiskForeign, Detail: "ext4 file system"},
			{PM: 2, Name: "vdc", SizeBytes: 20 << 30, State: unit.DiskBlank},
		},
	}
}

func (f *fakeStorage) record(format string, args ...any) {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
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
	if spec.SizeBytes > 15<<30 {
		return unit.Volume{}, fmt.Errorf("%w: %s do not fit: storage group 1 has 15 GiB free", webui.ErrInvalid, unit.FormatBytes(spec.SizeBytes))
	}
	return unit.Volume{ID: 5, Name: spec.Name, Group: max(spec.Group, 1), SizeBytes: spec.SizeBytes, Minor: 4, State: unit.SyncCreating, Created: t0}, nil
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
	v, err := f.Volume(ctx, id)
	if err == nil && v.State != unit.SyncSplitBrain {
		return unit.Volume{}, fmt.Errorf("%w: volume %d is not in split brain", webui.ErrConflict, id)
	}
	v.State, v.SplitBrain = unit.SyncSyncing, nil
	return v, err
}

func (f *fakeStorage) DeleteSnapshot(ctx context.Context, id int, name string) (unit.Volume, error) {
	f.record("delete snapshot %d %s", id, name)
	v, err := f.Volume(ctx, id)
	if err != nil {
		return v, err
	}
	if len(v.Snapshots) == 0 || v.Snapshots[0].Name != name {
		return unit.Volume{}, fmt.Errorf("volume %d has no snapshot %q: %w", id, name, webui.ErrNotFound)
	}
	v.Snapshots = nil
	return v, nil
}

func (f *fakeStorage) StorageGroups(context.Context) ([]unit.StorageGroup, error) {
	return f.groups, nil
}

func (f *fakeStorage) Disks(context.Context) ([]unit.Disk, error) { return f.disks, nil }

func (f *fakeStorage) ActivateDisk(_ context.Context, pm int, disk string, group int, erase bool) (unit.Disk, error) {
	f.record("activate %d %s %d %v", pm, disk, group, erase)
	for _, d := range f.disks {
		if d.PM == pm && d.Name == disk {
			if d.State == unit.DiskForeign && !erase {
				return unit.Disk{}, fmt.Errorf("%w: disk %s holds data", webui.ErrConflict, disk)
			}
			d.State, d.Group, d.Detail = unit.DiskMember, max(group, 1), ""
			return d, nil
		}
	}
	return unit.Disk{}, webui.ErrNotFound
}

// startStorage serves the real webui handler over fake sources; st may be
// nil for a unit without storage.
func startStorage(t *testing.T, st webui.StorageSource) func(string) string {
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
	env := map[string]string{"DYAD_URL": ts.URL, "DYAD_PASSWORD": "secret"}
	return func(k string) string { return env[k] }
}

func TestStorageTables(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{
			args: []string{"volume", "list"},
			want: `ID  NAME      GROUP  SIZE     STATE                  PRIMARY  LEGS
1   web-boot  1      1 GiB    UpToDate               PM1      PM1 UpToDate, PM2 UpToDate
2   db-data   1      64 MiB   Syncing 42% (ETA 12s)  PM2      PM1 Inconsistent, PM2 UpToDate
3   scratch   2      1.5 GiB  SplitBrain             -        PM1 UpToDate, PM2 failed
4   2         1      4 KiB    Creating               -        -
`,
		},
		{
			args: []string{"volume", "show", "2"},
			want: `ID:       2
Name:     db-data
Group:    1
Size:     64 MiB (67108864 bytes)
State:    Syncing 42% (ETA 12s)
Resync:   from PM2, 10 MiB/s, 30 MiB left
Primary:  PM2
Device:   /dev/drbd1 (minor 1)
Created:  2026-11-22 05:00:00 UTC
Detail:   -

Legs:
PM  ROLE       DISK          CONNECTION  BACKING  ON DISKS  LAST PRIMARY  DETAIL
1   Secondary  Inconsistent  SyncTarget  -        -         -             -
2   Primary    UpToDate      SyncSource  -        -         -             -
`,
		},
		{
			args: []string{"volume", "show", "scratch"},
			want: `ID:       3
Name:     scratch
Group:    2
Size:     1.5 GiB (1610612736 bytes)
State:    SplitBrain
Primary:  -
Device:   - (minor 2)
Created:  2026-11-22 05:00:00 UTC
Detail:   both legs were written while the PMs were apart

Legs:
PM  ROLE       DISK             CONNECTION  BACKING  ON DISKS  LAST PRIMARY  DETAIL
1   Secondary  UpToDate         StandAlone  -        -         -             -
2   Secondary  Failed (failed)  StandAlone  -        -         -             I/O error

Split brain: both legs were written apart. Keep one side with
  dyadctl volume resolve 3 --survivor PM
The other side is kept as a snapshot.
PM  GENERATION  LAST PRIMARY             LAST WRITER
1   AAAA        2026-11-22 05:00:00 UTC  no
2   BBBB        -                        yes

Snapshots:
NAME               PM  SIZE     CREATED                  REASON
vol3_sb1700000000  1   1.5 GiB  2026-11-22 05:00:00 UTC  split brain
`,
		},
		{
			args: []string{"storage-group", "list"},
			want: `ID  NAME  CAPACITY  FREE     VOLUMES  DISKS
1   sg1   20 GiB    15 GiB   2        PM1 vdb, PM2 vdb
2   sg2   10 GiB    8.5 GiB  1        -
`,
		},
		{
			args: []string{"disk", "list"},
			want: `PM  DISK  SIZE    STATE    GROUP  MODEL          SERIAL  DETAIL
1   vda   8 GiB   system   -      QEMU HARDDISK  QM1     -
1   vdb   20 GiB  member   1      -              -       -
1   vdc   20 GiB  foreign  -      -              -       ext4 file system
2   vdc   20 GiB  blank    -      -              -       -
`,
		},
	}
	env := startStorage(t, testStorage())
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := runCmd(t, env, tt.args...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			if out != tt.want {
				t.Errorf("output:\n%s\nwant:\n%s", out, tt.want)
			}
		})
	}
}

func TestStorageEmpty(t *testing.T) {
	env := startStorage(t, &fakeStorage{})
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"volume", "list"}, "No volumes.\n"},
		{[]string{"storage-group", "list"}, "No storage groups.\n"},
		{[]string{"disk", "list"}, "No disks reported.\n"},
	} {
		code, out, _ := runCmd(t, env, tt.args...)
		if code != 0 || out != tt.want {
			t.Errorf("%v: exit %d, output %q, want %q", tt.args, code, out, tt.want)
		}
	}
}

func TestStorageJSON(t *testing.T) {
	st := testStorage()
	env := startStorage(t, st)
	tests := []struct {
		args   []string
		decode func([]byte) (any, error)
		want   any
	}{
		{[]string{"--json", "volume", "list"}, decodeAs[[]unit.Volume], st.vols},
		{[]string{"--json", "volume", "show", "web-boot"}, decodeAs[unit.Volume], st.vols[0]},
		{[]string{"--json", "storage-group", "list"}, decodeAs[[]unit.StorageGroup], st.groups},
		{[]string{"--json", "disk", "list"}, decodeAs[[]unit.Disk], st.disks},
		{[]string{"--json", "volume", "delete", "3", "--yes"}, decodeAs[map[string]any], map[string]any{"id": float64(3), "status": "deleting"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := runCmd(t, env, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			got, err := tt.decode([]byte(out))
			if err != nil {
				t.Fatalf("output is not the API JSON: %v\n%s", err, out)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestStorageCommands(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		code     int
		want     []string // in stdout+stderr
		wantCall string   // the changing call that reached the unit, "" for none
		usage    bool     // whether the usage text is shown
	}{
		{name: "create", args: []string{"volume", "create", "data", "1GiB"}, want: []string{"Name:     data", "Size:     1 GiB (1073741824 bytes)", "Creating"}, wantCall: "create data 1073741824 0"},
		{name: "create in group, flag last", args: []string{"volume", "create", "data", "512M", "--group", "2"}, want: []string{"Group:    2"}, wantCall: "create data 536870912 2"},
		{name: "create in group, flag first", args: []string{"volume", "create", "--group=2", "data", "10G"}, wantCall: "create data 10737418240 2"},
		{name: "create name after --", args: []string{"volume", "create", "--", "-odd", "4096"}, code: 1, want: []string{"400 Bad Request: invalid volume name \"-odd\""}},
		{name: "create too big", args: []string{"volume", "create", "big", "1TiB"}, code: 1, want: []string{"dyadctl: volume create big 1TiB: dyad API: 400 Bad Request: invalid request: 1 TiB do not fit: storage group 1 has 15 GiB free"}, wantCall: "create big 1099511627776 0"},
		{name: "create bad size", args: []string{"volume", "create", "data", "lots"}, code: 2, want: []string{`invalid size "lots"`}, usage: true},
		{name: "create zero size", args: []string{"volume", "create", "data", "0G"}, code: 2, want: []string{"must be more than zero"}, usage: true},
		{name: "create missing size", args: []string{"volume", "create", "data"}, code: 2, want: []string{"takes a name and a size"}, usage: true},
		{name: "create bad group", args: []string{"volume", "create", "data", "1G", "--group", "two"}, code: 2, want: []string{"invalid value"}, usage: true},
		{name: "create negative group", args: []string{"volume", "create", "data", "1G", "--group", "-1"}, code: 2, want: []string{"invalid --group -1"}, usage: true},
		{name: "create unknown flag", args: []string{"volume", "create", "data", "1G", "--thin"}, code: 2, want: []string{"flag provided but not defined: -thin"}, usage: true},

		{name: "grow", args: []string{"volume", "grow", "2", "128MiB"}, want: []string{"128 MiB (134217728 bytes)"}, wantCall: "grow 2 134217728"},
		{name: "grow unknown", args: []string{"volume", "grow", "9", "1G"}, code: 1, want: []string{"404 Not Found: volume 9 not found"}, wantCall: "grow 9 1073741824"},
		{name: "grow bad id", args: []string{"volume", "grow", "x", "1G"}, code: 2, want: []string{`invalid volume id "x"`}, usage: true},
		{name: "grow negative size", args: []string{"volume", "grow", "2", "-1G"}, code: 2, want: []string{`invalid size "-1G"`}, usage: true},

		{name: "delete without yes", args: []string{"volume", "delete", "3"}, code: 2, want: []string{"dyadctl: volume delete destroys volume 3 and its data on both PMs; run again with --yes"}},
		{name: "delete", args: []string{"volume", "delete", "3", "--yes"}, want: []string{"Deleting volume 3: its legs are being removed on both PMs."}, wantCall: "delete 3"},
		{name: "delete in use", args: []string{"volume", "delete", "--yes", "1"}, code: 1, want: []string{"409 Conflict: conflict: volume 1 is the boot volume of VM web"}, wantCall: "delete 1"},
		{name: "delete by name", args: []string{"volume", "delete", "scratch", "--yes"}, code: 2, want: []string{`invalid volume id "scratch"`}, usage: true},

		{name: "resolve", args: []string{"volume", "resolve", "3", "--survivor", "2"}, want: []string{"State:    Syncing"}, wantCall: "resolve 3 2"},
		{name: "resolve not split", args: []string{"volume", "resolve", "1", "--survivor=1"}, code: 1, want: []string{"409 Conflict: conflict: volume 1 is not in split brain"}, wantCall: "resolve 1 1"},
		{name: "resolve without survivor", args: []string{"volume", "resolve", "3"}, code: 2, want: []string{"needs --survivor PM"}, usage: true},

		{name: "snapshot delete", args: []string{"volume", "snapshot-delete", "3", "vol3_sb1700000000"}, want: []string{"Name:     scratch"}, wantCall: "delete snapshot 3 vol3_sb1700000000"},
		{name: "snapshot delete unknown", args: []string{"volume", "snapshot-delete", "3", "nope"}, code: 1, want: []string{`404 Not Found: volume 3 has no snapshot "nope"`}, wantCall: "delete snapshot 3 nope"},
		{name: "snapshot delete no name", args: []string{"volume", "snapshot-delete", "3"}, code: 2, want: []string{"takes a volume id and a snapshot name"}, usage: true},

		{name: "show by digits name", args: []string{"volume", "show", "4"}, want: []string{"Name:     2"}},
		{name: "show unknown", args: []string{"volume", "show", "nope"}, code: 1, want: []string{`no volume with id or name "nope"`}},
		{name: "show unknown id", args: []string{"volume", "show", "99"}, code: 1, want: []string{`no volume with id or name "99"`}},
		{name: "show two", args: []string{"volume", "show", "1", "2"}, code: 2, want: []string{"takes one volume id or name"}, usage: true},
		{name: "list extra", args: []string{"volume", "list", "all"}, code: 2, want: []string{`unknown command "volume list all"`}, usage: true},

		{name: "activate blank", args: []string{"disk", "activate", "2", "vdc", "--group", "1"}, want: []string{"2   vdc   20 GiB  member  1"}, wantCall: "activate 2 vdc 1 false"},
		{name: "activate foreign without erase", args: []string{"disk", "activate", "1", "vdc"}, code: 1, want: []string{"disk vdc of PM 1 holds data (ext4 file system): activating it erases the whole disk; run again with --erase"}},
		{name: "activate foreign with erase", args: []string{"disk", "activate", "--erase", "1", "vdc"}, want: []string{"member"}, wantCall: "activate 1 vdc 0 true"},
		{name: "activate unknown disk", args: []string{"disk", "activate", "1", "vdz"}, code: 1, want: []string{"404 Not Found: disk vdz of PM 1 not found"}, wantCall: "activate 1 vdz 0 false"},
		{name: "activate bad pm", args: []string{"disk", "activate", "one", "vdc"}, code: 2, want: []string{`invalid PM id "one"`}, usage: true},
		{name: "activate missing disk", args: []string{"disk", "activate", "1"}, code: 2, want: []string{"takes a PM id and a disk name"}, usage: true},
		{name: "subcommand help", args: []string{"volume", "create", "-h"}, code: 0, want: []string{"volume create NAME SIZE [--group ID]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := testStorage()
			env := startStorage(t, st)
			code, stdout, stderr := runCmd(t, env, tt.args...)
			got := stdout + stderr
			if code != tt.code {
				t.Errorf("exit %d, want %d: %s", code, tt.code, got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("output lacks %q:\n%s", w, got)
				}
			}
			if tt.code != 0 && stdout != "" {
				t.Errorf("failure wrote to stdout: %q", stdout)
			}
			if shown := strings.Contains(stderr, "Usage: dyadctl"); shown != tt.usage && tt.code != 0 {
				t.Errorf("usage shown = %v, want %v", shown, tt.usage)
			}
			var want []string
			if tt.wantCall != "" {
				want = []string{tt.wantCall}
			}
			if !reflect.DeepEqual(st.calls, want) {
				t.Errorf("changing calls %q, want %q", st.calls, want)
			}
		})
	}
}

func TestStorageNotAvailable(t *testing.T) {
	env := startStorage(t, nil)
	code, _, errOut := runCmd(t, env, "volume", "list")
	if code != 1 || !strings.Contains(errOut, "503 Service Unavailable: storage not available") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestHelpListsStorage(t *testing.T) {
	_, _, errOut := runCmd(t, func(string) string { return "" }, "-h")
	for _, want := range []string{"volume create NAME SIZE", "volume delete ID --yes", "--survivor PM", "storage-group list", "disk activate PM DISK", "--erase", "64MiB"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("usage lacks %q", want)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "4096", want: 4096},
		{in: "1", want: 1},
		{in: "100B", want: 100},
		{in: "64MiB", want: 64 << 20},
		{in: "64mib", want: 64 << 20},
		{in: "1GiB", want: 1 << 30},
		{in: "512M", want: 512 << 20},
		{in: "10G", want: 10 << 30},
		{in: "10g", want: 10 << 30},
		{in: "2T", want: 2 << 40},
		{in: "3KiB", want: 3 << 10},
		{in: "1GB", want: 1e9},
		{in: "5MB", want: 5e6},
		{in: " 10 GiB ", want: 10 << 30},
		{in: "007K", want: 7 << 10},
		{in: "8191P", want: 8191 << 50},
		{in: "9223372036854775807", want: math.MaxInt64},
		{in: "0", wantErr: "more than zero"},
		{in: "0GiB", wantErr: "more than zero"},
		{in: "", wantErr: "want a whole number"},
		{in: "GiB", wantErr: "want a whole number"},
		{in: "-1G", wantErr: "want a whole number"},
		{in: "+1G", wantErr: "want a whole number"},
		{in: "1.5G", wantErr: "use whole numbers"},
		{in: "1,5G", wantErr: "use whole numbers"},
		{in: "1X", wantErr: `unknown unit "X"`},
		{in: "1 G B", wantErr: "unknown unit"},
		{in: "1Gi", wantErr: "unknown unit"},
		{in: "1e9", wantErr: "unknown unit"},
		{in: "0x10", wantErr: "unknown unit"},
		{in: "8192P", wantErr: "too large"},
		{in: "9223372036854775808", wantErr: "too large"},
		{in: "99999999999999999999999G", wantErr: "too large"},
		{in: "16EiB", wantErr: "unknown unit"},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseSize(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

// FuzzParseSize checks that no input crashes the size parser, that an
// accepted size is positive, and that plain numbers read as bytes.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"4096", "64MiB", "1GiB", "512M", "10G", "1GB", "0", "-1", "1.5G", "8192P", "9223372036854775808", " 1 k "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err != nil {
			return
		}
		if n <= 0 {
			t.Fatalf("parseSize(%q) = %d", s, n)
		}
		if plain, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil && plain != n {
			t.Fatalf("parseSize(%q) = %d, want %d bytes", s, n, plain)
		}
		if back, err := parseSize(strconv.FormatInt(n, 10) + "B"); err != nil || back != n {
			t.Fatalf("parseSize(%dB) = %d, %v", n, back, err)
		}
	})
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args      []string
		wantPos   []string
		wantGroup int
		wantYes   bool
		wantErr   bool
	}{
		{args: []string{"a", "b"}, wantPos: []string{"a", "b"}},
		{args: []string{"a", "--group", "2", "b"}, wantPos: []string{"a", "b"}, wantGroup: 2},
		{args: []string{"--yes", "a", "-group=3"}, wantPos: []string{"a"}, wantGroup: 3, wantYes: true},
		{args: []string{"a", "--", "--yes", "-x"}, wantPos: []string{"a", "--yes", "-x"}},
		{args: []string{"--", "-"}, wantPos: []string{"-"}},
		{args: []string{"a", "-"}, wantPos: []string{"a", "-"}},
		{args: []string{"a", "--group"}, wantErr: true},
		{args: []string{"--nope"}, wantErr: true},
		{args: nil, wantPos: nil},
	}
	for _, tt := range tests {
		fs := subFlags("test")
		group := fs.Int("group", 0, "")
		yes := fs.Bool("yes", false, "")
		pos, err := parseFlags(fs, tt.args)
		if tt.wantErr {
			if err == nil || !errors.Is(err, errUsage) {
				t.Errorf("parseFlags(%q) error %v, want a usage error", tt.args, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(pos, tt.wantPos) || *group != tt.wantGroup || *yes != tt.wantYes {
			t.Errorf("parseFlags(%q) = %q group %d yes %v, %v; want %q group %d yes %v",
				tt.args, pos, *group, *yes, err, tt.wantPos, tt.wantGroup, tt.wantYes)
		}
	}
	fs := subFlags("test")
	if _, err := parseFlags(fs, []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
}

func TestVolumeState(t *testing.T) {
	sp := func(p float64, eta int64) *unit.SyncProgress { return &unit.SyncProgress{Percent: p, ETASeconds: eta} }
	tests := []struct {
		v    unit.Volume
		want string
	}{
		{unit.Volume{State: unit.SyncUpToDate}, "UpToDate"},
		{unit.Volume{State: unit.SyncSyncing, Sync: sp(42.7, 12)}, "Syncing 42% (ETA 12s)"},
		{unit.Volume{State: unit.SyncSyncing, Sync: sp(100, 0)}, "Syncing 99%"},
		{unit.Volume{State: unit.SyncSyncing, Sync: sp(math.NaN(), 90)}, "Syncing 0% (ETA 1m 30s)"},
		{unit.Volume{State: unit.SyncSyncing}, "Syncing"},
		{unit.Volume{State: unit.SyncDegraded, Sync: sp(3, 3)}, "Degraded"},
		{unit.Volume{}, "unknown"},
	}
	for _, tt := range tests {
		if got := tt.v.StateText(); got != tt.want {
			t.Errorf("volumeState(%s %+v) = %q, want %q", tt.v.State, tt.v.Sync, got, tt.want)
		}
	}
}
