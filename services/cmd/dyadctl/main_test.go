package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/webui"
)

type fakeSource struct {
	unit unit.Unit
	nets []unit.Network
	err  error
}

func (f *fakeSource) Networks(context.Context) ([]unit.Network, error) {
	if f.err != nil {
		return nil, f.err
	}
	return f.nets, nil
}

func (f *fakeSource) FixNetwork(_ context.Context, id int) (unit.Network, error) {
	for _, n := range f.nets {
		if n.ID == id {
			if n.Problem != "" {
				return unit.Network{}, fmt.Errorf("%w: %s", webui.ErrConflict, n.Problem)
			}
			return n, nil
		}
	}
	return unit.Network{}, webui.ErrNotFound
}

func (f *fakeSource) RenameNetwork(_ context.Context, id int, name string) (unit.Network, error) {
	if f.err != nil {
		return unit.Network{}, f.err
	}
	if name == "" {
		return unit.Network{}, fmt.Errorf("%w: empty name", webui.ErrInvalid)
	}
	for i, n := range f.nets {
		if n.ID == id {
			f.nets[i].Name = name
			return f.nets[i], nil
		}
	}
	return unit.Network{}, webui.ErrNotFound
}

func (f *fakeSource) Unit(context.Context) (unit.Unit, error) { return f.unit, f.err }

func (f *fakeSource) PM(_ context.Context, id int) (unit.PM, error) {
	if f.err != nil {
		return unit.PM{}, f.err
	}
	for _, pm := range f.unit.PMs {
		if pm.ID == id {
			pm.Hardware = map[string]any{"cpus": 2}
			return pm, nil
		}
	}
	return unit.PM{}, fmt.Errorf("PM %d: %w", id, webui.ErrNotFound)
}

type users struct{}

func (users) Authenticate(_ context.Context, user, password string) error {
	if user != "admin" || password != "secret" {
		return webui.ErrBadCredentials
	}
	return nil
}

var t0 = time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC)

func testUnit() unit.Unit {
	return unit.Unit{
		Name: "lab", ManagementIP: "10.99.0.10", Primary: 1, Epoch: 7, ImageVersion: "0.1.0", Time: t0,
		PMs: []unit.PM{
			{
				ID: 1, Name: "pm1", State: unit.PMRunning, Role: unit.RolePrimary, UptimeSeconds: 93784, ImageVersion: "0.1.0",
				Paths:     []unit.Path{{Name: "priv0", Up: true, LastSeen: t0}, {Name: "ibiz0", Up: true, LastSeen: t0}},
				Addresses: []string{"10.99.0.1/24", "10.99.0.10/24"}, BootID: "b00t",
				Allowed: []string{unit.PMWorkOn}, BMC: &unit.BMC{Addr: "10.99.0.101:623", User: "ADMIN"},
			},
			{
				ID: 2, Name: "pm2", State: unit.PMMaintenance, Role: unit.RoleSecondary, UptimeSeconds: 42, ImageVersion: "0.1.0",
				Paths:       []unit.Path{{Name: "priv0", Up: true, LastSeen: t0}, {Name: "ibiz0", Up: false}},
				Maintenance: true, Failures: 1, Allowed: []string{unit.PMFinalize, unit.PMShutdown, unit.PMPowerOff, unit.PMResetDevice},
			},
		},
		Alerts: []unit.Alert{{ID: "ibiz0-pm2", Severity: unit.SevWarning, Source: "pm2", Message: "heartbeat path ibiz0 down", Since: t0}},
		Quorum: unit.Quorum{Servers: []string{"10.99.0.200:7413"}, Verdict: "run", Reason: "both PMs are heard", Holder: 1, LeaseSeconds: 3.5},
	}
}

