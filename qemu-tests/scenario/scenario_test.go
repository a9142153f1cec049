// Package scenario holds the tier-2 tests: PMs booted from the built image
// in QEMU, driven from outside the way an operator or a failure would.
package scenario

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/qemu-tests/harness"
	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
)

const mgmtURL = "http://10.99.0.10"

// formTimeout covers two PMs booting under software emulation and electing.
const formTimeout = 4 * time.Minute

func startUnit(t *testing.T, n int) (*harness.Unit, *apiclient.Client) {
	t.Helper()
	u := harness.StartT(t, harness.Options{N: n})
	return u, client(u)
}

// client is an API client of the unit's console. Each request has its own
// deadline: a connection that died with a PM or a link must cost one poll,
// not the whole wait.
func client(u *harness.Unit) *apiclient.Client {
	hc := u.HTTPClient()
	hc.Timeout = 5 * time.Second
	return apiclient.New(mgmtURL, "admin", "admin", hc)
}

// waitFormed waits for two running PMs, exactly one primary and every
// heartbeat path up as both PMs see it, and returns the PMs.
func waitFormed(t *testing.T, ctx context.Context, c *apiclient.Client) []unit.PM {
	t.Helper()
	var pms []unit.PM
	err := harness.WaitFor(ctx, formTimeout, "the unit to form (2 PMs running, one primary, all paths up)", func(ctx context.Context) (bool, error) {
		var err error
		pms, err = c.PMs(ctx)
		if err != nil {
			return false, err
		}
		return unit.Formed(pms) == nil, unit.Formed(pms)
	})
	if err != nil {
		t.Fatal(err)
	}
	return pms
}

func pathsAre(pm unit.PM, want map[string]bool) error {
	got := map[string]bool{}
	for _, p := range pm.Paths {
		got[p.Name] = p.Up
	}
	for name, up := range want {
		if v, ok := got[name]; !ok || v != up {
			return fmt.Errorf("%s sees path %s up=%v (present %v), want up=%v", pm.Name, name, v, ok, up)
		}
	}
	return nil
}

// met is the answer of a harness.WaitFor condition: met, or not yet and
// why. WaitFor takes any error for "not yet", so a condition that returns
// its reason together with true never ends the wait.
func met(ok bool, format string, args ...any) (bool, error) {
	if ok {
		return true, nil
	}
	return false, fmt.Errorf(format, args...)
}

func primaryOf(pms []unit.PM) unit.PM {
	for _, pm := range pms {
		if pm.Role == unit.RolePrimary {
			return pm
		}
	}
	return unit.PM{}
}

func TestUnitForms(t *testing.T) {
	ctx := t.Context()
	u, c := startUnit(t, 2)
	pms := waitFormed(t, ctx, c)
	t.Logf("formed: primary %s", primaryOf(pms).Name)

	un, err := c.Unit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if un.Name != "lab" || un.ManagementIP != "10.99.0.10" || un.Primary != primaryOf(pms).ID || un.ImageVersion == "" {
		t.Errorf("unit = %+v", un)
	}

	// The inventory of each PM is read from its own SMBIOS tables.
	for _, id := range []int{1, 2} {
		var pm unit.PM
		err := harness.WaitFor(ctx, time.Minute, fmt.Sprintf("pm%d's inventory", id), func(ctx context.Context) (bool, error) {
			var err error
			pm, err = c.PM(ctx, id)
			return err == nil && pm.Hardware != nil, err
		})
		if err != nil {
			t.Fatal(err)
		}
		if hw := fmt.Sprint(pm.Hardware); !strings.Contains(hw, fmt.Sprintf("LAB-PM%d", id)) || !strings.Contains(hw, "Dyad Lab") {
			t.Errorf("pm%d hardware lacks its SMBIOS serial/vendor: %.400s", id, hw)
		}
	}

	// An operator's browser shows the same on the dashboard.
	t.Run("dashboard", func(t *testing.T) {
		dom, png := dashboardInBrowser(t, ctx, u)
		for _, want := range []string{"pm1", "pm2", "primary", "secondary", "priv0", "ibiz0", "10.99.0.10"} {
			if !strings.Contains(dom, want) {
				t.Errorf("dashboard DOM lacks %q", want)
			}
		}
		if st, err := os.Stat(png); err != nil || st.Size() < 10_000 {
			t.Errorf("screenshot %s: %v", png, err)
		}
	})

	// dyadctl, run on a PM, shows the same through the management IP.
	res, err := u.PM(1).Exec(ctx, "/bin/dyadctl", "--url", mgmtURL, "pm", "list")
	if err != nil || res.Exit != 0 {
		t.Fatalf("dyadctl pm list: %v %+v", err, res)
	}
	out := string(res.Stdout)
	for _, want := range []string{"pm1", "pm2", "running", "primary", "secondary"} {
		if !strings.Contains(out, want) {
			t.Errorf("dyadctl pm list lacks %q:\n%s", want, out)
		}
	}
}

