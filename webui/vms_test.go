package webui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/vm"
)

// vmAPIFake is a VMSource over VMs kept in memory. Commands follow the
// real state table (vm.Check); err, when set, fails every call; last
// records the last call that reached a changing method, with its
// arguments, so a test sees what the handler passed on.
type vmAPIFake struct {
	mu   sync.Mutex
	vms  []unit.VM
	log  map[int][]byte
	err  error
	last string
}

func testVMs() *vmAPIFake {
	t0 := time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC)
	return &vmAPIFake{
		vms: []unit.VM{
			{
				ID: 1, UUID: "0b7c9f0e-1a52-4d8c-9a55-6f7a3f9b1d01", Name: "web", State: string(vm.Running),
				Activity: "running on PM 1", Allowed: commandNames(vm.Allowed(vm.Running)), Node: 1, VCPUs: 2,
				MemoryBytes: 512 << 20, Boot: "disk", Starts: 3, Started: t0,
				Volumes: []unit.VMVolume{{VolumeID: 4, Name: "web-boot", SizeBytes: 1 << 30, Boot: true, State: "UpToDate"}},
				NICs:    []unit.VMNIC{{Network: "business", MAC: "52:54:00:12:34:56"}},
			},
			{
				ID: 2, Name: "db", State: string(vm.Stopped), Allowed: commandNames(vm.Allowed(vm.Stopped)), Node: 2,
				VCPUs: 1, MemoryBytes: 1 << 30, Boot: "test-guest",
				Volumes: []unit.VMVolume{{VolumeID: 5, Name: "db-boot", SizeBytes: 64 << 20, Boot: true}},
			},
			{
				ID: 3, Name: "flaky", State: string(vm.Critical), Activity: "crashed 3 times within 1h0m0s",
				Allowed: commandNames(vm.Allowed(vm.Critical)), Node: 2, VCPUs: 1, MemoryBytes: 256 << 20,
				Crashes: 3, Critical: true,
			},
		},
		log: map[int][]byte{1: []byte("GUEST START boot=3 n=0\r\nDURABLE boot=3 n=1\r\n\x1b[0m")},
	}
}

func commandNames(cs []vm.Command) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = string(c)
	}
	return out
}

func (f *vmAPIFake) find(id int) (int, error) {
	for i, v := range f.vms {
		if v.ID == id {
			return i, nil
		}
	}
	return 0, ErrNotFound
}

func (f *vmAPIFake) VMs(context.Context) ([]unit.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return slices.Clone(f.vms), nil
}

func (f *vmAPIFake) VM(_ context.Context, id int) (unit.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return unit.VM{}, f.err
	}
	i, err := f.find(id)
	if err != nil {
		return unit.VM{}, err
	}
	return f.vms[i], nil
}

// CreateVM applies a few resource rules the way the real Source does: all
// problems at once in a *vm.ResourceError.
func (f *vmAPIFake) CreateVM(_ context.Context, req unit.VMCreate) (unit.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, _ := json.Marshal(req)
	f.last = "create " + string(b)
	if f.err != nil {
		return unit.VM{}, f.err
	}
	var probs []vm.Problem
	if req.VCPUs < 1 || req.VCPUs > vm.MaxVCPUs {
		probs = append(probs, vm.Problem{Field: "vcpus", Message: fmt.Sprintf("%d vCPUs: a VM has 1 to 8 vCPUs", req.VCPUs)})
	}
	if req.MemoryMiB > 3072 {
		probs = append(probs, vm.Problem{Field: "memory", Message: fmt.Sprintf("memory %d MiB: a VM may have at most 3072 MiB", req.MemoryMiB)})
	}
	if len(probs) > 0 {
		return unit.VM{}, &vm.ResourceError{Problems: probs}
	}
	for _, v := range f.vms {
		if v.Name == req.Name {
			return unit.VM{}, fmt.Errorf("%w: a VM named %q exists", ErrConflict, req.Name)
		}
	}
	for _, r := range req.Volumes {
		if r.Existing > 100 {
			return unit.VM{}, fmt.Errorf("volume %d: %w", r.Existing, ErrNotFound)
		}
	}
	v := unit.VM{ID: 10, Name: req.Name, State: string(vm.Busy), Allowed: []string{}, VCPUs: req.VCPUs, MemoryBytes: req.MemoryMiB << 20, Boot: req.Boot}
	f.vms = append(f.vms, v)
	return v, nil
}

func (f *vmAPIFake) ConfigVM(_ context.Context, id int, req unit.VMConfig) (unit.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, _ := json.Marshal(req)
	f.last = fmt.Sprintf("config %d %s", id, b)
	if f.err != nil {
		return unit.VM{}, f.err
	}
	i, err := f.find(id)
	if err != nil {
		return unit.VM{}, err
	}
	if err := vm.Check(vm.State(f.vms[i].State), vm.Config); err != nil {
		return unit.VM{}, err
	}
	if req.VCPUs != nil {
		f.vms[i].VCPUs = *req.VCPUs
	}
	return f.vms[i], nil
}

func (f *vmAPIFake) Command(_ context.Context, id int, cmd string, args unit.VMAction) (unit.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, _ := json.Marshal(args)
	f.last = fmt.Sprintf("command %d %s %s", id, cmd, b)
	if f.err != nil {
		return unit.VM{}, f.err
	}
	i, err := f.find(id)
	if err != nil {
		return unit.VM{}, err
	}
	if err := vm.Check(vm.State(f.vms[i].State), vm.Command(cmd)); err != nil {
		return unit.VM{}, err
	}
	next := map[vm.Command]vm.State{
		vm.Start: vm.Booting, vm.Shutdown: vm.Stopping, vm.PowerOff: vm.Stopped, vm.Dump: vm.Dumping,
		vm.BootFromCD: vm.Booting, vm.Migrate: vm.Running, vm.ResetDevice: vm.Booting,
	}[vm.Command(cmd)]
	if args.To == 9 {
		return unit.VM{}, fmt.Errorf("%w: the unit has no PM 9", ErrInvalid)
	}
	f.vms[i].State, f.vms[i].Allowed = string(next), commandNames(vm.Allowed(next))
	return f.vms[i], nil
}

