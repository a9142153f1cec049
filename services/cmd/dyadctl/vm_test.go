package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/vm"
	"github.com/dyad-ha/dyad/webui"
)

// ctlVMs is a VMSource over fixed VMs that follows the real state table
// and records every changing call with its arguments.
type ctlVMs struct {
	mu    sync.Mutex
	vms   []unit.VM
	calls []string
}

func allowedIn(s vm.State) []string {
	out := []string{}
	for _, c := range vm.Allowed(s) {
		out = append(out, string(c))
	}
	return out
}

func testCtlVMs() *ctlVMs {
	return &ctlVMs{vms: []unit.VM{
		{
			ID: 1, UUID: "0b7c9f0e-1a52-4d8c-9a55-6f7a3f9b1d01", Name: "web", State: "Running", Activity: "running on PM 1",
			Allowed: allowedIn(vm.Running), Node: 1, VCPUs: 2, MemoryBytes: 512 << 20, Boot: "disk", Starts: 3, Started: t0,
			Volumes: []unit.VMVolume{
				{VolumeID: 4, Name: "web-boot", SizeBytes: 1 << 30, Boot: true, State: "UpToDate"},
				{VolumeID: 6, Name: "web-data", SizeBytes: 64 << 20, State: "Syncing"},
			},
			NICs: []unit.VMNIC{{Network: "business", MAC: "52:54:00:12:34:56"}},
			Migration: &unit.VMMigration{From: 2, To: 1, Status: "completed", Started: t0, Finished: t0.Add(5123e6),
				TotalMs: 5123, DowntimeMs: 87},
			Warnings: []string{"vCPUs over-provisioned"},
		},
		{
			ID: 2, Name: "db", State: "Stopped", Allowed: allowedIn(vm.Stopped), Node: 2, VCPUs: 1, MemoryBytes: 1 << 30,
			Boot: "cd", CD: "debian.iso",
			Volumes: []unit.VMVolume{{VolumeID: 5, Name: "db-boot", SizeBytes: 64 << 20, Boot: true}},
		},
		{
			// A VM whose name is another VM's id: "vm show 1" is VM 1,
			// "vm show 7" (no VM 7) is this one.
			ID: 3, Name: "7", State: "Critical", Activity: "crashed 3 times within 1h0m0s", Allowed: allowedIn(vm.Critical),
			VCPUs: 1, MemoryBytes: 256 << 20, Crashes: 3, Critical: true,
		},
		{ID: 4, Name: "new", State: "Busy", Activity: "creating volumes", Allowed: []string{}, VCPUs: 1, MemoryBytes: 256 << 20},
	}}
}