func TestPrimaryLoss(t *testing.T) {
	ctx := t.Context()
	u, c := startUnit(t, 2)
	pms := waitFormed(t, ctx, c)
	lost := primaryOf(pms)
	survivor := 3 - lost.ID
	// Both PMs hold the same unit database before the failure.
	err := harness.WaitFor(ctx, time.Minute, "the secondary's unit database in step", func(ctx context.Context) (bool, error) {
		pms, err := c.PMs(ctx)
		if err != nil {
			return false, err
		}
		if pms[0].DatabaseSeq == 0 || pms[0].DatabaseSeq != pms[1].DatabaseSeq {
			return false, fmt.Errorf("database positions %d and %d", pms[0].DatabaseSeq, pms[1].DatabaseSeq)
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("powering off the primary %s", lost.Name)
	if err := u.PM(lost.ID).PowerOff(ctx); err != nil {
		t.Fatal(err)
	}

	err = harness.WaitFor(ctx, 2*time.Minute, fmt.Sprintf("pm%d to take over and report %s failed", survivor, lost.Name), func(ctx context.Context) (bool, error) {
		un, err := c.Unit(ctx)
		if err != nil {
			return false, err
		}
		if un.Primary != survivor {
			return false, fmt.Errorf("primary is pm%d", un.Primary)
		}
		for _, pm := range un.PMs {
			switch {
			case pm.ID == survivor && (pm.Role != unit.RolePrimary || pm.State != unit.PMRunning):
				return false, fmt.Errorf("survivor %s is %s/%s", pm.Name, pm.State, pm.Role)
			case pm.ID == lost.ID && pm.State != unit.PMBroken:
				return false, fmt.Errorf("lost %s is %s", pm.Name, pm.State)
			}
		}
		if !slices.ContainsFunc(un.Alerts, func(a unit.Alert) bool { return a.ID == "pm-failed/"+lost.Name }) {
			return false, fmt.Errorf("no pm-failed alert in %+v", un.Alerts)
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The lost PM's inventory can only have come to the survivor through
	// the replicated unit database.
	pm, err := c.PM(ctx, lost.ID)
	if err != nil {
		t.Fatal(err)
	}
	if hw := fmt.Sprint(pm.Hardware); !strings.Contains(hw, fmt.Sprintf("LAB-PM%d", lost.ID)) {
		t.Errorf("survivor does not hold %s's inventory: %.300s", lost.Name, hw)
	}
}

func TestOnePathLoss(t *testing.T) {
	ctx := t.Context()
	u, c := startUnit(t, 2)
	before := primaryOf(waitFormed(t, ctx, c))

	hasAlert := func(un unit.Unit) bool {
		return slices.ContainsFunc(un.Alerts, func(a unit.Alert) bool { return a.ID == "heartbeat-path-down/priv0" })
	}
	check := func(privUp bool) func(ctx context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			un, err := c.Unit(ctx)
			if err != nil {
				return false, err
			}
			if un.Primary != before.ID {
				return false, fmt.Errorf("role changed: primary is pm%d, was %s", un.Primary, before.Name)
			}
			for _, pm := range un.PMs {
				if pm.State != unit.PMRunning {
					return false, fmt.Errorf("%s is %s", pm.Name, pm.State)
				}
				if err := pathsAre(pm, map[string]bool{unit.PathPriv0: privUp, unit.PathIbiz0: true}); err != nil {
					return false, err
				}
			}
			if hasAlert(un) == privUp {
				return false, fmt.Errorf("priv0 alert present=%v with priv0 up=%v: %+v", hasAlert(un), privUp, un.Alerts)
			}
			return true, nil
		}
	}

	if err := u.PM(1).SetLink(ctx, "priv0", false); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitFor(ctx, time.Minute, "priv0 down, alert raised, no role change", check(false)); err != nil {
		t.Fatal(err)
	}
	if err := u.PM(1).SetLink(ctx, "priv0", true); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitFor(ctx, time.Minute, "priv0 up again, alert cleared", check(true)); err != nil {
		t.Fatal(err)
	}
	un, err := c.Unit(ctx)
	if err != nil || un.Primary != before.ID {
		t.Fatalf("after restore: primary pm%d (%v), want %s", un.Primary, err, before.Name)
	}
}
