package network

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/dyad-ha/dyad/services/network/ndp"
	"github.com/dyad-ha/dyad/services/network/netnstest"
)

// vethPair creates veth name/peer in ns, both up, and returns their
// netlink descriptions.
func upVethPair(t *testing.T, ns *netnstest.NS, name, peer string) (rtnetlink.LinkMessage, rtnetlink.LinkMessage) {
	t.Helper()
	ns.AddVeth(t, name, peer)
	// Up one end at a time: upping both back to back made TestAnnounce
	// lose an advertisement under load (about 1 run in 5).
	a := ns.Link(t, name)
	ns.SetUp(t, name)
	b := ns.Link(t, peer)
	ns.SetUp(t, peer)
	return a, b
}

// TestAnnounce announces an address on one end of a veth pair and checks
// both what goes over the wire (captured and decoded on the other end) and
// that the receiving Linux kernel accepts it: its stale neighbour entry for
// the address must switch to the announcing MAC, which it only does for a
// well-formed advertisement with a correct checksum, hop limit 255 and the
// Override flag.
func TestAnnounceIPv6(t *testing.T) {
	ns := netnstest.New(t)
	c := ns.Conn()
	m := newManager(t, Options{NetNS: ns.FD()})
	ann, capt := upVethPair(t, ns, "ann0", "cap0")
	mac := ann.Attributes.Address
	addr := netip.MustParseAddr("2001:db8::10")

	stale := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	err := c.Neigh.New(&rtnetlink.NeighMessage{
		Family: unix.AF_INET6, Index: capt.Index, State: unix.NUD_STALE,
		Attributes: &rtnetlink.NeighAttributes{Address: addr.AsSlice(), LLAddress: stale},
	})
	if err != nil {
		t.Fatalf("add stale neighbour entry on cap0: %v", err)
	}

	var capture *packet.Conn
	err = ns.Do(func() error {
		ifi, err := net.InterfaceByName("cap0")
		if err != nil {
			return err
		}
		capture, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_IPV6, nil)
		return err
	})
	if err != nil {
		t.Fatalf("capture on cap0: %v", err)
	}
	t.Cleanup(func() { capture.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	const count = 2
	announced := make(chan error, 1)
	go func() {
		announced <- m.AnnounceIPv6(ctx, "ann0", addr, count)
	}()

	deadline, _ := ctx.Deadline()
	if err := capture.SetReadDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	want := ndp.Announcement(mac, addr)
	buf := make([]byte, 1500)
	for got := 0; got < count; {
		n, _, err := capture.ReadFrom(buf)
		if err != nil {
			t.Fatalf("captured %d of %d advertisements: %v", got, count, err)
		}
		a, err := ndp.Parse(buf[:n])
		if err != nil || a.Target != addr {
			continue // the kernel's own IPv6 traffic (MLD, DAD, router solicitations)
		}
		if !a.Unsolicited() || a.Router || !bytes.Equal(a.EthSrc, mac) || !bytes.Equal(a.TargetLinkAddr, mac) ||
			!bytes.Equal(a.EthDst, want.EthDst) || a.Src != addr {
			t.Fatalf("captured advertisement %+v, want %+v", a, want)
		}
		got++
	}
	if err := <-announced; err != nil {
		t.Fatalf("AnnounceIPv6: %v", err)
	}

	var lladdr net.HardwareAddr
	for lladdr.String() != mac.String() {
		neighs, err := c.Neigh.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range neighs {
			if n.Index == capt.Index && n.Attributes != nil && addr.Compare(netip.AddrFrom16([16]byte(n.Attributes.Address.To16()))) == 0 {
				lladdr = n.Attributes.LLAddress
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("cap0's neighbour entry for %s is %v, want the announced %v", addr, lladdr, mac)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestAnnounceIPv6Rejects(t *testing.T) {
	ns := netnstest.New(t)
	c := ns.Conn()
	m := newManager(t, Options{NetNS: ns.FD()})
	upVethPair(t, ns, "ann0", "cap0")
	// A link that is up but whose peer is down never gets carrier.
	if err := c.Link.Set(&rtnetlink.LinkMessage{Index: ns.Link(t, "cap0").Index, Flags: 0, Change: unix.IFF_UP}); err != nil {
		t.Fatal(err)
	}
	// The kernel updates ann0's operational state asynchronously: wait until
	// it no longer counts as running, or "no carrier" below races with it.
	deadline := time.Now().Add(5 * time.Second)
	for st := ns.Link(t, "ann0").Attributes.OperationalState; st == rtnetlink.OperStateUp || st == rtnetlink.OperStateUnknown; st = ns.Link(t, "ann0").Attributes.OperationalState {
		if time.Now().After(deadline) {
			t.Fatalf("ann0 operational state %d with its peer down, want not up", st)
		}
		time.Sleep(10 * time.Millisecond) // polling observable state
	}

	tests := []struct {
		name    string
		ifname  string
		addr    string
		count   int
		wantErr string
	}{
		{"IPv4 address", "ann0", "10.0.0.1", 1, "not an IPv6 unicast address"},
		{"multicast address", "ann0", "ff02::1", 1, "not an IPv6 unicast address"},
		{"zero count", "ann0", "2001:db8::1", 0, "count 0"},
		{"unknown link", "nosuch0", "2001:db8::1", 1, "nosuch0"},
		{"no carrier", "ann0", "2001:db8::1", 1, "cannot transmit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			err := m.AnnounceIPv6(ctx, tt.ifname, netip.MustParseAddr(tt.addr), tt.count)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("AnnounceIPv6 = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}
