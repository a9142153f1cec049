package scenario

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/qemu-tests/harness"
	"github.com/dyad-ha/dyad/services/vm"
)

// Where the PM image carries the test guest and QEMU (CONTRACTS: in the PM
// image).
const (
	qemuPath      = "/usr/bin/qemu-system-x86_64"
	testGuestDir  = "/usr/share/dyad/test-guest"
	nestedTimeout = 10 * time.Minute // a guest booting under TCG inside a TCG PM
)

// TestQEMURunsInPM boots the test guest with the image's QEMU inside a PM,
// with the options the agent uses (services/vm.Argv) and under TCG as on a
// host without nested KVM, and waits for the guest to report a durable
// write on its virtio disk. It then kills QEMU through its pid file, as
// the MTBF tests crash a VM.
func TestQEMURunsInPM(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()
	u := harness.StartT(t, harness.Options{N: 1, DataDisks: -1})
	pm := u.PM(1)
	if err := harness.WaitFor(ctx, bootTimeout, "pm1's test channel", func(ctx context.Context) (bool, error) {
		err := pm.Ping(ctx)
		return err == nil, err
	}); err != nil {
		t.Fatal(err)
	}

	// init loaded tun at boot: the agent's taps need /dev/net/tun.
	if b, err := pm.ReadFile(ctx, "/sys/class/misc/tun/dev"); err != nil || strings.TrimSpace(string(b)) != "10:200" {
		t.Errorf("tun misc device: %q, %v; want 10:200 (tun loaded)", b, err)
	}

	dir := "/run/nested"
	g, err := startTestGuest(ctx, pm, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest kernel command line: %s", g.cmdline)
	var serial []byte
	err = harness.WaitFor(ctx, nestedTimeout, "the nested guest's first DURABLE line", func(ctx context.Context) (bool, error) {
		serial, err = pm.ReadFile(ctx, g.serial)
		if err != nil {
			return false, err
		}
		if bytes.Contains(serial, []byte("GUEST FAILED")) {
			return false, fmt.Errorf("the guest failed:\n%s", serial)
		}
		return met(bytes.Contains(serial, []byte("\nDURABLE boot=")), "no DURABLE line yet (%d bytes of serial output)", len(serial))
	})
	if err != nil {
		t.Fatalf("%v\nnested serial log:\n%s", err, serial)
	}
	t.Logf("nested guest boot (QEMU started to first DURABLE): %s", time.Since(g.started).Round(100*time.Millisecond))

	pidText, err := pm.ReadFile(ctx, g.pidfile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err != nil {
		t.Fatalf("QEMU pid file %q: %v", pidText, err)
	}
	if comm, err := pm.ReadFile(ctx, fmt.Sprintf("/proc/%d/comm", pid)); err != nil || !strings.HasPrefix(string(comm), "qemu-system-x86") {
		t.Fatalf("pid %d of %s: comm %q, %v; want QEMU", pid, g.pidfile, comm, err)
	}
	if err := pm.KillPidfile(ctx, g.pidfile, "KILL"); err != nil {
		t.Fatal(err)
	}
	// init reaps the daemonized QEMU; its /proc entry goes with it.
	if err := harness.WaitFor(ctx, time.Minute, "the killed QEMU to be gone", func(ctx context.Context) (bool, error) {
		_, err := pm.ReadFile(ctx, fmt.Sprintf("/proc/%d/comm", pid))
		return met(err != nil, "pid %d still exists", pid)
	}); err != nil {
		t.Fatal(err)
	}
}

// nestedGuest is the test guest running in QEMU on a PM.
type nestedGuest struct {
	cmdline string
	serial  string // the guest's serial output, a file on the PM
	pidfile string
	started time.Time
}

// startTestGuest boots the image's test guest on pm in a daemonized QEMU
// built by services/vm.Argv (q35, TCG, 1 vCPU, 256 MiB), with an 8 MiB
// blank disk, its serial output to a file and everything under dir.
func startTestGuest(ctx context.Context, pm *harness.PM, dir string) (nestedGuest, error) {
	b, err := pm.ReadFile(ctx, path.Join(testGuestDir, "cmdline"))
	if err != nil {
		return nestedGuest{}, err
	}
	g := nestedGuest{
		cmdline: strings.TrimSpace(string(b)),
		serial:  path.Join(dir, "serial.log"),
		pidfile: path.Join(dir, "qemu.pid"),
	}
	// A blank counter block, then the rest of the disk (the test channel
	// takes no request big enough for 8 MiB of zeros at once).
	disk := path.Join(dir, "disk.raw")
	if err := pm.WriteFile(ctx, disk, make([]byte, 4096)); err != nil {
		return nestedGuest{}, err
	}
	if _, err := pm.DirectWrite(ctx, disk, 1<<20, 1<<20, 7, false, false); err != nil {
		return nestedGuest{}, err
	}
	argv, err := vm.Argv(vm.Machine{
		Name:        "nested",
		UUID:        "6a1c3e0e-8f0b-4d39-9a55-0d1e2f3a4b5c",
		Accel:       vm.TCG,
		VCPUs:       1,
		MemoryBytes: vm.MinMemory,
		Disks:       []vm.Disk{{Path: disk}}, // on tmpfs, which refuses O_DIRECT
		SerialFile:  g.serial,
		QMPSocket:   path.Join(dir, "qmp.sock"),
		VNCSocket:   path.Join(dir, "vnc.sock"),
		Kernel:      path.Join(testGuestDir, "vmlinuz"),
		Initrd:      path.Join(testGuestDir, "initrd.img"),
		Append:      g.cmdline,
	})
	if err != nil {
		return nestedGuest{}, err
	}
	g.started = time.Now()
	argv = append([]string{qemuPath}, append(argv, "-daemonize", "-pidfile", g.pidfile)...)
	if _, err := pm.Exec(ctx, argv...); err != nil {
		return nestedGuest{}, err
	}
	return g, nil
}