func (f *vmAPIFake) RemoveVM(_ context.Context, id int, deleteData bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last = fmt.Sprintf("remove %d %v", id, deleteData)
	if f.err != nil {
		return f.err
	}
	i, err := f.find(id)
	if err != nil {
		return err
	}
	if err := vm.Check(vm.State(f.vms[i].State), vm.Remove); err != nil {
		return err
	}
	f.vms = slices.Delete(f.vms, i, i+1)
	return nil
}

func (f *vmAPIFake) DialConsole(context.Context, int, string) (net.Conn, error) {
	return nil, fmt.Errorf("%w: the fake has no consoles", ErrConflict)
}

func (f *vmAPIFake) SerialLog(_ context.Context, id int) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if _, err := f.find(id); err != nil {
		return nil, err
	}
	return f.log[id], nil
}

func newVMAPIServer(t testing.TB, vms VMSource) *Server {
	t.Helper()
	s, err := New(Config{
		Source:     &fakeSource{unit: testUnit()},
		VMs:        vms,
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

// vmRoutesForTest returns one request to every VM route.
func vmRoutesForTest() []struct{ method, path, body string } {
	return []struct{ method, path, body string }{
		{"GET", "/api/v1/vms", ""},
		{"POST", "/api/v1/vms", `{"name":"a","vcpus":1,"memory_mib":256,"volumes":[{"name":"a-boot","size_mib":64,"boot":true}]}`},
		{"GET", "/api/v1/vms/1", ""},
		{"DELETE", "/api/v1/vms/2", ""},
		{"POST", "/api/v1/vms/2/config", `{"vcpus":2}`},
		{"POST", "/api/v1/vms/2/actions/start", ""},
		{"GET", "/api/v1/vms/1/serial-log", ""},
	}
}

func TestVMRoutesNeedLogin(t *testing.T) {
	f := testVMs()
	h := newVMAPIServer(t, f).Handler()
	for _, r := range vmRoutesForTest() {
		w := do(t, h, r.method, r.path, r.body)
		if w.Code != http.StatusUnauthorized {
			t.Errorf("%s %s without login: %d, want 401", r.method, r.path, w.Code)
		}
		w = do(t, h, r.method, r.path, r.body, withBasic("admin", "wrong"))
		if w.Code != http.StatusUnauthorized {
			t.Errorf("%s %s with a wrong password: %d, want 401", r.method, r.path, w.Code)
		}
	}
	if f.last != "" {
		t.Errorf("a request without login reached the source: %s", f.last)
	}
}

func TestVMRoutesWithoutVMs(t *testing.T) {
	h := newTestServer(t, &fakeSource{unit: testUnit()}).Handler()
	for _, r := range vmRoutesForTest() {
		w := do(t, h, r.method, r.path, r.body, withBasic("admin", "admin"))
		if w.Code != http.StatusNotFound || !strings.Contains(errorMessage(t, w), "this unit has no virtual machines") {
			t.Errorf("%s %s without VMs: %d %s, want 404", r.method, r.path, w.Code, w.Body)
		}
		if w := do(t, h, r.method, r.path, r.body); w.Code != http.StatusUnauthorized {
			t.Errorf("%s %s without VMs and login: %d, want 401", r.method, r.path, w.Code)
		}
	}
}

func TestVMAPI(t *testing.T) {
	big := `{"name":"x","pad":"` + strings.Repeat("a", maxStorageBody) + `"}`
	create := func(extra string) string {
		return `{"name":"app","vcpus":2,"memory_mib":512,"volumes":[{"name":"app-boot","size_mib":1024,"boot":true}]` + extra + `}`
	}
	tests := []struct {
		name                 string
		method, target, body string
		srcErr               error
		want                 int
		wantBody             string // a part of the answer
		wantCall             string // what reached the source; "" for nothing
	}{
		{name: "list", method: "GET", target: "/api/v1/vms", want: 200, wantBody: `"name":"db"`},
		{name: "list source error", method: "GET", target: "/api/v1/vms", srcErr: errors.New("store closed"), want: 500, wantBody: "cannot list VMs: store closed"},
		{name: "show", method: "GET", target: "/api/v1/vms/1", want: 200, wantBody: `"allowed":["Console","Shutdown","Power Off","Dump","Migrate"]`},
		{name: "show unknown", method: "GET", target: "/api/v1/vms/9", want: 404, wantBody: "VM 9 not found"},
		{name: "show bad id", method: "GET", target: "/api/v1/vms/web", want: 400, wantBody: `invalid VM id \"web\"`},
		{name: "show zero id", method: "GET", target: "/api/v1/vms/0", want: 400, wantBody: "want a positive integer"},
		{name: "show huge id", method: "GET", target: "/api/v1/vms/99999999999999999999", want: 400, wantBody: "invalid VM id"},
		{name: "show source error", method: "GET", target: "/api/v1/vms/1", srcErr: errors.New("store closed"), want: 500, wantBody: "cannot read VM 1: store closed"},

		{name: "create", method: "POST", target: "/api/v1/vms", body: create(""), want: 201, wantBody: `"state":"Busy"`,
			wantCall: `create {"name":"app","vcpus":2,"memory_mib":512,"volumes":[{"name":"app-boot","size_mib":1024,"boot":true}]}`},
		{name: "create full", method: "POST", target: "/api/v1/vms",
			body: `{"name":"app","vcpus":1,"memory_mib":600,"is_64bit":true,"volumes":[{"name":"app-boot","size_mib":64,"group":2,"boot":true},{"existing":7}],` +
				`"nics":[{"network":"business"},{"network":"biz2","mac":"52-54-00-AB-CD-EF"}],"boot":"cd","cd":"debian.iso","start":true}`,
			want: 201, wantBody: `"name":"app"`,
			wantCall: `create {"name":"app","vcpus":1,"memory_mib":600,"is_64bit":true,"volumes":[{"name":"app-boot","size_mib":64,"group":2,"boot":true},{"existing":7}],` +
				`"nics":[{"network":"business"},{"network":"biz2","mac":"52:54:00:ab:cd:ef"}],"boot":"cd","cd":"debian.iso","start":true}`},
		{name: "create test guest", method: "POST", target: "/api/v1/vms", body: create(`,"boot":"test-guest"`), want: 201, wantBody: `"boot":"test-guest"`, wantCall: "create"},
		{name: "create breaks rules", method: "POST", target: "/api/v1/vms", body: `{"name":"app","vcpus":9,"memory_mib":4096,"volumes":[{"name":"b","size_mib":1,"boot":true}]}`,
			want: 400, wantBody: `"problems":[{"field":"vcpus","message":"9 vCPUs: a VM has 1 to 8 vCPUs"},{"field":"memory","message":"memory 4096 MiB: a VM may have at most 3072 MiB"}]`, wantCall: "create"},
		{name: "create duplicate", method: "POST", target: "/api/v1/vms", body: `{"name":"web","vcpus":1,"memory_mib":256,"volumes":[{"name":"b","size_mib":1,"boot":true}]}`,
			want: 409, wantBody: `a VM named \"web\" exists`, wantCall: "create"},
		{name: "create unknown existing volume", method: "POST", target: "/api/v1/vms", body: `{"name":"app","vcpus":1,"memory_mib":256,"volumes":[{"existing":200,"boot":true}]}`,
			want: 404, wantBody: "volume 200: not found", wantCall: "create"},
		{name: "create source error", method: "POST", target: "/api/v1/vms", body: create(""), srcErr: errors.New("db closed"), want: 500, wantBody: `cannot create VM \"app\": db closed`, wantCall: "create"},
		{name: "create empty body", method: "POST", target: "/api/v1/vms", want: 400, wantBody: "invalid body: empty"},
		{name: "create not JSON", method: "POST", target: "/api/v1/vms", body: `name=app`, want: 400, wantBody: "invalid JSON body"},
		{name: "create array", method: "POST", target: "/api/v1/vms", body: `[]`, want: 400, wantBody: "invalid JSON body"},
		{name: "create null", method: "POST", target: "/api/v1/vms", body: `null`, want: 400, wantBody: "invalid VM name"},
		{name: "create unknown field", method: "POST", target: "/api/v1/vms", body: create(`,"cpus":2`), want: 400, wantBody: `unknown field \"cpus\"`},
		{name: "create unknown volume field", method: "POST", target: "/api/v1/vms", body: `{"name":"a","volumes":[{"name":"b","size":1}]}`, want: 400, wantBody: `unknown field \"size\"`},
		{name: "create trailing object", method: "POST", target: "/api/v1/vms", body: create("") + `{}`, want: 400, wantBody: "trailing data"},
		{name: "create trailing bracket", method: "POST", target: "/api/v1/vms", body: create("") + `]`, want: 400, wantBody: "trailing data"},
		{name: "create vcpus as string", method: "POST", target: "/api/v1/vms", body: `{"name":"a","vcpus":"2"}`, want: 400, wantBody: "cannot unmarshal string"},
		{name: "create memory fraction", method: "POST", target: "/api/v1/vms", body: `{"name":"a","memory_mib":1.5}`, want: 400, wantBody: "invalid JSON body"},
		{name: "create oversized body", method: "POST", target: "/api/v1/vms", body: big, want: 400, wantBody: "larger than 65536 bytes"},
		{name: "create no name", method: "POST", target: "/api/v1/vms", body: `{"vcpus":1}`, want: 400, wantBody: "invalid VM name: a name is required"},
		{name: "create long name", method: "POST", target: "/api/v1/vms", body: `{"name":"` + strings.Repeat("a", 65) + `"}`, want: 400, wantBody: "at most 64"},
		{name: "create name with comma", method: "POST", target: "/api/v1/vms", body: `{"name":"a,b"}`, want: 400, wantBody: "invalid VM name"},
		{name: "create name like an option", method: "POST", target: "/api/v1/vms", body: `{"name":"-a"}`, want: 400, wantBody: "invalid VM name"},
		{name: "create negative vcpus", method: "POST", target: "/api/v1/vms", body: `{"name":"a","vcpus":-1}`, want: 400, wantBody: "invalid vcpus -1"},
		{name: "create negative memory", method: "POST", target: "/api/v1/vms", body: `{"name":"a","vcpus":1,"memory_mib":-256}`, want: 400, wantBody: "invalid memory_mib -256"},
		{name: "create memory overflow", method: "POST", target: "/api/v1/vms", body: `{"name":"a","vcpus":1,"memory_mib":9007199254740992}`, want: 400, wantBody: "invalid memory_mib"},
		{name: "create no volumes", method: "POST", target: "/api/v1/vms", body: `{"name":"a","vcpus":1,"memory_mib":256}`, want: 400, wantBody: `missing field \"volumes\"`},
		{name: "create too many volumes", method: "POST", target: "/api/v1/vms",
			body: `{"name":"a","volumes":[` + strings.TrimSuffix(strings.Repeat(`{"existing":1},`, 63), ",") + `]}`, want: 400, wantBody: "63 volumes; a unit holds at most 62"},
		{name: "create volume without size", method: "POST", target: "/api/v1/vms", body: `{"name":"a","volumes":[{"name":"b","boot":true}]}`, want: 400, wantBody: `volume \"b\": size_mib 0`},
		{name: "create volume negative size", method: "POST", target: "/api/v1/vms", body: `{"name":"a","volumes":[{"name":"b","size_mib":-1}]}`, want: 400, wantBody: "size_mib -1"},
		{name: "create volume bad name", method: "POST", target: "/api/v1/vms", body: `{"name":"a","volumes":[{"name":"../b","size_mib":1}]}`, want: 400, wantBody: "invalid volumes: volume 1"},
		{name: "create volume negative group", method: "POST", target: "/api/v1/vms", body: `{"name":"a","volumes":[{"name":"b","size_mib":1,"group":-2}]}`, want: 400, wantBody: "group -2"},
		{name: "create volume existing and new", method: "POST", target: "/api/v1/vms", body: `{"name":"a","volumes":[{"existing":3,"name":"b"}]}`, want: 400, wantBody: "not both"},
		{name: "create volume negative existing", method: "POST", target: "/api/v1/vms", body: `{"name":"a","volumes":[{"existing":-3}]}`, want: 400, wantBody: "existing -3"},
		{name: "create bad MAC", method: "POST", target: "/api/v1/vms", body: create(`,"nics":[{"network":"business","mac":"52:54:00:zz:00:01"}]`), want: 400, wantBody: `MAC \"52:54:00:zz:00:01\"`},
		{name: "create long MAC", method: "POST", target: "/api/v1/vms", body: create(`,"nics":[{"network":"business","mac":"00:00:5e:00:53:01:02:03"}]`), want: 400, wantBody: "6 bytes"},
		{name: "create multicast MAC", method: "POST", target: "/api/v1/vms", body: create(`,"nics":[{"network":"business","mac":"01:00:5e:00:00:01"}]`), want: 400, wantBody: "multicast"},
		{name: "create NIC without network", method: "POST", target: "/api/v1/vms", body: create(`,"nics":[{"mac":"52:54:00:00:00:01"}]`), want: 400, wantBody: "invalid nics: network 1"},
		{name: "create bad boot", method: "POST", target: "/api/v1/vms", body: create(`,"boot":"pxe"`), want: 400, wantBody: `invalid boot \"pxe\"`},
		{name: "create cd boot without cd", method: "POST", target: "/api/v1/vms", body: create(`,"boot":"cd"`), want: 400, wantBody: `boot \"cd\" needs \"cd\"`},
		{name: "create cd with path", method: "POST", target: "/api/v1/vms", body: create(`,"cd":"../../etc/shadow.iso"`), want: 400, wantBody: "invalid cd: CD image"},
		{name: "create cd with newline", method: "POST", target: "/api/v1/vms", body: create(`,"cd":"a\n-drive.iso"`), want: 400, wantBody: "invalid cd"},
		{name: "create cd not an ISO", method: "POST", target: "/api/v1/vms", body: create(`,"cd":"disk.img"`), want: 400, wantBody: "invalid cd"},
		{name: "boot from CD with path", method: "POST", target: "/api/v1/vms/2/actions/boot-from-cd", body: `{"cd":"/data/x.iso"}`, want: 400, wantBody: "invalid cd"},

		{name: "config", method: "POST", target: "/api/v1/vms/2/config", body: `{"vcpus":2,"memory_mib":768,"add_volumes":[{"name":"db-data","size_mib":128}],"detach":[6],"delete":[7],"nics":[{"network":"business","mac":"52:54:00:00:00:02"}]}`,
			want: 200, wantBody: `"vcpus":2`,
			wantCall: `config 2 {"vcpus":2,"memory_mib":768,"add_volumes":[{"name":"db-data","size_mib":128}],"detach":[6],"delete":[7],"nics":[{"network":"business","mac":"52:54:00:00:00:02"}]}`},
		{name: "config drops NICs", method: "POST", target: "/api/v1/vms/2/config", body: `{"nics":[]}`, want: 200, wantCall: `config 2 {"nics":[]}`},
		{name: "config running VM", method: "POST", target: "/api/v1/vms/1/config", body: `{"vcpus":2}`, want: 409,
			wantBody: `{"error":"Config is not allowed while the VM is Running; allowed: Console, Shutdown, Power Off, Dump, Migrate","state":"Running","allowed":["Console","Shutdown","Power Off","Dump","Migrate"]}`, wantCall: "config 1"},
		{name: "config unknown VM", method: "POST", target: "/api/v1/vms/9/config", body: `{"vcpus":2}`, want: 404, wantBody: "VM 9 not found", wantCall: "config 9"},
		{name: "config nothing", method: "POST", target: "/api/v1/vms/2/config", body: `{}`, want: 400, wantBody: "nothing to change"},
		{name: "config placement only", method: "POST", target: "/api/v1/vms/2/config", body: `{"placement":{"policy":"manual","pm":2}}`, want: 200,
			wantCall: `config 2 {"placement":{"policy":"manual","pm":2}}`},
		{name: "config null NICs keep them", method: "POST", target: "/api/v1/vms/2/config", body: `{"nics":null}`, want: 400, wantBody: "nothing to change"},
		{name: "config empty body", method: "POST", target: "/api/v1/vms/2/config", want: 400, wantBody: "invalid body: empty"},
		{name: "config unknown field", method: "POST", target: "/api/v1/vms/2/config", body: `{"name":"x"}`, want: 400, wantBody: `unknown field \"name\"`},
		{name: "config negative vcpus", method: "POST", target: "/api/v1/vms/2/config", body: `{"vcpus":-2}`, want: 400, wantBody: "invalid vcpus -2"},
		{name: "config negative memory", method: "POST", target: "/api/v1/vms/2/config", body: `{"memory_mib":-1}`, want: 400, wantBody: "invalid memory_mib -1"},
		{name: "config bad detach", method: "POST", target: "/api/v1/vms/2/config", body: `{"detach":[0]}`, want: 400, wantBody: "invalid detach: volume id 0"},
		{name: "config detach and delete", method: "POST", target: "/api/v1/vms/2/config", body: `{"detach":[6],"delete":[6]}`, want: 400, wantBody: `volume 6 is already in \"detach\"`},
		{name: "config bad added volume", method: "POST", target: "/api/v1/vms/2/config", body: `{"add_volumes":[{"name":"x"}]}`, want: 400, wantBody: "invalid add_volumes"},
		{name: "config bad MAC", method: "POST", target: "/api/v1/vms/2/config", body: `{"nics":[{"network":"business","mac":"nope"}]}`, want: 400, wantBody: "invalid nics"},
		{name: "config bad id", method: "POST", target: "/api/v1/vms/x/config", body: `{"vcpus":2}`, want: 400, wantBody: "invalid VM id"},

		{name: "start", method: "POST", target: "/api/v1/vms/2/actions/start", want: 200, wantBody: `"state":"Booting"`, wantCall: "command 2 Start {}"},
		{name: "start with empty object", method: "POST", target: "/api/v1/vms/2/actions/start", body: `{}`, want: 200, wantCall: "command 2 Start {}"},
		{name: "start with blank body", method: "POST", target: "/api/v1/vms/2/actions/start", body: " \n", want: 200, wantCall: "command 2 Start {}"},
		{name: "start running VM", method: "POST", target: "/api/v1/vms/1/actions/start", want: 409,
			wantBody: `"state":"Running","allowed":["Console","Shutdown","Power Off","Dump","Migrate"]`, wantCall: "command 1 Start {}"},
		{name: "start critical VM", method: "POST", target: "/api/v1/vms/3/actions/start", want: 409,
			wantBody: `"state":"Critical","allowed":["Reset Device"]`, wantCall: "command 3 Start {}"},
		{name: "shutdown", method: "POST", target: "/api/v1/vms/1/actions/shutdown", body: `{"timeout_seconds":30}`, want: 200, wantBody: `"state":"Stopping"`, wantCall: `command 1 Shutdown {"timeout_seconds":30}`},
		{name: "shutdown negative timeout", method: "POST", target: "/api/v1/vms/1/actions/shutdown", body: `{"timeout_seconds":-1}`, want: 400, wantBody: "invalid timeout_seconds -1"},
		{name: "shutdown huge timeout", method: "POST", target: "/api/v1/vms/1/actions/shutdown", body: `{"timeout_seconds":9999999999}`, want: 400, wantBody: "invalid timeout_seconds"},
		{name: "poweroff", method: "POST", target: "/api/v1/vms/1/actions/poweroff", want: 200, wantBody: `"state":"Stopped"`, wantCall: "command 1 Power Off {}"},
		{name: "dump", method: "POST", target: "/api/v1/vms/1/actions/dump", want: 200, wantBody: `"state":"Dumping"`, wantCall: "command 1 Dump {}"},
		{name: "boot from CD", method: "POST", target: "/api/v1/vms/2/actions/boot-from-cd", body: `{"cd":"rescue.iso"}`, want: 200, wantCall: `command 2 Boot From CD {"cd":"rescue.iso"}`},
		{name: "migrate", method: "POST", target: "/api/v1/vms/1/actions/migrate", body: `{"to":2}`, want: 200, wantCall: `command 1 Migrate {"to":2}`},
		{name: "migrate to the other PM", method: "POST", target: "/api/v1/vms/1/actions/migrate", want: 200, wantCall: `command 1 Migrate {}`},
		{name: "migrate to unknown PM", method: "POST", target: "/api/v1/vms/1/actions/migrate", body: `{"to":9}`, want: 400, wantBody: "the unit has no PM 9", wantCall: `command 1 Migrate {"to":9}`},
		{name: "migrate negative PM", method: "POST", target: "/api/v1/vms/1/actions/migrate", body: `{"to":-1}`, want: 400, wantBody: "invalid to -1"},
		{name: "reset device", method: "POST", target: "/api/v1/vms/3/actions/reset-device", want: 200, wantBody: `"state":"Booting"`, wantCall: "command 3 Reset Device {}"},
		{name: "unknown action", method: "POST", target: "/api/v1/vms/1/actions/reboot", want: 404, wantBody: `no VM action \"reboot\"`},
		{name: "command name as action", method: "POST", target: "/api/v1/vms/1/actions/Power%20Off", want: 404, wantBody: "no VM action"},
		{name: "action on unknown VM", method: "POST", target: "/api/v1/vms/9/actions/start", want: 404, wantBody: "VM 9 not found", wantCall: "command 9 Start {}"},
		{name: "action bad id", method: "POST", target: "/api/v1/vms/0/actions/start", want: 400, wantBody: "invalid VM id"},
		{name: "action field of another command", method: "POST", target: "/api/v1/vms/2/actions/start", body: `{"to":2}`, want: 400, wantBody: `\"to\" applies to Migrate, not to Start`},
		{name: "action unknown field", method: "POST", target: "/api/v1/vms/2/actions/start", body: `{"force":true}`, want: 400, wantBody: `unknown field \"force\"`},
		{name: "action not an object", method: "POST", target: "/api/v1/vms/2/actions/start", body: `"now"`, want: 400, wantBody: "invalid JSON body"},
		{name: "action trailing data", method: "POST", target: "/api/v1/vms/2/actions/start", body: `{} {}`, want: 400, wantBody: "trailing data"},
		{name: "action source error", method: "POST", target: "/api/v1/vms/2/actions/start", srcErr: errors.New("qmp gone"), want: 500, wantBody: "cannot Start VM 2: qmp gone", wantCall: "command 2 Start {}"},
		{name: "action wrapped conflict", method: "POST", target: "/api/v1/vms/2/actions/start", srcErr: fmt.Errorf("%w: PM 2 is in maintenance", ErrConflict), want: 409, wantBody: `{"error":"conflict: PM 2 is in maintenance"}`, wantCall: "command 2 Start {}"},
		{name: "action wrapped not allowed", method: "POST", target: "/api/v1/vms/2/actions/start",
			srcErr: fmt.Errorf("vm 2: %w", &vm.NotAllowedError{State: vm.Busy, Command: vm.Start}), want: 409, wantBody: `"state":"Busy","allowed":[]`, wantCall: "command 2 Start {}"},

		{name: "remove", method: "DELETE", target: "/api/v1/vms/2", want: 204, wantCall: "remove 2 false"},
		{name: "remove with data", method: "DELETE", target: "/api/v1/vms/2?delete_data=true", want: 204, wantCall: "remove 2 true"},
		{name: "remove keeping data", method: "DELETE", target: "/api/v1/vms/2?delete_data=false", want: 204, wantCall: "remove 2 false"},
		{name: "remove with data as 1", method: "DELETE", target: "/api/v1/vms/2?delete_data=1", want: 204, wantCall: "remove 2 true"},
		{name: "remove bad delete_data", method: "DELETE", target: "/api/v1/vms/2?delete_data=yes", want: 400, wantBody: `invalid delete_data \"yes\"`},
		{name: "remove empty delete_data", method: "DELETE", target: "/api/v1/vms/2?delete_data=", want: 400, wantBody: "invalid delete_data"},
		{name: "remove delete_data twice", method: "DELETE", target: "/api/v1/vms/2?delete_data=false&delete_data=true", want: 400, wantBody: "more than once"},
		{name: "remove running VM", method: "DELETE", target: "/api/v1/vms/1?delete_data=true", want: 409, wantBody: `"state":"Running"`, wantCall: "remove 1 true"},
		{name: "remove unknown VM", method: "DELETE", target: "/api/v1/vms/9", want: 404, wantBody: "VM 9 not found", wantCall: "remove 9 false"},
		{name: "remove bad id", method: "DELETE", target: "/api/v1/vms/x", want: 400, wantBody: "invalid VM id"},

		{name: "serial log", method: "GET", target: "/api/v1/vms/1/serial-log", want: 200, wantBody: "GUEST START boot=3 n=0\r\nDURABLE boot=3 n=1\r\n\x1b[0m"},
		{name: "serial log unknown VM", method: "GET", target: "/api/v1/vms/9/serial-log", want: 404, wantBody: "VM 9 not found"},
		{name: "serial log error", method: "GET", target: "/api/v1/vms/1/serial-log", srcErr: fmt.Errorf("%w: PM 2 does not answer", ErrConflict), want: 409, wantBody: "PM 2 does not answer"},

		{name: "wrong method", method: "PUT", target: "/api/v1/vms/1", want: 405, wantBody: "method PUT not allowed"},
	}
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := testVMs()
			f.err = tt.srcErr
			h := newVMAPIServer(t, f).Handler()
			w := do(t, h, tt.method, tt.target, tt.body, ck)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.want, w.Body)
			}
			if !strings.Contains(w.Body.String(), tt.wantBody) {
				t.Errorf("body %s\nlacks %s", w.Body, tt.wantBody)
			}
			switch {
			case tt.wantCall == "" && f.last != "":
				t.Errorf("the source was called (%s); the handler should have refused first", f.last)
			case !strings.HasPrefix(f.last, tt.wantCall):
				t.Errorf("the source got %q, want %q", f.last, tt.wantCall)
			}
			ct := w.Header().Get("Content-Type")
			switch {
			case tt.want == 204:
				if w.Body.Len() != 0 {
					t.Errorf("204 with body %q", w.Body)
				}
			case strings.HasSuffix(tt.target, "/serial-log") && tt.want == 200:
				if ct != "text/plain; charset=utf-8" {
					t.Errorf("Content-Type %q, want text/plain", ct)
				}
			default:
				if !strings.HasPrefix(ct, "application/json") {
					t.Errorf("Content-Type %q, want JSON", ct)
				}
				if tt.want >= 400 {
					errorMessage(t, w) // every error has a message
				}
			}
		})
	}
}

