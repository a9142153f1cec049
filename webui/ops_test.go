package webui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

// opsFake is a Source and an OpsSource over the test unit. The PMs'
// allowed commands follow a small state table like the agent's: Work On
// while running, Finalize/Shutdown/Power Off in Maintenance, Reset Device
// after failures. stuck, when set, names the VMs a Work On of PM 1 would
// shut down; err, when set, fails every command; refuseRead fails PM
// reads after a refusal. calls records what reached the OpsSource.
type opsFake struct {
	*fakeSource
	mu         sync.Mutex
	u          unit.Unit
	stuck      string
	err        error
	refuseRead bool
	refused    bool
	calls      []string
}

func newOpsFake() *opsFake {
	u := testUnit()
	u.PMs[1].State, u.PMs[1].Activity = unit.PMRunning, ""
	u.PMs[1].Failures = 1
	u.PMs[1].BMC = &unit.BMC{Addr: "10.99.0.102", User: "ADMIN"}
	f := &opsFake{fakeSource: &fakeSource{unit: u}, u: u}
	f.allow()
	return f
}

// allow recomputes the PMs' allowed commands; f.mu is held or unneeded.
func (f *opsFake) allow() {
	for i := range f.u.PMs {
		pm := &f.u.PMs[i]
		pm.Allowed = nil
		switch {
		case pm.State == unit.PMOffMaintenance:
			pm.Allowed = []string{unit.PMPowerOn}
		case pm.Maintenance:
			pm.Allowed = []string{unit.PMFinalize, unit.PMShutdown, unit.PMPowerOff}
		default:
			pm.Allowed = []string{unit.PMWorkOn}
		}
		if pm.Failures > 0 {
			pm.Allowed = append(pm.Allowed, unit.PMResetDevice)
		}
	}
}

func (f *opsFake) Unit(context.Context) (unit.Unit, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u := f.u
	u.PMs = slices.Clone(f.u.PMs)
	return u, nil
}

func (f *opsFake) PM(_ context.Context, id int) (unit.PM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuseRead && f.refused {
		return unit.PM{}, errors.New("store closed")
	}
	for _, pm := range f.u.PMs {
		if pm.ID == id {
			return pm, nil
		}
	}
	return unit.PM{}, fmt.Errorf("PM %d: %w", id, ErrNotFound)
}

func (f *opsFake) PMCommand(_ context.Context, id int, cmd string, args unit.PMAction) (unit.PM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("pm %d %s confirm=%v", id, cmd, args.Confirm))
	if f.err != nil {
		return unit.PM{}, f.err
	}
	i := slices.IndexFunc(f.u.PMs, func(pm unit.PM) bool { return pm.ID == id })
	if i < 0 {
		return unit.PM{}, fmt.Errorf("pm %d: %w", id, ErrNotFound)
	}
	pm := &f.u.PMs[i]
	if !slices.Contains(pm.Allowed, cmd) {
		f.refused = true
		return *pm, fmt.Errorf("%w: %s is not allowed while pm%d is %s; allowed: %s", ErrConflict, cmd, id, pm.State, strings.Join(pm.Allowed, ", "))
	}
	switch cmd {
	case unit.PMWorkOn:
		if f.stuck != "" && !args.Confirm {
			f.refused = true
			return *pm, fmt.Errorf("%w: needs confirmation: VMs %s cannot move to PM %d and would be shut down; send Work On again with confirm", ErrConflict, f.stuck, 3-id)
		}
		pm.Maintenance, pm.State = true, unit.PMMaintenance
	case unit.PMFinalize:
		pm.Maintenance, pm.State = false, unit.PMRunning
	case unit.PMShutdown, unit.PMPowerOff:
		pm.State = unit.PMOffMaintenance
	case unit.PMPowerOn:
		pm.State = unit.PMMaintenance
	case unit.PMResetDevice:
		pm.Failures = 0
	}
	f.allow()
	return *pm, nil
}

func (f *opsFake) UnitCommand(_ context.Context, cmd string, args unit.UnitAction) (unit.Unit, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("unit %s timeout=%d", cmd, args.TimeoutSeconds))
	if f.err != nil {
		return unit.Unit{}, f.err
	}
	for i := range f.u.PMs {
		f.u.PMs[i].Activity = cmd + " in progress"
	}
	return f.u, nil
}

func (f *opsFake) SetBMC(_ context.Context, id int, b unit.BMC) (unit.PM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("bmc %d %s %s %s", id, b.Addr, b.User, b.Password))
	if f.err != nil {
		return unit.PM{}, f.err
	}
	if strings.HasPrefix(b.Addr, "[") {
		return unit.PM{}, fmt.Errorf("%w: bmc %q: IPv6 BMC addresses are not supported", ErrInvalid, b.Addr)
	}
	i := slices.IndexFunc(f.u.PMs, func(pm unit.PM) bool { return pm.ID == id })
	if i < 0 {
		return unit.PM{}, fmt.Errorf("pm %d: %w", id, ErrNotFound)
	}
	f.u.PMs[i].BMC = nil
	if b.Addr != "" {
		// Left with its password on purpose: the server must drop it.
		f.u.PMs[i].BMC = &b
	}
	return f.u.PMs[i], nil
}

func (f *opsFake) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// auditFake is an AuditLog in memory; err, when set, fails every call.
type auditFake struct {
	mu    sync.Mutex
	recs  []unit.AuditRecord
	err   error
	limit int // of the last List
}

func (a *auditFake) Append(_ context.Context, r unit.AuditRecord) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return a.err
	}
	r.Seq = uint64(len(a.recs) + 1)
	a.recs = append(a.recs, r)
	return nil
}

func (a *auditFake) List(_ context.Context, limit int) ([]unit.AuditRecord, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.limit = limit
	if a.err != nil {
		return nil, a.err
	}
	var out []unit.AuditRecord
	for i := len(a.recs) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, a.recs[i])
	}
	return out, nil
}

func (a *auditFake) records() []unit.AuditRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.recs)
}

