package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/qemu-tests/guest/serial"
	"github.com/dyad-ha/dyad/services/qmp"
)

// controlTimeout bounds one wait for QEMU's reaction to a control action.
const controlTimeout = time.Minute

// vmArgs are the options of services/vm.Argv that shape what the guest's
// controls meet: ACPI power-off ends QEMU, a panic pauses the guest, and
// the pvpanic device reports it.
func vmArgs(machine string) []string {
	return []string{
		"-machine", "type=" + machine,
		"-action", "shutdown=poweroff,reboot=reset,panic=pause",
		"-device", "pvpanic",
	}
}

// TestPowerButtonPowersOff presses the ACPI power button with QMP
// system_powerdown, as the agent's Shutdown does: the guest must power off
// (QEMU reports a guest-initiated SHUTDOWN and exits with status 0) after
// its last write, so the disk holds exactly the last value it reported.
func TestPowerButtonPowersOff(t *testing.T) {
	for _, machine := range []string{"q35", "pc"} {
		t.Run(machine, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			dir := t.TempDir()
			g := buildTestGuest(ctx, t, dir)
			disk := blankDisk(t, dir)
			r := startGuest(ctx, t, g, disk, dir, "vm", vmArgs(machine)...)
			r.waitFor(ctx, t, func(ls []serial.Line) bool { return count(ls, serial.Durable) >= 3 })
			c := dialQMP(ctx, t, r)

			if err := c.Execute(ctx, "system_powerdown", nil, nil); err != nil {
				t.Fatal(err)
			}
			pressed := time.Now()
			ev := waitEvent(ctx, t, c, r, "SHUTDOWN")
			var data struct {
				Guest  bool   `json:"guest"`
				Reason string `json:"reason"`
			}
			if err := json.Unmarshal(ev.Data, &data); err != nil {
				t.Fatalf("SHUTDOWN event data %s: %v", ev.Data, err)
			}
			if !data.Guest || data.Reason != "guest-shutdown" {
				t.Errorf("SHUTDOWN event %s, want guest true, reason guest-shutdown", ev.Data)
			}
			select {
			case <-r.exited:
				if r.waitErr != nil {
					t.Errorf("QEMU after the guest powered off: %v", r.waitErr)
				}
			case <-time.After(controlTimeout):
				t.Fatalf("QEMU still running %s after the guest's SHUTDOWN", controlTimeout)
			}
			t.Logf("power button to QEMU exit: %s", time.Since(pressed).Round(10*time.Millisecond))

			if log := r.log(); !strings.Contains(log, PowerOffLine+" (ACPI power button)") {
				t.Errorf("serial log lacks %q:\n%s", PowerOffLine, log)
			}
			lines := r.lines(t)
			last := lines[len(lines)-1]
			b, err := os.ReadFile(disk)
			if err != nil {
				t.Fatal(err)
			}
			n, err := DecodeBlock(b[:BlockSize])
			if err != nil {
				t.Fatal(err)
			}
			if n != last.N {
				t.Errorf("disk holds n=%d after the power-off, the guest last reported n=%d", n, last.N)
			}
		})
	}
}

// TestCrashPanics types "crash" on the serial console: the guest kernel
// must panic and pvpanic tell QEMU, which pauses the guest as the agent
// configures it.
func TestCrashPanics(t *testing.T) {
	for _, machine := range []string{"q35", "pc"} {
		t.Run(machine, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			dir := t.TempDir()
			g := buildTestGuest(ctx, t, dir)
			r := startGuest(ctx, t, g, blankDisk(t, dir), dir, "vm", vmArgs(machine)...)
			r.waitFor(ctx, t, func(ls []serial.Line) bool { return count(ls, serial.Durable) >= 1 })
			c := dialQMP(ctx, t, r)

			var d net.Dialer
			console, err := d.DialContext(ctx, "unix", r.serialSocket)
			if err != nil {
				t.Fatal(err)
			}
			defer console.Close()
			// Whoever connects to the console must read it: QEMU writes
			// the guest's output byte by byte into the socket, and a few
			// hundred unread bytes fill it and stall the guest's UART (a
			// panic then takes ~40 s to reach pvpanic).
			go io.Copy(io.Discard, console)
			// A terminal sends CR for Enter; the guest's tty turns it into
			// a newline.
			if _, err := console.Write([]byte("crash\r")); err != nil {
				t.Fatal(err)
			}
			typed := time.Now()
			ev := waitEvent(ctx, t, c, r, "GUEST_PANICKED")
			var data struct {
				Action string `json:"action"`
			}
			if err := json.Unmarshal(ev.Data, &data); err != nil {
				t.Fatalf("GUEST_PANICKED event data %s: %v", ev.Data, err)
			}
			if data.Action != "pause" {
				t.Errorf("GUEST_PANICKED event %s, want action pause", ev.Data)
			}
			t.Logf("crash typed to GUEST_PANICKED: %s", time.Since(typed).Round(10*time.Millisecond))
			var st struct {
				Status string `json:"status"`
			}
			if err := c.Execute(ctx, "query-status", nil, &st); err != nil {
				t.Fatal(err)
			}
			if st.Status != "guest-panicked" {
				t.Errorf("QEMU status %q after the panic, want guest-panicked", st.Status)
			}
			log := r.log()
			for _, want := range []string{CrashLine, "Kernel panic"} {
				if !strings.Contains(log, want) {
					t.Errorf("serial log lacks %q:\n%s", want, log)
				}
			}
		})
	}
}

// dialQMP connects to the guest's QEMU, whose socket appears shortly after
// it starts.
func dialQMP(ctx context.Context, t *testing.T, r *runningGuest) *qmp.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	for {
		c, err := qmp.Dial(ctx, r.qmpSocket)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		select {
		case <-r.exited:
			t.Fatalf("QEMU exited: %v", r.waitErr)
		case <-ctx.Done():
			t.Fatalf("no QMP: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitEvent returns the first QMP event called name.
func waitEvent(ctx context.Context, t *testing.T, c *qmp.Client, r *runningGuest, name string) qmp.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatalf("QMP connection ended before %s; QEMU: %v\nserial log:\n%s", name, r.waitErr, r.log())
			}
			if ev.Name == name {
				return ev
			}
			t.Logf("QMP event %s %s", ev.Name, ev.Data)
		case <-ctx.Done():
			t.Fatalf("no %s event after %s\nserial log:\n%s", name, controlTimeout, r.log())
		}
	}
}
