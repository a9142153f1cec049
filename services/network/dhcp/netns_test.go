package dhcp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"golang.org/x/sys/unix"

	"github.com/dyad-ha/dyad/services/network/netnstest"
)

func addAddr(t *testing.T, ns *netnstest.NS, name string, p netip.Prefix) {
	t.Helper()
	l := ns.Link(t, name)
	err := ns.Conn().Address.New(&rtnetlink.AddressMessage{
		Family: unix.AF_INET, PrefixLength: uint8(p.Bits()), Index: l.Index,
		Attributes: &rtnetlink.AddressAttributes{Address: p.Addr().AsSlice(), Local: p.Addr().AsSlice()},
	})
	if err != nil {
		t.Fatalf("add %s to %s: %v", p, name, err)
	}
}

// waitOperUp polls until link name reports operational state up, so the
// first message a test sends is not dropped by a link still coming up.
func waitOperUp(t *testing.T, ns *netnstest.NS, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l := ns.Link(t, name)
		if l.Attributes.OperationalState == rtnetlink.OperStateUp {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("link %s operational state %d, want up", name, l.Attributes.OperationalState)
		}
		time.Sleep(20 * time.Millisecond) // polling observable state
	}
}

// lab is the segment of the tests: a namespace with a bridge "lan0"
// (10.77.0.1/24, the DHCP server's side) and one namespace per PM, each
// with a link named ibiz0 plugged into the bridge and the given MAC.
type lab struct {
	server *netnstest.NS
	pms    []*netnstest.NS
}

func newLab(t *testing.T, macs ...net.HardwareAddr) lab {
	t.Helper()
	l := lab{server: netnstest.New(t)}
	l.server.AddBridge(t, "lan0")
	addAddr(t, l.server, "lan0", netip.MustParsePrefix("10.77.0.1/24"))
	l.server.SetUp(t, "lan0")
	br := l.server.Link(t, "lan0").Index
	for i, mac := range macs {
		ns := netnstest.New(t)
		port := fmt.Sprintf("pm%d-lan", i+1)
		err := l.server.Conn().Link.New(&rtnetlink.LinkMessage{
			Attributes: &rtnetlink.LinkAttributes{
				Name:   port,
				Master: &br,
				Info: &rtnetlink.LinkInfo{Kind: "veth", Data: &driver.Veth{PeerInfo: &rtnetlink.LinkMessage{
					Attributes: &rtnetlink.LinkAttributes{Name: "ibiz0", Address: mac, NetNS: rtnetlink.NetNSForFD(uint32(ns.FD()))},
				}}},
			},
		})
		if err != nil {
			t.Fatalf("create veth %s with peer ibiz0 in the PM namespace: %v", port, err)
		}
		l.server.SetUp(t, port)
		ns.SetUp(t, "ibiz0")
		waitOperUp(t, ns, "ibiz0")
		l.pms = append(l.pms, ns)
	}
	waitOperUp(t, l.server, "lan0")
	return l
}

// run calls fn with a deadline on a thread inside ns.
func run[T any](t *testing.T, ns *netnstest.NS, fn func(ctx context.Context) (T, error)) (T, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var v T
	err := ns.Do(func() (err error) {
		v, err = fn(ctx)
		return err
	})
	return v, err
}