// newOpsServer serves f as the unit's Source and, unless noOps, its
// OpsSource; a (nil: no audit log) as its AuditLog; and f as its
// QuorumSource too when q is set.
func newOpsServer(t testing.TB, f *opsFake, noOps bool, a AuditLog, q QuorumSource, log *slog.Logger) *Server {
	t.Helper()
	cfg := Config{
		Source:     f,
		Quorum:     q,
		Users:      fakeUsers{users: map[string]string{"admin": "admin", "op": "op"}},
		SessionKey: testKey,
		Node:       1,
		Role:       func() unit.Role { return unit.RolePrimary },
		Log:        log,
	}
	if !noOps {
		cfg.Ops = f
	}
	if a != nil {
		cfg.Audit = a
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// notAllowed is the 409 body of a refused PM command.
type notAllowed struct {
	Error   string   `json:"error"`
	State   string   `json:"state"`
	Allowed []string `json:"allowed"`
}

func TestPMCommandAPI(t *testing.T) {
	jsonCT := withHeader("Content-Type", "application/json")
	tests := []struct {
		name        string
		path        string
		body        string
		stuck       string
		srcErr      error
		refuseRead  bool
		want        int
		wantMsg     string   // a part of the error
		wantAllowed []string // of a 409; nil when the answer has none
		wantState   unit.PMState
		calls       []string
	}{
		{name: "work on", path: "/api/v1/pms/2/actions/work-on", want: 200, wantState: unit.PMMaintenance,
			calls: []string{"pm 2 work-on confirm=false"}},
		{name: "work on with empty object", path: "/api/v1/pms/2/actions/work-on", body: `{}`, want: 200, wantState: unit.PMMaintenance,
			calls: []string{"pm 2 work-on confirm=false"}},
		{name: "work on confirmed", path: "/api/v1/pms/1/actions/work-on", body: `{"confirm": true}`, stuck: "web", want: 200,
			wantState: unit.PMMaintenance, calls: []string{"pm 1 work-on confirm=true"}},
		{name: "work on needs confirmation", path: "/api/v1/pms/1/actions/work-on", stuck: "web, db", want: 409,
			wantMsg: "conflict: needs confirmation: VMs web, db cannot move to PM 2 and would be shut down", wantAllowed: []string{"work-on"},
			calls: []string{"pm 1 work-on confirm=false"}},
		{name: "not allowed", path: "/api/v1/pms/2/actions/finalize", want: 409,
			wantMsg: "conflict: finalize is not allowed while pm2 is running; allowed: work-on, reset-device", wantAllowed: []string{"work-on", "reset-device"},
			calls: []string{"pm 2 finalize confirm=false"}},
		{name: "refused, state unreadable", path: "/api/v1/pms/2/actions/power-on", refuseRead: true, want: 409,
			wantMsg: "power-on is not allowed", calls: []string{"pm 2 power-on confirm=false"}},
		{name: "reset device", path: "/api/v1/pms/2/actions/reset-device", body: " \n", want: 200, wantState: unit.PMRunning,
			calls: []string{"pm 2 reset-device confirm=false"}},
		{name: "unknown PM", path: "/api/v1/pms/7/actions/work-on", want: 404, wantMsg: "pm 7: not found", calls: []string{"pm 7 work-on confirm=false"}},
		{name: "source refuses", path: "/api/v1/pms/2/actions/work-on", srcErr: fmt.Errorf("%w: no peer to move VMs to", ErrInvalid), want: 400,
			wantMsg: "invalid request: no peer to move VMs to", calls: []string{"pm 2 work-on confirm=false"}},
		{name: "source fails", path: "/api/v1/pms/2/actions/shutdown", srcErr: errors.New("store closed"), want: 500,
			wantMsg: "cannot shutdown PM 2: store closed", calls: []string{"pm 2 shutdown confirm=false"}},
		{name: "unknown command", path: "/api/v1/pms/2/actions/reboot", want: 400,
			wantMsg: `unknown PM command "reboot": want one of work-on, finalize, shutdown, power-off, power-on, reset-device`},
		{name: "command in another case", path: "/api/v1/pms/2/actions/Work-On", want: 400, wantMsg: "unknown PM command"},
		{name: "bad id", path: "/api/v1/pms/x/actions/work-on", want: 400, wantMsg: `invalid PM id "x"`},
		{name: "zero id", path: "/api/v1/pms/0/actions/work-on", want: 400, wantMsg: `invalid PM id "0"`},
		{name: "confirm for another command", path: "/api/v1/pms/2/actions/reset-device", body: `{"confirm": true}`, want: 400,
			wantMsg: `"confirm" applies to work-on, not to reset-device`},
		{name: "confirm false for another command", path: "/api/v1/pms/2/actions/reset-device", body: `{"confirm": false}`, want: 200,
			wantState: unit.PMRunning, calls: []string{"pm 2 reset-device confirm=false"}},
		{name: "unknown field", path: "/api/v1/pms/2/actions/work-on", body: `{"force": true}`, want: 400, wantMsg: `unknown field "force"`},
		{name: "confirm as string", path: "/api/v1/pms/2/actions/work-on", body: `{"confirm": "yes"}`, want: 400, wantMsg: "invalid JSON body"},
		{name: "trailing data", path: "/api/v1/pms/2/actions/work-on", body: `{} {}`, want: 400, wantMsg: "trailing data"},
		{name: "array", path: "/api/v1/pms/2/actions/work-on", body: `[]`, want: 400, wantMsg: "invalid JSON body"},
		{name: "oversized", path: "/api/v1/pms/2/actions/work-on", body: `{"x":"` + strings.Repeat("a", maxStorageBody) + `"}`, want: 400, wantMsg: "larger than"},
	}
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newOpsFake()
			f.stuck, f.err, f.refuseRead = tt.stuck, tt.srcErr, tt.refuseRead
			h := newOpsServer(t, f, false, nil, nil, nil).Handler()
			w := do(t, h, "POST", tt.path, tt.body, ck, jsonCT)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.want, w.Body)
			}
			if got := f.callLog(); !reflect.DeepEqual(got, tt.calls) {
				t.Errorf("calls %q, want %q", got, tt.calls)
			}
			if tt.want != 200 {
				if msg := errorMessage(t, w); !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("error %q, want %q", msg, tt.wantMsg)
				}
				var na notAllowed
				json.Unmarshal(w.Body.Bytes(), &na)
				if !reflect.DeepEqual(na.Allowed, tt.wantAllowed) {
					t.Errorf("allowed %#v, want %#v (body %s)", na.Allowed, tt.wantAllowed, w.Body)
				}
				return
			}
			var pm unit.PM
			if err := json.Unmarshal(w.Body.Bytes(), &pm); err != nil {
				t.Fatal(err)
			}
			if pm.State != tt.wantState {
				t.Errorf("PM state %q, want %q", pm.State, tt.wantState)
			}
		})
	}
}

// TestPMRefusalAllowsNothing: a 409 lists the allowed commands as [],
// not null, when the PM allows none, so a client tells "none" from "not
// said".
func TestPMRefusalAllowsNothing(t *testing.T) {
	f := newOpsFake()
	h := newOpsServer(t, f, false, nil, nil, nil).Handler()
	f.mu.Lock()
	f.u.PMs[1].State, f.u.PMs[1].Failures = unit.PMBooting, 0
	f.u.PMs[1].Allowed = nil
	f.mu.Unlock()
	// The fake's table has Work On for a booting PM; the refusal reads
	// the PM without recomputing it.
	f.err = fmt.Errorf("%w: pm2 is booting", ErrConflict)
	w := do(t, h, "POST", "/api/v1/pms/2/actions/work-on", "", withBasic("admin", "admin"))
	if w.Code != 409 || !strings.Contains(w.Body.String(), `"allowed":[]`) || !strings.Contains(w.Body.String(), `"state":"booting"`) {
		t.Errorf("status %d body %s, want 409 with allowed [] and the state", w.Code, w.Body)
	}
}