func (f *ctlVMs) record(format string, args ...any) {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

func (f *ctlVMs) VMs(context.Context) ([]unit.VM, error) { return f.vms, nil }

func (f *ctlVMs) VM(_ context.Context, id int) (unit.VM, error) {
	for _, v := range f.vms {
		if v.ID == id {
			return v, nil
		}
	}
	return unit.VM{}, webui.ErrNotFound
}

func (f *ctlVMs) CreateVM(_ context.Context, req unit.VMCreate) (unit.VM, error) {
	b, _ := json.Marshal(req)
	f.record("create %s", b)
	if req.MemoryMiB > 3072 {
		return unit.VM{}, &vm.ResourceError{Problems: []vm.Problem{{Field: "memory", Message: fmt.Sprintf("memory %d MiB: a VM may have at most 3 GiB", req.MemoryMiB)}}}
	}
	return unit.VM{ID: 5, Name: req.Name, State: "Busy", Activity: "creating volumes", Allowed: []string{}, VCPUs: req.VCPUs, MemoryBytes: req.MemoryMiB << 20, Boot: req.Boot}, nil
}

func (f *ctlVMs) ConfigVM(ctx context.Context, id int, req unit.VMConfig) (unit.VM, error) {
	b, _ := json.Marshal(req)
	f.record("config %d %s", id, b)
	v, err := f.VM(ctx, id)
	if err != nil {
		return v, err
	}
	if err := vm.Check(vm.State(v.State), vm.Config); err != nil {
		return unit.VM{}, err
	}
	if req.VCPUs != nil {
		v.VCPUs = *req.VCPUs
	}
	return v, nil
}

func (f *ctlVMs) Command(ctx context.Context, id int, cmd string, args unit.VMAction) (unit.VM, error) {
	b, _ := json.Marshal(args)
	f.record("command %d %s %s", id, cmd, b)
	v, err := f.VM(ctx, id)
	if err != nil {
		return v, err
	}
	if err := vm.Check(vm.State(v.State), vm.Command(cmd)); err != nil {
		return unit.VM{}, err
	}
	v.State, v.Activity = "Booting", "starting on PM "+fmt.Sprint(v.Node)
	return v, nil
}

func (f *ctlVMs) RemoveVM(ctx context.Context, id int, deleteData bool) error {
	f.record("remove %d %v", id, deleteData)
	v, err := f.VM(ctx, id)
	if err != nil {
		return err
	}
	return vm.Check(vm.State(v.State), vm.Remove)
}

func (f *ctlVMs) DialConsole(context.Context, int, string) (net.Conn, error) {
	return nil, fmt.Errorf("%w: no consoles here", webui.ErrConflict)
}

func (f *ctlVMs) SerialLog(ctx context.Context, id int) ([]byte, error) {
	if _, err := f.VM(ctx, id); err != nil {
		return nil, err
	}
	return []byte("GUEST START boot=3 n=0\nDURABLE boot=3 n=1\n"), nil
}

// startVMs serves the real webui handler with VMs and returns the
// environment pointing dyadctl at it.
func startVMs(t *testing.T, vms webui.VMSource) func(string) string {
	t.Helper()
	s, err := webui.New(webui.Config{
		Source: &fakeSource{unit: testUnit()}, VMs: vms, Users: users{},
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

func TestVMTables(t *testing.T) {
	env := startVMs(t, testCtlVMs())
	tests := []struct {
		args []string
		want string
	}{
		{
			args: []string{"vm", "list"},
			want: `ID  NAME  STATE     NODE  VCPUS  MEMORY   ACTIVITY
1   web   Running   PM1   2      512 MiB  running on PM 1
2   db    Stopped   PM2   1      1 GiB    -
3   7     Critical  -     1      256 MiB  crashed 3 times within 1h0m0s
4   new   Busy      -     1      256 MiB  creating volumes
`,
		},
		{
			args: []string{"vm", "show", "web"},
			want: `ID:        1
Name:      web
UUID:      0b7c9f0e-1a52-4d8c-9a55-6f7a3f9b1d01
State:     Running
Activity:  running on PM 1
Allowed:   Console (console), Shutdown (shutdown), Power Off (poweroff), Dump (dump), Migrate (migrate)
Node:      PM1
vCPUs:     2
Memory:    512 MiB
Boot:      disk
Crashes:   0
Starts:    3
Started:   2026-11-22 05:00:00 UTC
Warning:   vCPUs over-provisioned

Volumes:
ID  NAME      SIZE    BOOT  STATE
4   web-boot  1 GiB   yes   UpToDate
6   web-data  64 MiB  no    Syncing

Networks:
NETWORK   MAC
business  52:54:00:12:34:56

Migration:
From:        PM2
To:          PM1
Status:      completed
Started:     2026-11-22 05:00:00 UTC
Finished:    2026-11-22 05:00:05 UTC
Total time:  5.123s
Downtime:    87ms
`,
		},
		{
			args: []string{"vm", "show", "2"},
			want: `ID:        2
Name:      db
UUID:      -
State:     Stopped
Activity:  -
Allowed:   Start (start), Config (config), Export, Boot From CD (boot-from-cd), Remove (remove), Snapshot
Node:      PM2
vCPUs:     1
Memory:    1 GiB
Boot:      cd (CD debian.iso)
Crashes:   0
Starts:    0
Started:   -

Volumes:
ID  NAME     SIZE    BOOT  STATE
5   db-boot  64 MiB  yes   -

Networks:
None.
`,
		},
		{
			// "7" is no VM's id, so it is VM 3's name.
			args: []string{"vm", "show", "7"},
			want: `ID:        3
Name:      7
UUID:      -
State:     Critical
Activity:  crashed 3 times within 1h0m0s
Allowed:   Reset Device (reset-device)
Node:      -
vCPUs:     1
Memory:    256 MiB
Boot:      -
Crashes:   3 (Critical: reset the device to restart it)
Starts:    0
Started:   -

Volumes:
None.

Networks:
None.
`,
		},
		{
			args: []string{"vm", "start", "db"},
			want: `ID  NAME  STATE    NODE  VCPUS  MEMORY  ACTIVITY
2   db    Booting  PM2   1      1 GiB   starting on PM 2
`,
		},
		{
			args: []string{"vm", "remove", "db", "--yes"},
			want: "Removed VM db (id 2) with its boot volume; its other volumes are kept in the unit, unattached.\n",
		},
		{
			args: []string{"vm", "remove", "--delete-data", "db", "--yes"},
			want: "Removed VM db (id 2) with its boot volume; its other volumes were deleted too.\n",
		},
		{
			args: []string{"vm", "serial-log", "web"},
			want: "GUEST START boot=3 n=0\nDURABLE boot=3 n=1\n",
		},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := runCmd(t, env, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			if out != tt.want {
				t.Errorf("output:\n%s\nwant:\n%s", out, tt.want)
			}
		})
	}
}

func TestVMEmptyList(t *testing.T) {
	env := startVMs(t, &ctlVMs{})
	if code, out, _ := runCmd(t, env, "vm", "list"); code != 0 || out != "No virtual machines.\n" {
		t.Errorf("vm list: exit %d, %q", code, out)
	}
}

// TestVMCommands checks what each command line sends to the unit.
func TestVMCommands(t *testing.T) {
	tests := []struct {
		args      []string
		code      int
		wantCalls []string
		wantOut   string // a part of stdout and stderr
	}{
		{args: []string{"vm", "create", "app", "--memory", "512M", "--volume", "app-boot:1G"}, wantOut: "Busy",
			wantCalls: []string{`create {"name":"app","vcpus":1,"memory_mib":512,"volumes":[{"name":"app-boot","size_mib":1024,"boot":true}]}`}},
		{args: []string{
			"vm", "create", "app", "--vcpus", "2", "--memory", "2GiB", "--volume", "app-boot:64MiB:boot", "--existing-volume", "9",
			"--volume", "app-data:1G", "--group", "2", "--nic", "business", "--nic", "biz2=52-54-00-AB-CD-EF",
			"--boot", "test-guest", "--64bit", "--start",
		}, wantOut: "Name:      app", wantCalls: []string{
			`create {"name":"app","vcpus":2,"memory_mib":2048,"is_64bit":true,"volumes":[{"name":"app-boot","size_mib":64,"group":2,"boot":true},{"existing":9},{"name":"app-data","size_mib":1024,"group":2}],` +
				`"nics":[{"network":"business"},{"network":"biz2","mac":"52:54:00:ab:cd:ef"}],"boot":"test-guest","start":true}`,
		}},
		{args: []string{"vm", "create", "cdvm", "--memory", "1G", "--existing-volume", "3:boot", "--boot", "cd", "--cd", "x.iso"},
			wantCalls: []string{`create {"name":"cdvm","vcpus":1,"memory_mib":1024,"volumes":[{"existing":3,"boot":true}],"boot":"cd","cd":"x.iso"}`}},
		{args: []string{"vm", "create", "big", "--memory", "4G", "--volume", "b:1G"}, code: 1, wantOut: "400 Bad Request: memory 4096 MiB: a VM may have at most 3 GiB",
			wantCalls: []string{`create {"name":"big","vcpus":1,"memory_mib":4096,"volumes":[{"name":"b","size_mib":1024,"boot":true}]}`}},
		{args: []string{"vm", "create", "two", "--memory", "1G", "--volume", "a:1G", "--volume", "b:1G"}, wantOut: "Busy", // the unit says which is missing
			wantCalls: []string{`create {"name":"two","vcpus":1,"memory_mib":1024,"volumes":[{"name":"a","size_mib":1024},{"name":"b","size_mib":1024}]}`}},

		{args: []string{"vm", "start", "2"}, wantOut: "Booting", wantCalls: []string{"command 2 Start {}"}},
		{args: []string{"vm", "shutdown", "web"}, wantCalls: []string{"command 1 Shutdown {}"}},
		{args: []string{"vm", "shutdown", "web", "--timeout", "5m"}, wantCalls: []string{`command 1 Shutdown {"timeout_seconds":300}`}},
		{args: []string{"vm", "poweroff", "web"}, wantCalls: []string{"command 1 Power Off {}"}},
		{args: []string{"vm", "dump", "web"}, wantCalls: []string{"command 1 Dump {}"}},
		{args: []string{"vm", "boot-from-cd", "db", "--cd", "rescue.iso"}, wantCalls: []string{`command 2 Boot From CD {"cd":"rescue.iso"}`}},
		{args: []string{"vm", "boot-from-cd", "db"}, wantCalls: []string{`command 2 Boot From CD {}`}},
		{args: []string{"vm", "migrate", "web", "--to", "2"}, wantCalls: []string{`command 1 Migrate {"to":2}`}},
		{args: []string{"vm", "migrate", "web"}, wantCalls: []string{`command 1 Migrate {}`}},
		{args: []string{"vm", "reset-device", "7"}, wantCalls: []string{"command 3 Reset Device {}"}},
		{args: []string{"vm", "config", "db", "--vcpus", "4", "--memory", "768M", "--add-volume", "db-data:128M", "--add-existing", "8",
			"--detach", "6", "--delete", "7", "--delete", "9", "--nic", "business=52:54:00:00:00:02", "--yes"}, wantOut: "vCPUs:     4",
			wantCalls: []string{`config 2 {"vcpus":4,"memory_mib":768,"add_volumes":[{"name":"db-data","size_mib":128},{"existing":8}],"detach":[6],"delete":[7,9],"nics":[{"network":"business","mac":"52:54:00:00:00:02"}]}`}},
		{args: []string{"vm", "config", "db", "--no-nics"}, wantCalls: []string{`config 2 {"nics":[]}`}},
		{args: []string{"vm", "config", "db", "--placement", "manual:2"}, wantCalls: []string{`config 2 {"placement":{"policy":"manual","pm":2}}`}},
		{args: []string{"vm", "config", "db", "--placement", "pinned:2"}, code: 2, wantOut: "want auto, manual:PM or mixed:PM"},
		{args: []string{"vm", "create", "pin", "--memory", "1G", "--volume", "p:1G", "--placement", "mixed:1"},
			wantCalls: []string{`create {"name":"pin","vcpus":1,"memory_mib":1024,"volumes":[{"name":"p","size_mib":1024,"boot":true}],"placement":{"policy":"mixed","pm":1}}`}},
		{args: []string{"vm", "remove", "db", "--yes", "--delete-data"}, wantCalls: []string{"remove 2 true"}},

		// Refusals by the VM's state list what is allowed instead.
		{args: []string{"vm", "start", "web"}, code: 1, wantCalls: []string{"command 1 Start {}"},
			wantOut: "dyadctl: vm start web: dyad API: 409 Conflict: Start is not allowed while the VM is Running; allowed: Console, Shutdown, Power Off, Dump, Migrate\n" +
				"allowed now:\n  dyadctl vm console web\n  dyadctl vm shutdown web\n  dyadctl vm poweroff web\n  dyadctl vm dump web\n  dyadctl vm migrate web\n"},
		{args: []string{"vm", "config", "web", "--vcpus", "1"}, code: 1, wantCalls: []string{`config 1 {"vcpus":1}`}, wantOut: "allowed now:\n  dyadctl vm console web\n"},
		{args: []string{"vm", "remove", "web", "--yes"}, code: 1, wantCalls: []string{"remove 1 false"}, wantOut: "409 Conflict: Remove is not allowed while the VM is Running"},
		{args: []string{"vm", "poweroff", "db"}, code: 1, wantCalls: []string{"command 2 Power Off {}"},
			wantOut: "allowed now:\n  dyadctl vm start db\n  dyadctl vm config db\n  dyadctl vm boot-from-cd db\n  dyadctl vm remove db\n  (in the web console: Export, Snapshot)\n"},
		{args: []string{"vm", "start", "new"}, code: 1, wantCalls: []string{"command 4 Start {}"}, wantOut: "no command is allowed now: wait for VM new to leave this state"},

		// The VM is looked up first; an unknown one reaches no command.
		{args: []string{"vm", "start", "nosuch"}, code: 1, wantOut: `dyadctl: vm start nosuch: no VM with id or name "nosuch"`},
		{args: []string{"vm", "remove", "99", "--yes"}, code: 1, wantOut: `no VM with id or name "99"`},

		// Usage errors never reach the unit.
		{args: []string{"vm"}, code: 2, wantOut: "vm takes a command: list, show"},
		{args: []string{"vm", "reboot", "web"}, code: 2, wantOut: "unknown command vm reboot"},
		{args: []string{"vm", "list", "web"}, code: 2, wantOut: "vm list takes no arguments"},
		{args: []string{"vm", "show"}, code: 2, wantOut: "vm show takes one VM name or id"},
		{args: []string{"vm", "start", "web", "db"}, code: 2, wantOut: "vm start takes one VM name or id"},
		{args: []string{"vm", "create", "app", "--volume", "b:1G"}, code: 2, wantOut: "vm create needs --memory"},
		{args: []string{"vm", "create", "app", "--memory", "512M"}, code: 2, wantOut: "vm create needs a boot volume"},
		{args: []string{"vm", "create", "app", "--memory", "1.5G", "--volume", "b:1G"}, code: 2, wantOut: "use whole numbers"},
		{args: []string{"vm", "create", "app", "--memory", "1000KB", "--volume", "b:1G"}, code: 2, wantOut: "whole number of MiB"},
		{args: []string{"vm", "create", "app", "--memory", "1G", "--volume", "b"}, code: 2, wantOut: "want NAME:SIZE or NAME:SIZE:boot"},
		{args: []string{"vm", "create", "app", "--memory", "1G", "--volume", "b:1G:root"}, code: 2, wantOut: "want NAME:SIZE or NAME:SIZE:boot"},
		{args: []string{"vm", "create", "app", "--memory", "1G", "--existing-volume", "x"}, code: 2, wantOut: `invalid volume id "x"`},
		{args: []string{"vm", "create", "app", "--memory", "1G", "--volume", "b:1G", "--nic", "business=nope"}, code: 2, wantOut: `invalid MAC "nope"`},
		{args: []string{"vm", "create", "app", "--memory", "1G", "--volume", "b:1G", "--nic", "=52:54:00:00:00:01"}, code: 2, wantOut: "want NETWORK or NETWORK=MAC"},
		{args: []string{"vm", "create", "app", "--memory", "1G", "--volume", "b:1G", "--boot", "pxe"}, code: 2, wantOut: `invalid --boot "pxe"`},
		{args: []string{"vm", "create", "app", "--memory", "1G", "--volume", "b:1G", "--group", "-1"}, code: 2, wantOut: "invalid --group -1"},
		{args: []string{"vm", "create", "--memory", "1G", "--volume", "b:1G"}, code: 2, wantOut: "vm create takes one VM name"},
		{args: []string{"vm", "shutdown", "web", "--timeout", "1500ms"}, code: 2, wantOut: "invalid --timeout 1.5s"},
		{args: []string{"vm", "shutdown", "web", "--timeout", "-5s"}, code: 2, wantOut: "invalid --timeout"},
		{args: []string{"vm", "migrate", "web", "--to", "-1"}, code: 2, wantOut: "invalid --to -1"},
		{args: []string{"vm", "config", "db"}, code: 2, wantOut: "vm config needs something to change"},
		{args: []string{"vm", "config", "db", "--vcpus", "0"}, code: 2, wantOut: "invalid --vcpus 0"},
		{args: []string{"vm", "config", "db", "--delete", "7"}, code: 2, wantOut: "destroys the data of volume(s) 7 on both PMs; run again with --yes"},
		{args: []string{"vm", "config", "db", "--nic", "business", "--no-nics"}, code: 2, wantOut: "not both"},
		{args: []string{"vm", "config", "db", "--detach", "0"}, code: 2, wantOut: `invalid volume id "0"`},
		{args: []string{"vm", "remove", "db"}, code: 2, wantOut: "deletes VM db and its boot volume with their data on both PMs; run again with --yes"},
		{args: []string{"vm", "remove", "db", "--delete-data"}, code: 2, wantOut: "deletes VM db and all its volumes"},
		{args: []string{"vm", "console"}, code: 2, wantOut: "vm console takes one VM name or id"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			f := testCtlVMs()
			env := startVMs(t, f)
			code, out, errOut := runCmd(t, env, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, errOut)
			}
			if !strings.Contains(out+errOut, tt.wantOut) {
				t.Errorf("output lacks %q:\nstdout: %s\nstderr: %s", tt.wantOut, out, errOut)
			}
			if !reflect.DeepEqual(f.calls, tt.wantCalls) {
				t.Errorf("calls to the unit:\n%q\nwant\n%q", f.calls, tt.wantCalls)
			}
			if tt.code != 0 && out != "" {
				t.Errorf("failure wrote to stdout: %q", out)
			}
		})
	}
}

func TestVMJSON(t *testing.T) {
	f := testCtlVMs()
	env := startVMs(t, f)
	tests := []struct {
		args   []string
		decode func([]byte) (any, error)
		want   any
	}{
		{[]string{"--json", "vm", "list"}, decodeAs[[]unit.VM], f.vms},
		{[]string{"--json", "vm", "show", "web"}, decodeAs[unit.VM], f.vms[0]},
		{[]string{"--json", "vm", "remove", "db", "--yes"}, decodeAs[map[string]any], map[string]any{"id": float64(2), "name": "db", "delete_data": false}},
		{[]string{"--json", "vm", "serial-log", "1"}, decodeAs[string], "GUEST START boot=3 n=0\nDURABLE boot=3 n=1\n"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := runCmd(t, env, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			got, err := tt.decode([]byte(out))
			if err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, out)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestVMWithoutVMs(t *testing.T) {
	env := start(t, &fakeSource{unit: testUnit()})
	code, _, errOut := runCmd(t, env, "vm", "list")
	if code != 1 || !strings.Contains(errOut, "404 Not Found") || !strings.Contains(errOut, "this unit has no virtual machines") {
		t.Errorf("vm list without VMs: exit %d, stderr %q", code, errOut)
	}
}

func TestParseMiB(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"512M", 512, ""},
		{"1G", 1024, ""},
		{"1GiB", 1024, ""},
		{"1048576", 1, ""},
		{"2T", 2 << 20, ""},
		{"1000MB", 0, "whole number of MiB"},
		{"1K", 0, "whole number of MiB"},
		{"0M", 0, "more than zero"},
		{"M", 0, "invalid size"},
		{"-1G", 0, "invalid size"},
	}
	for _, tt := range tests {
		got, err := parseMiB(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseMiB(%q) = %d, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseMiB(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

// TestVMCommandWords: every command of the state table that dyadctl
// offers is named by a dyadctl vm command that parses.
func TestVMCommandWords(t *testing.T) {
	for _, c := range vm.Commands() {
		word, ok := vmCommandWords(string(c))
		if !ok {
			continue
		}
		if _, isCmd, _ := parseVMCommand([]string{"vm", word, "x"}); !isCmd {
			t.Errorf("%s maps to %q, which is no vm command", c, word)
		}
		if !strings.Contains(vmSubcommands, word) {
			t.Errorf("%s maps to %q, missing from the usage", c, word)
		}
	}
}
