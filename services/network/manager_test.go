package network

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dyad-ha/dyad/services/network/garp"
	"github.com/dyad-ha/dyad/services/network/netnstest"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func portNames(ports []Port) []string {
	names := make([]string, len(ports))
	for i, p := range ports {
		names[i] = p.Name
	}
	return names
}

// TestPortsRealSysfs reads a real sysfs of the test namespace, where veths
// and bridges have no device link.
func TestPortsRealSysfs(t *testing.T) {
	ctx := testContext(t)
	ns := netnstest.New(t)
	c := ns.Conn()
	ns.AddVeth(t, "pa", "pb")
	ns.AddBridge(t, "br0")
	sys := mountSysfs(t, ns)
	if _, err := os.Stat(filepath.Join(sys, "pa")); err != nil {
		t.Fatalf("sysfs mounted in the test namespace does not show its veth: %v", err)
	}

	physical := newManager(t, Options{NetNS: ns.FD(), SysClassNet: sys})
	ports, err := physical.Ports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 0 {
		t.Fatalf("Ports without IncludeVirtual = %+v, want none (lo, veth and bridge are not ports)", ports)
	}

	virtual := newManager(t, Options{NetNS: ns.FD(), SysClassNet: sys, IncludeVirtual: true})
	ports, err = virtual.Ports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := portNames(ports); !slices.Equal(got, []string{"pa", "pb"}) {
		t.Fatalf("Ports with IncludeVirtual = %v, want [pa pb] (bridge and lo excluded)", got)
	}
	for _, p := range ports {
		l, err := c.Link.Get(uint32(p.Index))
		if err != nil {
			t.Fatal(err)
		}
		if l.Attributes.Name != p.Name || !slices.Equal(l.Attributes.Address, p.MAC) {
			t.Errorf("port %+v does not match link %d %s %v", p, l.Index, l.Attributes.Name, l.Attributes.Address)
		}
		if p.Driver != "veth" || p.BusAddr != "" || p.Up || p.Carrier {
			t.Errorf("port %+v: want driver veth, no bus address, down", p)
		}
	}
}

