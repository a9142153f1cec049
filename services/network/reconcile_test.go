package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"

	"github.com/dyad-ha/dyad/services/network/netnstest"
)

// reconcileManager is a Manager whose state and resolver files are in a
// test directory, never the host's.
func reconcileManager(t *testing.T, ns *netnstest.NS) (*Manager, string) {
	t.Helper()
	dir := t.TempDir()
	m := newManager(t, Options{
		NetNS:          ns.FD(),
		SysClassNet:    mountSysfs(t, ns),
		IncludeVirtual: true,
		StatePath:      filepath.Join(dir, "run", "network-state.json"),
		ResolvConf:     filepath.Join(dir, "etc", "resolv.conf"),
	})
	return m, dir
}

func reconcile(t *testing.T, m *Manager, d Desired) []string {
	t.Helper()
	ctx := testContext(t)
	ports, err := m.Ports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := m.Reconcile(ctx, d, ports)
	if err != nil {
		t.Fatalf("Reconcile: %v (changes so far: %q)", err, rep.Changes)
	}
	return rep.Changes
}

func wantChanges(t *testing.T, got []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("changes %q lack %q", got, w)
		}
	}
}

// kernelState describes the namespace's links, addresses and routes
// (leaving out what the kernel adds and removes by itself: IPv6
// link-local addresses and the routes of the local table).
func kernelState(t *testing.T, c *rtnetlink.Conn) []string {
	t.Helper()
	links, err := c.Link.List()
	if err != nil {
		t.Fatal(err)
	}
	names := map[uint32]string{}
	for _, l := range links {
		names[l.Index] = l.Attributes.Name
	}
	var out []string
	for _, l := range links {
		a := l.Attributes
		s := fmt.Sprintf("link %s kind=%s up=%v mtu=%d", a.Name, linkKind(l), l.Flags&unix.IFF_UP != 0, a.MTU)
		if a.Master != nil {
			s += " master=" + names[*a.Master]
		}
		if a.Alias != nil {
			s += " alias=" + *a.Alias
		}
		out = append(out, s)
	}
	addrs, err := c.Address.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.Attributes.Address)
		if a.Family == unix.AF_INET {
			ip, _ = netip.AddrFromSlice(a.Attributes.Local)
		}
		if ip.Unmap().IsLinkLocalUnicast() {
			continue
		}
		out = append(out, fmt.Sprintf("addr %s %s/%d", names[a.Index], ip.Unmap(), a.PrefixLength))
	}
	routes, err := c.Route.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Table == unix.RT_TABLE_LOCAL || r.Attributes.Table == unix.RT_TABLE_LOCAL {
			continue
		}
		if dst, ok := netip.AddrFromSlice(r.Attributes.Dst); ok && (dst.IsLinkLocalUnicast() || dst.IsMulticast()) {
			continue
		}
		out = append(out, routeString(r, names))
	}
	slices.Sort(out)
	return out
}

func routeString(r rtnetlink.RouteMessage, names map[uint32]string) string {
	dst := "default"
	if r.DstLength > 0 {
		dst = fmt.Sprintf("%v/%d", r.Attributes.Dst, r.DstLength)
	}
	s := "route " + dst
	if r.Attributes.Gateway != nil {
		s += " via " + r.Attributes.Gateway.String()
	}
	return fmt.Sprintf("%s dev %s proto %d", s, names[r.Attributes.OutIface], r.Protocol)
}

func hasState(state []string, want string) bool {
	return slices.ContainsFunc(state, func(s string) bool { return strings.HasPrefix(s, want) })
}

