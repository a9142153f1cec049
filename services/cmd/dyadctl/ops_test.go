package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/webui"
)

// ctlOps is a Source, an OpsSource and an AuditLog over the test unit: PM 1
// runs (Work On allowed; VM web on it cannot move when stuck), PM 2 is in
// Maintenance. err, when set, fails every command; calls records what
// reached the OpsSource. hideLogins keeps logins out of the audit log: each
// dyadctl run starts with one, which would make its tables depend on the
// clock.
type ctlOps struct {
	*fakeSource
	mu         sync.Mutex
	stuck      bool
	err        error
	calls      []string
	audit      []unit.AuditRecord
	hideLogins bool
}

func newCtlOps() *ctlOps {
	return &ctlOps{fakeSource: &fakeSource{unit: testUnit()}}
}

func (o *ctlOps) PM(_ context.Context, id int) (unit.PM, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, pm := range o.unit.PMs {
		if pm.ID == id {
			return pm, nil
		}
	}
	return unit.PM{}, fmt.Errorf("PM %d: %w", id, webui.ErrNotFound)
}

func (o *ctlOps) PMCommand(_ context.Context, id int, cmd string, args unit.PMAction) (unit.PM, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, fmt.Sprintf("pm %d %s confirm=%v", id, cmd, args.Confirm))
	if o.err != nil {
		return unit.PM{}, o.err
	}
	i := slices.IndexFunc(o.unit.PMs, func(pm unit.PM) bool { return pm.ID == id })
	if i < 0 {
		return unit.PM{}, fmt.Errorf("pm %d: %w", id, webui.ErrNotFound)
	}
	pm := &o.unit.PMs[i]
	if !slices.Contains(pm.Allowed, cmd) {
		return *pm, fmt.Errorf("%w: %s is not allowed while pm%d is %s", webui.ErrConflict, cmd, id, pm.State)
	}
	if cmd == unit.PMWorkOn && o.stuck && !args.Confirm {
		return *pm, fmt.Errorf("%w: needs confirmation: VMs web cannot move to PM 2 and would be shut down; send Work On again with confirm", webui.ErrConflict)
	}
	switch cmd {
	case unit.PMWorkOn:
		pm.State, pm.Maintenance, pm.Allowed = unit.PMMaintenance, true, []string{unit.PMFinalize, unit.PMShutdown, unit.PMPowerOff}
	case unit.PMFinalize:
		pm.State, pm.Maintenance, pm.Allowed = unit.PMRunning, false, []string{unit.PMWorkOn}
	case unit.PMShutdown, unit.PMPowerOff:
		pm.State, pm.Allowed = unit.PMOffMaintenance, []string{unit.PMPowerOn}
	case unit.PMResetDevice:
		pm.Failures, pm.Allowed = 0, slices.DeleteFunc(pm.Allowed, func(c string) bool { return c == unit.PMResetDevice })
	}
	return *pm, nil
}

func (o *ctlOps) UnitCommand(_ context.Context, cmd string, args unit.UnitAction) (unit.Unit, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, fmt.Sprintf("unit %s timeout=%d", cmd, args.TimeoutSeconds))
	if o.err != nil {
		return unit.Unit{}, o.err
	}
	return o.unit, nil
}

func (o *ctlOps) SetBMC(_ context.Context, id int, b unit.BMC) (unit.PM, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, fmt.Sprintf("bmc %d %q %q %q", id, b.Addr, b.User, b.Password))
	if o.err != nil {
		return unit.PM{}, o.err
	}
	pm := o.unit.PMs[id-1]
	pm.BMC = nil
	if b.Addr != "" {
		pm.BMC = &unit.BMC{Addr: b.Addr, User: b.User}
	}
	return pm, nil
}

func (o *ctlOps) Append(_ context.Context, r unit.AuditRecord) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.hideLogins && r.Action == "POST /api/v1/login" {
		return nil
	}
	r.Seq = uint64(len(o.audit) + 1)
	o.audit = append(o.audit, r)
	return nil
}

func (o *ctlOps) List(_ context.Context, limit int) ([]unit.AuditRecord, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []unit.AuditRecord
	for i := len(o.audit) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, o.audit[i])
	}
	return out, nil
}

func (o *ctlOps) callLog() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.calls)
}

