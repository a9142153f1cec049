package network

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

func validDesired() Desired {
	return Desired{
		Links: []LinkSpec{{Name: "priv0", MTU: 9000}},
		Bonds: []BondSpec{{Name: "ibiz0", Members: []string{"ibiz0p0", "ibiz0p1"}}},
		Bridges: []BridgeSpec{
			{Name: "shnet1", Ports: []string{"biz1"}, MTU: 1500},
			{Name: "shnet2", Ports: []string{"biz2"}},
		},
		Addrs: []AddrSpec{
			{Link: "ibiz0", Prefix: netip.MustParsePrefix("10.99.0.1/24")},
			{Link: "priv0", Prefix: netip.MustParsePrefix("fd00:1::1/64")},
			{Link: "shnet1", Prefix: netip.MustParsePrefix("10.1.0.1/24")},
		},
		Routes: []RouteSpec{
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.99.0.254")},
			{Dst: netip.MustParsePrefix("10.50.0.0/16"), Gateway: netip.MustParseAddr("10.1.0.254"), Link: "shnet1"},
			{Dst: netip.MustParsePrefix("10.60.0.0/16"), Link: "shnet2"},
			{Dst: netip.MustParsePrefix("fd00:2::/64"), Gateway: netip.MustParseAddr("fd00:1::fe")},
		},
		DNS:    []netip.Addr{netip.MustParseAddr("10.99.0.254")},
		Search: []string{"lab.example"},
	}
}