// start serves the real webui handler over a fake source and returns the
// environment pointing dyadctl at it.
func start(t *testing.T, src webui.Source) func(string) string {
	t.Helper()
	s, err := webui.New(webui.Config{
		Source: src, Users: users{}, SessionKey: []byte("0123456789abcdef0123456789abcdef"),
		Node: 1, Role: func() unit.Role { return unit.RolePrimary },
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	env := map[string]string{"DYAD_URL": ts.URL, "DYAD_PASSWORD": "secret"}
	return func(k string) string { return env[k] }
}

func runCmd(t *testing.T, env func(string) string, args ...string) (int, string, string) {
	t.Helper()
	return runCmdIn(t, env, strings.NewReader(""), args...)
}

// runCmdIn runs dyadctl with stdin.
func runCmdIn(t *testing.T, env func(string) string, stdin io.Reader, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, stdin, &stdout, &stderr, env)
	return code, stdout.String(), stderr.String()
}

func TestTables(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{
			args: []string{"pm", "list"},
			want: `ID  NAME  STATE                     ROLE       PRIV0  IBIZ0  UPTIME  FAILURES  VERSION  ALLOWED
1   pm1   running                   primary    up     up     1d 2h   0         0.1.0    work-on
2   pm2   running (in Maintenance)  secondary  up     down   42s     1         0.1.0    finalize,shutdown,power-off,reset-device
`,
		},
		{
			args: []string{"alert", "list"},
			want: `SEVERITY  SOURCE  SINCE                    MESSAGE
warning   pm2     2026-11-22 05:00:00 UTC  heartbeat path ibiz0 down
`,
		},
		{
			args: []string{"unit", "show"},
			want: `Name:           lab
Management IP:  10.99.0.10
Primary:        pm1 (PM 1)
Epoch:          7
Image version:  0.1.0
Time:           2026-11-22 05:00:00 UTC
Quorum:         10.99.0.200:7413 — run: both PMs are heard
Lease holder:   PM 1 (3s left)

PMs:
ID  NAME  STATE                     ROLE       PRIV0  IBIZ0  UPTIME  FAILURES  VERSION  ALLOWED
1   pm1   running                   primary    up     up     1d 2h   0         0.1.0    work-on
2   pm2   running (in Maintenance)  secondary  up     down   42s     1         0.1.0    finalize,shutdown,power-off,reset-device

Alerts:
SEVERITY  SOURCE  SINCE                    MESSAGE
warning   pm2     2026-11-22 05:00:00 UTC  heartbeat path ibiz0 down
`,
		},
		{
			args: []string{"pm", "show", "1"},
			want: `ID:             1
Name:           pm1
State:          running
Activity:       -
Role:           primary
Uptime:         1d 2h
Image version:  0.1.0
Boot ID:        b00t
Addresses:      10.99.0.1/24, 10.99.0.10/24
Last seen:      -
Maintenance:    no
Failures:       0 within the last hour
Allowed:        work-on
BMC:            10.99.0.101:623, user ADMIN

Heartbeat paths:
PATH   STATE  LAST SEEN
priv0  up     2026-11-22 05:00:00 UTC
ibiz0  up     2026-11-22 05:00:00 UTC

Hardware:
{
  "cpus": 2
}
`,
		},
	}
	env := start(t, &fakeSource{unit: testUnit()})
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

func TestEmptyUnit(t *testing.T) {
	env := start(t, &fakeSource{unit: unit.Unit{Name: "new"}})
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"pm", "list"}, "No PMs reported.\n"},
		{[]string{"alert", "list"}, "No active alerts.\n"},
	} {
		code, out, _ := runCmd(t, env, tt.args...)
		if code != 0 || out != tt.want {
			t.Errorf("%v: exit %d, output %q, want %q", tt.args, code, out, tt.want)
		}
	}
}