// startOps serves the webui with o as its Source, OpsSource and AuditLog.
func startOps(t *testing.T, o *ctlOps) func(string) string {
	t.Helper()
	s, err := webui.New(webui.Config{
		Source: o, Ops: o, Audit: o, Users: users{}, SessionKey: []byte("0123456789abcdef0123456789abcdef"),
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

func TestPMCommands(t *testing.T) {
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		stuck   bool
		srcErr  error
		code    int
		want    string // a part of stdout
		wantErr string // a part of stderr
		calls   []string
	}{
		{name: "work on", args: []string{"pm", "work-on", "1"}, want: "running (in Maintenance)  primary", calls: []string{"pm 1 work-on confirm=false"}},
		{name: "work on with VMs that cannot move, --yes", args: []string{"pm", "work-on", "1", "--yes"}, stuck: true,
			want:    "running (in Maintenance)",
			wantErr: "conflict: needs confirmation: VMs web cannot move to PM 2 and would be shut down; send Work On again with confirm\n--yes: sending Work On again with the confirmation.\n",
			calls:   []string{"pm 1 work-on confirm=false", "pm 1 work-on confirm=true"}},
		{name: "work on with VMs that cannot move, no terminal", args: []string{"pm", "work-on", "1"}, stuck: true, code: 2,
			wantErr: "dyadctl: pm work-on 1: not confirmed: stdin is not a terminal, so dyadctl cannot ask; the unit says: conflict: needs confirmation: VMs web cannot move to PM 2 and would be shut down",
			calls:   []string{"pm 1 work-on confirm=false"}},
		{name: "not allowed", args: []string{"pm", "finalize", "1"}, code: 1,
			wantErr: "dyadctl: pm finalize 1: dyad API: 409 Conflict: conflict: finalize is not allowed while pm1 is running\nallowed now:\n  dyadctl pm work-on 1\n",
			calls:   []string{"pm 1 finalize confirm=false"}},
		{name: "finalize", args: []string{"pm", "finalize", "2", "--yes"}, want: "2   pm2   running ", calls: []string{"pm 2 finalize confirm=false"}},
		{name: "reset device", args: []string{"pm", "reset-device", "2"}, want: "finalize,shutdown,power-off\n", calls: []string{"pm 2 reset-device confirm=false"}},
		{name: "shutdown --yes", args: []string{"pm", "shutdown", "--yes", "2"}, want: "off (in Maintenance)", calls: []string{"pm 2 shutdown confirm=false"}},
		{name: "shutdown without a terminal", args: []string{"pm", "shutdown", "2"}, code: 2,
			wantErr: "dyadctl: pm shutdown 2: not confirmed: stdin is not a terminal, so dyadctl cannot ask; run again with --yes to go ahead"},
		{name: "power off without a terminal", args: []string{"pm", "power-off", "2"}, code: 2, wantErr: "stdin is not a terminal"},
		{name: "unknown PM", args: []string{"pm", "power-on", "3"}, code: 1, wantErr: "404 Not Found: pm 3: not found", calls: []string{"pm 3 power-on confirm=false"}},
		{name: "failed", args: []string{"pm", "work-on", "1"}, srcErr: fmt.Errorf("store closed"), code: 1, wantErr: "500 Internal Server Error: cannot work-on PM 1: store closed",
			calls: []string{"pm 1 work-on confirm=false"}},
		{name: "no id", args: []string{"pm", "work-on"}, code: 2, wantErr: "pm work-on takes one PM id"},
		{name: "bad id", args: []string{"pm", "work-on", "x"}, code: 2, wantErr: `invalid PM id "x"`},
		{name: "unknown flag", args: []string{"pm", "finalize", "1", "--force"}, code: 2, wantErr: "flag provided but not defined: -force"},
		{name: "unknown pm command", args: []string{"pm", "reboot", "1"}, code: 2, wantErr: "unknown command pm reboot; want one of: list, show, work-on"},
		{name: "pm alone", args: []string{"pm"}, code: 2, wantErr: "pm takes a command"},
		{name: "bmc", args: []string{"pm", "bmc", "2", "--addr", "10.99.0.102", "--user", "ADMIN", "--password-file", pwFile},
			want: "PM 2's BMC: 10.99.0.102, user ADMIN.\n", calls: []string{`bmc 2 "10.99.0.102" "ADMIN" "s3cret"`}},
		{name: "bmc remove", args: []string{"pm", "bmc", "--remove", "1"}, want: "PM 1 has no BMC: the unit cannot power it on.\n", calls: []string{`bmc 1 "" "" ""`}},
		{name: "bmc without a terminal", args: []string{"pm", "bmc", "2", "--addr", "bmc2", "--user", "ADMIN"}, code: 2,
			wantErr: "not confirmed: stdin is not a terminal, so dyadctl cannot ask for the BMC password; give it with --password-file"},
		{name: "bmc password on the command line", args: []string{"pm", "bmc", "2", "--addr", "bmc2", "--user", "ADMIN", "--password", "x"}, code: 2,
			wantErr: "flag provided but not defined: -password"},
		{name: "bmc without user", args: []string{"pm", "bmc", "2", "--addr", "bmc2"}, code: 2, wantErr: "pm bmc needs --addr and --user (or --remove)"},
		{name: "bmc remove with address", args: []string{"pm", "bmc", "2", "--remove", "--addr", "bmc2"}, code: 2, wantErr: "pm bmc --remove takes no --addr"},
		{name: "bmc missing file", args: []string{"pm", "bmc", "2", "--addr", "bmc2", "--user", "u", "--password-file", pwFile + ".none"}, code: 1,
			wantErr: "password file: open "},
		{name: "bmc refused", args: []string{"pm", "bmc", "2", "--addr", "bmc 2", "--user", "u", "--password-file", pwFile}, code: 1,
			wantErr: "400 Bad Request: invalid addr: want HOST or HOST:PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newCtlOps()
			o.stuck, o.err = tt.stuck, tt.srcErr
			env := startOps(t, o)
			code, out, errOut := runCmd(t, env, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, errOut)
			}
			if !strings.Contains(out, tt.want) || tt.code != 0 && out != "" {
				t.Errorf("stdout %q, want %q", out, tt.want)
			}
			if !strings.Contains(errOut, tt.wantErr) || tt.wantErr == "" && errOut != "" {
				t.Errorf("stderr %q lacks %q", errOut, tt.wantErr)
			}
			if got := o.callLog(); !reflect.DeepEqual(got, tt.calls) {
				t.Errorf("calls %q, want %q", got, tt.calls)
			}
		})
	}
}

func TestPasswordFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		content string
		want    string
		wantErr string
	}{
		{"pw\n", "pw", ""},
		{"pw", "pw", ""},
		{"pw\r\n", "pw", ""},
		{"p w \n", "p w ", ""},
		{"pw\n\n", "pw", ""},
		{"", "", "empty"},
		{"\n", "", "empty"},
		{"pw\nmore\n", "", "more than one line"},
		{strings.Repeat("x", maxPasswordFile+1), "", "larger than"},
	}
	for i, tt := range tests {
		name := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(name, []byte(tt.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := readPasswordFile(name)
		if got != tt.want || (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("readPasswordFile(%q) = %q, %v; want %q, %q", tt.content, got, err, tt.want, tt.wantErr)
		}
		if secret := strings.TrimSpace(tt.content); err != nil && secret != "" && strings.Contains(err.Error(), secret) {
			t.Errorf("error %q shows the file's content", err)
		}
	}
}

func TestPMJSON(t *testing.T) {
	o := newCtlOps()
	env := startOps(t, o)
	code, out, errOut := runCmd(t, env, "--json", "pm", "work-on", "1")
	var pm unit.PM
	if err := json.Unmarshal([]byte(out), &pm); code != 0 || err != nil {
		t.Fatalf("exit %d, %v; stdout %q stderr %q", code, err, out, errOut)
	}
	if pm.ID != 1 || !pm.Maintenance || pm.State != unit.PMMaintenance {
		t.Errorf("--json printed %+v, want PM 1 in Maintenance", pm)
	}
}

func TestUnitCommands(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		srcErr  error
		code    int
		want    string // stdout, whole
		wantErr string // a part of stderr
		calls   []string
	}{
		{name: "shutdown", args: []string{"unit", "shutdown", "--yes"}, want: "Shutdown started: every VM shuts down, then both PMs power off.\n",
			calls: []string{"unit shutdown timeout=0"}},
		{name: "shutdown with seconds", args: []string{"unit", "shutdown", "--timeout", "300", "--yes"}, want: "Shutdown started",
			calls: []string{"unit shutdown timeout=300"}},
		{name: "shutdown with a duration", args: []string{"unit", "shutdown", "--yes", "--timeout=5m"}, want: "Shutdown started",
			calls: []string{"unit shutdown timeout=300"}},
		{name: "rolling reboot", args: []string{"unit", "rolling-reboot", "--yes"},
			want: "Rolling Reboot started: each PM in turn moves its VMs to the other PM and reboots.\n", calls: []string{"unit rolling-reboot timeout=0"}},
		{name: "shutdown without a terminal", args: []string{"unit", "shutdown"}, code: 2,
			wantErr: "dyadctl: unit shutdown: not confirmed: stdin is not a terminal, so dyadctl cannot ask; run again with --yes to go ahead"},
		{name: "rolling reboot without a terminal", args: []string{"unit", "rolling-reboot"}, code: 2, wantErr: "stdin is not a terminal"},
		{name: "zero timeout", args: []string{"unit", "shutdown", "--yes", "--timeout", "0"}, code: 2, wantErr: "want whole seconds from 1 to 86400"},
		{name: "fractional timeout", args: []string{"unit", "shutdown", "--yes", "--timeout", "1.5s"}, code: 2, wantErr: "want whole seconds"},
		{name: "long timeout", args: []string{"unit", "shutdown", "--yes", "--timeout", "25h"}, code: 2, wantErr: "want whole seconds"},
		{name: "timeout for rolling reboot", args: []string{"unit", "rolling-reboot", "--yes", "--timeout", "5"}, code: 2,
			wantErr: "flag provided but not defined: -timeout"},
		{name: "argument", args: []string{"unit", "shutdown", "now", "--yes"}, code: 2, wantErr: "unit shutdown takes no arguments"},
		{name: "refused", args: []string{"unit", "rolling-reboot", "--yes"}, srcErr: fmt.Errorf("%w: a unit Shutdown is in progress", webui.ErrConflict),
			code: 1, wantErr: "dyadctl: unit rolling-reboot --yes: dyad API: 409 Conflict: conflict: a unit Shutdown is in progress\n",
			calls: []string{"unit rolling-reboot timeout=0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newCtlOps()
			o.err = tt.srcErr
			env := startOps(t, o)
			code, out, errOut := runCmd(t, env, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, errOut)
			}
			if !strings.HasPrefix(out, tt.want) || tt.code != 0 && out != "" {
				t.Errorf("stdout %q, want %q", out, tt.want)
			}
			if !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stderr %q lacks %q", errOut, tt.wantErr)
			}
			if got := o.callLog(); !reflect.DeepEqual(got, tt.calls) {
				t.Errorf("calls %q, want %q", got, tt.calls)
			}
		})
	}
}