func TestUnitCommandAPI(t *testing.T) {
	tests := []struct {
		name    string
		path    string
		body    string
		srcErr  error
		want    int
		wantMsg string
		calls   []string
	}{
		{name: "shutdown", path: "/api/v1/unit/actions/shutdown", want: 200, calls: []string{"unit shutdown timeout=0"}},
		{name: "shutdown with timeout", path: "/api/v1/unit/actions/shutdown", body: `{"timeout_seconds": 300}`, want: 200,
			calls: []string{"unit shutdown timeout=300"}},
		{name: "rolling reboot", path: "/api/v1/unit/actions/rolling-reboot", body: `{}`, want: 200, calls: []string{"unit rolling-reboot timeout=0"}},
		{name: "timeout for rolling reboot", path: "/api/v1/unit/actions/rolling-reboot", body: `{"timeout_seconds": 30}`, want: 400,
			wantMsg: `"timeout_seconds" applies to shutdown, not to rolling-reboot`},
		{name: "negative timeout", path: "/api/v1/unit/actions/shutdown", body: `{"timeout_seconds": -1}`, want: 400, wantMsg: "invalid timeout_seconds -1"},
		{name: "timeout too long", path: "/api/v1/unit/actions/shutdown", body: `{"timeout_seconds": 86401}`, want: 400, wantMsg: "want 1 to 86400 seconds"},
		{name: "timeout as string", path: "/api/v1/unit/actions/shutdown", body: `{"timeout_seconds": "30"}`, want: 400, wantMsg: "invalid JSON body"},
		{name: "unknown field", path: "/api/v1/unit/actions/shutdown", body: `{"timeout": 30}`, want: 400, wantMsg: `unknown field "timeout"`},
		{name: "unknown command", path: "/api/v1/unit/actions/reboot", want: 400,
			wantMsg: `unknown unit command "reboot": want shutdown, rolling-reboot or force-quorum`},
		{name: "refused", path: "/api/v1/unit/actions/rolling-reboot", srcErr: fmt.Errorf("%w: a unit Shutdown is in progress", ErrConflict),
			want: 409, wantMsg: "conflict: a unit Shutdown is in progress", calls: []string{"unit rolling-reboot timeout=0"}},
		{name: "failed", path: "/api/v1/unit/actions/shutdown", srcErr: errors.New("store closed"), want: 500,
			wantMsg: "cannot shutdown the unit: store closed", calls: []string{"unit shutdown timeout=0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newOpsFake()
			f.err = tt.srcErr
			h := newOpsServer(t, f, false, nil, nil, nil).Handler()
			w := do(t, h, "POST", tt.path, tt.body, withBasic("admin", "admin"))
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.want, w.Body)
			}
			if got := f.callLog(); !reflect.DeepEqual(got, tt.calls) {
				t.Errorf("calls %q, want %q", got, tt.calls)
			}
			if tt.want != 200 {
				if msg := errorMessage(t, w); !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("error %q, want %q", msg, tt.wantMsg)
				}
				return
			}
			var u unit.Unit
			if err := json.Unmarshal(w.Body.Bytes(), &u); err != nil || u.Name != "lab" || len(u.PMs) != 2 {
				t.Errorf("answer is not the unit: %v %s", err, w.Body)
			}
		})
	}
}

// TestForceQuorumBesideUnitCommands: the unit commands' route does not
// take Force Quorum's, with or without an OpsSource.
func TestForceQuorumBesideUnitCommands(t *testing.T) {
	for _, noOps := range []bool{false, true} {
		t.Run(fmt.Sprintf("noOps=%v", noOps), func(t *testing.T) {
			f := newOpsFake()
			q := newQuorumFake(waitingUnit())
			h := newOpsServer(t, f, noOps, nil, q, nil).Handler()
			w := do(t, h, "POST", forceQuorumPath, `{"confirm": true}`, withBasic("admin", "admin"))
			if w.Code != 200 || q.callCount() != 1 {
				t.Errorf("force-quorum: status %d %s, %d calls", w.Code, w.Body, q.callCount())
			}
			w = do(t, h, "POST", forceQuorumPath, `{}`, withBasic("admin", "admin"))
			if w.Code != 400 || !strings.Contains(w.Body.String(), "split brain") {
				t.Errorf("force-quorum without confirm: status %d %s, want the risk", w.Code, w.Body)
			}
			if calls := f.callLog(); len(calls) != 0 {
				t.Errorf("Force Quorum reached the OpsSource: %q", calls)
			}
		})
	}
}