func TestReconcile(t *testing.T) {
	ns := netnstest.New(t)
	c := ns.Conn()
	for _, v := range [][2]string{{"ibiz0", "sw0"}, {"biz1", "sw1"}, {"biz2", "sw2"}, {"biz3", "sw3"}} {
		ns.AddVeth(t, v[0], v[1])
	}
	ns.AddBridge(t, "foreign0")
	m, dir := reconcileManager(t, ns)
	ctx := testContext(t)
	// The switch side of each veth is up, for carrier.
	for _, sw := range []string{"sw0", "sw1", "sw2", "sw3"} {
		if err := m.SetUp(ctx, sw); err != nil {
			t.Fatal(err)
		}
	}

	d := Desired{
		Links: []LinkSpec{{Name: "ibiz0", MTU: 1400}},
		Bridges: []BridgeSpec{
			{Name: "shnet1", Ports: []string{"biz1", "biz2"}},
			{Name: "shnet2", Ports: []string{"biz3"}, MTU: 1280},
		},
		Addrs: []AddrSpec{
			{Link: "ibiz0", Prefix: netip.MustParsePrefix("10.99.0.1/24")},
			{Link: "shnet1", Prefix: netip.MustParsePrefix("10.1.0.1/24")},
			{Link: "shnet1", Prefix: netip.MustParsePrefix("fd00:1::1/64")},
			{Link: "shnet2", Prefix: netip.MustParsePrefix("10.2.0.1/24")},
		},
		Routes: []RouteSpec{
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.99.0.254")},
			{Dst: netip.MustParsePrefix("10.50.0.0/16"), Gateway: netip.MustParseAddr("10.1.0.254"), Link: "shnet1"},
			{Dst: netip.MustParsePrefix("10.60.0.0/16"), Link: "shnet2"},
		},
		DNS:    []netip.Addr{netip.MustParseAddr("10.99.0.254"), netip.MustParseAddr("fd00:1::53")},
		Search: []string{"lab.example"},
	}
	resolvPath := filepath.Join(dir, "etc", "resolv.conf")
	changes := reconcile(t, m, d)
	wantChanges(t, changes,
		"create bridge shnet1", "create bridge shnet2",
		"enslave biz1 to bridge shnet1", "enslave biz2 to bridge shnet1", "enslave biz3 to bridge shnet2",
		"set MTU of ibiz0 to 1400 (was 1500)", "set MTU of shnet2 to 1280 (was 1500)",
		"bring ibiz0 up", "bring biz1 up", "bring shnet1 up",
		"add 10.99.0.1/24 to ibiz0", "add 10.1.0.1/24 to shnet1", "add fd00:1::1/64 to shnet1", "add 10.2.0.1/24 to shnet2",
		"add route default via 10.99.0.254", "add route 10.50.0.0/16 via 10.1.0.254 dev shnet1", "add route 10.60.0.0/16 dev shnet2",
		"write "+resolvPath,
	)

	st := kernelState(t, c)
	for _, want := range []string{
		"link shnet1 kind=bridge up=true mtu=1500 alias=dyad:managed",
		"link shnet2 kind=bridge up=true mtu=1280 alias=dyad:managed",
		"link biz1 kind=veth up=true mtu=1500 master=shnet1",
		"link biz2 kind=veth up=true mtu=1500 master=shnet1",
		"link biz3 kind=veth up=true mtu=1500 master=shnet2",
		"link ibiz0 kind=veth up=true mtu=1400",
		"link foreign0 kind=bridge up=false",
		"addr ibiz0 10.99.0.1/24", "addr shnet1 10.1.0.1/24", "addr shnet1 fd00:1::1/64", "addr shnet2 10.2.0.1/24",
		"route default via 10.99.0.254 dev ibiz0 proto 68",
		"route 10.50.0.0/16 via 10.1.0.254 dev shnet1 proto 68",
		"route 10.60.0.0/16 dev shnet2 proto 68",
	} {
		if !hasState(st, want) {
			t.Errorf("kernel state lacks %q:\n%s", want, strings.Join(st, "\n"))
		}
	}
	resolv, err := os.ReadFile(resolvPath)
	if err != nil {
		t.Fatal(err)
	}
	if want := resolvHeader + "search lab.example\nnameserver 10.99.0.254\nnameserver fd00:1::53\n"; string(resolv) != want {
		t.Errorf("resolv.conf =\n%s\nwant\n%s", resolv, want)
	}

	if again := reconcile(t, m, d); len(again) != 0 {
		t.Fatalf("second Reconcile changed %q, want nothing", again)
	}
	if st2 := kernelState(t, c); !slices.Equal(st, st2) {
		t.Fatalf("second Reconcile changed the kernel state:\n%s\nto\n%s", strings.Join(st, "\n"), strings.Join(st2, "\n"))
	}

	states, err := m.LinkStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]LinkState{}
	for _, s := range states {
		byName[s.Name] = s
	}
	if s := byName["shnet1"]; s.Kind != KindBridge || !s.Up || !slices.Equal(s.Members, []string{"biz1", "biz2"}) || s.MTU != 1500 {
		t.Errorf("LinkStates shnet1 = %+v", s)
	}
	if s := byName["biz3"]; s.Kind != KindPort || !s.Up || !s.Carrier || s.Master != "shnet2" || s.SpeedMbps != 10000 {
		t.Errorf("LinkStates biz3 = %+v, want an up veth port with carrier at veth's 10000 Mb/s in shnet2", s)
	}
	if s := byName["ibiz0"]; s.Kind != KindPort || s.MTU != 1400 || s.Master != "" {
		t.Errorf("LinkStates ibiz0 = %+v", s)
	}
	if s, ok := byName["foreign0"]; !ok || s.Kind != KindBridge || s.Up {
		t.Errorf("LinkStates foreign0 = %+v", s)
	}
	if _, ok := byName["lo"]; ok {
		t.Error("LinkStates reports lo")
	}

	// What others put there: the management IP on ibiz0 and an address on
	// a bridge the reconciler made, a route, and the kernel's link-local
	// addresses.
	mgmt := netip.MustParsePrefix("10.99.0.10/24")
	if err := m.EnsureAddr(ctx, "ibiz0", mgmt); err != nil {
		t.Fatal(err)
	}
	other := netip.MustParsePrefix("10.1.0.99/24")
	if err := m.EnsureAddr(ctx, "shnet1", other); err != nil {
		t.Fatal(err)
	}
	ibiz, err := m.link(ctx, "ibiz0")
	if err != nil {
		t.Fatal(err)
	}
	err = c.Route.Add(&rtnetlink.RouteMessage{
		Family: unix.AF_INET, DstLength: 16, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_STATIC,
		Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{Dst: net.IPv4(10, 70, 0, 0).To4(), Gateway: net.IPv4(10, 99, 0, 253).To4(), OutIface: ibiz.Index},
	})
	if err != nil {
		t.Fatal(err)
	}
	linkLocal, err := m.LinkLocal(ctx, "ibiz0")
	if err != nil {
		t.Fatal(err)
	}

	// Less is wanted: shnet2 goes with its address and route, biz2 leaves
	// shnet1, ibiz0 moves to another address, the default route and the
	// name servers go.
	d2 := Desired{
		Links:   []LinkSpec{{Name: "ibiz0"}},
		Bridges: []BridgeSpec{{Name: "shnet1", Ports: []string{"biz1"}}},
		Addrs: []AddrSpec{
			{Link: "ibiz0", Prefix: netip.MustParsePrefix("10.99.0.2/24")},
			{Link: "shnet1", Prefix: netip.MustParsePrefix("10.1.0.1/24")},
		},
		Routes: []RouteSpec{{Dst: netip.MustParsePrefix("10.50.0.0/16"), Gateway: netip.MustParseAddr("10.1.0.254"), Link: "shnet1"}},
	}
	changes = reconcile(t, m, d2)
	wantChanges(t, changes,
		"remove route default via 10.99.0.254", "remove route 10.60.0.0/16 dev shnet2",
		"remove 10.99.0.1/24 from ibiz0", "remove fd00:1::1/64 from shnet1", "remove 10.2.0.1/24 from shnet2",
		"delete bridge shnet2", "release biz2 from shnet1", "add 10.99.0.2/24 to ibiz0", "write "+resolvPath,
	)
	st = kernelState(t, c)
	for _, gone := range []string{"link shnet2", "addr ibiz0 10.99.0.1/", "addr shnet1 fd00:1::1/", "route default", "route 10.60.0.0/16", "link biz2 kind=veth up=true mtu=1500 master"} {
		if hasState(st, gone) {
			t.Errorf("kernel state still has %q:\n%s", gone, strings.Join(st, "\n"))
		}
	}
	for _, want := range []string{
		"link shnet1 kind=bridge up=true", "link biz1 kind=veth up=true mtu=1500 master=shnet1",
		"link biz2 kind=veth up=true mtu=1500", "link biz3 kind=veth up=true mtu=1500",
		"link foreign0 kind=bridge up=false",
		"link ibiz0 kind=veth up=true mtu=1400", // MTU 0: left as it is
		"addr ibiz0 10.99.0.2/24", "addr ibiz0 " + mgmt.String(), "addr shnet1 10.1.0.1/24", "addr shnet1 " + other.String(),
		"route 10.50.0.0/16 via 10.1.0.254 dev shnet1 proto 68",
		"route 10.70.0.0/16 via 10.99.0.253 dev ibiz0 proto 4",
	} {
		if !hasState(st, want) {
			t.Errorf("kernel state lacks %q:\n%s", want, strings.Join(st, "\n"))
		}
	}
	addrs, err := m.Addrs(ctx, "ibiz0")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(addrs, netip.PrefixFrom(linkLocal, 64)) {
		t.Errorf("link-local address %s of ibiz0 removed: %v", linkLocal, addrs)
	}
	if resolv, err := os.ReadFile(resolvPath); err != nil || string(resolv) != resolvHeader {
		t.Errorf("resolv.conf written by dyad, with no name servers wanted = %q, %v; want only the header", resolv, err)
	}

	if again := reconcile(t, m, d2); len(again) != 0 {
		t.Fatalf("Reconcile of the smaller configuration again changed %q, want nothing", again)
	}

	// Nothing wanted: everything it made goes, nothing else.
	wantChanges(t, reconcile(t, m, Desired{}), "delete bridge shnet1", "remove 10.99.0.2/24 from ibiz0", "remove route 10.50.0.0/16 via 10.1.0.254 dev shnet1")
	st = kernelState(t, c)
	for _, gone := range []string{"link shnet", "proto 68", "addr ibiz0 10.99.0.2/"} {
		if hasState(st, gone) || slices.ContainsFunc(st, func(s string) bool { return strings.Contains(s, gone) }) {
			t.Errorf("kernel state still has %q:\n%s", gone, strings.Join(st, "\n"))
		}
	}
	for _, want := range []string{"addr ibiz0 " + mgmt.String(), "link foreign0", "route 10.70.0.0/16"} {
		if !hasState(st, want) {
			t.Errorf("kernel state lacks %q:\n%s", want, strings.Join(st, "\n"))
		}
	}
	var saved reconcileState
	b, err := os.ReadFile(m.statePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &saved); err != nil || len(saved.Links)+len(saved.Addrs)+len(saved.Routes) != 0 {
		t.Errorf("state file after removing everything = %s (%v), want no links, addresses or routes", b, err)
	}
}

