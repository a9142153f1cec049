package apiclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/vm"
	"github.com/dyad-ha/dyad/webui"
)

// clientVMs is a VMSource with fixed VMs; it records the last changing
// call with its arguments as the server passed them on.
type clientVMs struct {
	mu   sync.Mutex
	vms  []unit.VM
	last string
}

func testClientVMs() *clientVMs {
	return &clientVMs{vms: []unit.VM{
		{
			ID: 1, Name: "web", State: "Running", Activity: "running on PM 1", Node: 1, VCPUs: 2, MemoryBytes: 512 << 20,
			Allowed: []string{"Console", "Shutdown", "Power Off", "Dump", "Migrate"}, Boot: "disk", Starts: 2, Started: t0,
			Volumes: []unit.VMVolume{{VolumeID: 4, Name: "web-boot", SizeBytes: 1 << 30, Boot: true, State: "UpToDate"}},
			NICs:    []unit.VMNIC{{Network: "business", MAC: "52:54:00:12:34:56"}},
			Migration: &unit.VMMigration{From: 2, To: 1, Status: "completed", Started: t0, Finished: t0,
				TotalMs: 5123, DowntimeMs: 87},
		},
		{ID: 2, Name: "busy", State: "Busy", Activity: "creating volumes", Allowed: []string{}, VCPUs: 1, MemoryBytes: 256 << 20},
		{ID: 3, Name: "db", State: "Stopped", Allowed: []string{"Start", "Config", "Export", "Boot From CD", "Remove", "Snapshot"}, VCPUs: 1, MemoryBytes: 1 << 30},
	}}
}

func (f *clientVMs) record(format string, args ...any) {
	f.mu.Lock()
	f.last = fmt.Sprintf(format, args...)
	f.mu.Unlock()
}

func (f *clientVMs) VMs(context.Context) ([]unit.VM, error) { return f.vms, nil }

func (f *clientVMs) VM(_ context.Context, id int) (unit.VM, error) {
	for _, v := range f.vms {
		if v.ID == id {
			return v, nil
		}
	}
	return unit.VM{}, webui.ErrNotFound
}

func (f *clientVMs) CreateVM(_ context.Context, req unit.VMCreate) (unit.VM, error) {
	b, _ := json.Marshal(req)
	f.record("create %s", b)
	if req.MemoryMiB > 3072 {
		return unit.VM{}, &vm.ResourceError{Problems: []vm.Problem{{Field: "memory", Message: "memory 4 GiB: a VM may have at most 3 GiB"}}}
	}
	return unit.VM{ID: 4, Name: req.Name, State: "Busy", Allowed: []string{}, VCPUs: req.VCPUs, MemoryBytes: req.MemoryMiB << 20}, nil
}

func (f *clientVMs) ConfigVM(ctx context.Context, id int, req unit.VMConfig) (unit.VM, error) {
	b, _ := json.Marshal(req)
	f.record("config %d %s", id, b)
	v, err := f.VM(ctx, id)
	if err != nil {
		return v, err
	}
	if v.State != "Stopped" {
		return unit.VM{}, &vm.NotAllowedError{State: vm.State(v.State), Command: vm.Config, Allowed: vm.Allowed(vm.State(v.State))}
	}
	return v, nil
}

func (f *clientVMs) Command(ctx context.Context, id int, cmd string, args unit.VMAction) (unit.VM, error) {
	b, _ := json.Marshal(args)
	f.record("command %d %s %s", id, cmd, b)
	v, err := f.VM(ctx, id)
	if err != nil {
		return v, err
	}
	if err := vm.Check(vm.State(v.State), vm.Command(cmd)); err != nil {
		return unit.VM{}, err
	}
	v.State = "Stopping"
	return v, nil
}

func (f *clientVMs) RemoveVM(ctx context.Context, id int, deleteData bool) error {
	f.record("remove %d %v", id, deleteData)
	_, err := f.VM(ctx, id)
	return err
}

