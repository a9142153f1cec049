package agent

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/dyad-ha/dyad/services/network"
	"github.com/dyad-ha/dyad/services/pmconfig"
)

func port(name string, last byte) network.Port {
	return network.Port{Name: name, MAC: net.HardwareAddr{0x52, 0x54, 0, 0xd7, 1, last}}
}

func TestDesiredNetwork(t *testing.T) {
	cfg := pmconfig.Config{Node: 2, Ibiz0: netip.MustParsePrefix("10.99.0.2/24"), Gateway: netip.MustParseAddr("10.99.0.254"),
		Ports: map[string][]string{"sync0": {"eth1"}}}
	ports := []network.Port{port("eth0", 1), port("eth1", 5), port("eth2", 2), port("eth3", 3), port("eth4", 0x11), port("eth5", 0x12)}

	t.Run("plain ibiz0, one business port in a shared network", func(t *testing.T) {
		plan, err := network.Plan(ports, cfg.Ports)
		if err != nil {
			t.Fatal(err)
		}
		d := desiredNetwork(cfg, plan, []sharedNetwork{
			{ID: 3, Name: "office", Ports: map[int]string{1: "biz2", 2: "biz1"}},
			{ID: 4, Name: "other PM only", Ports: map[int]string{1: "biz1"}},
		})
		var links []string
		for _, l := range d.Links {
			links = append(links, l.Name)
		}
		if want := []string{"priv0", "sync0", "ibiz0", "biz2", "biz3"}; !slices.Equal(links, want) {
			t.Errorf("links %v, want %v", links, want)
		}
		if len(d.Bonds) != 0 {
			t.Errorf("bonds %v for a single ibiz0 port", d.Bonds)
		}
		if len(d.Bridges) != 1 || d.Bridges[0].Name != "shnet3" || !slices.Equal(d.Bridges[0].Ports, []string{"biz1"}) {
			t.Errorf("bridges %+v, want shnet3 with biz1", d.Bridges)
		}
		addrs := map[string]string{}
		for _, a := range d.Addrs {
			addrs[a.Link] = a.Prefix.String()
		}
		if addrs["priv0"] != "169.254.42.2/24" || addrs["sync0"] != "169.254.43.2/24" || addrs["ibiz0"] != "10.99.0.2/24" {
			t.Errorf("addresses %v", addrs)
		}
		if len(d.Routes) != 1 || d.Routes[0].Gateway.String() != "10.99.0.254" || d.Routes[0].Link != "ibiz0" {
			t.Errorf("routes %+v", d.Routes)
		}
	})

	t.Run("ibiz0 bond", func(t *testing.T) {
		c := cfg
		c.Ports = map[string][]string{"ibiz0": {"eth2", "eth3"}}
		c.BondMode = "active-backup"
		plan, err := network.Plan(ports, c.Ports)
		if err != nil {
			t.Fatal(err)
		}
		d := desiredNetwork(c, plan, nil)
		if len(d.Bonds) != 1 || d.Bonds[0].Name != "ibiz0" || !slices.Equal(d.Bonds[0].Members, []string{"ibiz0p0", "ibiz0p1"}) || d.Bonds[0].Mode != "active-backup" {
			t.Fatalf("bonds %+v", d.Bonds)
		}
		for _, l := range d.Links {
			if l.Name == "ibiz0" {
				t.Errorf("the bond ibiz0 is also listed as a port")
			}
		}
		c.BondMode = "802.3ad"
		if d := desiredNetwork(c, plan, nil); d.Bonds[0].Mode != "802.3ad" {
			t.Errorf("bond mode %q, want 802.3ad", d.Bonds[0].Mode)
		}
	})
}

func TestPeerAddrAndPaths(t *testing.T) {
	cfg := pmconfig.Config{Ports: map[string][]string{"sync1": {"a"}, "sync0": {"b"}, "ibiz0": {"c"}}}
	if got := heartbeatPaths(cfg); !slices.Equal(got, []string{"sync0", "sync1", "priv0", "ibiz0"}) {
		t.Errorf("paths %v", got)
	}
	for _, tc := range []struct {
		path, ibiz0, want string
		ok                bool
	}{
		{"priv0", "", "169.254.42.1", true},
		{"sync1", "", "169.254.44.1", true},
		{"ibiz0", "10.99.0.1", "10.99.0.1", true},
		{"ibiz0", "", "", false},
		{"bogus", "", "", false},
	} {
		got, ok := peerAddr(tc.path, 1, tc.ibiz0)
		if ok != tc.ok || (ok && got.String() != tc.want) {
			t.Errorf("peerAddr(%s, %q) = %v %v, want %s %v", tc.path, tc.ibiz0, got, ok, tc.want, tc.ok)
		}
	}
}