func validationPorts() []Port {
	return testPorts("priv0", "ibiz0p0", "ibiz0p1", "biz1", "biz2", "biz3")
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(d *Desired)
		want   []string // substrings of the error; none: valid
	}{
		{"valid", func(d *Desired) {}, nil},
		{"empty is valid", func(d *Desired) { *d = Desired{} }, nil},
		{"802.3ad", func(d *Desired) { d.Bonds[0].Mode = Bond8023AD; d.Bonds[0].MiimonMS = 50 }, nil},
		{"unknown bond member", func(d *Desired) { d.Bonds[0].Members[1] = "eth7" }, []string{"bond ibiz0: member eth7: unknown port (ports: biz1, biz2, biz3, ibiz0p0, ibiz0p1, priv0)"}},
		{"unknown bridge port", func(d *Desired) { d.Bridges[0].Ports = append(d.Bridges[0].Ports, "eth7") }, []string{"bridge shnet1: port eth7: unknown port"}},
		{"unknown link", func(d *Desired) { d.Links = append(d.Links, LinkSpec{Name: "eth7"}) }, []string{"link eth7: unknown port"}},
		{"address on unknown link", func(d *Desired) { d.Addrs[0].Link = "shnet9" }, []string{"address 10.99.0.1/24: shnet9: unknown port"}},
		{"route via unknown link", func(d *Desired) { d.Routes[2].Link = "shnet9" }, []string{"route 10.60.0.0/16 dev shnet9: link shnet9: unknown port"}},
		{"bond as bond member", func(d *Desired) {
			d.Bonds = append(d.Bonds, BondSpec{Name: "bond1", Members: []string{"ibiz0", "biz3"}})
		}, []string{"bond bond1: member ibiz0 is a bond, not a port"}},
		{"bridge in a bridge", func(d *Desired) { d.Bridges[0].Ports = append(d.Bridges[0].Ports, "shnet2") }, []string{"bridge shnet1: port shnet2 is a bridge"}},
		{"bond of one port", func(d *Desired) { d.Bonds[0].Members = d.Bonds[0].Members[:1] }, []string{"bond ibiz0 has 1 member(s), want at least 2"}},
		{"port in two bonds", func(d *Desired) {
			d.Bonds = append(d.Bonds, BondSpec{Name: "bond1", Members: []string{"ibiz0p1", "biz3"}})
		}, []string{"ibiz0p1 is used twice: by bond ibiz0 and by bond bond1"}},
		{"port in a bond and a bridge", func(d *Desired) { d.Bridges[1].Ports = append(d.Bridges[1].Ports, "ibiz0p0") }, []string{"ibiz0p0 is used twice: by bond ibiz0 and by bridge shnet2"}},
		{"port twice in one bond", func(d *Desired) { d.Bonds[0].Members = append(d.Bonds[0].Members, "ibiz0p0") }, []string{"ibiz0p0 is used twice: by bond ibiz0 and by bond ibiz0"}},
		{"port in two bridges", func(d *Desired) { d.Bridges[1].Ports = append(d.Bridges[1].Ports, "biz1") }, []string{"biz1 is used twice: by bridge shnet1 and by bridge shnet2"}},
		{"link listed twice", func(d *Desired) { d.Links = append(d.Links, LinkSpec{Name: "priv0"}) }, []string{"link priv0 is listed twice"}},
		{"MTU of a bond member", func(d *Desired) { d.Links = append(d.Links, LinkSpec{Name: "ibiz0p0", MTU: 1500}) }, []string{"link ibiz0p0: its MTU is set by bond ibiz0"}},
		{"address on an enslaved port", func(d *Desired) {
			d.Addrs = append(d.Addrs, AddrSpec{Link: "biz1", Prefix: netip.MustParsePrefix("10.7.0.1/24")})
		}, []string{"address 10.7.0.1/24 on biz1, which is enslaved to bridge shnet1: put it on shnet1 instead"}},
		{"same address on two links", func(d *Desired) {
			d.Addrs = append(d.Addrs, AddrSpec{Link: "shnet2", Prefix: netip.MustParsePrefix("10.1.0.1/16")})
		}, []string{"duplicate address 10.1.0.1: given on shnet1 and on shnet2"}},
		{"same address twice on a link", func(d *Desired) { d.Addrs = append(d.Addrs, d.Addrs[0]) }, []string{"duplicate address 10.99.0.1: given on ibiz0 and on ibiz0"}},
		{"invalid address", func(d *Desired) { d.Addrs[0].Prefix = netip.MustParsePrefix("224.0.0.1/24") }, []string{"address on ibiz0: 224.0.0.1/24 cannot be an interface address"}},
		{"missing address", func(d *Desired) { d.Addrs[0].Prefix = netip.Prefix{} }, []string{"address on ibiz0: invalid address"}},
		{"bad mode", func(d *Desired) { d.Bonds[0].Mode = "balance-rr" }, []string{`bond ibiz0: mode "balance-rr", want active-backup or 802.3ad`}},
		{"negative miimon", func(d *Desired) { d.Bonds[0].MiimonMS = -1 }, []string{"bond ibiz0: link monitoring interval -1 ms is negative"}},
		{"MTU too small", func(d *Desired) { d.Links[0].MTU = 67 }, []string{"link priv0: MTU 67 out of range 68..9000"}},
		{"MTU too large", func(d *Desired) { d.Bridges[0].MTU = 9001 }, []string{"bridge shnet1: MTU 9001 out of range"}},
		{"bond MTU", func(d *Desired) { d.Bonds[0].MTU = 20 }, []string{"bond ibiz0: MTU 20 out of range"}},
		{"gateway on no subnet", func(d *Desired) { d.Routes[0].Gateway = netip.MustParseAddr("192.0.2.1") }, []string{"route default via 192.0.2.1: gateway 192.0.2.1 is not on any subnet of the configured addresses"}},
		{"gateway on another link's subnet", func(d *Desired) { d.Routes[1].Link = "ibiz0" }, []string{"route 10.50.0.0/16 via 10.1.0.254 dev ibiz0: gateway 10.1.0.254 is not on a subnet configured on ibiz0"}},
		{"gateway is our address", func(d *Desired) { d.Routes[0].Gateway = netip.MustParseAddr("10.99.0.1") }, []string{"the gateway is this PM's own address on ibiz0"}},
		{"gateway of the other family", func(d *Desired) { d.Routes[3].Gateway = netip.MustParseAddr("10.99.0.254") }, []string{"gateway and destination are of different address families"}},
		{"route without gateway or link", func(d *Desired) { d.Routes[2].Link = "" }, []string{"route 10.60.0.0/16: needs a gateway or a link"}},
		{"route destination not a network", func(d *Desired) { d.Routes[1].Dst = netip.MustParsePrefix("10.50.0.1/16") }, []string{"destination 10.50.0.1/16 is not a network address (want 10.50.0.0/16)"}},
		{"route given twice", func(d *Desired) { d.Routes = append(d.Routes, d.Routes[0]) }, []string{"a route to 0.0.0.0/0 is given twice"}},
		{"route without destination", func(d *Desired) { d.Routes[0].Dst = netip.Prefix{} }, []string{"invalid destination"}},
		{"route via an enslaved port", func(d *Desired) { d.Routes[2].Link = "biz2" }, []string{"which is enslaved to bridge shnet2"}},
		{"bond name of a port", func(d *Desired) { d.Bridges[1].Name = "biz3" }, []string{"bridge biz3: a port already has that name"}},
		{"bond and bridge of one name", func(d *Desired) { d.Bridges[1].Name = "ibiz0" }, []string{"bridge ibiz0: the name is also given to a bond"}},
		{"name too long", func(d *Desired) { d.Bridges[1].Name = "shnet12345678901" }, []string{`bridge shnet12345678901: link name "shnet12345678901" is longer than 15 bytes`}},
		{"name with a bad character", func(d *Desired) { d.Bridges[1].Name = "sh*net" }, []string{`bridge sh*net: name "sh*net" may only hold letters, digits`}},
		{"name the kernel refuses", func(d *Desired) { d.Bonds[0].Name = "a/b" }, []string{`bond a/b: link name "a/b" contains '/', ':' or white space`}},
		{"empty port name", func(d *Desired) { d.Bridges[0].Ports[0] = "" }, []string{"bridge shnet1: port empty link name"}},
		{"bad name server", func(d *Desired) { d.DNS = append(d.DNS, netip.IPv4Unspecified()) }, []string{`name server "0.0.0.0" is not a unicast address`}},
		{"name server twice", func(d *Desired) { d.DNS = append(d.DNS, d.DNS[0]) }, []string{"name server 10.99.0.254 is listed twice"}},
		{"too many name servers", func(d *Desired) {
			d.DNS = []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4")}
		}, []string{"4 name servers, at most 3 allowed"}},
		{"bad search domain", func(d *Desired) { d.Search = append(d.Search, "bad domain") }, []string{`search domain "bad domain": label "bad domain"`}},
		{"search domain twice", func(d *Desired) { d.Search = append(d.Search, "LAB.example") }, []string{"search domain LAB.example is listed twice"}},
		{"every problem reported", func(d *Desired) {
			d.Bonds[0].Members = d.Bonds[0].Members[:1]
			d.Links[0].Name = "eth7"
			d.Addrs = append(d.Addrs, d.Addrs[0])
		}, []string{"bond ibiz0 has 1 member", "link eth7: unknown port", "duplicate address 10.99.0.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := validDesired()
			tt.change(&d)
			err := d.Validate(validationPorts())
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %+v", d)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate error:\n%v\nwant it to contain %q", err, w)
				}
			}
			if !strings.HasPrefix(err.Error(), "invalid network configuration: ") {
				t.Errorf("Validate error %q does not say it is the configuration", err)
			}
		})
	}
}