func (f *clientVMs) DialConsole(context.Context, int, string) (net.Conn, error) {
	return nil, fmt.Errorf("%w: no consoles here", webui.ErrConflict)
}

func (f *clientVMs) SerialLog(ctx context.Context, id int) ([]byte, error) {
	if _, err := f.VM(ctx, id); err != nil {
		return nil, err
	}
	if id == 2 {
		return nil, nil
	}
	return []byte("GUEST START boot=2 n=0\r\n\x00\xff{not json"), nil
}

func startVMsAPI(t *testing.T, vms webui.VMSource) *apiclient.Client {
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
	return apiclient.New(ts.URL, "admin", "admin", ts.Client())
}

func TestClientVMs(t *testing.T) {
	f := testClientVMs()
	c := startVMsAPI(t, f)
	ctx := t.Context()

	vms, err := c.VMs(ctx)
	if err != nil || !reflect.DeepEqual(vms, f.vms) {
		t.Errorf("VMs = %+v, %v\nwant %+v", vms, err, f.vms)
	}
	v, err := c.VM(ctx, 1)
	if err != nil || !reflect.DeepEqual(v, f.vms[0]) {
		t.Errorf("VM(1) = %+v, %v", v, err)
	}
	log, err := c.SerialLog(ctx, 1)
	if want := "GUEST START boot=2 n=0\r\n\x00\xff{not json"; err != nil || string(log) != want {
		t.Errorf("SerialLog(1) = %q, %v; want %q", log, err, want)
	}
	log, err = c.SerialLog(ctx, 2)
	if err != nil || len(log) != 0 {
		t.Errorf("SerialLog(2) = %q, %v; want nothing", log, err)
	}

	vcpus := 4
	changes := []struct {
		name     string
		call     func() (any, error)
		want     any
		wantCall string
	}{
		{
			name: "create",
			call: func() (any, error) {
				return c.CreateVM(ctx, unit.VMCreate{
					Name: "app", VCPUs: 2, MemoryMiB: 512, Boot: "test-guest", Start: true,
					Volumes: []unit.VMVolumeRequest{{Name: "app-boot", SizeMiB: 64, Boot: true}, {Existing: 5}},
					NICs:    []unit.VMNICRequest{{Network: "business", MAC: "52:54:00:00:00:09"}},
				})
			},
			want: unit.VM{ID: 4, Name: "app", State: "Busy", Allowed: []string{}, VCPUs: 2, MemoryBytes: 512 << 20},
			wantCall: `create {"name":"app","vcpus":2,"memory_mib":512,"volumes":[{"name":"app-boot","size_mib":64,"boot":true},{"existing":5}],` +
				`"nics":[{"network":"business","mac":"52:54:00:00:00:09"}],"boot":"test-guest","start":true}`,
		},
		{
			name: "shutdown",
			call: func() (any, error) {
				v, err := c.VMCommand(ctx, 1, "shutdown", unit.VMAction{TimeoutSeconds: 30})
				return v.State, err
			},
			want: "Stopping", wantCall: `command 1 Shutdown {"timeout_seconds":30}`,
		},
		{
			name: "migrate",
			call: func() (any, error) {
				v, err := c.VMCommand(ctx, 1, "migrate", unit.VMAction{To: 2})
				return v.State, err
			},
			want: "Stopping", wantCall: `command 1 Migrate {"to":2}`,
		},
		{
			name: "poweroff without arguments",
			call: func() (any, error) {
				v, err := c.VMCommand(ctx, 1, "poweroff", unit.VMAction{})
				return v.State, err
			},
			want: "Stopping", wantCall: `command 1 Power Off {}`,
		},
		{
			name: "remove keeping data",
			call: func() (any, error) { return nil, c.RemoveVM(ctx, 2, false) },
			want: nil, wantCall: "remove 2 false",
		},
		{
			name: "remove with data",
			call: func() (any, error) { return nil, c.RemoveVM(ctx, 2, true) },
			want: nil, wantCall: "remove 2 true",
		},
		{
			name: "config",
			call: func() (any, error) {
				v, err := c.ConfigVM(ctx, 3, unit.VMConfig{VCPUs: &vcpus, Detach: []int{7}})
				return v.Name, err
			},
			want: "db", wantCall: `config 3 {"vcpus":4,"detach":[7]}`,
		},
	}
	for _, tt := range changes {
		got, err := tt.call()
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s = %+v, %v; want %+v", tt.name, got, err, tt.want)
		}
		if f.last != tt.wantCall {
			t.Errorf("%s reached the source as %q, want %q", tt.name, f.last, tt.wantCall)
		}
	}
}

