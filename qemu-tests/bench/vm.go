package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/dyad-ha/dyad/imagebuild/image"
	"github.com/dyad-ha/dyad/qemu-tests/harness"
	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/qmp"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/vm"
)

// Deadlines and sizes of the VM benchmarks.
const (
	// vmPMMemoryMiB gives each PM room for the test guest: a VM may have
	// at most the smaller PM's memory less the 1 GiB system reserve.
	vmPMMemoryMiB  = 2048
	guestMemoryMiB = 256
	guestDiskMiB   = 16
	// guestBootTimeout covers the guest booting under TCG inside an
	// emulated PM (30-90 s measured).
	guestBootTimeout = 7 * time.Minute
	vmStateTimeout   = time.Minute
	migrationTimeout = 3 * time.Minute
	// vmFailoverTimeout covers the survivor declaring the peer lost,
	// taking the volumes (and the management IP) and starting QEMU.
	vmFailoverTimeout = 3 * time.Minute
	// slowRequestTimeout bounds a command (which may create volumes)
	// and the read of a serial log (up to 1 MiB); polls take
	// requestTimeout.
	slowRequestTimeout = 10 * time.Second
	// qmpTimeout bounds a host QEMU opening its QMP socket.
	qmpTimeout = 30 * time.Second
)

// vmBench measures the VM data path: on a unit of its own (its PMs need
// room for the guest), a live migration of the running test guest to the
// peer PM (migration_downtime_ms and migration_total_seconds, QEMU's own
// numbers as the API reports them) and the power-off of the PM that runs
// it (failover_rto_seconds: until the API shows the VM's QEMU running on
// the survivor; failover_guest_durable_seconds: until the guest, booted
// again there, reports its first durable write). Before the unit boots,
// with the host otherwise idle, the same guest migrates between two QEMU
// processes on the host as the reference (_plain_qemu), and the ratios
// say what Dyad's nesting and orchestration cost.
func vmBench(ctx context.Context, log *slog.Logger, out string) ([]sample, error) {
	plain, err := plainMigration(ctx, log, out)
	if err != nil {
		return nil, fmt.Errorf("plain QEMU migration: %w", err)
	}
	s, err := vmUnitBench(ctx, log, out)
	if err != nil {
		return nil, err
	}
	// QEMU reports whole milliseconds: a reference downtime of 0 is under
	// 1 ms, and dividing by 1 ms gives a lower bound of the ratio.
	s = append(s,
		sample{"migration_downtime_ms_plain_qemu", ms(plain.Downtime), "ms"},
		sample{"migration_total_seconds_plain_qemu", plain.TotalTime.Seconds(), "s"},
		sample{"migration_downtime_ratio", s[0].value / max(ms(plain.Downtime), 1), "ratio"},
		sample{"migration_total_ratio", s[1].value / plain.TotalTime.Seconds(), "ratio"},
	)
	return s, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func guestSpec() unit.VMCreate {
	return unit.VMCreate{
		Name: "guest", VCPUs: 1, MemoryMiB: guestMemoryMiB, Boot: "test-guest",
		Volumes: []unit.VMVolumeRequest{{Name: "guest-boot", SizeMiB: guestDiskMiB, Boot: true}},
	}
}

// vmUnitBench returns migration_downtime_ms and migration_total_seconds
// first (vmBench divides them), then the failover samples.
func vmUnitBench(ctx context.Context, log *slog.Logger, out string) (_ []sample, err error) {
	workDir, err := os.MkdirTemp("", "dyad-bench-vm-")
	if err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	u, err := harness.Start(ctx, harness.Options{Out: out, N: 2, WorkDir: workDir, Log: log, MemoryMiB: vmPMMemoryMiB})
	if err != nil {
		return nil, fmt.Errorf("%w (logs in %s)", err, workDir)
	}
	defer func() {
		err = errors.Join(err, u.Close())
		if err != nil {
			err = fmt.Errorf("vm: %w (serial and QEMU logs in %s)", err, workDir)
			return
		}
		if rerr := os.RemoveAll(workDir); rerr != nil {
			log.Warn("removing work dir", "dir", workDir, "err", rerr)
		}
	}()
	newClient := func(timeout time.Duration) *apiclient.Client {
		// A connection of its own per request: a dead PM's connections
		// would otherwise hang until the timeout.
		return apiclient.New(mgmtURL, "admin", "admin", &http.Client{
			Transport: &http.Transport{DialContext: u.Dial, DisableKeepAlives: true},
			Timeout:   timeout,
		})
	}
	poll, slow := newClient(requestTimeout), newClient(slowRequestTimeout)

	if _, err := waitSteady(ctx, poll, bootTimeout, "the unit to form"); err != nil {
		return nil, err
	}
	err = harness.WaitFor(ctx, volumeSyncTimeout, "a storage group", func(ctx context.Context) (bool, error) {
		gs, err := poll.StorageGroups(ctx)
		if err != nil {
			return false, err
		}
		if len(gs) == 0 || gs[0].FreeBytes < 64<<20 {
			return false, fmt.Errorf("storage groups %+v", gs)
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	v, err := slow.CreateVM(ctx, guestSpec())
	if err != nil {
		return nil, err
	}
	id := v.ID
	serial := func(ctx context.Context) ([]byte, error) { return slow.SerialLog(ctx, id) }
	if _, err := waitVM(ctx, poll, id, volumeSyncTimeout, "the guest's volume mirrored: Stopped", inState(vm.Stopped)); err != nil {
		return nil, err
	}
	if _, err := slow.VMCommand(ctx, id, "start", unit.VMAction{}); err != nil {
		return nil, err
	}
	if v, err = waitVM(ctx, poll, id, guestBootTimeout, "the guest to boot: Running", inState(vm.Running)); err != nil {
		return nil, err
	}
	tr := harness.NewGuestTrace()
	boot, err := waitCounting(ctx, tr, serial, guestBootTimeout, "the guest counting", "", 0)
	if err != nil {
		return nil, err
	}

	from, to := v.Node, 3-v.Node
	log.Info("migrating the guest", "from", from, "to", to)
	if _, err := slow.VMCommand(ctx, id, "migrate", unit.VMAction{To: to}); err != nil {
		return nil, err
	}
	v, err = waitVM(ctx, poll, id, migrationTimeout, fmt.Sprintf("the migration to pm%d", to), func(v unit.VM) (bool, error) {
		m := v.Migration
		switch {
		case m == nil || m.To != to:
			return false, errors.New("no migration to the target yet")
		case m.Status == "failed":
			return true, fmt.Errorf("migration failed: %s", m.Error)
		case m.Status != "completed" || v.Node != to:
			return false, fmt.Errorf("migration %s, node pm%d", m.Status, v.Node)
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	m := *v.Migration
	log.Info("migration completed", "total_ms", m.TotalMs, "downtime_ms", m.DowntimeMs)
	s := []sample{
		{"migration_downtime_ms", float64(m.DowntimeMs), "ms"},
		{"migration_total_seconds", float64(m.TotalMs) / 1000, "s"},
	}
	// A migration that restarted the guest would be no migration.
	if _, err := waitCounting(ctx, harness.NewGuestTrace(), serial, vmStateTimeout, "the guest counting on the target", boot.ID, boot.Durable); err != nil {
		return nil, err
	}

	ops, err := opsBench(ctx, log, u, poll, slow, id)
	if err != nil {
		return nil, err
	}
	s = append(s, ops...)

	// The failover starts from a redundant unit, as a real failure would
	// find it.
	if v, err = waitVM(ctx, poll, id, vmStateTimeout, "the VM Running after the migration", inState(vm.Running)); err != nil {
		return nil, err
	}
	if _, err := waitSteady(ctx, poll, vmStateTimeout, "the unit in step before the failover"); err != nil {
		return nil, err
	}
	lost, survivor := v.Node, 3-v.Node
	if _, err := serial(ctx); err != nil {
		return nil, err
	}
	old := tr.Boots()
	log.Info("powering off the PM that runs the guest", "pm", lost)
	off := time.Now()
	if err := u.PM(lost).PowerOff(ctx); err != nil {
		return nil, err
	}
	_, err = waitVM(ctx, poll, id, vmFailoverTimeout, fmt.Sprintf("the VM's QEMU running on pm%d", survivor), func(v unit.VM) (bool, error) {
		if v.Node != survivor {
			return false, fmt.Errorf("node pm%d", v.Node)
		}
		// Started is set only while a QEMU runs the VM; a Booting VM
		// whose QEMU is still being started has none.
		if ok, err := inState(vm.Booting, vm.Running, vm.Alert)(v); !ok || v.Started.IsZero() {
			return false, errors.Join(err, errors.New("no QEMU yet"))
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	s = append(s, sample{"failover_rto_seconds", time.Since(off).Seconds(), "s"})
	err = harness.WaitGuest(ctx, guestBootTimeout, fmt.Sprintf("the guest to boot again on pm%d", survivor), tr, serial, func(tr *harness.GuestTrace) error {
		for _, b := range tr.Boots() {
			if !slices.ContainsFunc(old, func(o harness.GuestBoot) bool { return o.ID == b.ID }) && b.Durables > 0 {
				return nil
			}
		}
		return fmt.Errorf("no durable write of a new boot: %s", tr)
	})
	if err != nil {
		return nil, err
	}
	s = append(s, sample{"failover_guest_durable_seconds", time.Since(off).Seconds(), "s"})
	return s, nil
}

// inState accepts a VM in one of states.
func inState(states ...vm.State) func(unit.VM) (bool, error) {
	return func(v unit.VM) (bool, error) {
		if slices.Contains(states, vm.State(v.State)) {
			return true, nil
		}
		return false, fmt.Errorf("state %s (%s), want %q", v.State, v.Activity, states)
	}
}

// waitVM polls VM id until cond reports done. An error that comes with
// done ends the wait at once and is returned: the VM will not get there.
func waitVM(ctx context.Context, poll *apiclient.Client, id int, timeout time.Duration, what string, cond func(unit.VM) (bool, error)) (unit.VM, error) {
	var v unit.VM
	var fatal error
	err := harness.WaitFor(ctx, timeout, what, func(ctx context.Context) (bool, error) {
		var err error
		if v, err = poll.VM(ctx, id); err != nil {
			return false, err
		}
		done, err := cond(v)
		if done && err != nil {
			fatal = err
			return true, nil
		}
		return done, err
	})
	if err == nil && fatal != nil {
		err = fmt.Errorf("waiting for %s: %w", what, fatal)
	}
	return v, err
}

// waitCounting waits until the guest's latest boot reports durable writes
// past n (boot, when not "", must be that boot) and returns it.
func waitCounting(ctx context.Context, tr *harness.GuestTrace, read func(context.Context) ([]byte, error), timeout time.Duration, what, boot string, n uint64) (harness.GuestBoot, error) {
	var b harness.GuestBoot
	err := harness.WaitGuest(ctx, timeout, what, tr, read, func(tr *harness.GuestTrace) error {
		var ok bool
		b, ok = tr.Latest()
		switch {
		case !ok || !b.Started && boot == "":
			return fmt.Errorf("guest: %s", tr)
		case boot != "" && b.ID != boot:
			return fmt.Errorf("boot %s, want %s: the guest restarted", b.ID, boot)
		case b.Durables < 3 || b.Durable <= n:
			return fmt.Errorf("durable up to n=%d, want past n=%d", b.Durable, n)
		}
		return nil
	})
	return b, err
}

// plainMigration boots the test guest under plain QEMU on the host, as the
// agent would run it (services/vm.Argv, the image's guest kernel, initramfs
// and command line, TCG as nested PMs have no KVM), and live-migrates it
// to a second QEMU over a unix socket with services/vm.LiveMigrate.
func plainMigration(ctx context.Context, log *slog.Logger, out string) (vm.MigrateStats, error) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return vm.MigrateStats{}, err
	}
	kernel := filepath.Join(out, harness.KernelFile)
	initrd := filepath.Join(out, image.GuestInitramfsName)
	for _, f := range []string{kernel, initrd} {
		if _, err := os.Stat(f); err != nil {
			return vm.MigrateStats{}, fmt.Errorf("test guest (run make image): %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "dyad-plain-")
	if err != nil {
		return vm.MigrateStats{}, err
	}
	defer os.RemoveAll(dir)
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		return vm.MigrateStats{}, err
	}
	if err := os.Truncate(disk, guestDiskMiB<<20); err != nil {
		return vm.MigrateStats{}, err
	}
	// Both QEMUs open the one file, as both PMs open the dual-primary DRBD
	// device during a migration; O_DIRECT like the agent where the file
	// system takes it (tmpfs does not).
	direct := supportsDirect(disk)
	machine := func(name string, incoming bool) vm.Machine {
		return vm.Machine{
			Name: "guest", UUID: "6f1c2a9e-4b7d-4e2a-9c3b-0123456789ab",
			Accel: vm.TCG, VCPUs: 1, MemoryBytes: guestMemoryMiB * vm.MiB,
			Disks:      []vm.Disk{{Path: disk, Direct: direct}},
			Kernel:     kernel,
			Initrd:     initrd,
			Append:     image.DefaultGuest().Cmdline,
			SerialFile: filepath.Join(dir, name+"-serial.log"),
			QMPSocket:  filepath.Join(dir, name+"-qmp.sock"),
			VNCSocket:  filepath.Join(dir, name+"-vnc.sock"),
			Incoming:   incoming,
		}
	}
	src, err := startQEMU(ctx, bin, dir, machine("src", false))
	if err != nil {
		return vm.MigrateStats{}, err
	}
	defer src.stop()
	tr := harness.NewGuestTrace()
	boot, err := waitCounting(ctx, tr, src.serial, guestBootTimeout, "the guest counting under plain QEMU", "", 0)
	if err != nil {
		return vm.MigrateStats{}, fmt.Errorf("%w; QEMU: %s", err, src.output())
	}
	dst, err := startQEMU(ctx, bin, dir, machine("dst", true))
	if err != nil {
		return vm.MigrateStats{}, err
	}
	defer dst.stop()
	st, err := vm.LiveMigrate(ctx, src.qmp, dst.qmp, "unix:"+filepath.Join(dir, "migrate.sock"),
		vm.MigrateOptions{BandwidthBytes: vm.MigrationBandwidth, DowntimeLimit: vm.MigrationDowntime, Log: log})
	if err != nil {
		return vm.MigrateStats{}, err
	}
	log.Info("plain QEMU migration", "total", st.TotalTime, "downtime", st.Downtime, "transferred_bytes", st.TransferredBytes)
	if _, err := waitCounting(ctx, harness.NewGuestTrace(), dst.serial, vmStateTimeout, "the guest counting on the target QEMU", boot.ID, boot.Durable); err != nil {
		return vm.MigrateStats{}, fmt.Errorf("%w; QEMU: %s", err, dst.output())
	}
	return st, nil
}

// hostQEMU is one QEMU process of the reference migration.
type hostQEMU struct {
	cmd    *exec.Cmd
	m      vm.Machine
	logf   string
	qmp    *qmp.Client
	exited chan struct{}
}

func startQEMU(ctx context.Context, bin, dir string, m vm.Machine) (*hostQEMU, error) {
	argv, err := vm.Argv(m)
	if err != nil {
		return nil, err
	}
	q := &hostQEMU{m: m, logf: filepath.Join(dir, filepath.Base(m.SerialFile)+".qemu"), exited: make(chan struct{})}
	f, err := os.Create(q.logf)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	q.cmd = exec.CommandContext(ctx, bin, argv...)
	q.cmd.Stdout, q.cmd.Stderr = f, f
	// QEMU must not outlive the bench, however it ends.
	q.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := q.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { q.cmd.Wait(); close(q.exited) }()
	dctx, cancel := context.WithTimeout(ctx, qmpTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := qmp.Dial(dctx, m.QMPSocket)
		if err == nil {
			q.qmp = c
			return q, nil
		}
		select {
		case <-q.exited:
			return nil, fmt.Errorf("QEMU exited before QMP answered: %s", q.output())
		case <-dctx.Done():
			q.stop()
			return nil, fmt.Errorf("QMP %s: %w: %s", m.QMPSocket, err, q.output())
		case <-tick.C:
		}
	}
}

func (q *hostQEMU) serial(context.Context) ([]byte, error) {
	b, err := os.ReadFile(q.m.SerialFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

func (q *hostQEMU) output() string {
	b, _ := os.ReadFile(q.logf)
	return string(b)
}

func (q *hostQEMU) stop() {
	q.cmd.Process.Kill()
	<-q.exited
	if q.qmp != nil {
		q.qmp.Close()
	}
}

// supportsDirect reports whether the file's file system takes O_DIRECT.
func supportsDirect(path string) bool {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}
