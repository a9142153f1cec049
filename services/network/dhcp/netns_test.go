package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/mdlayher/netlink"
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

func dial(t *testing.T, ns int) *rtnetlink.Conn {
	t.Helper()
	c, err := rtnetlink.Dial(&netlink.Config{NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func link(t *testing.T, c *rtnetlink.Conn, name string) rtnetlink.LinkMessage {
	t.Helper()
	links, err := c.Link.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attributes != nil && l.Attributes.Name == name {
			return l
		}
	}
	t.Fatalf("no link %s", name)
	return rtnetlink.LinkMessage{}
}

func setUp(t *testing.T, c *rtnetlink.Conn, name string) {
	t.Helper()
	l := link(t, c, name)
	if err := c.Link.Set(&rtnetlink.LinkMessage{Family: l.Family, Type: l.Type, Index: l.Index, Flags: unix.IFF_UP, Change: unix.IFF_UP}); err != nil {
		t.Fatalf("set %s up: %v", name, err)
	}
}

func addAddr(t *testing.T, c *rtnetlink.Conn, name string, p netip.Prefix) {
	t.Helper()
	l := link(t, c, name)
	err := c.Address.New(&rtnetlink.AddressMessage{
		Family: unix.AF_INET, PrefixLength: uint8(p.Bits()), Index: l.Index,
		Attributes: &rtnetlink.AddressAttributes{Address: p.Addr().AsSlice(), Local: p.Addr().AsSlice()},
	})
	if err != nil {
		t.Fatalf("add %s to %s: %v", p, name, err)
	}
}

// waitOperUp polls until link name reports operational state up, so the
// first message a test sends is not dropped by a link still coming up.
func waitOperUp(t *testing.T, c *rtnetlink.Conn, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l := link(t, c, name)
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
	server int
	pms    []int
}

func newLab(t *testing.T, macs ...net.HardwareAddr) lab {
	t.Helper()
	l := lab{server: newNetNS(t)}
	sc := dial(t, l.server)
	if err := sc.Link.New(&rtnetlink.LinkMessage{
		Attributes: &rtnetlink.LinkAttributes{Name: "lan0", Info: &rtnetlink.LinkInfo{Kind: "bridge"}},
	}); err != nil {
		t.Fatalf("create bridge lan0: %v", err)
	}
	addAddr(t, sc, "lan0", netip.MustParsePrefix("10.77.0.1/24"))
	setUp(t, sc, "lan0")
	br := link(t, sc, "lan0").Index
	for i, mac := range macs {
		ns := newNetNS(t)
		port := fmt.Sprintf("pm%d-lan", i+1)
		err := sc.Link.New(&rtnetlink.LinkMessage{
			Attributes: &rtnetlink.LinkAttributes{
				Name:   port,
				Master: &br,
				Info: &rtnetlink.LinkInfo{Kind: "veth", Data: &driver.Veth{PeerInfo: &rtnetlink.LinkMessage{
					Attributes: &rtnetlink.LinkAttributes{Name: "ibiz0", Address: mac, NetNS: rtnetlink.NetNSForFD(uint32(ns))},
				}}},
			},
		})
		if err != nil {
			t.Fatalf("create veth %s with peer ibiz0 in the PM namespace: %v", port, err)
		}
		setUp(t, sc, port)
		pc := dial(t, ns)
		setUp(t, pc, "ibiz0")
		waitOperUp(t, pc, "ibiz0")
		l.pms = append(l.pms, ns)
	}
	waitOperUp(t, sc, "lan0")
	return l
}

// run calls fn with a deadline on a thread inside ns.
func run[T any](t *testing.T, ns int, fn func(ctx context.Context) (T, error)) (T, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return inNS(ns, func() (T, error) { return fn(ctx) })
}