// TestOpsAsk answers dyadctl's questions on a terminal: only "yes" goes
// ahead, and the question, on stderr, says what is at stake.
func TestOpsAsk(t *testing.T) {
	workOnQ := "conflict: needs confirmation: VMs web cannot move to PM 2 and would be shut down; send Work On again with confirm\n\n" +
		"Type yes to work on PM 1 and shut those VMs down: "
	tests := []struct {
		name     string
		args     []string
		stuck    bool
		question string
		answer   string
		code     int
		calls    []string
		wantOut  string
		wantErr  string // a part of stderr after the question
	}{
		{name: "work on, yes", args: []string{"pm", "work-on", "1"}, stuck: true, question: workOnQ, answer: "yes\n",
			calls: []string{"pm 1 work-on confirm=false", "pm 1 work-on confirm=true"}, wantOut: "running (in Maintenance)"},
		{name: "work on, no", args: []string{"pm", "work-on", "1"}, stuck: true, question: workOnQ, answer: "no\n", code: 1,
			calls: []string{"pm 1 work-on confirm=false"}, wantErr: "dyadctl: pm work-on 1: not confirmed: nothing was changed"},
		{name: "pm shutdown, yes", args: []string{"pm", "shutdown", "2"}, answer: "yes\n",
			question: "Shut down PM 2? It stays off until it is powered on again.\n\nType yes to shut down PM 2: ",
			calls:    []string{"pm 2 shutdown confirm=false"}, wantOut: "off (in Maintenance)"},
		{name: "pm power off, y", args: []string{"pm", "power-off", "2"}, answer: "y\n", code: 1,
			question: "Power off PM 2 at once, as pulling its power cord?\n\nType yes to power off PM 2: ", wantErr: "not confirmed"},
		{name: "unit shutdown, yes", args: []string{"unit", "shutdown", "--timeout", "60"}, answer: "yes\n",
			question: "Shut down both PMs and every VM?\n\nType yes to shut down the unit: ",
			calls:    []string{"unit shutdown timeout=60"}, wantOut: "Shutdown started"},
		{name: "unit shutdown, empty", args: []string{"unit", "shutdown"}, answer: "\n", code: 1,
			question: "Shut down both PMs and every VM?\n\nType yes to shut down the unit: ", wantErr: "not confirmed"},
		{name: "rolling reboot, yes", args: []string{"unit", "rolling-reboot"}, answer: "yes\n",
			question: "Reboot both PMs, one after the other? Each PM's VMs move to the other PM before it reboots.\n\nType yes to reboot the unit: ",
			calls:    []string{"unit rolling-reboot timeout=0"}, wantOut: "Rolling Reboot started"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			master, tty := openPTY(t)
			o := newCtlOps()
			o.stuck = tt.stuck
			env := startOps(t, o)
			stdout, stderr := &syncBuffer{}, &syncBuffer{}
			done := make(chan int, 1)
			go func() { done <- run(t.Context(), tt.args, tty, stdout, stderr, env) }()
			waitFor(t, stderr, tt.question)
			if got := stderr.String(); got != tt.question {
				t.Errorf("question:\n%s\nwant:\n%s", got, tt.question)
			}
			if tt.stuck {
				if got := o.callLog(); len(got) != 1 {
					t.Errorf("calls before the answer %q, want the refused Work On only", got)
				}
			} else if got := o.callLog(); len(got) != 0 {
				t.Errorf("calls before the answer %q, want none", got)
			}
			if _, err := master.Write([]byte(tt.answer)); err != nil {
				t.Fatal(err)
			}
			var code int
			select {
			case code = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("dyadctl did not end after the answer")
			}
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantOut) || tt.wantOut == "" && stdout.String() != "" {
				t.Errorf("stdout %q, want %q", stdout.String(), tt.wantOut)
			}
			if after := strings.TrimPrefix(stderr.String(), tt.question); !strings.Contains(after, tt.wantErr) || tt.wantErr == "" && after != "" {
				t.Errorf("stderr after the question %q, want %q", after, tt.wantErr)
			}
			if got := o.callLog(); !reflect.DeepEqual(got, tt.calls) {
				t.Errorf("calls %q, want %q", got, tt.calls)
			}
		})
	}
}

