package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDir is where iproute2 keeps the handles of named namespaces.
const netnsDir = "/run/netns"

// namespace is a named network namespace managed with iproute2.
type namespace struct {
	name string
}

// newNamespace creates a namespace with a unique "dyad-" name.
func newNamespace(ctx context.Context) (*namespace, error) {
	b := make([]byte, 4)
	rand.Read(b)
	ns := &namespace{name: "dyad-" + hex.EncodeToString(b)}
	if err := ip(ctx, "netns", "add", ns.name); err != nil {
		return nil, err
	}
	return ns, nil
}

// ip runs one iproute2 command, with its output in the error when it fails.
func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// run runs "ip -n NS args...".
func (ns *namespace) run(ctx context.Context, args ...string) error {
	return ip(ctx, append([]string{"-n", ns.name}, args...)...)
}

// remove deletes the namespace and with it every interface inside it.
func (ns *namespace) remove(ctx context.Context) error {
	return ip(ctx, "netns", "del", ns.name)
}

// exists reports whether the namespace still has its name.
func (ns *namespace) exists() bool {
	_, err := os.Stat(filepath.Join(netnsDir, ns.name))
	return err == nil
}

// dial connects to addr from inside the namespace.
func (ns *namespace) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// do runs f on an OS thread moved into the namespace, so that the sockets f
// opens belong to the namespace for their whole life. That thread is never
// unlocked, so the runtime destroys it rather than reuse it for other
// goroutines.
func (ns *namespace) do(f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := os.Open(filepath.Join(netnsDir, ns.name))
		if err != nil {
			done <- fmt.Errorf("open namespace %s: %w", ns.name, err)
			return
		}
		defer h.Close()
		if err := unix.Setns(int(h.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("enter namespace %s: %w", ns.name, err)
			return
		}
		done <- f()
	}()
	return <-done
}
