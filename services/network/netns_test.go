package network

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/dyad-ha/dyad/services/network/netnstest"
	"golang.org/x/sys/unix"
)

// mountSysfs mounts a sysfs from inside ns, which therefore lists that
// namespace's links, and returns its class/net directory.
func mountSysfs(t *testing.T, ns *netnstest.NS) string {
	t.Helper()
	dir := t.TempDir()
	err := ns.Do(func() error {
		return unix.Mount("sysfs", dir, "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_RDONLY, "")
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
