package loopback

import (
	"net"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// Up runs in a fresh network namespace, where lo starts down.
func TestUpInNewNamespace(t *testing.T) {
	type result struct {
		before, after net.Flags
		err           error
		skip          string
	}
	done := make(chan result)
	go func() {
		// The thread is left locked so it dies with the goroutine instead of
		// returning to the pool inside the throwaway namespace.
		runtime.LockOSThread()
		var r result
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			r.skip = "cannot create a network namespace (CAP_SYS_ADMIN or CONFIG_NET_NS missing): " + err.Error()
			done <- r
			return
		}
		ifi, err := net.InterfaceByName("lo")
		if err != nil {
			r.err = err
			done <- r
			return
		}
		r.before = ifi.Flags
		if r.err = Up(); r.err == nil {
			ifi, r.err = net.InterfaceByName("lo")
			if r.err == nil {
				r.after = ifi.Flags
			}
		}
		done <- r
	}()
	r := <-done
	if r.skip != "" {
		t.Skip(r.skip)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.before&net.FlagUp != 0 {
		t.Fatalf("lo was already up in a new namespace: %v", r.before)
	}
	if r.after&net.FlagUp == 0 {
		t.Errorf("lo flags after Up = %v, want up", r.after)
	}
}
