package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inNetns runs fn on an OS thread that has entered the namespace ns. The
// thread is never given back to the scheduler, so Go discards it afterwards;
// sockets opened by fn stay in the namespace.
func inNetns(t *testing.T, ns string, fn func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func TestPathSocketsExchangeBeats(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	ns := fmt.Sprintf("dyad-hb-%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run("-n", ns, "link", "add", "hba", "type", "veth", "peer", "name", "hbb")
	for _, l := range []string{"hba", "hbb"} {
		// No duplicate address detection: the link-local address is usable at once.
		if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf."+l+".accept_dad=0").CombinedOutput(); err != nil {
			t.Fatalf("sysctl: %v %s", err, out)
		}
		run("-n", ns, "link", "set", l, "up")
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var a, b *PathSocket
	var hbbIndex int
	if err := inNetns(t, ns, func() (err error) {
		// Zone names are resolved in the caller's namespace, so the test
		// speaks of hbb by index.
		ifc, err := net.InterfaceByName("hbb")
		if err != nil {
			return err
		}
		hbbIndex = ifc.Index
		if a, err = ListenPath(ctx, "priv0", "hba"); err != nil {
			return err
		}
		b, err = ListenPath(ctx, "priv0", "hbb")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()

	got := make(chan netip.AddrPort, 16)
	go b.Receive(ctx, slog.New(slog.DiscardHandler), key, func(beat Beat, from netip.AddrPort) {
		if beat.Node == 1 && beat.Unit == "lab" {
			got <- from
		}
	})
	msg, _ := Marshal(key, Beat{Unit: "lab", Node: 1})
	forged, _ := Marshal([]byte("another unit's key, 32 bytes!!!"), Beat{Unit: "lab", Node: 1})
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var from netip.AddrPort
	for !from.IsValid() {
		// Multicast until the peer is known, as the agent does.
		a.Send(forged, netip.AddrPort{})
		a.Send(msg, netip.AddrPort{})
		select {
		case from = <-got:
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("no heartbeat crossed the veth pair")
		}
	}
	if !from.Addr().IsLinkLocalUnicast() {
		t.Fatalf("beat came from %v, want a link-local address", from)
	}
	// Unicast back to the learned address works too.
	back := make(chan struct{}, 1)
	go a.Receive(ctx, slog.New(slog.DiscardHandler), key, func(Beat, netip.AddrPort) { back <- struct{}{} })
	reply, _ := Marshal(key, Beat{Unit: "lab", Node: 2})
	// a's address, reached out of b's interface.
	bAddr := netip.AddrPortFrom(from.Addr().WithZone(fmt.Sprint(hbbIndex)), Port)
	for {
		b.Send(reply, bAddr)
		select {
		case <-back:
			return
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("no unicast reply")
		}
	}
}
