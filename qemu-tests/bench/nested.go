package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"time"

	"github.com/dyad-ha/dyad/qemu-tests/harness"
	"github.com/dyad-ha/dyad/services/vm"
)

// Where the PM image carries QEMU and the test guest (CONTRACTS: in the PM
// image).
const (
	qemuPath     = "/usr/bin/qemu-system-x86_64"
	testGuestDir = "/usr/share/dyad/test-guest"
	// nestedBootTimeout covers the test guest booting under TCG inside a
	// TCG PM on a loaded host.
	nestedBootTimeout = 10 * time.Minute
)

// nestedBench boots the image's test guest with the image's QEMU inside
// PM 1, with the options the agent uses (services/vm.Argv: q35, 1 vCPU,
// 256 MiB, direct kernel boot), and times QEMU's start to the guest's first
// DURABLE line: nested_guest_boot_seconds under TCG, what a VM gets on a
// PM without KVM, and nested_guest_boot_kvm_seconds when the PM has
// /dev/kvm (a TCG PM whose emulated CPU has AMD-V). The samples are
// appended to s.
func nestedBench(ctx context.Context, log *slog.Logger, u *harness.Unit, s []sample) ([]sample, error) {
	pm := u.PM(1)
	type run struct {
		accel vm.Accel
		name  string
	}
	runs := []run{{vm.TCG, "nested_guest_boot_seconds"}}
	// kvm_amd or kvm_intel registered the kvm misc device: /dev/kvm works.
	if _, err := pm.ReadFile(ctx, "/sys/class/misc/kvm/dev"); err == nil {
		runs = append(runs, run{vm.KVM, "nested_guest_boot_kvm_seconds"})
	}
	for i, r := range runs {
		log.Info("booting the test guest inside a PM", "pm", pm.N(), "accel", r.accel)
		took, err := nestedBoot(ctx, pm, fmt.Sprintf("/run/bench-nested%d", i), r.accel)
		if err != nil {
			return nil, fmt.Errorf("nested guest (%s): %w", r.accel, err)
		}
		s = append(s, sample{r.name, took.Seconds(), "s"})
	}
	return s, nil
}

// nestedBoot boots the test guest in a daemonized QEMU on pm with its
// files in dir, waits for its first DURABLE line and kills QEMU again.
func nestedBoot(ctx context.Context, pm *harness.PM, dir string, accel vm.Accel) (time.Duration, error) {
	b, err := pm.ReadFile(ctx, path.Join(testGuestDir, "cmdline"))
	if err != nil {
		return 0, err
	}
	disk, serial, pidfile := path.Join(dir, "disk.raw"), path.Join(dir, "serial.log"), path.Join(dir, "qemu.pid")
	// A blank counter block is all the guest reads and writes.
	if err := pm.WriteFile(ctx, disk, make([]byte, 4096)); err != nil {
		return 0, err
	}
	argv, err := vm.Argv(vm.Machine{
		Name:        "bench",
		UUID:        "0b7e5c1a-3d2f-4e6a-8b9c-1d2e3f4a5b6c",
		Accel:       accel,
		VCPUs:       1,
		MemoryBytes: vm.MinMemory,
		Disks:       []vm.Disk{{Path: disk}}, // on tmpfs, which refuses O_DIRECT
		SerialFile:  serial,
		QMPSocket:   path.Join(dir, "qmp.sock"),
		VNCSocket:   path.Join(dir, "vnc.sock"),
		Kernel:      path.Join(testGuestDir, "vmlinuz"),
		Initrd:      path.Join(testGuestDir, "initrd.img"),
		Append:      strings.TrimSpace(string(b)),
	})
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := pm.Exec(ctx, append([]string{qemuPath}, append(argv, "-daemonize", "-pidfile", pidfile)...)...); err != nil {
		return 0, err
	}
	var out []byte
	err = harness.WaitFor(ctx, nestedBootTimeout, "the nested guest's first DURABLE line", func(ctx context.Context) (bool, error) {
		if out, err = pm.ReadFile(ctx, serial); err != nil {
			return false, err
		}
		if bytes.Contains(out, []byte("GUEST FAILED")) {
			return false, errors.New("the guest failed")
		}
		if !bytes.Contains(out, []byte("\nDURABLE boot=")) {
			return false, fmt.Errorf("no DURABLE line yet (%d bytes of serial output)", len(out))
		}
		return true, nil
	})
	took := time.Since(start)
	if kerr := pm.KillPidfile(ctx, pidfile, "KILL"); err == nil {
		err = kerr
	}
	if err != nil {
		return 0, fmt.Errorf("%w; guest serial output:\n%s", err, out)
	}
	return took, nil
}