// TestBMCPasswordOnTerminal: the password is asked on the terminal with
// its echo off, which is back on afterwards.
func TestBMCPasswordOnTerminal(t *testing.T) {
	master, tty := openPTY(t)
	fd := int(tty.Fd())
	o := newCtlOps()
	env := startOps(t, o)
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(t.Context(), []string{"pm", "bmc", "2", "--addr", "10.99.0.102:623", "--user", "ADMIN"}, tty, stdout, stderr, env)
	}()
	const prompt = "IPMI password of PM 2's BMC: "
	waitFor(t, stderr, prompt)
	// ReadPassword turns the echo off just after the prompt is written.
	deadline := time.Now().Add(10 * time.Second)
	for {
		tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if tio.Lflag&unix.ECHO == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the terminal echoes while the password is asked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := master.Write([]byte("s3cret\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d, stderr %q", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dyadctl did not end after the password")
	}
	if got, want := o.callLog(), []string{`bmc 2 "10.99.0.102:623" "ADMIN" "s3cret"`}; !reflect.DeepEqual(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	if stderr.String() != prompt+"\n" || stdout.String() != "PM 2's BMC: 10.99.0.102:623, user ADMIN.\n" {
		t.Errorf("stderr %q stdout %q", stderr.String(), stdout.String())
	}
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil || tio.Lflag&unix.ECHO == 0 {
		t.Errorf("the terminal's echo is not back: %v", err)
	}
}

// TestBMCPasswordInterrupted: Ctrl-C at the password prompt changes
// nothing and gives the terminal its echo back.
func TestBMCPasswordInterrupted(t *testing.T) {
	_, tty := openPTY(t)
	fd := int(tty.Fd())
	o := newCtlOps()
	env := startOps(t, o)
	ctx, cancel := context.WithCancel(t.Context())
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"pm", "bmc", "2", "--addr", "bmc2", "--user", "ADMIN"}, tty, stdout, stderr, env)
	}()
	waitFor(t, stderr, "IPMI password of PM 2's BMC: ")
	deadline := time.Now().Add(10 * time.Second)
	for {
		tio, _ := unix.IoctlGetTermios(fd, unix.TCGETS)
		if tio != nil && tio.Lflag&unix.ECHO == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitFail || !strings.Contains(stderr.String(), "not confirmed: nothing was changed: interrupted") {
			t.Errorf("exit %d, stderr %q; want %d and interrupted", code, stderr.String(), exitFail)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dyadctl did not end when interrupted")
	}
	if calls := o.callLog(); len(calls) != 0 {
		t.Errorf("an interrupted password prompt set the BMC: %q", calls)
	}
	if tio, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil || tio.Lflag&unix.ECHO == 0 {
		t.Errorf("the terminal's echo is not back after Ctrl-C: %v", err)
	}
}

