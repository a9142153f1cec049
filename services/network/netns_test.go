package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"testing"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// newNetNS creates a network namespace for one test and returns its file
// descriptor; closing it (at cleanup) destroys the namespace and every link
// in it. Only a throwaway locked thread ever enters the namespace.
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
	fd, err := r.fd, r.err
	if errors.Is(err, unix.EPERM) {
		t.Skipf("creating a network namespace needs CAP_SYS_ADMIN: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// testConn is a netlink connection into ns for setting up fixtures the
// Manager does not create itself (veth pairs, bridges).
func testConn(t *testing.T, ns int) *rtnetlink.Conn {
	t.Helper()
	c, err := rtnetlink.Dial(&netlink.Config{NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addVeth(t *testing.T, c *rtnetlink.Conn, name, peer string) {
	t.Helper()
	err := c.Link.New(&rtnetlink.LinkMessage{
		Attributes: &rtnetlink.LinkAttributes{
			Name: name,
			Info: &rtnetlink.LinkInfo{
				Kind: "veth",
				Data: &driver.Veth{PeerInfo: &rtnetlink.LinkMessage{
					Attributes: &rtnetlink.LinkAttributes{Name: peer},
				}},
			},
		},
	})
	if err != nil {
		t.Fatalf("create veth %s/%s: %v", name, peer, err)
	}
}

func addBridge(t *testing.T, c *rtnetlink.Conn, name string) {
	t.Helper()
	err := c.Link.New(&rtnetlink.LinkMessage{
		Attributes: &rtnetlink.LinkAttributes{Name: name, Info: &rtnetlink.LinkInfo{Kind: "bridge"}},
	})
	if err != nil {
		t.Fatalf("create bridge %s: %v", name, err)
	}
}

// mountSysfs mounts a sysfs from inside ns, which therefore lists that
// namespace's links, and returns its class/net directory.
func mountSysfs(t *testing.T, ns int) string {
	t.Helper()
	dir := t.TempDir()
	_, err := inNetNS(ns, func() (struct{}, error) {
		return struct{}{}, unix.Mount("sysfs", dir, "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_RDONLY, "")
	})
	if errors.Is(err, unix.EPERM) {
		t.Skipf("mounting sysfs needs CAP_SYS_ADMIN: %v", err)
	}
	if err != nil {
		t.Fatalf("mount sysfs of the test namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir + "/class/net"
}

func newManager(t *testing.T, opts Options) *Manager {
	t.Helper()
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
		if testing.Verbose() {
			opts.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
		}
	}
	m, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}