// TestReconcileAfterCrash starts from what a Reconcile stopped between
// creating bridges and marking them leaves: bridges recorded in the state
// file without the alias.
func TestReconcileAfterCrash(t *testing.T) {
	ns := netnstest.New(t)
	c := ns.Conn()
	ns.AddVeth(t, "biz1", "sw1")
	ns.AddBridge(t, "shnet1")
	ns.AddBridge(t, "shnet2")
	ns.AddBridge(t, "shnet3")
	m, _ := reconcileManager(t, ns)
	shnet3, err := m.link(testContext(t), "shnet3")
	if err != nil {
		t.Fatal(err)
	}
	r := &reconciler{m: m}
	if err := r.setAlias(shnet3.Index, "someone else's"); err != nil {
		t.Fatal(err)
	}
	if err := m.saveState(reconcileState{Links: []string{"shnet1", "shnet2", "shnet3"}}); err != nil {
		t.Fatal(err)
	}

	d := Desired{Bridges: []BridgeSpec{{Name: "shnet1", Ports: []string{"biz1"}}}}
	changes := reconcile(t, m, d)
	wantChanges(t, changes, "mark bridge shnet1 as created by dyad", "delete bridge shnet2", "enslave biz1 to bridge shnet1")
	st := kernelState(t, c)
	for _, want := range []string{"link shnet1 kind=bridge up=true mtu=1500 alias=dyad:managed", "link shnet3 kind=bridge up=false mtu=1500 alias=someone else's"} {
		if !hasState(st, want) {
			t.Errorf("kernel state lacks %q:\n%s", want, strings.Join(st, "\n"))
		}
	}
	if hasState(st, "link shnet2") {
		t.Errorf("bridge shnet2, recorded as created by dyad and not wanted, survived:\n%s", strings.Join(st, "\n"))
	}
	if again := reconcile(t, m, d); len(again) != 0 {
		t.Fatalf("second Reconcile changed %q, want nothing", again)
	}
}

