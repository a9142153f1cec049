// Package netnstest gives tests a network namespace of their own to create
// links in, so they can exercise the real kernel without touching the
// host's network. It is meant for tests only, as net/http/httptest is.
package netnstest

import (
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// NS is a network namespace that lives as long as the test that created it.
// No goroutine of the test process runs in it except on threads that are
// discarded afterwards, so the rest of the test stays in the host namespace.
type NS struct {
	fd   int
	conn *rtnetlink.Conn
}

// New creates a network namespace, destroyed with every link in it when the
// test ends. It skips the test when the process lacks CAP_SYS_ADMIN.
func New(t testing.TB) *NS {
	t.Helper()
	fd, err := onDiscardedThread(func() (int, error) {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return -1, fmt.Errorf("unshare network namespace: %w", err)
		}
		return unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	})
	if errors.Is(err, unix.EPERM) {
		t.Skipf("creating a network namespace needs CAP_SYS_ADMIN: %v", err)
	}
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	// The namespace dies with its last reference: this descriptor, once
	// the netlink socket below is closed too.
	t.Cleanup(func() { unix.Close(fd) })
	c, err := rtnetlink.Dial(&netlink.Config{NetNS: fd})
	if err != nil {
		t.Fatalf("dial rtnetlink in the test namespace: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &NS{fd: fd, conn: c}
}

// FD is the namespace's file descriptor, for APIs that take one
// (setns(2), netlink.Config.NetNS, IFLA_NET_NS_FD).
func (ns *NS) FD() int { return ns.fd }

// Conn is an rtnetlink connection into the namespace, open until the test
// ends.
func (ns *NS) Conn() *rtnetlink.Conn { return ns.conn }

// Do runs fn on an OS thread inside the namespace and returns its error.
// Sockets fn opens stay in the namespace wherever they are used later.
func (ns *NS) Do(fn func() error) error {
	_, err := onDiscardedThread(func() (struct{}, error) {
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			return struct{}{}, fmt.Errorf("enter network namespace: %w", err)
		}
		return struct{}{}, fn()
	})
	return err
}

// AddVeth creates the veth pair name/peer in the namespace, both ends down.
func (ns *NS) AddVeth(t testing.TB, name, peer string) {
	t.Helper()
	err := ns.conn.Link.New(&rtnetlink.LinkMessage{
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
}

// AddBridge creates the bridge name in the namespace, down.
func (ns *NS) AddBridge(t testing.TB, name string) {
	t.Helper()
	err := ns.conn.Link.New(&rtnetlink.LinkMessage{
		Attributes: &rtnetlink.LinkAttributes{Name: name, Info: &rtnetlink.LinkInfo{Kind: "bridge"}},
	})
	if err != nil {
		t.Fatalf("create bridge %s: %v", name, err)
	}
}

// Link returns the link name of the namespace as the kernel describes it now.
func (ns *NS) Link(t testing.TB, name string) rtnetlink.LinkMessage {
	t.Helper()
	links, err := ns.conn.Link.List()
	if err != nil {
		t.Fatalf("list links: %v", err)
	}
	for _, l := range links {
		if l.Attributes != nil && l.Attributes.Name == name {
			return l
		}
	}
	t.Fatalf("no link %s in the test namespace", name)
	return rtnetlink.LinkMessage{}
}

// SetUp sets the link name of the namespace administratively up.
func (ns *NS) SetUp(t testing.TB, name string) {
	t.Helper()
	l := ns.Link(t, name)
	err := ns.conn.Link.Set(&rtnetlink.LinkMessage{Family: l.Family, Type: l.Type, Index: l.Index, Flags: unix.IFF_UP, Change: unix.IFF_UP})
	if err != nil {
		t.Fatalf("set %s up: %v", name, err)
	}
}

// onDiscardedThread runs fn on a locked OS thread that is never unlocked,
// so the runtime discards the thread, and whatever namespace fn moved it
// to, instead of reusing it for other goroutines.
func onDiscardedThread[T any](fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		v, err := fn()
		done <- result{v, err}
	}()
	r := <-done
	return r.v, r.err
}
