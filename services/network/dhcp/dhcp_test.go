package dhcp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// Addresses of the test segment.
var (
	serverIP   = netip.MustParseAddr("10.77.0.1")
	firstLease = netip.MustParseAddr("10.77.0.100")
	testDNS    = []netip.Addr{netip.MustParseAddr("10.77.0.53"), netip.MustParseAddr("10.77.0.54")}
)

const leaseTime = 10 * time.Minute

// pool is a minimal DHCP server keyed, as RFC 2131 §4.2 asks, by client
// identifier: the same identifier gets the same address whatever chaddr.
type pool struct {
	mu        sync.Mutex
	next      netip.Addr
	bound     map[string]netip.Addr
	chaddrs   map[string][]string // per client identifier, the chaddrs seen
	hostnames map[string]string
	renewals  int
}

func newPool() *pool {
	return &pool{next: firstLease, bound: map[string]netip.Addr{}, chaddrs: map[string][]string{}, hostnames: map[string]string{}}
}

func (p *pool) handle(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
	id := string(m.Options.Get(dhcpv4.OptionClientIdentifier))
	if id == "" {
		return // this server only serves clients that identify themselves
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if mac := m.ClientHWAddr.String(); !slices.Contains(p.chaddrs[id], mac) {
		p.chaddrs[id] = append(p.chaddrs[id], mac)
	}
	if h := m.HostName(); h != "" {
		p.hostnames[id] = h
	}
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		addr, ok := p.bound[id]
		if !ok {
			addr = p.next
			p.next = p.next.Next()
			p.bound[id] = addr
		}
		p.reply(conn, peer, m, dhcpv4.MessageTypeOffer, addr)
	case dhcpv4.MessageTypeRequest:
		want := m.RequestedIPAddress()
		renewing := want == nil
		if renewing {
			want = m.ClientIPAddr
		}
		addr, ok := p.bound[id]
		if !ok || !net.IP(addr.AsSlice()).Equal(want) {
			p.reply(conn, peer, m, dhcpv4.MessageTypeNak, netip.Addr{})
			return
		}
		if renewing {
			p.renewals++
		}
		p.reply(conn, peer, m, dhcpv4.MessageTypeAck, addr)
	case dhcpv4.MessageTypeRelease:
		if addr, ok := p.bound[id]; ok && net.IP(addr.AsSlice()).Equal(m.ClientIPAddr) {
			delete(p.bound, id)
		}
	}
}

// reply answers m as RFC 2131 §4.1 says: to ciaddr when the client has
// one, otherwise (and always for a NAK) broadcast.
func (p *pool) reply(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4, t dhcpv4.MessageType, addr netip.Addr) {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(t),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP.AsSlice())),
	}
	if t != dhcpv4.MessageTypeNak {
		mods = append(mods,
			dhcpv4.WithYourIP(addr.AsSlice()),
			dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(24, 32))),
			dhcpv4.WithOption(dhcpv4.OptRouter(serverIP.AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptDNS(testDNS[0].AsSlice(), testDNS[1].AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(leaseTime)),
		)
	}
	resp, err := dhcpv4.NewReplyFromRequest(m, mods...)
	if err != nil {
		panic(err) // only fails when out of randomness
	}
	if t != dhcpv4.MessageTypeNak && !m.ClientIPAddr.IsUnspecified() {
		peer = &net.UDPAddr{IP: m.ClientIPAddr, Port: dhcpv4.ClientPort}
	}
	conn.WriteTo(resp.ToBytes(), peer) // a lost reply is retransmitted by the client
}

func (p *pool) binding(id []byte) (netip.Addr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.bound[string(id)]
	return a, ok
}