// TestVMErrorBodies decodes the 409 and 400 bodies whole: clients rely on
// their shape.
func TestVMErrorBodies(t *testing.T) {
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	h := newVMAPIServer(t, testVMs()).Handler()

	w := do(t, h, "POST", "/api/v1/vms/1/actions/start", "", ck)
	var na map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &na); err != nil {
		t.Fatal(err)
	}
	wantNA := map[string]any{
		"error":   "Start is not allowed while the VM is Running; allowed: Console, Shutdown, Power Off, Dump, Migrate",
		"state":   "Running",
		"allowed": []any{"Console", "Shutdown", "Power Off", "Dump", "Migrate"},
	}
	if w.Code != 409 || !reflect.DeepEqual(na, wantNA) {
		t.Errorf("409 body = %d %v, want %v", w.Code, na, wantNA)
	}

	w = do(t, h, "POST", "/api/v1/vms", `{"name":"big","vcpus":0,"memory_mib":8192,"volumes":[{"name":"b","size_mib":1,"boot":true}]}`, ck)
	var re map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &re); err != nil {
		t.Fatal(err)
	}
	wantRE := map[string]any{
		"error": "0 vCPUs: a VM has 1 to 8 vCPUs; memory 8192 MiB: a VM may have at most 3072 MiB",
		"problems": []any{
			map[string]any{"field": "vcpus", "message": "0 vCPUs: a VM has 1 to 8 vCPUs"},
			map[string]any{"field": "memory", "message": "memory 8192 MiB: a VM may have at most 3072 MiB"},
		},
	}
	if w.Code != 400 || !reflect.DeepEqual(re, wantRE) {
		t.Errorf("400 body = %d %v, want %v", w.Code, re, wantRE)
	}
}

