package apiclient_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/webui"
)

// opsSource is a Source and an OpsSource: PM 2 may go into Maintenance,
// PM 1 holds a VM that cannot move (Work On needs confirmation). calls
// records what reached the OpsSource, with the arguments.
type opsSource struct {
	*fakeSource
	mu    sync.Mutex
	calls []string
}

func newOpsSource() *opsSource {
	u := testUnit()
	u.PMs[0].Allowed = []string{unit.PMWorkOn}
	u.PMs[1].Allowed = []string{unit.PMWorkOn, unit.PMResetDevice}
	u.PMs[1].Failures = 2
	return &opsSource{fakeSource: &fakeSource{unit: u}}
}

func (o *opsSource) record(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, s)
}

func (o *opsSource) PMCommand(_ context.Context, id int, cmd string, args unit.PMAction) (unit.PM, error) {
	o.record(fmt.Sprintf("pm %d %s confirm=%v", id, cmd, args.Confirm))
	if id < 1 || id > 2 {
		return unit.PM{}, fmt.Errorf("pm %d: %w", id, webui.ErrNotFound)
	}
	pm := o.unit.PMs[id-1]
	switch {
	case !slices.Contains(pm.Allowed, cmd):
		return pm, fmt.Errorf("%w: %s is not allowed while pm%d is %s", webui.ErrConflict, cmd, id, pm.State)
	case cmd == unit.PMWorkOn && id == 1 && !args.Confirm:
		return pm, fmt.Errorf("%w: needs confirmation: VMs web cannot move to PM 2 and would be shut down; send Work On again with confirm", webui.ErrConflict)
	case cmd == unit.PMWorkOn:
		pm.State, pm.Maintenance, pm.Allowed = unit.PMMaintenance, true, []string{unit.PMFinalize}
	}
	return pm, nil
}

func (o *opsSource) UnitCommand(_ context.Context, cmd string, args unit.UnitAction) (unit.Unit, error) {
	o.record(fmt.Sprintf("unit %s timeout=%d", cmd, args.TimeoutSeconds))
	if cmd == unit.UnitRollingReboot {
		return unit.Unit{}, fmt.Errorf("%w: Rolling Reboot needs both PMs in service; pm2 is in Maintenance", webui.ErrConflict)
	}
	return o.unit, nil
}

func (o *opsSource) SetBMC(_ context.Context, id int, b unit.BMC) (unit.PM, error) {
	o.record(fmt.Sprintf("bmc %d %q %q %q", id, b.Addr, b.User, b.Password))
	if b.Addr == "bmc.invalid:99999" {
		return unit.PM{}, fmt.Errorf("%w: bmc %q: port \"99999\" is not a number from 1 to 65535", webui.ErrInvalid, b.Addr)
	}
	pm := o.unit.PMs[id-1]
	if b.Addr != "" {
		pm.BMC = &unit.BMC{Addr: b.Addr, User: b.User}
	}
	return pm, nil
}

// memAudit is an AuditLog in memory.
type memAudit struct {
	mu   sync.Mutex
	recs []unit.AuditRecord
}

func (m *memAudit) Append(_ context.Context, r unit.AuditRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r.Seq = uint64(len(m.recs) + 1)
	m.recs = append(m.recs, r)
	return nil
}

func (m *memAudit) List(_ context.Context, limit int) ([]unit.AuditRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []unit.AuditRecord
	for i := len(m.recs) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, m.recs[i])
	}
	return out, nil
}

// startOps serves the webui with o as its OpsSource (none when nil) and
// a as its AuditLog (none when nil).
func startOps(t *testing.T, o *opsSource, a webui.AuditLog) *apiclient.Client {
	t.Helper()
	cfg := webui.Config{
		Source: newOpsSource(), Users: users{}, SessionKey: []byte("0123456789abcdef0123456789abcdef"),
		Node: 1, Role: func() unit.Role { return unit.RolePrimary }, Audit: a,
	}
	if o != nil {
		cfg.Source, cfg.Ops = o, o
	}
	s, err := webui.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return apiclient.New(ts.URL, "admin", "admin", ts.Client())
}

