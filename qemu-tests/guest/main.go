// Command guest is PID 1 of Dyad's test guest (built by imagebuild into
// dyad-guest-initramfs.cpio.gz). It keeps a counter in the first block of
// its virtio disk: on boot it reads the counter and prints
//
//	GUEST START boot=<boot id> n=<counter read>
//
// then every 100 ms it increments the counter, writes the block with
// O_DIRECT, flushes it with fdatasync and only then prints
//
//	DURABLE boot=<boot id> n=<counter>
//
// on the serial console. A value printed is therefore on the VM's disk, and
// after any crash, failover or migration the counter read back must be at
// least the last value printed: that is the data-path promise Dyad's tests
// check with this guest.
//
// The guest also does what the VM tests need of a guest OS: the ACPI power
// button (QMP system_powerdown) stops the counter between two writes, syncs
// and powers off, and a line "crash" on the serial console panics the
// kernel, which the pvpanic driver reports to QEMU (GUEST_PANICKED).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dyad-ha/dyad/init/kmod"
	"github.com/dyad-ha/dyad/qemu-tests/guest/serial"
)

const (
	diskPath   = "/dev/vda"
	interval   = 100 * time.Millisecond
	diskWait   = 30 * time.Second
	buttonWait = 10 * time.Second
	bootIDPath = "/proc/sys/kernel/random/boot_id"
)

func main() {
	// The kernel opened /dev/console (the serial port, console=ttyS0) as
	// our standard streams, so plain stdout reaches the serial log.
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelWarn}))
	err := run(context.Background(), log)
	// PID 1 must not exit: the kernel would panic and the error scroll
	// away. Say what went wrong and stay.
	fmt.Printf("%s: %v\n", serial.FailedPrefix, err)
	for {
		time.Sleep(time.Hour)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	if err := mountAll(); err != nil {
		return err
	}
	if err := loadModules(ctx, log); err != nil {
		// Drivers that failed may not be the disk's; waiting for the
		// disk tells.
		log.Warn("kernel modules", "err", err)
	}
	// The controls work even if the counter fails below: main keeps the
	// process alive after an error.
	g := &guest{log: log, out: os.Stdout}
	buttons, err := openPowerButtons(ctx, "/sys/class/input", "/dev/input", buttonWait)
	if err != nil {
		// The counter still runs; only QMP system_powerdown is lost.
		g.report("GUEST WARNING: %v", err)
	}
	for _, f := range buttons {
		go g.watchPowerButton(f)
	}
	if err := quietConsole(os.Stdin); err != nil {
		log.Warn("console echo stays on", "err", err)
	}
	go func() {
		err := g.serveConsole(os.Stdin, g.run)
		log.Warn("console commands stopped", "err", err)
	}()
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return fmt.Errorf("reading boot id: %w", err)
	}
	boot, err := ParseBootID(string(b))
	if err != nil {
		return err
	}
	disk, err := openDisk(ctx, diskPath, diskWait)
	if err != nil {
		return err
	}
	defer disk.close()
	n, err := disk.read()
	if err != nil {
		return err
	}
	g.report("%s", serial.StartLine(boot, n))
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		n++
		if err := g.durable(disk, boot, n); err != nil {
			return err
		}
	}
}

// durable writes n and reports it, under g.mu so that a power-off waits
// for the report of a write that reached the disk.
func (g *guest) durable(d *disk, boot string, n uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := d.write(n); err != nil {
		return err
	}
	g.report("%s", serial.DurableLine(boot, n))
	return nil
}

func mountAll() error {
	for _, m := range []struct{ fstype, target string }{
		{"proc", "/proc"},
		{"sysfs", "/sys"},
		{"devtmpfs", "/dev"},
	} {
		if err := unix.Mount(m.fstype, m.target, m.fstype, unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mounting %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

// loadModules loads the modules imagebuild packed for the running kernel,
// in modules.dep order (there is no modprobe), as the PMs' init does.
func loadModules(ctx context.Context, log *slog.Logger) error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return fmt.Errorf("uname: %w", err)
	}
	dir := filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
	_, err := kmod.LoadAll(ctx, log, dir)
	return err
}

// disk is the counter block of an O_DIRECT file: every write goes to the
// device, never only to the guest's page cache.
type disk struct {
	fd  int
	buf []byte // BlockSize bytes, page aligned as O_DIRECT requires
}

// openDisk waits for the device node (devtmpfs creates it when virtio_blk
// has probed the disk) and opens it.
func openDisk(ctx context.Context, path string, wait time.Duration) (*disk, error) {
	deadline := time.Now().Add(wait)
	var fd int
	for {
		var err error
		fd, err = unix.Open(path, unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENXIO) {
			return nil, fmt.Errorf("opening %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("opening %s: no disk after %s: %w", path, wait, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	// An anonymous mapping is page aligned, which a Go slice is not
	// guaranteed to be.
	buf, err := unix.Mmap(-1, 0, BlockSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("allocating an aligned buffer: %w", err)
	}
	return &disk{fd: fd, buf: buf}, nil
}

func (d *disk) read() (uint64, error) {
	n, err := unix.Pread(d.fd, d.buf, 0)
	if err != nil {
		return 0, fmt.Errorf("reading the counter block: %w", err)
	}
	if n != BlockSize {
		return 0, fmt.Errorf("reading the counter block: short read of %d bytes", n)
	}
	return DecodeBlock(d.buf)
}

// write returns once n is on stable storage: O_DIRECT bypasses the page
// cache and fdatasync flushes the disk's volatile write cache.
func (d *disk) write(n uint64) error {
	EncodeBlock(d.buf, n)
	w, err := unix.Pwrite(d.fd, d.buf, 0)
	if err != nil {
		return fmt.Errorf("writing counter %d: %w", n, err)
	}
	if w != BlockSize {
		return fmt.Errorf("writing counter %d: short write of %d bytes", n, w)
	}
	if err := unix.Fdatasync(d.fd); err != nil {
		return fmt.Errorf("flushing counter %d: %w", n, err)
	}
	return nil
}

func (d *disk) close() {
	unix.Munmap(d.buf)
	unix.Close(d.fd)
}