func TestSetBMCAPI(t *testing.T) {
	tests := []struct {
		name     string
		path     string
		body     string
		srcErr   error
		want     int
		wantMsg  string
		wantBMC  *unit.BMC
		calls    []string
		noSecret bool // the answer and the log must not hold the password
	}{
		{name: "set", path: "/api/v1/pms/1/bmc", body: `{"addr": "10.99.0.101:623", "user": "ADMIN", "password": "s3cret-pw"}`, want: 200,
			wantBMC: &unit.BMC{Addr: "10.99.0.101:623", User: "ADMIN"}, calls: []string{"bmc 1 10.99.0.101:623 ADMIN s3cret-pw"}, noSecret: true},
		{name: "remove", path: "/api/v1/pms/2/bmc", body: `{"addr": ""}`, want: 200, calls: []string{"bmc 2   "}},
		{name: "remove with empty credentials", path: "/api/v1/pms/2/bmc", body: `{"addr": "", "user": "", "password": ""}`, want: 200, calls: []string{"bmc 2   "}},
		{name: "remove with a user", path: "/api/v1/pms/2/bmc", body: `{"addr": "", "user": "ADMIN"}`, want: 400, wantMsg: "an empty \"addr\" removes the BMC"},
		{name: "no addr", path: "/api/v1/pms/2/bmc", body: `{"user": "ADMIN", "password": "x"}`, want: 400, wantMsg: `missing field "addr"`},
		{name: "empty object", path: "/api/v1/pms/2/bmc", body: `{}`, want: 400, wantMsg: `missing field "addr"`},
		{name: "no body", path: "/api/v1/pms/2/bmc", want: 400, wantMsg: "invalid body: empty"},
		{name: "null addr", path: "/api/v1/pms/2/bmc", body: `{"addr": null}`, want: 400, wantMsg: `missing field "addr"`},
		{name: "no user", path: "/api/v1/pms/2/bmc", body: `{"addr": "bmc2", "password": "x"}`, want: 400, wantMsg: `missing "user"`},
		{name: "no password", path: "/api/v1/pms/2/bmc", body: `{"addr": "bmc2", "user": "ADMIN"}`, want: 400, wantMsg: `missing "password"`},
		{name: "space in addr", path: "/api/v1/pms/2/bmc", body: `{"addr": "bmc 2", "user": "u", "password": "p"}`, want: 400, wantMsg: "invalid addr"},
		{name: "control in addr", path: "/api/v1/pms/2/bmc", body: `{"addr": "bmc\n2", "user": "u", "password": "p"}`, want: 400, wantMsg: "invalid addr"},
		{name: "long addr", path: "/api/v1/pms/2/bmc", body: `{"addr": "` + strings.Repeat("a", 261) + `", "user": "u", "password": "p"}`, want: 400, wantMsg: "261 bytes"},
		{name: "control in password", path: "/api/v1/pms/2/bmc", body: `{"addr": "bmc2", "user": "u", "password": "p\u0000w"}`, want: 400,
			wantMsg: "invalid password: want 1 to 64 printable ASCII characters"},
		{name: "long user", path: "/api/v1/pms/2/bmc", body: `{"addr": "bmc2", "user": "` + strings.Repeat("u", 65) + `", "password": "p"}`, want: 400, wantMsg: "invalid user"},
		{name: "unknown field", path: "/api/v1/pms/2/bmc", body: `{"addr": "bmc2", "user": "u", "password": "p", "port": 623}`, want: 400, wantMsg: `unknown field "port"`},
		{name: "source refuses address", path: "/api/v1/pms/2/bmc", body: `{"addr": "[fe80::1]:623", "user": "u", "password": "p"}`, want: 400,
			wantMsg: "IPv6 BMC addresses are not supported", calls: []string{"bmc 2 [fe80::1]:623 u p"}},
		{name: "unknown PM", path: "/api/v1/pms/3/bmc", body: `{"addr": "bmc3", "user": "u", "password": "p"}`, want: 404, wantMsg: "pm 3: not found",
			calls: []string{"bmc 3 bmc3 u p"}},
		{name: "bad id", path: "/api/v1/pms/one/bmc", body: `{"addr": ""}`, want: 400, wantMsg: `invalid PM id "one"`},
		{name: "source fails", path: "/api/v1/pms/1/bmc", body: `{"addr": ""}`, srcErr: errors.New("store closed"), want: 500,
			wantMsg: "cannot set the BMC of PM 1: store closed", calls: []string{"bmc 1   "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logBuf bytes.Buffer
			f := newOpsFake()
			f.err = tt.srcErr
			h := newOpsServer(t, f, false, nil, nil, slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))).Handler()
			w := do(t, h, "PUT", tt.path, tt.body, withBasic("admin", "admin"))
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.want, w.Body)
			}
			if got := f.callLog(); !reflect.DeepEqual(got, tt.calls) {
				t.Errorf("calls %q, want %q", got, tt.calls)
			}
			if tt.want != 200 {
				if msg := errorMessage(t, w); !strings.Contains(msg, tt.wantMsg) || strings.Contains(msg, `p\u0000w`) || strings.Contains(msg, "p\x00w") {
					t.Errorf("error %q, want %q (and never the password)", msg, tt.wantMsg)
				}
				return
			}
			var pm unit.PM
			if err := json.Unmarshal(w.Body.Bytes(), &pm); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(pm.BMC, tt.wantBMC) {
				t.Errorf("BMC %+v, want %+v", pm.BMC, tt.wantBMC)
			}
			if tt.noSecret {
				if strings.Contains(w.Body.String(), "s3cret") || strings.Contains(w.Body.String(), "password") {
					t.Errorf("the answer shows the password: %s", w.Body)
				}
				if strings.Contains(logBuf.String(), "s3cret") {
					t.Errorf("the log shows the password:\n%s", logBuf.String())
				}
				// Nor does any later read of the PM or the unit.
				for _, path := range []string{"/api/v1/pms/1", "/api/v1/pms", "/api/v1/unit"} {
					if w := do(t, h, "GET", path, "", withBasic("admin", "admin")); strings.Contains(w.Body.String(), "s3cret") {
						t.Errorf("GET %s shows the password: %s", path, w.Body)
					}
				}
			}
		})
	}
}

func TestAuditListAPI(t *testing.T) {
	full := &auditFake{}
	for i := range 1500 {
		full.recs = append(full.recs, unit.AuditRecord{Seq: uint64(i + 1), User: "admin", Action: "POST /api/v1/x", Status: 200, Result: "ok"})
	}
	tests := []struct {
		name      string
		a         *auditFake // nil: no audit log
		query     string
		want      int
		wantMsg   string
		wantN     int
		wantLimit int
	}{
		{name: "default", a: full, want: 200, wantN: 100, wantLimit: 100},
		{name: "limit", a: full, query: "?limit=5", want: 200, wantN: 5, wantLimit: 5},
		{name: "max", a: full, query: "?limit=1000", want: 200, wantN: 1000, wantLimit: 1000},
		{name: "over max", a: full, query: "?limit=1001", want: 400, wantMsg: `invalid limit "1001": want 1 to 1000 records (default 100)`},
		{name: "zero", a: full, query: "?limit=0", want: 400, wantMsg: "invalid limit"},
		{name: "negative", a: full, query: "?limit=-1", want: 400, wantMsg: "invalid limit"},
		{name: "not a number", a: full, query: "?limit=ten", want: 400, wantMsg: "invalid limit"},
		{name: "empty", a: full, query: "?limit=", want: 400, wantMsg: "invalid limit"},
		{name: "twice", a: full, query: "?limit=1&limit=2", want: 400, wantMsg: "given more than once"},
		{name: "empty log", a: &auditFake{}, want: 200, wantN: 0, wantLimit: 100},
		{name: "log fails", a: &auditFake{err: errors.New("db closed")}, want: 500, wantMsg: "cannot read the audit log: db closed"},
		{name: "no audit log", want: 501, wantMsg: "audit log not available"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a AuditLog
			if tt.a != nil {
				a = tt.a
			}
			h := newOpsServer(t, newOpsFake(), false, a, nil, nil).Handler()
			w := do(t, h, "GET", "/api/v1/audit"+tt.query, "", withBasic("admin", "admin"))
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.want, w.Body)
			}
			if tt.want != 200 {
				if msg := errorMessage(t, w); !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("error %q, want %q", msg, tt.wantMsg)
				}
				return
			}
			if !strings.HasPrefix(w.Body.String(), "[") {
				t.Errorf("body %s is not a JSON array", w.Body)
			}
			var recs []unit.AuditRecord
			if err := json.Unmarshal(w.Body.Bytes(), &recs); err != nil {
				t.Fatal(err)
			}
			if len(recs) != tt.wantN || tt.a.limit != tt.wantLimit {
				t.Errorf("%d records with limit %d, want %d with %d", len(recs), tt.a.limit, tt.wantN, tt.wantLimit)
			}
			if len(recs) > 1 && recs[0].Seq < recs[1].Seq {
				t.Errorf("records are not newest first: %d, %d", recs[0].Seq, recs[1].Seq)
			}
		})
	}
}