// TestPortsDeviceLinks points the Manager at a sysfs-shaped directory that
// gives the namespace's veths device links, the way NICs appear on a PM.
func TestPortsDeviceLinks(t *testing.T) {
	ctx := testContext(t)
	ns := netnstest.New(t)
	ns.AddVeth(t, "eth0", "eth1")
	ns.AddVeth(t, "eth2", "wlan0")
	ns.AddVeth(t, "eth3", "veth9")
	ns.AddBridge(t, "br0")

	root := t.TempDir()
	mkdir := func(p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	symlink := func(target, link string) {
		t.Helper()
		mkdir(filepath.Dir(link))
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(root, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// eth0: virtio-net in PCI slot 5; eth1: virtio-net in slot 3 behind a
	// bridge; eth2: an e1000 in slot 4; wlan0: a wireless card; eth3: a
	// device no driver claimed, not on PCI; veth9 and br0 have no device.
	mkdir("bus/virtio/drivers/virtio_net")
	mkdir("bus/pci/drivers/e1000")
	mkdir("devices/pci0000:00/0000:00:05.0/virtio2")
	symlink("../../../../bus/virtio/drivers/virtio_net", "devices/pci0000:00/0000:00:05.0/virtio2/driver")
	symlink("../../../devices/pci0000:00/0000:00:05.0/virtio2", "class/net/eth0/device")
	mkdir("devices/pci0000:00/0000:00:1c.0/0000:00:03.0/virtio0")
	symlink("../../../../../bus/virtio/drivers/virtio_net", "devices/pci0000:00/0000:00:1c.0/0000:00:03.0/virtio0/driver")
	symlink("../../../devices/pci0000:00/0000:00:1c.0/0000:00:03.0/virtio0", "class/net/eth1/device")
	mkdir("devices/pci0000:00/0000:00:04.0")
	symlink("../../../bus/pci/drivers/e1000", "devices/pci0000:00/0000:00:04.0/driver")
	symlink("../../../devices/pci0000:00/0000:00:04.0", "class/net/eth2/device")
	write("class/net/eth2/speed", "1000\n")
	mkdir("devices/pci0000:00/0000:00:06.0")
	symlink("../../../devices/pci0000:00/0000:00:06.0", "class/net/wlan0/device")
	mkdir("class/net/wlan0/wireless")
	mkdir("devices/platform/smsc911x")
	symlink("../../../devices/platform/smsc911x", "class/net/eth3/device")
	write("class/net/eth3/speed", "-1\n")

	m := newManager(t, Options{NetNS: ns.FD(), SysClassNet: filepath.Join(root, "class/net")})
	ports, err := m.Ports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type summary struct {
		Name, Driver, BusAddr string
		SpeedMbps             int
	}
	var got []summary
	for _, p := range ports {
		got = append(got, summary{p.Name, p.Driver, p.BusAddr, p.SpeedMbps})
		if len(p.MAC) != 6 || p.Index == 0 {
			t.Errorf("port %s: MAC %v index %d", p.Name, p.MAC, p.Index)
		}
	}
	want := []summary{
		{"eth1", "virtio_net", "0000:00:03.0", 0},
		{"eth2", "e1000", "0000:00:04.0", 1000},
		{"eth0", "virtio_net", "0000:00:05.0", 0},
		{"eth3", "", "smsc911x", 0},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Ports =\n%+v\nwant\n%+v", got, want)
	}

	plan, err := Plan(ports, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := plan.Names(); n["eth1"] != RolePriv || n["eth2"] != RoleIBiz || n["eth0"] != "biz1" || n["eth3"] != "biz2" {
		t.Fatalf("roles from PCI order = %v", n)
	}
}

func TestLinkAndAddresses(t *testing.T) {
	ctx := testContext(t)
	ns := netnstest.New(t)
	c := ns.Conn()
	ns.AddVeth(t, "eth0", "peer0")
	ns.AddVeth(t, "eth1", "peer1")
	m := newManager(t, Options{NetNS: ns.FD()})

	// eth0 renamed while down stays down; eth1 renamed while up comes back up.
	if err := m.SetUp(ctx, "eth1"); err != nil {
		t.Fatal(err)
	}
	if err := m.SetUp(ctx, "eth1"); err != nil {
		t.Fatalf("SetUp on an up link: %v", err)
	}
	for _, r := range []struct {
		from, to string
		up       bool
	}{{"eth0", "priv0", false}, {"eth1", "ibiz0", true}} {
		if err := m.Rename(ctx, r.from, r.to); err != nil {
			t.Fatal(err)
		}
		if err := m.Rename(ctx, r.from, r.to); err != nil {
			t.Fatalf("second Rename(%s, %s): %v", r.from, r.to, err)
		}
		up, _, err := m.LinkState(ctx, r.to)
		if err != nil {
			t.Fatal(err)
		}
		if up != r.up {
			t.Errorf("after renaming %s to %s: up = %v, want %v", r.from, r.to, up, r.up)
		}
		if _, _, err := m.LinkState(ctx, r.from); !errors.Is(err, ErrLinkNotFound) {
			t.Errorf("LinkState(%s) after rename: err = %v, want ErrLinkNotFound", r.from, err)
		}
	}
	if err := m.Rename(ctx, "priv0", "priv0"); err != nil {
		t.Errorf("Rename to its own name: %v", err)
	}
	for _, bad := range []struct{ from, to, want string }{
		{"priv0", "ibiz0", "a link named ibiz0 already exists"},
		{"nosuch", "biz1", "link not found"},
		{"priv0", "a-name-far-too-long", "longer than 15 bytes"},
		{"priv0", "bad/name", "contains"},
	} {
		if err := m.Rename(ctx, bad.from, bad.to); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Rename(%s, %s) error = %v, want one containing %q", bad.from, bad.to, err, bad.want)
		}
	}

	// Carrier needs both ends of the veth up.
	if err := m.SetUp(ctx, "peer1"); err != nil {
		t.Fatal(err)
	}
	if up, carrier, err := m.LinkState(ctx, "ibiz0"); err != nil || !up || !carrier {
		t.Fatalf("LinkState(ibiz0) = %v, %v, %v; want up with carrier", up, carrier, err)
	}
	if up, carrier, err := m.LinkState(ctx, "priv0"); err != nil || up || carrier {
		t.Fatalf("LinkState(priv0) = %v, %v, %v; want down without carrier", up, carrier, err)
	}

	mgmt := netip.MustParsePrefix("10.99.0.10/24")
	own := netip.MustParsePrefix("10.99.0.1/24")
	v6 := netip.MustParsePrefix("fd00:99::1/64")
	for range 2 {
		for _, p := range []netip.Prefix{own, mgmt, v6} {
			if err := m.EnsureAddr(ctx, "ibiz0", p); err != nil {
				t.Fatalf("EnsureAddr(%s): %v", p, err)
			}
		}
	}
	assertAddrs := func(want ...netip.Prefix) {
		t.Helper()
		got, err := m.Addrs(ctx, "ibiz0")
		if err != nil {
			t.Fatal(err)
		}
		got = slices.DeleteFunc(got, func(p netip.Prefix) bool { return p.Addr().IsLinkLocalUnicast() })
		slices.SortFunc(got, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		if !slices.Equal(got, want) {
			t.Fatalf("Addrs(ibiz0) = %v, want %v", got, want)
		}
	}
	assertAddrs(own, mgmt, v6)

	// The kernel must agree on the broadcast address we computed.
	msgs, err := c.Address.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range msgs {
		if a.Family == unix.AF_INET && a.Attributes.Local.Equal(net.IPv4(10, 99, 0, 10)) && !a.Attributes.Broadcast.Equal(net.IPv4(10, 99, 0, 255)) {
			t.Errorf("broadcast of %s = %v, want 10.99.0.255", mgmt, a.Attributes.Broadcast)
		}
	}

	for range 2 {
		if err := m.RemoveAddr(ctx, "ibiz0", mgmt); err != nil {
			t.Fatalf("RemoveAddr(%s): %v", mgmt, err)
		}
	}
	assertAddrs(own, v6)
	if err := m.RemoveAddr(ctx, "ibiz0", netip.MustParsePrefix("10.99.0.1/16")); err != nil {
		t.Fatal(err)
	}
	assertAddrs(own, v6)

	for _, bad := range []netip.Prefix{{}, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("224.0.0.1/32")} {
		if err := m.EnsureAddr(ctx, "ibiz0", bad); err == nil {
			t.Errorf("EnsureAddr(%v) succeeded", bad)
		}
	}
	if err := m.EnsureAddr(ctx, "nosuch", own); !errors.Is(err, ErrLinkNotFound) {
		t.Errorf("EnsureAddr on a missing link: %v, want ErrLinkNotFound", err)
	}
	if err := m.SetUp(ctx, "nosuch"); !errors.Is(err, ErrLinkNotFound) {
		t.Errorf("SetUp on a missing link: %v, want ErrLinkNotFound", err)
	}
}

func TestLinkLocal(t *testing.T) {
	ctx := testContext(t)
	ns := netnstest.New(t)
	ns.AddVeth(t, "priv0", "peer")
	m := newManager(t, Options{NetNS: ns.FD()})

	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := m.LinkLocal(short, "priv0"); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "none yet") {
		t.Fatalf("LinkLocal on a down link: %v, want a deadline error saying there is none yet", err)
	}

	for _, l := range []string{"priv0", "peer"} {
		if err := m.SetUp(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	ll, err := m.LinkLocal(ctx, "priv0")
	if err != nil {
		t.Fatal(err)
	}
	if !ll.Is6() || !ll.IsLinkLocalUnicast() {
		t.Fatalf("LinkLocal = %v, want an fe80::/10 address", ll)
	}
	addrs, err := m.Addrs(ctx, "priv0")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(addrs, netip.PrefixFrom(ll, 64)) {
		t.Fatalf("Addrs(priv0) = %v, want it to hold %v/64", addrs, ll)
	}
}

func TestAnnounceIPv4(t *testing.T) {
	ctx := testContext(t)
	ns := netnstest.New(t)
	ns.AddVeth(t, "ibiz0", "switch")
	m := newManager(t, Options{NetNS: ns.FD()})

	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := m.AnnounceIPv4(short, "ibiz0", netip.MustParseAddr("10.99.0.10"), 1); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "cannot transmit") {
		t.Fatalf("AnnounceIPv4 on a down link: %v, want a deadline error saying it cannot transmit", err)
	}

	// Announce right after the links come up, as a failover does.
	for _, l := range []string{"ibiz0", "switch"} {
		if err := m.SetUp(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	sw, err := m.link(ctx, "switch")
	if err != nil {
		t.Fatal(err)
	}
	ibiz, err := m.link(ctx, "ibiz0")
	if err != nil {
		t.Fatal(err)
	}
	capture, err := m.listenPacket(int(sw.Index), "switch", unix.ETH_P_ARP)
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Close()

	ip := netip.MustParseAddr("10.99.0.10")
	const count = 3
	start := time.Now()
	if err := m.AnnounceIPv4(ctx, "ibiz0", ip, count); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < (count-1)*arpInterval {
		t.Errorf("%d announcements took %v, want them %v apart", count, d, arpInterval)
	}

	if err := capture.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	for got := 0; got < count; {
		n, _, err := capture.ReadFrom(buf)
		if err != nil {
			t.Fatalf("captured %d of %d announcements: %v", got, count, err)
		}
		p, err := garp.Parse(buf[:n])
		if err != nil {
			t.Fatalf("captured frame %x: %v", buf[:n], err)
		}
		if !p.Gratuitous() || p.Op != garp.OpRequest || p.SenderIP != ip ||
			!slices.Equal(p.SenderMAC, ibiz.Attributes.Address) || !slices.Equal(p.EthSrc, ibiz.Attributes.Address) {
			t.Fatalf("captured %+v, want a gratuitous ARP request for %s from %v", p, ip, ibiz.Attributes.Address)
		}
		got++
	}

	for _, bad := range []struct {
		ip    string
		count int
	}{{"fd00::1", 1}, {"10.99.0.10", 0}} {
		if err := m.AnnounceIPv4(ctx, "ibiz0", netip.MustParseAddr(bad.ip), bad.count); err == nil {
			t.Errorf("AnnounceIPv4(%s, %d) succeeded", bad.ip, bad.count)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := m.AnnounceIPv4(cancelled, "ibiz0", ip, 2); !errors.Is(err, context.Canceled) {
		t.Errorf("AnnounceIPv4 with a cancelled context: %v", err)
	}
}

func TestEnsureDefaultRoute(t *testing.T) {
	ctx := testContext(t)
	ns := netnstest.New(t)
	c := ns.Conn()
	ns.AddVeth(t, "ibiz0", "peer")
	m := newManager(t, Options{NetNS: ns.FD()})
	for _, l := range []string{"ibiz0", "peer"} {
		if err := m.SetUp(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.EnsureAddr(ctx, "ibiz0", netip.MustParsePrefix("10.99.0.1/24")); err != nil {
		t.Fatal(err)
	}
	defaults := func() []string {
		t.Helper()
		routes, err := c.Route.List()
		if err != nil {
			t.Fatal(err)
		}
		var gws []string
		for _, r := range routes {
			if r.Family == unix.AF_INET && r.DstLength == 0 && r.Table == unix.RT_TABLE_MAIN {
				gws = append(gws, r.Attributes.Gateway.String())
			}
		}
		return gws
	}
	for _, gw := range []string{"10.99.0.254", "10.99.0.254", "10.99.0.253"} {
		if err := m.EnsureDefaultRoute(ctx, netip.MustParseAddr(gw)); err != nil {
			t.Fatalf("EnsureDefaultRoute(%s): %v", gw, err)
		}
		if got := defaults(); !slices.Equal(got, []string{gw}) {
			t.Fatalf("after EnsureDefaultRoute(%s): default routes via %v, want exactly one via %s", gw, got, gw)
		}
	}
	if err := m.EnsureDefaultRoute(ctx, netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Error("EnsureDefaultRoute via an unreachable gateway succeeded")
	}
	if err := m.EnsureDefaultRoute(ctx, netip.Addr{}); err == nil {
		t.Error("EnsureDefaultRoute with no gateway succeeded")
	}
}