func TestCreateVMLocation(t *testing.T) {
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	h := newVMAPIServer(t, testVMs()).Handler()
	w := do(t, h, "POST", "/api/v1/vms", `{"name":"app","vcpus":1,"memory_mib":256,"volumes":[{"name":"b","size_mib":1,"boot":true}]}`, ck)
	if w.Code != 201 || w.Header().Get("Location") != "/api/v1/vms/10" {
		t.Errorf("create: %d Location %q, want 201 /api/v1/vms/10", w.Code, w.Header().Get("Location"))
	}
}

func TestVMListIsArray(t *testing.T) {
	h := newVMAPIServer(t, &vmAPIFake{}).Handler()
	w := do(t, h, "GET", "/api/v1/vms", "", withBasic("admin", "admin"))
	if got := strings.TrimSpace(w.Body.String()); w.Code != 200 || got != "[]" {
		t.Errorf("GET /api/v1/vms = %d %s, want []", w.Code, got)
	}
}

// TestVMCrossOrigin: a page of another site cannot make the operator's
// browser start or remove a VM.
func TestVMCrossOrigin(t *testing.T) {
	f := testVMs()
	h := newVMAPIServer(t, f).Handler()
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	for _, r := range []struct{ method, path string }{{"POST", "/api/v1/vms/2/actions/start"}, {"DELETE", "/api/v1/vms/2"}} {
		w := do(t, h, r.method, r.path, "", ck, withHeader("Sec-Fetch-Site", "cross-site"))
		if w.Code != http.StatusForbidden {
			t.Errorf("cross-site %s %s: %d, want 403", r.method, r.path, w.Code)
		}
	}
	if f.last != "" {
		t.Errorf("a cross-site request reached the source: %s", f.last)
	}
}