func TestClientOps(t *testing.T) {
	o := newOpsSource()
	c := startOps(t, o, nil)
	ctx := t.Context()
	maint := o.unit.PMs[1]
	maint.State, maint.Maintenance, maint.Allowed = unit.PMMaintenance, true, []string{unit.PMFinalize}
	confirmed := o.unit.PMs[0]
	confirmed.State, confirmed.Maintenance, confirmed.Allowed = unit.PMMaintenance, true, []string{unit.PMFinalize}
	withBMC := o.unit.PMs[1]
	withBMC.BMC = &unit.BMC{Addr: "10.99.0.102:623", User: "ADMIN"}
	tests := []struct {
		name     string
		call     func() (any, error)
		want     any
		wantCall string
	}{
		{"work on", func() (any, error) { return c.PMCommand(ctx, 2, unit.PMWorkOn, unit.PMAction{}) }, maint, "pm 2 work-on confirm=false"},
		{"work on confirmed", func() (any, error) { return c.PMCommand(ctx, 1, unit.PMWorkOn, unit.PMAction{Confirm: true}) }, confirmed,
			"pm 1 work-on confirm=true"},
		{"reset device", func() (any, error) { return c.PMCommand(ctx, 2, unit.PMResetDevice, unit.PMAction{}) }, o.unit.PMs[1],
			"pm 2 reset-device confirm=false"},
		{"unit shutdown", func() (any, error) {
			return c.UnitCommand(ctx, unit.UnitShutdown, unit.UnitAction{TimeoutSeconds: 300})
		}, o.unit,
			"unit shutdown timeout=300"},
		{"set BMC", func() (any, error) {
			return c.SetBMC(ctx, 2, unit.BMC{Addr: "10.99.0.102:623", User: "ADMIN", Password: "pw"})
		}, withBMC, `bmc 2 "10.99.0.102:623" "ADMIN" "pw"`},
		{"remove BMC", func() (any, error) { return c.SetBMC(ctx, 2, unit.BMC{}) }, o.unit.PMs[1], `bmc 2 "" "" ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o.mu.Lock()
			o.calls = nil
			o.mu.Unlock()
			got, err := tt.call()
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, %v\nwant %+v", got, err, tt.want)
			}
			if want := []string{tt.wantCall}; !reflect.DeepEqual(o.calls, want) {
				t.Errorf("calls %q, want %q", o.calls, want)
			}
		})
	}
}

func TestClientOpsErrors(t *testing.T) {
	c := startOps(t, newOpsSource(), nil)
	without := startOps(t, nil, nil)
	ctx := t.Context()
	tests := []struct {
		name        string
		call        func() error
		wantStatus  int
		wantMsg     string   // the start of the server's message
		wantAllowed []string // nil: the error carries none
	}{
		{"needs confirmation", func() error { _, err := c.PMCommand(ctx, 1, unit.PMWorkOn, unit.PMAction{}); return err }, 409,
			"conflict: needs confirmation: VMs web cannot move to PM 2", []string{"work-on"}},
		{"not allowed", func() error { _, err := c.PMCommand(ctx, 2, unit.PMFinalize, unit.PMAction{}); return err }, 409,
			"conflict: finalize is not allowed while pm2 is running", []string{"work-on", "reset-device"}},
		{"unknown command", func() error { _, err := c.PMCommand(ctx, 2, "reboot", unit.PMAction{}); return err }, 400,
			`unknown PM command "reboot"`, nil},
		{"command with slash", func() error { _, err := c.PMCommand(ctx, 2, "../../unit", unit.PMAction{}); return err }, 404,
			"no such API endpoint", nil},
		{"confirm for another command", func() error {
			_, err := c.PMCommand(ctx, 2, unit.PMResetDevice, unit.PMAction{Confirm: true})
			return err
		},
			400, `invalid body: "confirm" applies to work-on, not to reset-device`, nil},
		{"unknown PM", func() error { _, err := c.PMCommand(ctx, 3, unit.PMWorkOn, unit.PMAction{}); return err }, 404, "pm 3: not found", nil},
		{"unit refused", func() error { _, err := c.UnitCommand(ctx, unit.UnitRollingReboot, unit.UnitAction{}); return err }, 409,
			"conflict: Rolling Reboot needs both PMs in service", nil},
		{"timeout for rolling reboot", func() error {
			_, err := c.UnitCommand(ctx, unit.UnitRollingReboot, unit.UnitAction{TimeoutSeconds: 5})
			return err
		}, 400, `invalid body: "timeout_seconds" applies to shutdown`, nil},
		{"bad BMC", func() error {
			_, err := c.SetBMC(ctx, 1, unit.BMC{Addr: "bmc.invalid:99999", User: "u", Password: "p"})
			return err
		}, 400, `invalid request: bmc "bmc.invalid:99999": port`, nil},
		{"BMC without password", func() error { _, err := c.SetBMC(ctx, 1, unit.BMC{Addr: "bmc1", User: "u"}); return err }, 400,
			`invalid body: missing "password"`, nil},
		{"no ops", func() error { _, err := without.PMCommand(ctx, 1, unit.PMWorkOn, unit.PMAction{}); return err }, 501,
			"unit operations not available on this unit", nil},
		{"no audit log", func() error { _, err := c.Audit(ctx, 0); return err }, 501, "audit log not available on this unit", nil},
		{"audit limit too large", func() error { _, err := startOps(t, nil, &memAudit{}).Audit(ctx, 5000); return err }, 400,
			`invalid limit "5000"`, nil},
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

// TestClientAudit: the client's own operations, its login included, come
// back from the audit log newest first, and limit bounds them.
func TestClientAudit(t *testing.T) {
	a := &memAudit{}
	c := startOps(t, newOpsSource(), a)
	ctx := t.Context()
	before := time.Now().Add(-time.Second)
	if _, err := c.PMCommand(ctx, 2, unit.PMWorkOn, unit.PMAction{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PMCommand(ctx, 1, unit.PMWorkOn, unit.PMAction{}); err == nil {
		t.Fatal("Work On of PM 1 without confirm was not refused")
	}
	tests := []struct {
		limit int
		want  []string // Action Status Result of each record
	}{
		{0, []string{
			"POST /api/v1/pms/1/actions/work-on 409 conflict: needs confirmation: VMs web cannot move to PM 2 and would be shut down; send Work On again with confirm",
			"POST /api/v1/pms/2/actions/work-on 200 ok",
			"POST /api/v1/login 200 ok",
		}},
		{1, []string{"POST /api/v1/pms/1/actions/work-on 409 conflict: needs confirmation: VMs web cannot move to PM 2 and would be shut down; send Work On again with confirm"}},
	}
	for _, tt := range tests {
		recs, err := c.Audit(ctx, tt.limit)
		if err != nil {
			t.Fatalf("Audit(%d): %v", tt.limit, err)
		}
		var got []string
		for _, r := range recs {
			got = append(got, fmt.Sprintf("%s %d %s", r.Action, r.Status, r.Result))
			if r.User != "admin" || r.Remote != "127.0.0.1" || r.Time.Before(before) {
				t.Errorf("record %+v: want user admin from 127.0.0.1, now", r)
			}
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Audit(%d) =\n%q\nwant\n%q", tt.limit, got, tt.want)
		}
	}
}
