package ndp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// newNetNS creates a network namespace for one test and returns its file
// descriptor; closing it (at cleanup) destroys the namespace and every link
// in it. Only throwaway locked threads ever enter it.
func newNetNS(t *testing.T) int {
	t.Helper()
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- result{-1, fmt.Errorf("unshare network namespace: %w", err)}
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		done <- result{fd, err}
	}()
	r := <-done
	if errors.Is(r.err, unix.EPERM) {
		t.Skipf("creating a network namespace needs CAP_SYS_ADMIN: %v", r.err)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { unix.Close(r.fd) })
	return r.fd
}

// inNS runs fn on a locked OS thread that has entered ns; the thread is
// discarded afterwards so no other goroutine ever runs in ns.
func inNS[T any](ns int, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
			var zero T
			done <- result{zero, fmt.Errorf("enter network namespace: %w", err)}
			return
		}
		v, err := fn()
		done <- result{v, err}
	}()
	r := <-done
	return r.v, r.err
}

// vethPair creates veth name/peer in ns, both up, and returns their
// netlink descriptions.
func vethPair(t *testing.T, c *rtnetlink.Conn, name, peer string) (rtnetlink.LinkMessage, rtnetlink.LinkMessage) {
	t.Helper()
	err := c.Link.New(&rtnetlink.LinkMessage{
		Attributes: &rtnetlink.LinkAttributes{
			Name: name,
			Info: &rtnetlink.LinkInfo{Kind: "veth", Data: &driver.Veth{PeerInfo: &rtnetlink.LinkMessage{
				Attributes: &rtnetlink.LinkAttributes{Name: peer},
			}}},
		},
	})
	if err != nil {
		t.Fatalf("create veth %s/%s: %v", name, peer, err)
	}
	var links []rtnetlink.LinkMessage
	for _, n := range []string{name, peer} {
		l, err := c.Link.Get(linkIndex(t, c, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Link.Set(&rtnetlink.LinkMessage{Family: l.Family, Type: l.Type, Index: l.Index, Flags: unix.IFF_UP, Change: unix.IFF_UP}); err != nil {
			t.Fatalf("set %s up: %v", n, err)
		}
		links = append(links, l)
	}
	return links[0], links[1]
}

func linkIndex(t *testing.T, c *rtnetlink.Conn, name string) uint32 {
	t.Helper()
	links, err := c.Link.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attributes != nil && l.Attributes.Name == name {
			return l.Index
		}
	}
	t.Fatalf("no link %s", name)
	return 0
}

// TestAnnounce announces an address on one end of a veth pair and checks
// both what goes over the wire (captured and decoded on the other end) and
// that the receiving Linux kernel accepts it: its stale neighbour entry for
// the address must switch to the announcing MAC, which it only does for a
// well-formed advertisement with a correct checksum, hop limit 255 and the
// Override flag.
func TestAnnounce(t *testing.T) {
	ns := newNetNS(t)
	c, err := rtnetlink.Dial(&netlink.Config{NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ann, capt := vethPair(t, c, "ann0", "cap0")
	mac := ann.Attributes.Address
	addr := netip.MustParseAddr("2001:db8::10")

	stale := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	err = c.Neigh.New(&rtnetlink.NeighMessage{
		Family: unix.AF_INET6, Index: capt.Index, State: unix.NUD_STALE,
		Attributes: &rtnetlink.NeighAttributes{Address: addr.AsSlice(), LLAddress: stale},
	})
	if err != nil {
		t.Fatalf("add stale neighbour entry on cap0: %v", err)
	}

	capture, err := inNS(ns, func() (*packet.Conn, error) {
		ifi, err := net.InterfaceByName("cap0")
		if err != nil {
			return nil, err
		}
		return packet.Listen(ifi, packet.Raw, unix.ETH_P_IPV6, nil)
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
		_, err := inNS(ns, func() (struct{}, error) { return struct{}{}, Announce(ctx, "ann0", addr, count) })
		announced <- err
	}()

	deadline, _ := ctx.Deadline()
	if err := capture.SetReadDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	want := Announcement(mac, addr)
	buf := make([]byte, 1500)
	for got := 0; got < count; {
		n, _, err := capture.ReadFrom(buf)
		if err != nil {
			t.Fatalf("captured %d of %d advertisements: %v", got, count, err)
		}
		a, err := Parse(buf[:n])
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
		t.Fatalf("Announce: %v", err)
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

func TestAnnounceRejects(t *testing.T) {
	ns := newNetNS(t)
	c, err := rtnetlink.Dial(&netlink.Config{NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	vethPair(t, c, "ann0", "cap0")
	// A link that is up but whose peer is down never gets carrier.
	if err := c.Link.Set(&rtnetlink.LinkMessage{Index: linkIndex(t, c, "cap0"), Flags: 0, Change: unix.IFF_UP}); err != nil {
		t.Fatal(err)
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
			_, err := inNS(ns, func() (struct{}, error) {
				return struct{}{}, Announce(ctx, tt.ifname, netip.MustParseAddr(tt.addr), tt.count)
			})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Announce = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}