// TestOpsRefusedEarly: without login, without an OpsSource or from another
// site's page, nothing reaches the OpsSource and nothing is audited but
// the refusal of an authenticated user.
func TestOpsRefusedEarly(t *testing.T) {
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	requests := []struct{ method, path, body string }{
		{"POST", "/api/v1/pms/1/actions/work-on", ""},
		{"POST", "/api/v1/unit/actions/shutdown", ""},
		{"PUT", "/api/v1/pms/1/bmc", `{"addr": ""}`},
		{"GET", "/api/v1/audit", ""},
	}
	tests := []struct {
		name    string
		noOps   bool
		noAudit bool
		opts    []reqOpt
		want    int // for the audit list when it differs: wantList
		wantMsg string
		// wantList is the answer to GET /api/v1/audit.
		wantList int
		audited  int
	}{
		{name: "not logged in", want: 401, wantMsg: "not logged in", wantList: 401},
		{name: "wrong password", opts: []reqOpt{withBasic("admin", "nope")}, want: 401, wantMsg: "not logged in", wantList: 401},
		{name: "not logged in, no ops", noOps: true, noAudit: true, want: 401, wantMsg: "not logged in", wantList: 401},
		{name: "no ops", noOps: true, opts: []reqOpt{ck}, want: 501, wantMsg: "unit operations not available", wantList: 200, audited: 3},
		{name: "no audit log", noAudit: true, opts: []reqOpt{ck, withHeader("Content-Type", "application/json")}, want: 0, wantList: 501},
		{name: "cross-site", opts: []reqOpt{ck, withHeader("Sec-Fetch-Site", "cross-site"), withHeader("Content-Type", "text/plain")},
			want: 403, wantMsg: "cross-origin request refused", wantList: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newOpsFake()
			a := &auditFake{}
			var al AuditLog = a
			if tt.noAudit {
				al = nil
			}
			h := newOpsServer(t, f, tt.noOps, al, nil, nil).Handler()
			for _, r := range requests {
				w := do(t, h, r.method, r.path, r.body, tt.opts...)
				want, msg := tt.want, tt.wantMsg
				if r.method == "GET" {
					want, msg = tt.wantList, ""
				}
				if want == 0 {
					continue
				}
				if w.Code != want || msg != "" && !strings.Contains(errorMessage(t, w), msg) {
					t.Errorf("%s %s: status %d %s, want %d %q", r.method, r.path, w.Code, w.Body, want, msg)
				}
			}
			if tt.name == "no audit log" {
				if calls := f.callLog(); len(calls) != 3 {
					t.Errorf("without an audit log the commands still run: calls %q", calls)
				}
			} else if calls := f.callLog(); len(calls) != 0 {
				t.Errorf("refused requests reached the OpsSource: %q", calls)
			}
			if got := len(a.records()); got != tt.audited {
				t.Errorf("%d records audited, want %d: %+v", got, tt.audited, a.records())
			}
		})
	}
}

// TestAudit runs requests through the server and checks the one record
// each leaves, or that it leaves none.
func TestAudit(t *testing.T) {
	ck := withCookie(signSession(testKey, "op", time.Now().Add(time.Hour)))
	form := withHeader("Content-Type", "application/x-www-form-urlencoded")
	long := strings.Repeat("é", 400)
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		opts   []reqOpt
		stuck  string
		want   *unit.AuditRecord // nil: no record; Seq and Time are not compared
	}{
		{name: "PM command", method: "POST", path: "/api/v1/pms/2/actions/work-on", opts: []reqOpt{ck},
			want: &unit.AuditRecord{User: "op", Remote: "192.0.2.1", Action: "POST /api/v1/pms/2/actions/work-on", Status: 200, Result: "ok"}},
		{name: "refused PM command", method: "POST", path: "/api/v1/pms/1/actions/work-on", stuck: "web", opts: []reqOpt{withBasic("admin", "admin")},
			want: &unit.AuditRecord{User: "admin", Remote: "192.0.2.1", Action: "POST /api/v1/pms/1/actions/work-on", Status: 409,
				Result: "conflict: needs confirmation: VMs web cannot move to PM 2 and would be shut down; send Work On again with confirm"}},
		{name: "bad body", method: "PUT", path: "/api/v1/pms/1/bmc", body: `{"addr": "bmc1", "user": "u", "password": "pw", "x": 1}`, opts: []reqOpt{ck},
			want: &unit.AuditRecord{User: "op", Remote: "192.0.2.1", Action: "PUT /api/v1/pms/1/bmc", Status: 400,
				Result: `invalid JSON body (want {"addr": "HOST[:PORT]", "user": "...", "password": "..."} or {"addr": ""} to remove the BMC): json: unknown field "x"`}},
		{name: "rename", method: "PATCH", path: "/api/v1/networks/9", body: `{"name": "x"}`, opts: []reqOpt{ck},
			want: &unit.AuditRecord{User: "op", Remote: "192.0.2.1", Action: "PATCH /api/v1/networks/9", Status: 404, Result: "network 9 not found"}},
		{name: "storage without storage", method: "DELETE", path: "/api/v1/volumes/3", opts: []reqOpt{ck},
			want: &unit.AuditRecord{User: "op", Remote: "192.0.2.1", Action: "DELETE /api/v1/volumes/3", Status: 503, Result: "storage not available"}},
		{name: "escaped path", method: "DELETE", path: "/api/v1/volumes/3/snapshots/a%0Ab", opts: []reqOpt{ck},
			want: &unit.AuditRecord{User: "op", Remote: "192.0.2.1", Action: "DELETE /api/v1/volumes/3/snapshots/a%0Ab", Status: 503, Result: "storage not available"}},
		{name: "long error cut", method: "POST", path: "/api/v1/pms/2/actions/work-on", body: `{"` + long + `": 1}`, opts: []reqOpt{ck},
			want: &unit.AuditRecord{User: "op", Remote: "192.0.2.1", Action: "POST /api/v1/pms/2/actions/work-on", Status: 400,
				Result: auditText(`invalid JSON body (want {"confirm": true} (work-on) or nothing): json: unknown field "`+long+`"`, 300)}},
		{name: "the client's forwarded address is not the remote", method: "POST", path: "/api/v1/unit/actions/rolling-reboot",
			opts: []reqOpt{ck, withHeader("X-Forwarded-For", "203.0.113.9")},
			want: &unit.AuditRecord{User: "op", Remote: "192.0.2.1", Action: "POST /api/v1/unit/actions/rolling-reboot", Status: 200, Result: "ok"}},
		{name: "unknown command", method: "POST", path: "/api/v1/pms/2/actions/reboot", opts: []reqOpt{ck},
			want: &unit.AuditRecord{User: "op", Remote: "192.0.2.1", Action: "POST /api/v1/pms/2/actions/reboot", Status: 400,
				Result: `unknown PM command "reboot": want one of work-on, finalize, shutdown, power-off, power-on, reset-device`}},
		{name: "login", method: "POST", path: "/api/v1/login", body: `{"user":"admin","password":"admin"}`,
			want: &unit.AuditRecord{User: "admin", Remote: "192.0.2.1", Action: "POST /api/v1/login", Status: 200, Result: "ok"}},
		{name: "login refused", method: "POST", path: "/api/v1/login", body: `{"user":"eve","password":"guess"}`,
			want: &unit.AuditRecord{User: "eve", Remote: "192.0.2.1", Action: "POST /api/v1/login", Status: 401, Result: "invalid user or password"}},
		{name: "login unreadable", method: "POST", path: "/api/v1/login", body: `{"user":"eve"`,
			want: &unit.AuditRecord{Remote: "192.0.2.1", Action: "POST /api/v1/login", Status: 400,
				Result: `invalid JSON body (want {"user":"...","password":"..."}): unexpected EOF`}},
		{name: "form login", method: "POST", path: "/api/v1/login", body: url.Values{"user": {"op"}, "password": {"op"}}.Encode(), opts: []reqOpt{form},
			want: &unit.AuditRecord{User: "op", Remote: "192.0.2.1", Action: "POST /api/v1/login", Status: 303, Result: "ok"}},
		{name: "form login refused", method: "POST", path: "/api/v1/login", body: url.Values{"user": {"op"}, "password": {"x"}}.Encode(), opts: []reqOpt{form},
			want: &unit.AuditRecord{User: "op", Remote: "192.0.2.1", Action: "POST /api/v1/login", Status: 303, Result: "invalid user or password"}},
		{name: "logout", method: "POST", path: "/api/v1/logout", opts: []reqOpt{ck},
			want: &unit.AuditRecord{User: "op", Remote: "192.0.2.1", Action: "POST /api/v1/logout", Status: 200, Result: "ok"}},
		{name: "logout without a session", method: "POST", path: "/api/v1/logout",
			want: &unit.AuditRecord{Remote: "192.0.2.1", Action: "POST /api/v1/logout", Status: 200, Result: "ok"}},
		{name: "read", method: "GET", path: "/api/v1/unit", opts: []reqOpt{ck}},
		{name: "read of a PM", method: "GET", path: "/api/v1/pms/1", opts: []reqOpt{ck}},
		{name: "not logged in", method: "POST", path: "/api/v1/pms/2/actions/work-on"},
		{name: "no such route", method: "POST", path: "/api/v1/frobnicate", opts: []reqOpt{ck}},
		{name: "wrong method", method: "DELETE", path: "/api/v1/unit", opts: []reqOpt{ck}},
		{name: "health", method: "GET", path: "/api/v1/health"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newOpsFake()
			f.stuck = tt.stuck
			a := &auditFake{}
			h := newOpsServer(t, f, false, a, nil, nil).Handler()
			before := time.Now().Add(-time.Second)
			do(t, h, tt.method, tt.path, tt.body, tt.opts...)
			recs := a.records()
			if tt.want == nil {
				if len(recs) != 0 {
					t.Errorf("audited %+v, want nothing", recs)
				}
				return
			}
			if len(recs) != 1 {
				t.Fatalf("%d records, want 1: %+v", len(recs), recs)
			}
			got := recs[0]
			if got.Seq != 1 || got.Time.Before(before) || got.Time.After(time.Now()) || got.Time.Location() != time.UTC {
				t.Errorf("record Seq %d Time %v, want 1 and now in UTC", got.Seq, got.Time)
			}
			got.Seq, got.Time = 0, time.Time{}
			if got != *tt.want {
				t.Errorf("record\n%+v\nwant\n%+v", got, *tt.want)
			}
		})
	}
}