func TestVMCommandSlugs(t *testing.T) {
	// Every command of the API is a command of the state table, and every
	// command the API may refuse with 409 can be reached by a slug.
	slugs := map[string]vm.Command{
		"start": vm.Start, "shutdown": vm.Shutdown, "poweroff": vm.PowerOff, "dump": vm.Dump,
		"boot-from-cd": vm.BootFromCD, "migrate": vm.Migrate, "reset-device": vm.ResetDevice,
	}
	for slug, want := range slugs {
		got, ok := vmCommand(slug)
		if !ok || got != want {
			t.Errorf("vmCommand(%q) = %q, %v; want %q", slug, got, ok, want)
		}
		if !slices.Contains(vm.Commands(), got) {
			t.Errorf("slug %q maps to %q, not a command of the state table", slug, got)
		}
	}
	for _, slug := range []string{"", "Start", "power-off", "remove", "config", "console"} {
		if c, ok := vmCommand(slug); ok {
			t.Errorf("vmCommand(%q) = %q, want none", slug, c)
		}
	}
}

// FuzzVMBodies checks that no body crashes the VM decoders and that an
// accepted body always carries values of the right shape.
func FuzzVMBodies(f *testing.F) {
	for _, s := range []string{
		`{"name":"app","vcpus":2,"memory_mib":512,"volumes":[{"name":"app-boot","size_mib":1024,"boot":true}]}`,
		`{"name":"app","volumes":[{"existing":3,"boot":true}],"nics":[{"network":"business","mac":"52-54-00-ab-cd-ef"}],"boot":"cd","cd":"x.iso"}`,
		`{"name":"app","volumes":[{"name":"b","size_mib":-1}]}`, `{"name":"a","memory_mib":9223372036854775807,"volumes":[{"existing":1}]}`,
		`{"vcpus":2,"memory_mib":768,"add_volumes":[{"name":"d","size_mib":1}],"detach":[6],"delete":[7],"nics":[]}`,
		`{"nics":null}`, `{"detach":[1],"delete":[1]}`, `{"timeout_seconds":30}`, `{"to":2}`, `{"cd":"a.iso"}`, `{"cd":"../a.iso"}`,
		`{"to":-1}`, `null`, `[]`, ``, ` `, `{}`, `{"NAME":"a","VOLUMES":[{"EXISTING":1}]}`,
		`{"name":"a","nics":[{"network":"n","mac":"0000.5e00.5301"}],"volumes":[{"existing":1}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if req, err := parseVMCreate(body); err == nil {
			if vm.CheckName(req.Name) != nil || req.VCPUs < 0 || req.MemoryMiB < 0 || req.MemoryMiB > maxMiB ||
				len(req.Volumes) == 0 || len(req.Volumes) > vm.MaxVolumes || (req.Boot == "cd" && req.CD == "") ||
				req.CD != "" && vm.CheckCD(req.CD) != nil {
				t.Fatalf("parseVMCreate accepted %+v", req)
			}
			checkVolumes(t, req.Volumes)
			checkNICShapes(t, req.NICs)
		}
		if req, err := parseVMConfig(body); err == nil {
			if req.VCPUs != nil && *req.VCPUs < 0 || req.MemoryMiB != nil && (*req.MemoryMiB < 0 || *req.MemoryMiB > maxMiB) {
				t.Fatalf("parseVMConfig accepted %+v", req)
			}
			checkVolumes(t, req.AddVolumes)
			for _, id := range append(slices.Clone(req.Detach), req.Delete...) {
				if id < 1 {
					t.Fatalf("parseVMConfig accepted volume id %d", id)
				}
			}
			if req.NICs != nil {
				checkNICShapes(t, *req.NICs)
			}
		}
		for _, cmd := range vm.Commands() {
			req, err := parseVMAction(cmd, body)
			if err != nil {
				continue
			}
			if req.TimeoutSeconds < 0 || req.TimeoutSeconds > maxShutdownS || req.To < 0 || req.CD != "" && vm.CheckCD(req.CD) != nil ||
				req.TimeoutSeconds != 0 && cmd != vm.Shutdown || req.To != 0 && cmd != vm.Migrate || req.CD != "" && cmd != vm.BootFromCD {
				t.Fatalf("parseVMAction(%s) accepted %+v", cmd, req)
			}
		}
	})
}

func checkVolumes(t *testing.T, vols []unit.VMVolumeRequest) {
	t.Helper()
	for _, v := range vols {
		newOK := v.Existing == 0 && vm.CheckName(v.Name) == nil && v.SizeMiB > 0 && v.SizeMiB <= maxMiB && v.Group >= 0
		existingOK := v.Existing > 0 && v.Name == "" && v.SizeMiB == 0 && v.Group == 0
		if !newOK && !existingOK {
			t.Fatalf("accepted volume %+v", v)
		}
	}
}

func checkNICShapes(t *testing.T, nics []unit.VMNICRequest) {
	t.Helper()
	for _, n := range nics {
		if vm.CheckName(n.Network) != nil {
			t.Fatalf("accepted network %q", n.Network)
		}
		if n.MAC == "" {
			continue
		}
		mac, err := net.ParseMAC(n.MAC)
		if err != nil || vm.CheckMAC(mac) != nil || mac.String() != n.MAC {
			t.Fatalf("accepted MAC %q", n.MAC)
		}
	}
}

func TestDashboardVMs(t *testing.T) {
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	t.Run("renders VMs", func(t *testing.T) {
		w := do(t, newVMAPIServer(t, testVMs()).Handler(), "GET", "/", "", ck)
		if w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
		body := w.Body.String()
		for _, want := range []string{
			`id="vms"`, `id="vm-rows"`, `data-vm="1"`, "web", "db", "flaky", ">VM 3<",
			`badge vm-running">Running<`, `badge vm-stopped">Stopped<`, `badge vm-critical">Critical<`,
			"running on PM 1", "crashed 3 times within 1h0m0s", ">PM 2<", ">512 MiB<", ">1 GiB<", ">256 MiB<",
			`<a href="/vms/1/console">Serial</a>`, `<a href="/vms/1/vnc">VNC</a>`, `<a href="/vms/3/vnc">`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("dashboard lacks %q", want)
			}
		}
		if t.Failed() {
			t.Logf("dashboard:\n%s", body)
		}
	})
	t.Run("no VMs", func(t *testing.T) {
		body := do(t, newVMAPIServer(t, &vmAPIFake{}).Handler(), "GET", "/", "", ck).Body.String()
		if !strings.Contains(body, "No virtual machines.") {
			t.Errorf("empty VM list not shown:\n%s", body)
		}
	})
	t.Run("source error keeps the page", func(t *testing.T) {
		f := testVMs()
		f.err = errors.New("db closed")
		w := do(t, newVMAPIServer(t, f).Handler(), "GET", "/", "", ck)
		if w.Code != 200 || !strings.Contains(w.Body.String(), "cannot read VMs: db closed") || !strings.Contains(w.Body.String(), "pm1") {
			t.Errorf("status %d body %s, want 200 with the unit and the VM error", w.Code, w.Body)
		}
	})
	t.Run("escapes names", func(t *testing.T) {
		f := testVMs()
		f.vms[0].Name = "<img src=x>"
		f.vms[0].Activity = `"><script>alert(1)</script>`
		body := do(t, newVMAPIServer(t, f).Handler(), "GET", "/", "", ck).Body.String()
		if strings.Contains(body, "<img src=x>") || strings.Contains(body, "<script>alert") {
			t.Errorf("VM name or activity not escaped")
		}
	})
	t.Run("no VM source", func(t *testing.T) {
		body := do(t, newTestServer(t, &fakeSource{unit: testUnit()}).Handler(), "GET", "/", "", ck).Body.String()
		if strings.Contains(body, `id="vms"`) {
			t.Errorf("VM section without a VMSource")
		}
	})
}