// serve runs a DHCP server for the pool on lan0 of the lab's server
// namespace until the test ends.
func serve(t *testing.T, l lab, p *pool) {
	t.Helper()
	var srv *server4.Server
	err := l.server.Do(func() (err error) {
		srv, err = server4.NewServer("lan0", nil, p.handle)
		return err
	})
	if err != nil {
		t.Fatalf("start DHCP server: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve() // returns when closed
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

var (
	pm1MAC = net.HardwareAddr{0x52, 0x54, 0x00, 0xd7, 0x01, 0x02}
	pm2MAC = net.HardwareAddr{0x52, 0x54, 0x00, 0xd7, 0x02, 0x02}
	unitID = append([]byte{0}, "unit-lab"...)
)

func TestLeaseFollowsClientID(t *testing.T) {
	l := newLab(t, pm1MAC, pm2MAC)
	p := newPool()
	serve(t, l, p)

	before := time.Now()
	l1, err := run(t, l.pms[0], func(ctx context.Context) (Lease, error) {
		return Acquire(ctx, "ibiz0", unitID, "pm1")
	})
	if err != nil {
		t.Fatalf("Acquire on PM1: %v", err)
	}
	want := Lease{Addr: netip.PrefixFrom(firstLease, 24), Router: serverIP, DNS: testDNS, Server: serverIP}
	got := l1
	got.Expiry = time.Time{}
	if !equalLease(got, want) {
		t.Fatalf("Acquire on PM1 = %+v, want %+v", l1, want)
	}
	if l1.Expiry.Before(before.Add(leaseTime)) || l1.Expiry.After(time.Now().Add(leaseTime)) {
		t.Fatalf("lease expiry %v is not %v after the request (sent after %v)", l1.Expiry, leaseTime, before)
	}
	p.mu.Lock()
	hostname := p.hostnames[string(unitID)]
	p.mu.Unlock()
	if hostname != "pm1" {
		t.Fatalf("server saw hostname %q, want pm1", hostname)
	}

	// The other PM, with its own MAC address, takes over the unit's lease.
	l2, err := run(t, l.pms[1], func(ctx context.Context) (Lease, error) {
		return Acquire(ctx, "ibiz0", unitID, "pm2")
	})
	if err != nil {
		t.Fatalf("Acquire on PM2: %v", err)
	}
	if l2.Addr != l1.Addr {
		t.Fatalf("PM2 got %s for the unit's client identifier, PM1 got %s", l2.Addr, l1.Addr)
	}
	p.mu.Lock()
	chaddrs := slices.Clone(p.chaddrs[string(unitID)])
	p.mu.Unlock()
	if !slices.Equal(chaddrs, []string{pm1MAC.String(), pm2MAC.String()}) {
		t.Fatalf("server saw chaddrs %v for the unit, want each PM's own MAC address", chaddrs)
	}

	// Another identifier from the same PM gets another address, so the
	// pool does tell clients apart.
	other, err := run(t, l.pms[1], func(ctx context.Context) (Lease, error) {
		return Acquire(ctx, "ibiz0", []byte("\x00other-unit"), "")
	})
	if err != nil {
		t.Fatalf("Acquire for another client identifier: %v", err)
	}
	if other.Addr == l1.Addr {
		t.Fatalf("another client identifier got the unit's address %s too", other.Addr)
	}
}

func TestRenewRelease(t *testing.T) {
	l := newLab(t, pm1MAC)
	p := newPool()
	serve(t, l, p)
	pm := l.pms[0]

	lease, err := run(t, pm, func(ctx context.Context) (Lease, error) {
		return Acquire(ctx, "ibiz0", unitID, "pm1")
	})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	// The holder has the address configured; the server's renewal ACK is
	// unicast to it.
	addAddr(t, pm, "ibiz0", lease.Addr)

	renewed, err := run(t, pm, func(ctx context.Context) (Lease, error) {
		return Renew(ctx, "ibiz0", lease, unitID)
	})
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if renewed.Addr != lease.Addr || renewed.Server != lease.Server || !renewed.Expiry.After(lease.Expiry) {
		t.Fatalf("Renew = %+v, want the same address with a later expiry than %+v", renewed, lease)
	}
	p.mu.Lock()
	renewals := p.renewals
	p.mu.Unlock()
	if renewals != 1 {
		t.Fatalf("server acknowledged %d renewals (ciaddr set, no requested address), want 1", renewals)
	}

	unknown := lease
	unknown.Addr = netip.MustParsePrefix("10.77.0.200/24")
	_, err = run(t, pm, func(ctx context.Context) (Lease, error) {
		return Renew(ctx, "ibiz0", unknown, unitID)
	})
	if err == nil || !strings.Contains(err.Error(), "is not configured on ibiz0") {
		t.Fatalf("Renew of an address not on the link = %v, want an error saying so", err)
	}
	addAddr(t, pm, "ibiz0", unknown.Addr)
	_, err = run(t, pm, func(ctx context.Context) (Lease, error) {
		return Renew(ctx, "ibiz0", unknown, unitID)
	})
	if !errors.Is(err, ErrNAK) {
		t.Fatalf("Renew of an address the server never leased = %v, want ErrNAK", err)
	}

	if _, err := run(t, pm, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, Release(ctx, "ibiz0", renewed, unitID)
	}); err != nil {
		t.Fatalf("Release: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, bound := p.binding(unitID); !bound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("server still holds the unit's binding after Release")
		}
		time.Sleep(20 * time.Millisecond) // polling observable state
	}
}

func TestAcquireNoServer(t *testing.T) {
	l := newLab(t, pm1MAC)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err := l.pms[0].Do(func() error {
		_, err := Acquire(ctx, "ibiz0", unitID, "pm1")
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire without a server = %v, want the context's deadline error", err)
	}
}

func TestArgumentsRejected(t *testing.T) {
	ctx := context.Background()
	good := Lease{Addr: netip.MustParsePrefix("10.77.0.100/24"), Server: serverIP}
	tests := []struct {
		name    string
		call    func() error
		wantErr string
	}{
		{"acquire with empty client id", func() error { _, err := Acquire(ctx, "lo", nil, ""); return err }, "client identifier of 0 bytes"},
		{"acquire with 1-byte client id", func() error { _, err := Acquire(ctx, "lo", []byte{0}, ""); return err }, "client identifier of 1 bytes"},
		{"renew without address", func() error { _, err := Renew(ctx, "lo", Lease{Server: serverIP}, unitID); return err }, "not IPv4"},
		{"renew without server", func() error {
			_, err := Renew(ctx, "lo", Lease{Addr: good.Addr}, unitID)
			return err
		}, "no IPv4 server identifier"},
		{"release with IPv6 lease", func() error {
			return Release(ctx, "lo", Lease{Addr: netip.MustParsePrefix("2001:db8::1/64"), Server: serverIP}, unitID)
		}, "not IPv4"},
		{"release with long client id", func() error { return Release(ctx, "lo", good, make([]byte, 256)) }, "client identifier of 256 bytes"},
		{"unknown link", func() error { _, err := Acquire(ctx, "nosuch0", unitID, ""); return err }, "nosuch0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestLeaseFrom(t *testing.T) {
	sent := time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC)
	ack := func(mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		m, err := dhcpv4.New(append([]dhcpv4.Modifier{
			dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
			dhcpv4.WithYourIP(net.IPv4(10, 77, 0, 100)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 77, 0, 1))),
			dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(23, 32))),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(time.Hour)),
		}, mods...)...)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	base := Lease{Addr: netip.MustParsePrefix("10.77.0.100/23"), Server: serverIP, Expiry: sent.Add(time.Hour)}
	tests := []struct {
		name    string
		ack     *dhcpv4.DHCPv4
		want    Lease
		wantErr string
	}{
		{name: "minimal", ack: ack(), want: base},
		{name: "routers and DNS", ack: ack(
			dhcpv4.WithOption(dhcpv4.OptRouter(net.IPv4(10, 77, 0, 2), net.IPv4(10, 77, 0, 3))),
			dhcpv4.WithOption(dhcpv4.OptDNS(net.IPv4(9, 9, 9, 9))),
		), want: func() Lease {
			l := base
			l.Router = netip.MustParseAddr("10.77.0.2")
			l.DNS = []netip.Addr{netip.MustParseAddr("9.9.9.9")}
			return l
		}()},
		{name: "infinite lease", ack: ack(dhcpv4.WithOption(dhcpv4.Option{
			Code: dhcpv4.OptionIPAddressLeaseTime, Value: dhcpv4.OptionGeneric{Data: []byte{0xff, 0xff, 0xff, 0xff}},
		})), want: func() Lease { l := base; l.Expiry = time.Time{}; return l }()},
		{name: "no address", ack: ack(dhcpv4.WithYourIP(net.IPv4zero)), wantErr: "assigns no address"},
		{name: "no subnet mask", ack: ack(func(m *dhcpv4.DHCPv4) { m.Options.Del(dhcpv4.OptionSubnetMask) }), wantErr: "no valid subnet mask"},
		{name: "non-contiguous mask", ack: ack(dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.IPv4Mask(255, 0, 255, 0)))), wantErr: "no valid subnet mask"},
		{name: "no server identifier", ack: ack(func(m *dhcpv4.DHCPv4) { m.Options.Del(dhcpv4.OptionServerIdentifier) }), wantErr: "no server identifier"},
		{name: "no lease time", ack: ack(func(m *dhcpv4.DHCPv4) { m.Options.Del(dhcpv4.OptionIPAddressLeaseTime) }), wantErr: "no lease time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Round-trip through the wire format: that is what the client parses.
			m, err := dhcpv4.FromBytes(tt.ack.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			got, err := leaseFrom(m, sent)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("leaseFrom = %+v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !equalLease(got, tt.want) {
				t.Fatalf("leaseFrom = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func equalLease(a, b Lease) bool {
	return a.Addr == b.Addr && a.Router == b.Router && slices.Equal(a.DNS, b.DNS) && a.Expiry.Equal(b.Expiry) && a.Server == b.Server
}

// FuzzLeaseFrom feeds leaseFrom whatever the library parses out of
// untrusted bytes from the network: it must not panic, and a lease it
// accepts must be usable.
func FuzzLeaseFrom(f *testing.F) {
	m, err := dhcpv4.New(
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.IPv4(10, 77, 0, 100)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 77, 0, 1))),
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(24, 32))),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(time.Hour)),
		dhcpv4.WithOption(dhcpv4.OptRouter(net.IPv4(10, 77, 0, 1))),
		dhcpv4.WithOption(dhcpv4.OptDNS(net.IPv4(10, 77, 0, 53))),
	)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(m.ToBytes())
	f.Add(m.ToBytes()[:240])
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		l, err := leaseFrom(m, time.Unix(0, 0))
		if err != nil {
			return
		}
		if !l.Addr.Addr().Is4() || l.Addr.Addr().IsUnspecified() || !l.Server.Is4() || l.Addr.Bits() < 0 {
			t.Fatalf("accepted unusable lease %+v", l)
		}
		if l.Router.IsValid() && !l.Router.Is4() {
			t.Fatalf("router %s is not IPv4", l.Router)
		}
	})
}