// panicky is an OpsSource whose commands panic.
type panicky struct{ *opsFake }

func (panicky) PMCommand(context.Context, int, string, unit.PMAction) (unit.PM, error) {
	panic("PMCommand panicked")
}

// TestAuditPanic: a handler that panics is audited as the 500 the client
// gets, and the server keeps serving.
func TestAuditPanic(t *testing.T) {
	f := newOpsFake()
	a := &auditFake{}
	s, err := New(Config{
		Source: f, Ops: panicky{f}, Audit: a, Users: fakeUsers{users: map[string]string{"admin": "admin"}},
		SessionKey: testKey, Node: 1, Role: func() unit.Role { return unit.RolePrimary },
	})
	if err != nil {
		t.Fatal(err)
	}
	w := do(t, s.Handler(), "POST", "/api/v1/pms/1/actions/work-on", "", withBasic("admin", "admin"))
	if w.Code != 500 {
		t.Errorf("status %d, want 500", w.Code)
	}
	recs := a.records()
	if len(recs) != 1 || recs[0].Status != 500 || recs[0].Result != "internal error" || recs[0].User != "admin" {
		t.Errorf("records %+v, want one 500 of admin", recs)
	}
	if w := do(t, s.Handler(), "POST", "/api/v1/unit/actions/shutdown", "", withBasic("admin", "admin")); w.Code != 200 || len(a.records()) != 2 {
		t.Errorf("after the panic: status %d, %d records", w.Code, len(a.records()))
	}
}

// TestAuditAppendFails: a failing audit log is logged and does not fail
// the request, which has done its work by then.
func TestAuditAppendFails(t *testing.T) {
	var logBuf bytes.Buffer
	f := newOpsFake()
	a := &auditFake{err: errors.New("disk full")}
	h := newOpsServer(t, f, false, a, nil, slog.New(slog.NewTextHandler(&logBuf, nil))).Handler()
	w := do(t, h, "POST", "/api/v1/pms/2/actions/reset-device", "", withBasic("admin", "admin"))
	if w.Code != 200 || len(f.callLog()) != 1 {
		t.Errorf("status %d, calls %q; want the command done", w.Code, f.callLog())
	}
	want := `level=ERROR msg="webui: cannot append to the audit log" action="POST /api/v1/pms/2/actions/reset-device" user=admin status=200 err="disk full"`
	if !strings.Contains(logBuf.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, logBuf.String())
	}
}

// TestAuditOutlivesClient: the record is written although the client has
// gone and the request's context has ended.
func TestAuditOutlivesClient(t *testing.T) {
	f := newOpsFake()
	a := &ctxAudit{}
	h := newOpsServer(t, f, false, a, nil, nil).Handler()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, _ := http.NewRequestWithContext(ctx, "POST", "/api/v1/pms/2/actions/reset-device", nil)
	r.SetBasicAuth("admin", "admin")
	r.RemoteAddr = "192.0.2.7:4000"
	h.ServeHTTP(httptest.NewRecorder(), r)
	if a.err != nil || a.n != 1 {
		t.Errorf("Append saw context error %v, %d records; want a live context", a.err, a.n)
	}
}

// ctxAudit records whether Append got a live context.
type ctxAudit struct {
	n   int
	err error
}

func (c *ctxAudit) Append(ctx context.Context, _ unit.AuditRecord) error {
	c.n++
	c.err = ctx.Err()
	return nil
}

func (c *ctxAudit) List(context.Context, int) ([]unit.AuditRecord, error) { return nil, nil }