// countingVMs counts the calls of VMs into the activity of VM 1, so the
// page shows whether the script has refreshed the VM section.
type countingVMs struct {
	*vmAPIFake
	calls int
}

func (c *countingVMs) VMs(ctx context.Context) ([]unit.VM, error) {
	vms, err := c.vmAPIFake.VMs(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if err == nil {
		vms[0].Activity = fmt.Sprintf("refresh %d", c.calls)
		vms[1].State, vms[1].Node = string(vm.Booting), 0
	}
	return vms, err
}

// TestDashboardVMsInBrowser runs the dashboard's script in Chromium: the
// VM section must be refreshed from /api/v1/vms.
func TestDashboardVMsInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("no Chromium at %s (Debian package chromium): %v", chromiumPath, err)
	}
	s := newVMAPIServer(t, &countingVMs{vmAPIFake: testVMs()})
	cookie := signSession(testKey, "admin", time.Now().Add(time.Hour))
	loggedIn := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := r.Cookie(sessionCookie); err != nil {
			r.AddCookie(&http.Cookie{Name: sessionCookie, Value: cookie})
		}
		s.Handler().ServeHTTP(w, r)
	})
	srv := httptest.NewServer(loggedIn)
	defer srv.Close()

	dom := string(chromium(t, "--virtual-time-budget=5000", "--dump-dom", srv.URL+"/"))
	m := regexp.MustCompile(`refresh (\d+)`).FindStringSubmatch(dom)
	if m == nil || m[1] == "1" {
		t.Errorf("VM 1 activity shows %v, want a value fetched after the first render", m)
	}
	for _, want := range []string{
		`class="badge vm-booting">Booting<`, `data-vm="2"`, "flaky", "Critical", "512 MiB", `href="/vms/3/console"`, `href="/vms/2/vnc"`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("refreshed VM section lacks %q", want)
		}
	}
	if strings.Contains(dom, "Cannot refresh") {
		t.Errorf("the page shows a refresh error")
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
}