func TestValidateLeavesDesiredAlone(t *testing.T) {
	d := Desired{Bonds: []BondSpec{{Name: "ibiz0", Members: []string{"ibiz0p0", "ibiz0p1"}}}}
	if err := d.Validate(validationPorts()); err != nil {
		t.Fatal(err)
	}
	if d.Bonds[0].Mode != "" || d.Bonds[0].MiimonMS != 0 {
		t.Fatalf("Validate filled defaults into the caller's Desired: %+v", d.Bonds[0])
	}
}

func TestDesiredJSON(t *testing.T) {
	d := validDesired()
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"links"`, `"bonds"`, `"members"`, `"bridges"`, `"ports"`, `"addrs"`, `"prefix":"10.99.0.1/24"`,
		`"routes"`, `"dst":"0.0.0.0/0"`, `"gateway":"10.99.0.254"`, `"dns":["10.99.0.254"]`, `"search"`, `"mtu":9000`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON %s lacks %s", b, key)
		}
	}
	if strings.Contains(string(b), `"gateway":""`) {
		t.Errorf("JSON %s holds an empty gateway of a route without one", b)
	}
	var back Desired
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	b2, err := json.Marshal(back)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(b2) {
		t.Fatalf("JSON round trip:\n%s\n%s", b, b2)
	}
}

func FuzzDesired(f *testing.F) {
	b, err := json.Marshal(validDesired())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"bonds":[{"name":"ibiz0","members":["ibiz0p0"],"mode":"x","miimon_ms":-5,"mtu":1}]}`))
	f.Add([]byte(`{"routes":[{"dst":"10.0.0.1/8","gateway":"::ffff:10.0.0.1","link":"a/b"}],"addrs":[{"link":"priv0","prefix":"::ffff:10.0.0.2/104"}]}`))
	f.Add([]byte(`{"bridges":[{"name":"shnet1","ports":["shnet1","biz1","biz1"]}],"search":["..",""],"dns":["fe80::1%eth0"]}`))
	ports := validationPorts()
	f.Fuzz(func(t *testing.T, data []byte) {
		var d Desired
		if err := json.Unmarshal(data, &d); err != nil {
			return
		}
		err := d.Validate(ports)
		if err != nil {
			return
		}
		// A valid configuration survives being stored and read back.
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("marshal valid %+v: %v", d, err)
		}
		var back Desired
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("unmarshal %s: %v", b, err)
		}
		if err := back.Validate(ports); err != nil {
			t.Fatalf("%s was valid before the round trip: %v", b, err)
		}
	})
}