func TestAuditText(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"ok", 300, "ok"},
		{"", 300, ""},
		{"a\nb\tc\r\x00d\x7fe\u0085f", 300, "a b c  d e f"},
		{"abcdef", 4, "abc…"},
		{"abcd", 4, "abcd"},
		{"ééééé", 4, "ééé…"},
		{"a\xffb", 300, "a\uFFFDb"},
		{strings.Repeat("x", 10000), 300, strings.Repeat("x", 299) + "…"},
		{strings.Repeat("\U0001F600", 301), 300, strings.Repeat("\U0001F600", 299) + "…"},
		{strings.Repeat("\U0001F600", 300), 300, strings.Repeat("\U0001F600", 300)},
	}
	for _, tt := range tests {
		if got := auditText(tt.in, tt.max); got != tt.want {
			t.Errorf("auditText(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

func TestAuditResult(t *testing.T) {
	tests := []struct {
		status int
		body   string
		want   string
	}{
		{200, `{"error":"ignored"}`, "ok"},
		{204, "", "ok"},
		{303, "", "ok"},
		{409, `{"error":"conflict: busy","allowed":[]}`, "conflict: busy"},
		{400, `{"error":""}`, "Bad Request"},
		{500, `not json`, "Internal Server Error"},
		{502, `{"error":"cut off`, "Bad Gateway"},
		{599, ``, "status 599"},
	}
	for _, tt := range tests {
		if got := auditResult(tt.status, []byte(tt.body)); got != tt.want {
			t.Errorf("auditResult(%d, %q) = %q, want %q", tt.status, tt.body, got, tt.want)
		}
	}
}

// FuzzPMActionBody checks that no body crashes the parser and that an
// accepted one confirms only a Work On.
func FuzzPMActionBody(f *testing.F) {
	for _, s := range []string{
		``, ` `, `{}`, `{"confirm": true}`, `{"confirm": false}`, `{"confirm": null}`, `{"confirm": "true"}`, `{"confirm": 1}`,
		`{"CONFIRM": true}`, `{"confirm": true, "x": 1}`, `{} {}`, `{}}`, `[]`, `null`, `true`, `{"confirm": true}` + "\n",
	} {
		f.Add([]byte(s), 0)
	}
	cmds := unit.PMCommands()
	f.Fuzz(func(t *testing.T, body []byte, i int) {
		cmd := cmds[uint(i)%uint(len(cmds))]
		req, err := parsePMAction(cmd, body)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "invalid") {
				t.Fatalf("parsePMAction(%s, %q): error %q does not say what is invalid", cmd, body, err)
			}
			return
		}
		if req.Confirm && cmd != unit.PMWorkOn {
			t.Fatalf("parsePMAction(%s, %q) accepted confirm", cmd, body)
		}
		if len(bytes.TrimSpace(body)) == 0 {
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) != nil {
			t.Fatalf("parsePMAction(%s) accepted %q, which is not a JSON object", cmd, body)
		}
		for k := range m {
			if !strings.EqualFold(k, "confirm") {
				t.Fatalf("parsePMAction(%s) accepted %q with field %q", cmd, body, k)
			}
		}
	})
}

// FuzzUnitActionBody checks that no body crashes the parser and that an
// accepted timeout is in range and for a shutdown only.
func FuzzUnitActionBody(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `{"timeout_seconds": 120}`, `{"timeout_seconds": 0}`, `{"timeout_seconds": -5}`, `{"timeout_seconds": 86400}`,
		`{"timeout_seconds": 86401}`, `{"timeout_seconds": 1e3}`, `{"timeout_seconds": 9223372036854775808}`, `{"timeout_seconds": "1"}`,
		`{"TIMEOUT_SECONDS": 3}`, `{"timeout_seconds": 3, "confirm": true}`, `[]`, `null`, `{} x`,
	} {
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, shutdown bool) {
		cmd := unit.UnitRollingReboot
		if shutdown {
			cmd = unit.UnitShutdown
		}
		req, err := parseUnitAction(cmd, body)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "invalid") {
				t.Fatalf("parseUnitAction(%s, %q): error %q does not say what is invalid", cmd, body, err)
			}
			return
		}
		if req.TimeoutSeconds < 0 || req.TimeoutSeconds > maxShutdownS || req.TimeoutSeconds != 0 && !shutdown {
			t.Fatalf("parseUnitAction(%s, %q) accepted %+v", cmd, body, req)
		}
	})
}

