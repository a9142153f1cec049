package scenario

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/qemu-tests/harness"
	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/vm"
)

// pmOffTimeout bounds an orderly power-off of a PM (its agent, VMs and
// storage stop first).
const pmOffTimeout = 3 * time.Minute

// waitPM waits until PM id, as the unit's console shows it, meets cond.
func waitPM(t *testing.T, ctx context.Context, c *apiclient.Client, id int, timeout time.Duration, what string, cond func(pm unit.PM) error) unit.PM {
	t.Helper()
	var pm unit.PM
	err := harness.WaitFor(ctx, timeout, what, func(ctx context.Context) (bool, error) {
		var err error
		if pm, err = c.PM(ctx, id); err != nil {
			return false, err
		}
		if err := cond(pm); err != nil {
			return false, fmt.Errorf("pm%d %s (%s), failures %d, allowed %v: %w", id, pm.State, pm.Activity, pm.Failures, pm.Allowed, err)
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pm
}

func pmState(states ...unit.PMState) func(unit.PM) error {
	return func(pm unit.PM) error {
		if !slices.Contains(states, pm.State) {
			return fmt.Errorf("want %v", states)
		}
		return nil
	}
}

// pmCommand runs a PM command through the API and fails the test on error.
func pmCommand(t *testing.T, ctx context.Context, c *apiclient.Client, id int, cmd string) {
	t.Helper()
	pm, err := c.PMCommand(ctx, id, cmd, unit.PMAction{})
	if err != nil {
		t.Fatalf("pm%d %s: %v", id, cmd, err)
	}
	t.Logf("pm%d %s: %s %s", id, cmd, pm.State, pm.Activity)
}

// TestWorkOnFinalize takes the PM running the guest through maintenance:
// Work On evacuates it by live migration, Shutdown, Power On through the
// PM's BMC (IPMI to a simulated BMC), Finalize; once the volumes are in
// sync the guest returns to its home PM under automatic load balancing,
// and it never rebooted.
func TestWorkOnFinalize(t *testing.T) {
	ctx := t.Context()
	u, c := startVMUnit(t)
	g, v, boot := bootGuest(t, ctx, u, c)
	home := v.Home
	if v.Placement.Policy != unit.PlaceAuto || home == 0 || v.Node != home {
		t.Fatalf("new VM placed %+v, home %d, on pm%d: want auto placement on its home PM", v.Placement, home, v.Node)
	}
	other := 3 - home
	bmc, err := u.StartBMC(ctx, home)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetBMC(ctx, home, unit.BMC{Addr: bmc.Addr, User: bmc.User, Password: bmc.Password}); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	pmCommand(t, ctx, c, home, unit.PMWorkOn)
	g.wait(ctx, vmMigrateTimeout, fmt.Sprintf("the guest evacuated to pm%d", other), func(v unit.VM) error {
		if m := v.Migration; m != nil && m.Status == vm.MigrationFailed {
			return stop("migration failed: %s", m.Error)
		}
		if v.Node != other {
			return fmt.Errorf("on pm%d", v.Node)
		}
		return stateIs(vm.Running, vm.Alert)(v)
	})
	t.Logf("evacuated in %s", time.Since(start).Round(time.Millisecond))
	g.waitQEMU(ctx, other, 0)
	waitPM(t, ctx, c, home, vmStateTimeout, "the PM in Maintenance", pmState(unit.PMMaintenance))

	pmCommand(t, ctx, c, home, unit.PMShutdown)
	offCtx, cancel := context.WithTimeout(ctx, pmOffTimeout)
	err = u.PM(home).WaitOff(offCtx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	waitPM(t, ctx, c, home, formTimeout, "the PM off in Maintenance", pmState(unit.PMOffMaintenance))

	pmCommand(t, ctx, c, home, unit.PMPowerOn)
	waitPM(t, ctx, c, home, formTimeout, "the PM back, still in Maintenance", pmState(unit.PMMaintenance))
	if !u.PM(home).Running() {
		t.Errorf("pm%d shows running but its QEMU is off", home)
	}

	pmCommand(t, ctx, c, home, unit.PMFinalize)
	g.wait(ctx, peerReturnTimeout, fmt.Sprintf("the guest back on its home pm%d", home), func(v unit.VM) error {
		if v.Node != home {
			return fmt.Errorf("on pm%d", v.Node)
		}
		return stateIs(vm.Running)(v)
	})
	g.waitQEMU(ctx, home, 0)
	waitPM(t, ctx, c, home, vmStateTimeout, "the PM in service", pmState(unit.PMRunning))
	n := g.trace.MaxDurable()
	g.waitGuest(ctx, vmStateTimeout, "the guest still counting", g.trace, func(tr *harness.GuestTrace) error {
		if b, ok := tr.Latest(); !ok || b.ID != boot.ID || b.Durable <= n {
			return fmt.Errorf("latest %+v, want boot %s past n=%d", b, boot.ID, n)
		}
		return nil
	})
	if boots := g.trace.Boots(); len(boots) != 1 {
		t.Errorf("the guest booted %d times, want once: %s", len(boots), g.trace)
	}

	recs, err := c.Audit(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{unit.PMWorkOn, unit.PMShutdown, unit.PMPowerOn, unit.PMFinalize} {
		action := fmt.Sprintf("POST /api/v1/pms/%d/actions/%s", home, cmd)
		if !slices.ContainsFunc(recs, func(r unit.AuditRecord) bool {
			return r.Action == action && r.User == "admin" && r.Status == 200
		}) {
			t.Errorf("no audit record of %s by admin", action)
		}
	}
}

// TestUnitShutdownRestart shuts the unit down (the guest by ACPI, then
// both PMs), powers both PMs on, and the guest runs again by itself.
func TestUnitShutdownRestart(t *testing.T) {
	ctx := t.Context()
	u, c := startVMUnit(t)
	g, _, boot := bootGuest(t, ctx, u, c)
	waitDatabaseInStep(t, ctx, c)
	if _, err := c.UnitCommand(ctx, unit.UnitShutdown, unit.UnitAction{}); err != nil {
		t.Fatal(err)
	}
	for _, pm := range u.PMs() {
		offCtx, cancel := context.WithTimeout(ctx, guestShutdownTimeout+pmOffTimeout)
		err := pm.WaitOff(offCtx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Log("both PMs are off; powering them on")
	var wg sync.WaitGroup
	for _, pm := range u.PMs() {
		wg.Go(func() {
			if err := pm.PowerOn(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	waitFormed(t, ctx, c)
	g.wait(ctx, guestBootTimeout, "the guest running again", stateIs(vm.Running))
	g.waitGuest(ctx, guestBootTimeout, "a new boot of the guest writing durably", g.trace, func(tr *harness.GuestTrace) error {
		for _, b := range tr.Boots() {
			if b.ID != boot.ID && b.Durables > 0 {
				return nil
			}
		}
		return fmt.Errorf("no new boot: %s", tr)
	})
	if log, err := g.serial(ctx); err == nil && !strings.Contains(string(log), "GUEST POWER OFF (ACPI power button)") {
		t.Errorf("the guest's log does not show the ACPI power-off of the unit shutdown")
	}
	if un, err := c.Unit(ctx); err == nil {
		for _, pm := range un.PMs {
			if pm.State != unit.PMRunning {
				t.Errorf("%s is %s after the unit start", pm.Name, pm.State)
			}
		}
	}
}

// TestPMFailurePolicy fails the secondary three times within the hour: it
// is then powered off and kept out of service (powered on, the unit powers
// it off again) until Reset Device.
func TestPMFailurePolicy(t *testing.T) {
	ctx := t.Context()
	u, c := startUnit(t, 2)
	waitFormed(t, ctx, c)
	un, err := c.Unit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := 3 - un.Primary
	for i := 1; i <= 3; i++ {
		if err := u.PM(s).PowerOff(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("pm%d failed (%d)", s, i)
		waitPM(t, ctx, c, s, vmStateTimeout, fmt.Sprintf("failure %d counted", i), func(pm unit.PM) error {
			if pm.Failures != i {
				return fmt.Errorf("want %d failures", i)
			}
			return nil
		})
		if i < 3 {
			if err := u.PM(s).PowerOn(ctx); err != nil {
				t.Fatal(err)
			}
			waitFormed(t, ctx, c)
		}
	}
	waitPM(t, ctx, c, s, vmStateTimeout, "out of service", func(pm unit.PM) error {
		if pm.State != unit.PMPoweredOff || !slices.Equal(pm.Allowed, []string{unit.PMResetDevice}) {
			return fmt.Errorf("want %s with only %s allowed", unit.PMPoweredOff, unit.PMResetDevice)
		}
		return nil
	})
	t.Logf("pm%d is out of service; powering it on by hand", s)
	if err := u.PM(s).PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	offCtx, cancel := context.WithTimeout(ctx, formTimeout+pmOffTimeout)
	err = u.PM(s).WaitOff(offCtx)
	cancel()
	if err != nil {
		t.Fatalf("the unit did not power the PM out of service off again: %v", err)
	}
	t.Log("the unit powered it off again")
	pmCommand(t, ctx, c, s, unit.PMResetDevice)
	waitPM(t, ctx, c, s, vmStateTimeout, "back in service after Reset Device", func(pm unit.PM) error {
		if pm.Failures != 0 || pm.State == unit.PMPoweredOff {
			return fmt.Errorf("want no failures")
		}
		return nil
	})
	if err := u.PM(s).PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	waitFormed(t, ctx, c)
}

// TestRollingReboot reboots both PMs one at a time while the guest keeps
// running: it moves off each PM before its reboot and never restarts.
func TestRollingReboot(t *testing.T) {
	ctx := t.Context()
	u, c := startVMUnit(t)
	g, _, boot := bootGuest(t, ctx, u, c)
	waitDatabaseInStep(t, ctx, c)
	pms, err := c.PMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	boots := map[int]string{}
	for _, pm := range pms {
		boots[pm.ID] = pm.BootID
	}
	un, err := c.UnitCommand(ctx, unit.UnitRollingReboot, unit.UnitAction{})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(un.Operation)
	seen := map[string]bool{}
	err = harness.WaitFor(ctx, 2*peerReturnTimeout, "both PMs rebooted, the rolling reboot done", func(ctx context.Context) (bool, error) {
		un, err := c.Unit(ctx)
		if err != nil {
			return false, err
		}
		if un.Operation != "" && !seen[un.Operation] {
			seen[un.Operation] = true
			t.Log(un.Operation)
		}
		for _, pm := range un.PMs {
			if pm.BootID == boots[pm.ID] {
				return false, fmt.Errorf("pm%d not rebooted yet (%s)", pm.ID, un.Operation)
			}
		}
		return met(un.Operation == "" && unit.Formed(un.PMs) == nil, "operation %q", un.Operation)
	})
	if err != nil {
		t.Fatal(err)
	}
	g.wait(ctx, peerReturnTimeout, "the guest Running on its home PM", func(v unit.VM) error {
		if v.Node != v.Home {
			return fmt.Errorf("on pm%d, home pm%d", v.Node, v.Home)
		}
		return stateIs(vm.Running)(v)
	})
	n := g.trace.MaxDurable()
	g.waitGuest(ctx, vmStateTimeout, "the guest still counting in its first boot", g.trace, func(tr *harness.GuestTrace) error {
		if b, ok := tr.Latest(); !ok || b.ID != boot.ID || b.Durable <= n {
			return fmt.Errorf("latest %+v, want boot %s past n=%d", b, boot.ID, n)
		}
		return nil
	})
	if boots := g.trace.Boots(); len(boots) != 1 {
		t.Errorf("the guest booted %d times during the rolling reboot, want once: %s", len(boots), g.trace)
	}
}