// TestReconcileRefusesBadConfig checks that a configuration Validate or
// the kernel's ownership check refuses leaves the running network as it
// was.
func TestReconcileRefusesBadConfig(t *testing.T) {
	ns := netnstest.New(t)
	c := ns.Conn()
	for _, v := range [][2]string{{"ibiz0", "sw0"}, {"biz1", "sw1"}, {"biz2", "sw2"}} {
		ns.AddVeth(t, v[0], v[1])
	}
	ns.AddBridge(t, "foreign0")
	ns.AddBridge(t, "shnet9")
	m, _ := reconcileManager(t, ns)
	ctx := testContext(t)

	good := Desired{
		Bridges: []BridgeSpec{{Name: "shnet1", Ports: []string{"biz1"}}},
		Addrs:   []AddrSpec{{Link: "ibiz0", Prefix: netip.MustParsePrefix("10.99.0.1/24")}},
		Routes:  []RouteSpec{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.99.0.254")}},
		DNS:     []netip.Addr{netip.MustParseAddr("10.99.0.254")},
	}
	reconcile(t, m, good)
	// biz2 belongs to a bridge dyad did not make.
	foreign, err := m.link(ctx, "foreign0")
	if err != nil {
		t.Fatal(err)
	}
	biz2, err := m.link(ctx, "biz2")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Link.Set(&rtnetlink.LinkMessage{Index: biz2.Index, Attributes: &rtnetlink.LinkAttributes{Master: &foreign.Index}}); err != nil {
		t.Fatal(err)
	}

	before := kernelState(t, c)
	files := func() []string {
		var out []string
		for _, p := range []string{m.statePath, m.resolvConf} {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, string(b))
		}
		return out
	}
	filesBefore := files()

	bad := []struct {
		name   string
		change func(d *Desired)
		want   string
	}{
		{"unknown port", func(d *Desired) { d.Bridges[0].Ports = []string{"biz1", "eth9"} }, "unknown port"},
		{"duplicate address", func(d *Desired) {
			d.Addrs = append(d.Addrs, AddrSpec{Link: "shnet1", Prefix: netip.MustParsePrefix("10.99.0.1/16")})
		}, "duplicate address 10.99.0.1"},
		{"bond of one port", func(d *Desired) {
			d.Bonds = []BondSpec{{Name: "bond0", Members: []string{"biz2"}}}
		}, "bond bond0 has 1 member(s)"},
		{"bridge dyad did not create", func(d *Desired) {
			d.Bridges = append(d.Bridges, BridgeSpec{Name: "shnet9"})
			d.DNS = nil
		}, "link shnet9 exists and was not created by dyad; not taking it over"},
		{"port of a bridge dyad did not create", func(d *Desired) {
			d.Bridges[0].Ports = []string{"biz1", "biz2"}
		}, "biz2 is enslaved to foreign0, which dyad did not create; release it first"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			d := good
			d.Bridges = slices.Clone(good.Bridges)
			tt.change(&d)
			ports, err := m.Ports(ctx)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := m.Reconcile(ctx, d, ports)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Reconcile error = %v, want one containing %q", err, tt.want)
			}
			if len(rep.Changes) != 0 {
				t.Errorf("refused Reconcile reports changes %q", rep.Changes)
			}
			if after := kernelState(t, c); !slices.Equal(before, after) {
				t.Fatalf("refused Reconcile changed the kernel state:\n%s\nto\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
			}
			if after := files(); !slices.Equal(filesBefore, after) {
				t.Fatalf("refused Reconcile changed the state or resolver file: %q to %q", filesBefore, after)
			}
		})
	}
}

