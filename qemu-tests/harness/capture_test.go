package harness

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/mdlayher/packet"
)

// TestCapture sends frames into a bridge from inside a namespace of the
// test's own and watches a Capture see them, without QEMU.
func TestCapture(t *testing.T) {
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) is not installed on this host")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ns, err := newNamespace(ctx)
	if err != nil {
		t.Skipf("cannot create a network namespace here (needs root): %v", err)
	}
	t.Cleanup(func() { ns.remove(context.Background()) })
	for _, args := range [][]string{{"link", "add", "br0", "type", "bridge"}, {"link", "set", "br0", "up"}} {
		if err := ns.run(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	u := &Unit{ns: ns, forwards: map[io.Closer]struct{}{}}
	if _, err := u.Capture(ctx, "nosuchbridge"); err == nil {
		t.Error("capture on a missing interface succeeded")
	}
	capCtx, capCancel := context.WithCancel(ctx)
	c, err := u.Capture(capCtx, "br0")
	if err != nil {
		t.Fatal(err)
	}

	var conn *packet.Conn
	if err := ns.do(func() error {
		ifi, err := net.InterfaceByName("br0")
		if err != nil {
			return err
		}
		conn, err = packet.Listen(ifi, packet.Raw, 0x88b5, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sendFrame := func(payload string) {
		t.Helper()
		f := append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5}, payload...)
		if _, err := conn.WriteTo(f, &packet.Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}); err != nil {
			t.Fatal(err)
		}
	}
	carries := func(payload string) func([]byte) bool {
		return func(f []byte) bool { return len(f) >= 14 && bytes.Equal(f[14:], []byte(payload)) }
	}

	sendFrame("before")
	sendFrame("after")
	if err := c.WaitFor(ctx, 5*time.Second, "frame after", carries("after")); err != nil {
		t.Fatal(err)
	}
	// Frames captured before the call count.
	if err := c.WaitFor(ctx, 5*time.Second, "frame before", carries("before")); err != nil {
		t.Error(err)
	}
	if err := c.WaitFor(ctx, 200*time.Millisecond, "a frame never sent", carries("never")); err == nil {
		t.Error("WaitFor matched a frame never sent")
	}
	// The bridge sends IGMP and MLD reports of its own.
	testFrames := func() [][]byte {
		var fs [][]byte
		for _, f := range c.Frames() {
			if len(f) >= 14 && f[12] == 0x88 && f[13] == 0xb5 {
				fs = append(fs, f)
			}
		}
		return fs
	}
	if got := testFrames(); len(got) != 2 || !carries("before")(got[0]) || !carries("after")(got[1]) {
		t.Errorf("test frames %q, want the two frames sent, in order", got)
	}

	// The capture ends with its context; the frames stay.
	capCancel()
	if err := WaitFor(ctx, 5*time.Second, "capture closed with its context", func(context.Context) (bool, error) {
		u.mu.Lock()
		tracked := len(u.forwards)
		u.mu.Unlock()
		// With no time to wait, only a stopped capture fails otherwise.
		err := c.WaitFor(ctx, 0, "nothing", func([]byte) bool { return false })
		return tracked == 0 && err != nil && !errors.Is(err, context.DeadlineExceeded), nil
	}); err != nil {
		t.Error(err)
	}
	if got := testFrames(); len(got) != 2 {
		t.Errorf("%d test frames after close, want 2", len(got))
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