func TestClientVMErrors(t *testing.T) {
	c := startVMsAPI(t, testClientVMs())
	ctx := t.Context()
	running := []string{"Console", "Shutdown", "Power Off", "Dump", "Migrate"}
	tests := []struct {
		name        string
		call        func() error
		wantStatus  int
		wantMsg     string   // the start of the server's message
		wantAllowed []string // nil: the error carries none
	}{
		{"unknown VM", func() error { _, err := c.VM(ctx, 9); return err }, 404, "VM 9 not found", nil},
		{"bad id", func() error { _, err := c.VM(ctx, 0); return err }, 400, `invalid VM id "0"`, nil},
		{"not allowed", func() error { _, err := c.VMCommand(ctx, 1, "start", unit.VMAction{}); return err }, 409,
			"Start is not allowed while the VM is Running", running},
		{"config while running", func() error { _, err := c.ConfigVM(ctx, 1, unit.VMConfig{Detach: []int{1}}); return err }, 409,
			"Config is not allowed while the VM is Running", running},
		{"nothing allowed", func() error { _, err := c.VMCommand(ctx, 2, "start", unit.VMAction{}); return err }, 409,
			"Start is not allowed while the VM is Busy", []string{}},
		{"unknown action", func() error { _, err := c.VMCommand(ctx, 1, "reboot", unit.VMAction{}); return err }, 404, `no VM action "reboot"`, nil},
		{"slug with slash", func() error { _, err := c.VMCommand(ctx, 1, "../../unit", unit.VMAction{}); return err }, 404, "no such API endpoint: POST /api/v1/vms/1/actions/", nil},
		{"resource rules", func() error {
			_, err := c.CreateVM(ctx, unit.VMCreate{Name: "big", VCPUs: 1, MemoryMiB: 4096, Volumes: []unit.VMVolumeRequest{{Name: "b", SizeMiB: 1, Boot: true}}})
			return err
		}, 400, "memory 4 GiB: a VM may have at most 3 GiB", nil},
		{"bad body", func() error { _, err := c.CreateVM(ctx, unit.VMCreate{Name: "a b"}); return err }, 400, "invalid VM name", nil},
		{"remove unknown", func() error { return c.RemoveVM(ctx, 9, true) }, 404, "VM 9 not found", nil},
		{"serial log of unknown", func() error { _, err := c.SerialLog(ctx, 9); return err }, 404, "VM 9 not found", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var ae *apiclient.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("error %v (%T), want *APIError", err, err)
			}
			if ae.StatusCode != tt.wantStatus || !strings.HasPrefix(ae.Message, tt.wantMsg) {
				t.Errorf("APIError = %d %q, want %d %q", ae.StatusCode, ae.Message, tt.wantStatus, tt.wantMsg)
			}
			if !reflect.DeepEqual(ae.Allowed, tt.wantAllowed) {
				t.Errorf("Allowed = %#v, want %#v", ae.Allowed, tt.wantAllowed)
			}
		})
	}
}

func TestClientWithoutVMs(t *testing.T) {
	c := startVMsAPI(t, nil)
	_, err := c.VMs(t.Context())
	var ae *apiclient.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 404 || !strings.Contains(ae.Message, "no virtual machines") {
		t.Errorf("VMs without a VMSource: %v, want 404", err)
	}
}