// FuzzBMCBody checks that no body crashes the parser and that an accepted
// BMC is either a removal with nothing else or a printable address with
// both credentials.
func FuzzBMCBody(f *testing.F) {
	for _, s := range []string{
		`{"addr": "10.0.0.1", "user": "ADMIN", "password": "pw"}`, `{"addr": "bmc1:623", "user": "u", "password": "p"}`,
		`{"addr": ""}`, `{"addr": "", "user": "u"}`, `{"addr": null}`, `{}`, ``, `null`, `[]`, `{"addr": "a b", "user": "u", "password": "p"}`,
		`{"addr": "x", "user": "u", "password": "p\u0001"}`, `{"ADDR": "x", "USER": "u", "PASSWORD": "p"}`, `{"addr": "x", "user": "u", "password": "p", "port": 1}`,
		`{"addr": "x", "user": "u", "password": "p"} {}`, `{"addr": "\u00e9", "user": "u", "password": "p"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := parseBMC(body)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "invalid") {
				t.Fatalf("parseBMC(%q): error %q does not say what is invalid", body, err)
			}
			return
		}
		if b.Addr == "" {
			if b.User != "" || b.Password != "" {
				t.Fatalf("parseBMC(%q) accepted a removal with credentials", body)
			}
			return
		}
		if len(b.Addr) > maxBMCAddr || !printableASCII(b.Addr) || strings.Contains(b.Addr, " ") ||
			b.User == "" || b.Password == "" || len(b.User) > maxBMCCredential || len(b.Password) > maxBMCCredential ||
			!printableASCII(b.User) || !printableASCII(b.Password) {
			t.Fatalf("parseBMC(%q) accepted %+v", body, b)
		}
	})
}

func TestDashboardOps(t *testing.T) {
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	t0 := time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC)
	recs := []unit.AuditRecord{
		{Seq: 1, Time: t0, User: "admin", Remote: "10.99.0.50", Action: "POST /api/v1/pms/2/actions/work-on", Status: 200, Result: "ok"},
		{Seq: 2, Time: t0.Add(time.Minute), User: "<b>eve</b>", Remote: "10.99.0.51", Action: "POST /api/v1/login", Status: 401, Result: "invalid user or password"},
	}
	tests := []struct {
		name    string
		noOps   bool
		audit   *auditFake // nil: no audit log
		mutate  func(*opsFake)
		want    []string
		wantNot []string
	}{
		{
			name:  "with commands and audit",
			audit: &auditFake{recs: recs},
			mutate: func(f *opsFake) {
				f.u.PMs[1].Maintenance, f.u.PMs[1].State = true, unit.PMEvacuating
				f.allow()
			},
			want: []string{
				`<table class="pms" id="pm-table" data-ops>`, "<th>Failures</th>", "<th>Commands</th>",
				`<button type="button" class="command" data-command="work-on">Work On</button>`,
				`<td class="failures">0</td>`, `<td class="failures has-failures">1</td>`,
				`badge state-evacuating">evacuating (in Maintenance)<`,
				`data-command="finalize">Finalize<`, `data-command="power-off">Power Off<`, `data-command="reset-device">Reset Device<`,
				`data-unit-command="shutdown" data-question="Shut down both PMs and every VM?">Shutdown</button>`,
				`data-unit-command="rolling-reboot"`, `id="unit-ops-status"`, `id="pm-ops-status"`,
				`id="audit"`, `<tr data-seq="2">`, "&lt;b&gt;eve&lt;/b&gt;", "POST /api/v1/login", `<td class="result failed">invalid user or password</td>`,
				`<td class="result ok">ok</td>`, "2026-11-22 06:01:00 UTC", "10.99.0.51",
			},
			wantNot: []string{"<b>eve</b>"},
		},
		{
			name:  "maintenance state named once",
			audit: &auditFake{},
			mutate: func(f *opsFake) {
				f.u.PMs[1].Maintenance, f.u.PMs[1].State = true, unit.PMMaintenance
				f.allow()
			},
			want:    []string{`badge state-running-in-maintenance">running (in Maintenance)<`, "No operations recorded."},
			wantNot: []string{"(in Maintenance) (in Maintenance)"},
		},
		{
			name:    "no commands allowed",
			mutate:  func(f *opsFake) { f.u.PMs[0].Allowed = nil },
			want:    []string{`<td class="commands pm-commands"><span class="muted">none</span></td>`},
			wantNot: []string{`id="audit"`},
		},
		{
			name:    "audit log fails",
			audit:   &auditFake{err: errors.New("db closed")},
			want:    []string{`id="audit-status" class="status status-error">cannot read the audit log: db closed<`, "pm1"},
			wantNot: []string{},
		},
		{
			name:    "without ops",
			noOps:   true,
			want:    []string{`<table class="pms" id="pm-table">`, "<th>Failures</th>", `<td colspan="8" class="muted">No PM reported.</td>`},
			wantNot: []string{"data-ops", "<th>Commands</th>", "data-command", "data-unit-command", "pm-ops-status", `id="audit"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newOpsFake()
			if tt.mutate != nil {
				tt.mutate(f)
			}
			if tt.name == "without ops" {
				f.u.PMs = nil
			}
			var a AuditLog
			if tt.audit != nil {
				a = tt.audit
			}
			w := do(t, newOpsServer(t, f, tt.noOps, a, nil, nil).Handler(), "GET", "/", "", ck)
			if w.Code != 200 {
				t.Fatalf("status %d", w.Code)
			}
			body := w.Body.String()
			for _, want := range tt.want {
				if !strings.Contains(body, want) {
					t.Errorf("dashboard lacks %q", want)
				}
			}
			for _, bad := range tt.wantNot {
				if strings.Contains(body, bad) {
					t.Errorf("dashboard has %q", bad)
				}
			}
			if tt.audit != nil && tt.audit.err == nil && tt.audit.limit != dashboardAudit {
				t.Errorf("the dashboard asked for %d audit records, want %d", tt.audit.limit, dashboardAudit)
			}
			if t.Failed() {
				t.Logf("dashboard:\n%s", body)
			}
		})
	}
}

// TestPMCommandsInBrowser clicks the PM and unit commands in a real
// Chromium: Work On that needs confirmation asks with the VMs named and
// sends nothing more when cancelled, sends confirm when accepted; Shutdown
// of the unit asks first; the audit section shows what was done.
func TestPMCommandsInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("no Chromium at %s (Debian package chromium): %v", chromiumPath, err)
	}
	f := newOpsFake()
	f.stuck = "web"
	a := &auditFake{}
	srv := browserServer(t, newOpsServer(t, f, false, a, nil, nil))
	p := openBrowserPage(t, srv.URL+"/")
	p.waitFor(`document.readyState`, "complete", time.Minute)
	p.waitFor(`String(!!document.querySelector('#pm-rows tr[data-pm="1"] button[data-command="work-on"]'))`, "true", time.Minute)

	// Work On PM 1 is refused for confirmation; the operator says no.
	if _, err := p.eval(`(window.asked = [], window.confirm = function (m) { window.asked.push(m); return false; },
		document.querySelector('#pm-rows tr[data-pm="1"] button[data-command="work-on"]').click(), 1)`); err != nil {
		t.Fatal(err)
	}
	p.waitFor(`document.getElementById("pm-ops-status").textContent`, "Work On PM 1 cancelled: nothing was changed.", time.Minute)
	asked, _ := p.eval(`window.asked.join("|")`)
	if !strings.Contains(asked, "VMs web cannot move to PM 2 and would be shut down") || !strings.Contains(asked, "Work On PM 1 anyway") {
		t.Errorf("the page asked %q, want the VMs named", asked)
	}
	if got, want := f.callLog(), []string{"pm 1 work-on confirm=false"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("calls %q, want %q", got, want)
	}

	// The operator says yes: the page sends Work On again with confirm.
	if _, err := p.eval(`(window.confirm = function () { return true; },
		document.querySelector('#pm-rows tr[data-pm="1"] button[data-command="work-on"]').click(), 1)`); err != nil {
		t.Fatal(err)
	}
	p.waitFor(`document.getElementById("pm-ops-status").textContent`, "Work On PM 1: done; the PM is running (in Maintenance).", time.Minute)
	if got, want := f.callLog()[1:], []string{"pm 1 work-on confirm=false", "pm 1 work-on confirm=true"}; !reflect.DeepEqual(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	// The row now offers the Maintenance commands.
	p.waitFor(`String(!!document.querySelector('#pm-rows tr[data-pm="1"] button[data-command="finalize"]'))`, "true", time.Minute)

	// Shutdown of the unit: cancelled, then accepted.
	if _, err := p.eval(`(window.asked = [], window.confirm = function (m) { window.asked.push(m); return false; },
		document.querySelector('button[data-unit-command="shutdown"]').click(), 1)`); err != nil {
		t.Fatal(err)
	}
	if asked, _ := p.eval(`window.asked.join("|")`); asked != "Shut down both PMs and every VM?" {
		t.Errorf("the page asked %q before Shutdown", asked)
	}
	// The page asks before anything else and sends synchronously after a
	// yes, showing "Shutdown of the unit…" first: a status still hidden
	// now means nothing was sent.
	if hidden, err := p.eval(`document.getElementById("unit-ops-status").hidden`); err != nil || hidden != "true" {
		t.Fatalf("a cancelled Shutdown went on to be sent (status hidden %q, %v)", hidden, err)
	}
	if n := len(f.callLog()); n != 3 {
		t.Fatalf("a cancelled Shutdown was sent: %q", f.callLog())
	}
	if _, err := p.eval(`(window.confirm = function () { return true; }, document.querySelector('button[data-unit-command="shutdown"]').click(), 1)`); err != nil {
		t.Fatal(err)
	}
	p.waitFor(`document.getElementById("unit-ops-status").textContent`, "Shutdown of the unit started.", time.Minute)
	if got := f.callLog(); got[len(got)-1] != "unit shutdown timeout=0" {
		t.Errorf("calls %q, want the unit shutdown last", got)
	}

	// The audit section shows the four commands, newest first.
	p.waitFor(`document.querySelectorAll("#audit-rows tr[data-seq]").length`, "4", time.Minute)
	dom, _ := p.waitFor(`document.querySelector("#audit-rows tr").textContent.includes("POST /api/v1/unit/actions/shutdown")`, "true", time.Minute)
	// The browser logs the two refusals of Work On as failed loads; they
	// are the answers the page asks about.
	p.log = slices.DeleteFunc(p.log, func(m string) bool {
		return strings.Contains(m, "status of 409") && strings.Contains(m, "/api/v1/pms/1/actions/work-on")
	})
	p.checkLog()
	p.screenshot("pm-commands.png")
	if t.Failed() {
		t.Logf("DOM:\n%s\nbrowser log:\n%s", dom, strings.Join(p.log, "\n"))
	}
}