func TestAuditCommand(t *testing.T) {
	o := newCtlOps()
	o.hideLogins = true
	env := startOps(t, o)
	t1 := time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC)
	o.audit = []unit.AuditRecord{
		{Seq: 1, Time: t1, User: "admin", Remote: "10.99.0.50", Action: "POST /api/v1/pms/2/actions/work-on", Status: 200, Result: "ok"},
		{Seq: 2, Time: t1.Add(time.Minute), Action: "POST /api/v1/login", Status: 400, Result: "invalid JSON body\twith a tab\nand a line"},
	}
	tests := []struct {
		name    string
		args    []string
		code    int
		want    string // stdout, whole
		wantErr string
	}{
		{name: "two", args: []string{"audit", "--limit", "2"},
			want: "TIME                     USER   ACTION                              STATUS  RESULT\n" +
				"2026-11-22 06:01:00 UTC  -      POST /api/v1/login                  400     invalid JSON body with a tab and a line\n" +
				"2026-11-22 06:00:00 UTC  admin  POST /api/v1/pms/2/actions/work-on  200     ok\n"},
		{name: "newest", args: []string{"audit", "--limit=1"},
			want: "TIME                     USER  ACTION              STATUS  RESULT\n" +
				"2026-11-22 06:01:00 UTC  -     POST /api/v1/login  400     invalid JSON body with a tab and a line\n"},
		{name: "limit too large", args: []string{"audit", "--limit", "1001"}, code: 2, wantErr: "invalid --limit 1001: want 1 to 1000"},
		{name: "negative limit", args: []string{"audit", "--limit", "-1"}, code: 2, wantErr: "invalid --limit -1"},
		{name: "argument", args: []string{"audit", "list"}, code: 2, wantErr: "audit takes no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, env, tt.args...)
			if code != tt.code || out != tt.want || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("exit %d stdout:\n%s\nstderr %q\nwant exit %d stdout:\n%s\nstderr with %q", code, out, errOut, tt.code, tt.want, tt.wantErr)
			}
		})
	}
	// The default is the server's 100; what dyadctl itself did is in it.
	code, out, _ := runCmd(t, env, "--json", "audit")
	var recs []unit.AuditRecord
	if err := json.Unmarshal([]byte(out), &recs); code != 0 || err != nil || len(recs) != 2 || recs[0].Seq != 2 {
		t.Errorf("audit --json: exit %d, %v, %s", code, err, out)
	}
	code, _, _ = runCmd(t, env, "pm", "reset-device", "2")
	if code != 0 {
		t.Fatalf("pm reset-device: exit %d", code)
	}
	code, out, _ = runCmd(t, env, "audit", "--limit", "1")
	if code != 0 || !strings.Contains(out, "admin  POST /api/v1/pms/2/actions/reset-device  200     ok") {
		t.Errorf("audit after a command: exit %d\n%s", code, out)
	}
}

func TestEmptyAudit(t *testing.T) {
	o := newCtlOps()
	o.hideLogins = true
	env := startOps(t, o)
	if code, out, _ := runCmd(t, env, "audit"); code != 0 || out != "No operations recorded.\n" {
		t.Errorf("exit %d, output %q", code, out)
	}
}

// TestLoginAudited: the login each dyadctl run starts with is in the audit
// log, with the user, and reads are not.
func TestLoginAudited(t *testing.T) {
	o := newCtlOps()
	env := startOps(t, o)
	if code, _, errOut := runCmd(t, env, "pm", "list"); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.audit) != 1 || o.audit[0].Action != "POST /api/v1/login" || o.audit[0].User != "admin" || o.audit[0].Result != "ok" {
		t.Errorf("audit log %+v, want the login of admin only", o.audit)
	}
}

func TestHelpListsOps(t *testing.T) {
	code, _, errOut := runCmd(t, func(string) string { return "" }, "-h")
	for _, want := range []string{"unit shutdown [--yes] [--timeout S]", "unit rolling-reboot [--yes]", "pm work-on ID [--yes]",
		"pm bmc ID --addr HOST[:PORT] --user USER [--password-file FILE]", "audit [--limit N]"} {
		if code != 0 || !strings.Contains(errOut, want) {
			t.Errorf("exit %d, help lacks %q", code, want)
		}
	}
}