// bondingSupported reports whether the kernel can create bonds, by
// creating one in namespace c.
func bondingSupported(t *testing.T, c *rtnetlink.Conn) bool {
	t.Helper()
	err := c.Link.New(&rtnetlink.LinkMessage{Attributes: &rtnetlink.LinkAttributes{
		Name: "probebond0", Info: &rtnetlink.LinkInfo{Kind: "bond"},
	}})
	if errors.Is(err, unix.EOPNOTSUPP) {
		return false
	}
	if err != nil {
		t.Fatalf("probe for bonding support: %v", err)
	}
	links, err := c.Link.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attributes.Name == "probebond0" {
			if err := c.Link.Delete(l.Index); err != nil {
				t.Fatal(err)
			}
		}
	}
	return true
}

func TestReconcileBond(t *testing.T) {
	ns := netnstest.New(t)
	c := ns.Conn()
	for _, v := range [][2]string{{"ibiz0p0", "sw0"}, {"ibiz0p1", "sw1"}, {"biz1", "sw2"}} {
		ns.AddVeth(t, v[0], v[1])
	}
	m, _ := reconcileManager(t, ns)
	ctx := testContext(t)
	for _, sw := range []string{"sw0", "sw1", "sw2"} {
		if err := m.SetUp(ctx, sw); err != nil {
			t.Fatal(err)
		}
	}
	d := Desired{
		Bonds:   []BondSpec{{Name: "ibiz0", Members: []string{"ibiz0p0", "ibiz0p1"}, MTU: 1400}},
		Bridges: []BridgeSpec{{Name: "shnet1", Ports: []string{"biz1"}}},
		Addrs:   []AddrSpec{{Link: "ibiz0", Prefix: netip.MustParsePrefix("10.99.0.1/24")}},
		Routes:  []RouteSpec{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.99.0.254")}},
	}

	if !bondingSupported(t, c) {
		t.Run("refused without kernel support", func(t *testing.T) {
			before := kernelState(t, c)
			ports, err := m.Ports(ctx)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := m.Reconcile(ctx, d, ports)
			if !errors.Is(err, ErrBondingUnsupported) || !strings.Contains(err.Error(), "create bond ibiz0: the kernel has no bonding support (module bonding)") {
				t.Fatalf("Reconcile of a bond without kernel support: %v, want ErrBondingUnsupported naming the bond", err)
			}
			if len(rep.Changes) != 0 {
				t.Errorf("failed Reconcile reports changes %q", rep.Changes)
			}
			if after := kernelState(t, c); !slices.Equal(before, after) {
				t.Fatalf("failed bond creation changed the kernel state:\n%s\nto\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
			}
		})
		t.Skip("host kernel lacks bonding; covered by qemu-tests TestBondMemberLoss")
	}

	changes := reconcile(t, m, d)
	wantChanges(t, changes,
		"create bond ibiz0 (active-backup, link monitoring every 100 ms) with ibiz0p0, ibiz0p1",
		"set MTU of ibiz0 to 1400 (was 1500)", "bring ibiz0 up", "add 10.99.0.1/24 to ibiz0",
	)
	st := kernelState(t, c)
	for _, want := range []string{
		"link ibiz0 kind=bond up=true mtu=1400 alias=dyad:managed",
		"link ibiz0p0 kind=veth up=true mtu=1400 master=ibiz0",
		"link ibiz0p1 kind=veth up=true mtu=1400 master=ibiz0",
		"addr ibiz0 10.99.0.1/24",
		"route default via 10.99.0.254 dev ibiz0 proto 68",
	} {
		if !hasState(st, want) {
			t.Errorf("kernel state lacks %q:\n%s", want, strings.Join(st, "\n"))
		}
	}
	bond, err := m.link(ctx, "ibiz0")
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := bondInfo(bond); !ok || b.Mode.String() != BondActiveBackup || b.Miimon == nil || *b.Miimon != 100 {
		t.Errorf("bond attributes = %+v, want active-backup with miimon 100", b)
	}
	if again := reconcile(t, m, d); len(again) != 0 {
		t.Fatalf("second Reconcile changed %q, want nothing", again)
	}
	states, err := m.LinkStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(states, func(s LinkState) bool { return s.Name == "ibiz0" })
	if i < 0 {
		t.Fatalf("LinkStates %+v lacks ibiz0", states)
	}
	if s := states[i]; s.Kind != KindBond || !slices.Equal(s.Members, []string{"ibiz0p0", "ibiz0p1"}) || !slices.Contains(s.Members, s.ActiveMember) {
		t.Errorf("LinkStates ibiz0 = %+v, want a bond of ibiz0p0 and ibiz0p1 with one of them active", s)
	}

	// 802.3ad needs a new bond; the members move to it.
	d.Bonds[0].Mode = Bond8023AD
	d.Bonds[0].MiimonMS = 50
	wantChanges(t, reconcile(t, m, d), "delete bond ibiz0 (active-backup)",
		"create bond ibiz0 (802.3ad, link monitoring every 50 ms) with ibiz0p0, ibiz0p1")
	if again := reconcile(t, m, d); len(again) != 0 {
		t.Fatalf("Reconcile of the 802.3ad bond again changed %q, want nothing", again)
	}
	wantChanges(t, reconcile(t, m, Desired{}), "delete bond ibiz0 (802.3ad)", "delete bridge shnet1")
	if st := kernelState(t, c); hasState(st, "link ibiz0 ") || hasState(st, "link ibiz0p0 kind=veth up=true mtu=1400 master") {
		t.Errorf("bond left behind:\n%s", strings.Join(st, "\n"))
	}
}

func TestSyncResolvConf(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	m := &Manager{resolvConf: path}
	theirs := "nameserver 192.0.2.53\n"
	if err := os.WriteFile(path, []byte(theirs), 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err := m.syncResolvConf(nil, nil); err != nil || changed {
		t.Fatalf("syncResolvConf with nothing wanted over someone else's file = %v, %v; want it left alone", changed, err)
	}
	if b, _ := os.ReadFile(path); string(b) != theirs {
		t.Fatalf("someone else's resolv.conf became %q", b)
	}
	dns := []netip.Addr{netip.MustParseAddr("10.0.0.53")}
	for i, want := range []bool{true, false} {
		changed, err := m.syncResolvConf(dns, []string{"a.example", "b.example"})
		if err != nil || changed != want {
			t.Fatalf("syncResolvConf run %d = %v, %v; want changed %v", i+1, changed, err, want)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := resolvHeader + "search a.example b.example\nnameserver 10.0.0.53\n"; string(b) != want {
		t.Fatalf("resolv.conf = %q, want %q", b, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("resolv.conf mode: %v, %v", fi, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("directory holds %v (%v), want only resolv.conf: no temporary files left", entries, err)
	}
}
