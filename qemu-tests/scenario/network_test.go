package scenario

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/qemu-tests/harness"
	"github.com/dyad-ha/dyad/services/network/garp"
	"github.com/dyad-ha/dyad/services/network/ndp"
	"github.com/dyad-ha/dyad/services/unit"
)

func findLink(pm unit.PM, name string) (unit.Link, bool) {
	i := slices.IndexFunc(pm.Links, func(l unit.Link) bool { return l.Name == name })
	if i < 0 {
		return unit.Link{}, false
	}
	return pm.Links[i], true
}

// ibiz0MAC is the MAC of PM n's first ibiz port in the lab.
func ibiz0MAC(n int) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, 0x00, 0xd7, byte(n), 0x02}
}

func TestBondMemberLoss(t *testing.T) {
	ctx := t.Context()
	u := harness.StartT(t, harness.Options{N: 2, Ibiz0Bond: true})
	c := client(u)
	primary := primaryOf(waitFormed(t, ctx, c))

	// Both PMs run ibiz0 as a bond of two ports.
	var active string
	err := harness.WaitFor(ctx, time.Minute, "ibiz0 bonded on both PMs", func(ctx context.Context) (bool, error) {
		pms, err := c.PMs(ctx)
		if err != nil {
			return false, err
		}
		for _, pm := range pms {
			b, ok := findLink(pm, "ibiz0")
			if !ok || b.Kind != "bond" || !slices.Equal(b.Members, []string{"ibiz0p0", "ibiz0p1"}) || b.ActiveMember == "" {
				return false, fmt.Errorf("%s ibiz0 = %+v", pm.Name, b)
			}
			if pm.ID == primary.ID {
				active = b.ActiveMember
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Cut the member that carries the primary's traffic.
	netdev := map[string]string{"ibiz0p0": "ibiz0a", "ibiz0p1": "ibiz0b"}[active]
	t.Logf("cutting %s's active member %s (%s)", primary.Name, active, netdev)
	if err := u.PM(primary.ID).SetLink(ctx, netdev, false); err != nil {
		t.Fatal(err)
	}
	// Every answer during the cut comes through the management IP, so the
	// console stays reachable; the heartbeat on ibiz0 never drops.
	err = harness.WaitFor(ctx, time.Minute, "the member shown down, no heartbeat loss", func(ctx context.Context) (bool, error) {
		pms, err := c.PMs(ctx)
		if err != nil {
			t.Errorf("console unreachable while a bond member is down: %v", err)
			return false, err
		}
		for _, pm := range pms {
			if err := pathsAre(pm, map[string]bool{unit.PathIbiz0: true, unit.PathPriv0: true}); err != nil {
				t.Errorf("heartbeat lost while a bond member is down: %v", err)
				return false, err
			}
		}
		pm := pms[slices.IndexFunc(pms, func(p unit.PM) bool { return p.ID == primary.ID })]
		m, _ := findLink(pm, active)
		b, _ := findLink(pm, "ibiz0")
		if m.Carrier || b.ActiveMember == active || !b.Up {
			return false, fmt.Errorf("member %+v, bond %+v", m, b)
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.PM(primary.ID).SetLink(ctx, netdev, true); err != nil {
		t.Fatal(err)
	}
	err = harness.WaitFor(ctx, time.Minute, "the member back", func(ctx context.Context) (bool, error) {
		pm, err := c.PM(ctx, primary.ID)
		if err != nil {
			return false, err
		}
		m, _ := findLink(pm, active)
		return met(m.Carrier, "member %+v", m)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// networksByPM1Port maps PM1's port to the shared network it is in.
func networksByPM1Port(nets []unit.Network) map[string]unit.Network {
	m := map[string]unit.Network{}
	for _, n := range nets {
		for _, p := range n.Ports {
			if p.PM == 1 {
				m[p.Port] = n
			}
		}
	}
	return m
}

func TestSharedNetworkPairing(t *testing.T) {
	ctx := t.Context()
	// PM2's cables are crossed: pairing must follow the L2 domain, not names.
	u := harness.StartT(t, harness.Options{N: 2, BusinessLinks: 2, CrossBusiness: true})
	c := client(u)
	waitFormed(t, ctx, c)

	paired := func(ctx context.Context) (bool, error) {
		nets, err := c.Networks(ctx)
		if err != nil {
			return false, err
		}
		by := networksByPM1Port(nets)
		for pm1, pm2 := range map[string]string{"biz1": "biz2", "biz2": "biz1"} {
			n, ok := by[pm1]
			if !ok || n.Problem != "" || len(n.Ports) != 2 || n.Ports[1].PM != 2 || n.Ports[1].Port != pm2 {
				return false, fmt.Errorf("pm1 %s: %+v (all %+v)", pm1, n, nets)
			}
		}
		return met(len(nets) == 2, "%d networks", len(nets))
	}
	if err := harness.WaitFor(ctx, 2*time.Minute, "two shared networks, paired across the crossed cables", paired); err != nil {
		t.Fatal(err)
	}
	nets, err := c.Networks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	office := networksByPM1Port(nets)["biz1"]
	if _, err := c.RenameNetwork(ctx, office.ID, "office"); err != nil {
		t.Fatal(err)
	}
	// Each PM bridges its port into the network's bridge.
	err = harness.WaitFor(ctx, time.Minute, "the shared network bridges on both PMs", func(ctx context.Context) (bool, error) {
		for _, id := range []int{1, 2} {
			pm, err := c.PM(ctx, id)
			if err != nil {
				return false, err
			}
			br, ok := findLink(pm, fmt.Sprintf("shnet%d", office.ID))
			if !ok || br.Kind != "bridge" || len(br.Members) != 1 {
				return false, fmt.Errorf("pm%d bridge of network %d: %+v", id, office.ID, br)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// A cable pulled: the network reports it and raises an alert; plugged
	// back, Fix pairs it again.
	if err := u.PM(2).SetLink(ctx, "biz2", false); err != nil { // crossed: pm2's biz2 NIC is on pm1's biz1 segment
		t.Fatal(err)
	}
	err = harness.WaitFor(ctx, time.Minute, "the office network's problem and alert", func(ctx context.Context) (bool, error) {
		un, err := c.Unit(ctx)
		if err != nil {
			return false, err
		}
		nets, err := c.Networks(ctx)
		if err != nil {
			return false, err
		}
		n := networksByPM1Port(nets)["biz1"]
		alert := slices.ContainsFunc(un.Alerts, func(a unit.Alert) bool { return a.ID == fmt.Sprintf("shared-network/%d", n.ID) })
		return met(n.Problem != "" && alert, "network %+v, alert %v", n, alert)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.PM(2).SetLink(ctx, "biz2", true); err != nil {
		t.Fatal(err)
	}
	err = harness.WaitFor(ctx, time.Minute, "Fix to pair the office network again", func(ctx context.Context) (bool, error) {
		n, err := c.FixNetwork(ctx, office.ID)
		if err != nil {
			return false, err
		}
		return met(n.Problem == "" && len(n.Ports) == 2 && n.Name == "office", "network %+v", n)
	})
	if err != nil {
		t.Fatal(err)
	}

	// Both PMs reboot; the name stays.
	for _, pm := range u.PMs() {
		if err := pm.PowerDown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, pm := range u.PMs() {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := pm.WaitOff(wctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, pm := range u.PMs() {
		if err := pm.PowerOn(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c = client(u)
	waitFormed(t, ctx, c)
	if err := harness.WaitFor(ctx, 2*time.Minute, "the networks paired again after the reboot", paired); err != nil {
		t.Fatal(err)
	}
	nets, err = c.Networks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := networksByPM1Port(nets)["biz1"]; got.Name != "office" || got.ID != office.ID {
		t.Fatalf("after both PMs rebooted, pm1 biz1's network is %+v, want id %d named office", got, office.ID)
	}
}

func TestManagementIPFollowsPrimary(t *testing.T) {
	ctx := t.Context()
	const mgmt6 = "fd00:99::10"
	u := harness.StartT(t, harness.Options{N: 2, ExtraCmdline: []string{"dyad.mgmt6=" + mgmt6 + "/64"}})
	c := client(u)
	lost := primaryOf(waitFormed(t, ctx, c))
	survivor := 3 - lost.ID

	capture, err := u.Capture(ctx, "ibiz")
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Close()
	if err := u.PM(lost.ID).PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	err = harness.WaitFor(ctx, 2*time.Minute, fmt.Sprintf("the management IP answering from pm%d", survivor), func(ctx context.Context) (bool, error) {
		h, err := c.Health(ctx)
		if err != nil {
			return false, err
		}
		return met(h.PM == survivor && h.Role == unit.RolePrimary, "health %+v", h)
	})
	if err != nil {
		t.Fatal(err)
	}
	want4 := netip.MustParseAddr(harness.MgmtIP)
	err = capture.WaitFor(ctx, 30*time.Second, "a gratuitous ARP for the management IP from the survivor", func(b []byte) bool {
		p, err := garp.Parse(b)
		return err == nil && p.Gratuitous() && p.SenderIP == want4 && slices.Equal(p.SenderMAC, ibiz0MAC(survivor))
	})
	if err != nil {
		t.Fatal(err)
	}
	want6 := netip.MustParseAddr(mgmt6)
	err = capture.WaitFor(ctx, 30*time.Second, "an unsolicited neighbour advertisement for the IPv6 management address", func(b []byte) bool {
		a, err := ndp.Parse(b)
		return err == nil && a.Unsolicited() && a.Target == want6 && slices.Equal(a.TargetLinkAddr, ibiz0MAC(survivor))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPrivateLinkFallback(t *testing.T) {
	ctx := t.Context()
	u := harness.StartT(t, harness.Options{N: 2, BusinessLinks: 1})
	c := client(u)
	waitFormed(t, ctx, c)

	path := func(want string, alert bool) func(ctx context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			un, err := c.Unit(ctx)
			if err != nil {
				return false, err
			}
			has := slices.ContainsFunc(un.Alerts, func(a unit.Alert) bool { return a.ID == "replication-on-ibiz0" })
			return met(un.ReplicationPath == want && has == alert,
				"replication path %q, fallback alert %v", un.ReplicationPath, has)
		}
	}
	// A change must reach the secondary over the path in use.
	replicates := func(name string) {
		t.Helper()
		var id int
		err := harness.WaitFor(ctx, 2*time.Minute, "the shared network", func(ctx context.Context) (bool, error) {
			nets, err := c.Networks(ctx)
			if len(nets) > 0 {
				id = nets[0].ID
			}
			return err == nil && len(nets) > 0, err
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.RenameNetwork(ctx, id, name); err != nil {
			t.Fatalf("rename (a replicated change): %v", err)
		}
		err = harness.WaitFor(ctx, time.Minute, "both PMs at the same database position", func(ctx context.Context) (bool, error) {
			pms, err := c.PMs(ctx)
			if err != nil {
				return false, err
			}
			return met(pms[0].DatabaseSeq == pms[1].DatabaseSeq, "positions %d, %d", pms[0].DatabaseSeq, pms[1].DatabaseSeq)
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	if err := harness.WaitFor(ctx, time.Minute, "replication on priv0", path(unit.PathPriv0, false)); err != nil {
		t.Fatal(err)
	}
	if err := u.PM(1).SetLink(ctx, "priv0", false); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitFor(ctx, time.Minute, "replication falling back to ibiz0 with an alert", path(unit.PathIbiz0, true)); err != nil {
		t.Fatal(err)
	}
	replicates("over-ibiz0")
	if err := u.PM(1).SetLink(ctx, "priv0", true); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitFor(ctx, time.Minute, "replication back on priv0, alert cleared", path(unit.PathPriv0, false)); err != nil {
		t.Fatal(err)
	}
	replicates("over-priv0")
}