func TestJSON(t *testing.T) {
	env := start(t, &fakeSource{unit: testUnit()})
	tests := []struct {
		args   []string
		decode func([]byte) (any, error)
		want   any
	}{
		{[]string{"--json", "unit", "show"}, decodeAs[unit.Unit], testUnit()},
		{[]string{"--json", "pm", "list"}, decodeAs[[]unit.PM], testUnit().PMs},
		{[]string{"--json", "alert", "list"}, decodeAs[[]unit.Alert], testUnit().Alerts},
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
	code, out, _ := runCmd(t, env, "--json", "pm", "show", "2")
	var pm map[string]any
	if err := json.Unmarshal([]byte(out), &pm); code != 0 || err != nil || pm["name"] != "pm2" || pm["hardware"] == nil {
		t.Errorf("pm show --json: exit %d, %v, %s", code, err, out)
	}
}

func decodeAs[T any](b []byte) (any, error) {
	var v T
	err := json.Unmarshal(b, &v)
	return v, err
}

func TestFailures(t *testing.T) {
	good := start(t, &fakeSource{unit: testUnit()})
	broken := start(t, &fakeSource{err: errors.New("store closed")})
	dead := httptest.NewServer(nil)
	deadURL := dead.URL
	dead.Close()
	tests := []struct {
		name    string
		env     func(string) string
		args    []string
		code    int
		wantErr string
	}{
		{name: "no command", env: good, code: 2, wantErr: "no command given"},
		{name: "unknown command", env: good, args: []string{"frob", "list"}, code: 2, wantErr: `unknown command "frob list"`},
		{name: "pm show without id", env: good, args: []string{"pm", "show"}, code: 2, wantErr: "exactly one PM id"},
		{name: "pm show bad id", env: good, args: []string{"pm", "show", "x"}, code: 2, wantErr: `invalid PM id "x"`},
		{name: "extra words", env: good, args: []string{"pm", "list", "now"}, code: 2, wantErr: "unknown command"},
		{name: "unknown flag", env: good, args: []string{"--verbose", "pm", "list"}, code: 2, wantErr: "flag provided but not defined"},
		{name: "unknown PM", env: good, args: []string{"pm", "show", "9"}, code: 1, wantErr: "dyadctl: pm show 9: dyad API: 404 Not Found: PM 9 not found"},
		{name: "wrong password", env: good, args: []string{"--password", "nope", "unit", "show"}, code: 1, wantErr: "401 Unauthorized"},
		{name: "server failure", env: broken, args: []string{"pm", "list"}, code: 1, wantErr: "store closed"},
		{name: "unreachable", env: good, args: []string{"--url", deadURL, "alert", "list"}, code: 1, wantErr: "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, tt.env, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			if !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stderr %q lacks %q", errOut, tt.wantErr)
			}
			if tt.code == 2 && !strings.Contains(errOut, "Usage: dyadctl") {
				t.Errorf("usage error without usage text: %q", errOut)
			}
			if out != "" {
				t.Errorf("failure wrote to stdout: %q", out)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	code, _, errOut := runCmd(t, func(string) string { return "" }, "-h")
	if code != 0 || !strings.Contains(errOut, "pm show ID") || !strings.Contains(errOut, "DYAD_URL") {
		t.Errorf("exit %d, help %q", code, errOut)
	}
}

func TestEnvDefaults(t *testing.T) {
	// Without DYAD_PASSWORD the password is "admin", which this server refuses:
	// the request reached the server named by DYAD_URL with the default user.
	env := start(t, &fakeSource{unit: testUnit()})
	noPassword := func(k string) string {
		if k == "DYAD_PASSWORD" {
			return ""
		}
		return env(k)
	}
	if code, _, errOut := runCmd(t, noPassword, "pm", "list"); code != 1 || !strings.Contains(errOut, "401") {
		t.Errorf("default password: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := runCmd(t, noPassword, "--password", "secret", "pm", "list"); code != 0 {
		t.Errorf("--password: exit %d, stderr %q", code, errOut)
	}
}

func TestNetworkCommands(t *testing.T) {
	src := &fakeSource{unit: testUnit(), nets: []unit.Network{
		{ID: 1, Name: "network1", Ports: []unit.NetworkPort{{PM: 1, Port: "biz1", Up: true, Carrier: true, SpeedMbps: 1000}, {PM: 2, Port: "biz2", Up: true, Carrier: true, SpeedMbps: 1000}}},
		{ID: 2, Name: "network2", Ports: []unit.NetworkPort{{PM: 1, Port: "biz2"}}, Problem: "pm1 biz2: no peer port in the same L2 domain"},
	}}
	env := start(t, src)
	for _, tc := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"network", "list"}, 0, []string{"network1", "biz1 (up 1000 Mb/s)", "biz2 (up 1000 Mb/s)", "biz2 (down)", "no peer port"}},
		{[]string{"network", "rename", "1", "office"}, 0, []string{"office"}},
		{[]string{"network", "rename", "7", "x"}, 1, []string{"network 7 not found"}},
		{[]string{"network", "rename", "x", "y"}, 2, []string{"invalid network id"}},
		{[]string{"network", "rename", "1"}, 2, []string{"takes a network id and a name"}},
		{[]string{"network", "fix", "2"}, 1, []string{"409", "no peer port"}},
		{[]string{"network", "fix", "1"}, 0, []string{"office", "biz1 (up 1000 Mb/s)"}},
	} {
		code, stdout, stderr := runCmd(t, env, tc.args...)
		got := stdout + stderr
		if code != tc.code {
			t.Errorf("%v: exit %d, want %d: %s", tc.args, code, tc.code, got)
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%v: output lacks %q:\n%s", tc.args, w, got)
			}
		}
	}
	if src.nets[0].Name != "office" {
		t.Errorf("rename did not reach the unit: %+v", src.nets[0])
	}
}
