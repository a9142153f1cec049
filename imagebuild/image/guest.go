package image

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/u-root/mkuimage/cpio"
)

// GuestInitramfsName is the test guest's initramfs in the output directory.
// The guest boots the PM kernel (KernelName): it is the same Debian kernel,
// and its virtio drivers are modules the guest's init loads.
const GuestInitramfsName = "dyad-guest-initramfs.cpio.gz"

// Guest is the tiny VM the tests run on Dyad (qemu-tests/guest): a Go /init
// and the kernel modules it loads, nothing else, so that it boots in
// seconds even under TCG inside a TCG PM.
type Guest struct {
	// Init is a main package relative to the source directory (or an
	// import path); it becomes /init.
	Init string
	// Modules are kernel module names; their dependencies come along.
	Modules []string
}

// DefaultGuest is the guest of the Dyad image: a counter on a virtio disk,
// reported on the 8250 serial port, which the Debian kernel has built in.
func DefaultGuest() Guest {
	return Guest{
		Init:    "./qemu-tests/guest",
		Modules: []string{"virtio_pci", "virtio_blk"},
	}
}

// GuestConfig says how to build the guest initramfs on its own, as the
// guest's tests do, without the PM image around it.
type GuestConfig struct {
	// SourceDir is the root of the Go module holding Guest.Init.
	SourceDir string
	// Output is the path of the gzip-compressed cpio archive to write.
	Output string
	// KernelVersion, BootDir and ModulesDir select the kernel as in Config.
	KernelVersion string
	BootDir       string
	ModulesDir    string
	Guest         Guest
}

// GuestResult describes a built guest.
type GuestResult struct {
	// Kernel is the host's vmlinuz the modules belong to; boot the guest
	// with it (or with the KernelName artifact, a copy of it).
	Kernel        string
	KernelVersion string
	Initramfs     string
	// Uncompressed is the size of the cpio archive before gzip, the RAM
	// the guest's root file system takes.
	Uncompressed int64
}

// BuildGuest writes the guest initramfs to cfg.Output (through a temporary
// file, so a failure leaves no partial archive behind).
func BuildGuest(ctx context.Context, log *slog.Logger, cfg GuestConfig) (GuestResult, error) {
	if cfg.SourceDir == "" || cfg.Output == "" || cfg.Guest.Init == "" {
		return GuestResult{}, errors.New("guest image: SourceDir, Output and Guest.Init must be set")
	}
	if cfg.BootDir == "" {
		cfg.BootDir = "/boot"
	}
	if cfg.ModulesDir == "" {
		cfg.ModulesDir = "/lib/modules"
	}
	kver, vmlinuz, err := findKernel(cfg.BootDir, cfg.ModulesDir, cfg.KernelVersion)
	if err != nil {
		return GuestResult{}, err
	}
	work, err := os.MkdirTemp("", "dyad-guestbuild-")
	if err != nil {
		return GuestResult{}, err
	}
	defer os.RemoveAll(work)
	tmp := cfg.Output + ".tmp"
	defer os.Remove(tmp)
	raw, err := buildGuest(ctx, log, cfg.SourceDir, cfg.ModulesDir, kver, "guest-test", cfg.Guest, work, tmp)
	if err != nil {
		return GuestResult{}, err
	}
	if err := os.Rename(tmp, cfg.Output); err != nil {
		return GuestResult{}, fmt.Errorf("publishing guest initramfs: %w", err)
	}
	return GuestResult{Kernel: vmlinuz, KernelVersion: kver, Initramfs: cfg.Output, Uncompressed: raw}, nil
}

// buildGuest compiles the guest's init and writes its initramfs to output,
// returning the uncompressed size. work must be private to this call's
// caller; the guest's files go into a subdirectory of their own so they
// cannot collide with the PM image's.
func buildGuest(ctx context.Context, log *slog.Logger, srcDir, modulesDir, kver, version string, g Guest, work, output string) (int64, error) {
	dir := filepath.Join(work, "guest")
	mods, err := selectModules(filepath.Join(modulesDir, kver), kver, g.Modules)
	if err != nil {
		return 0, fmt.Errorf("guest: %w", err)
	}
	_, bins, err := buildCommands(ctx, log, srcDir, filepath.Join(dir, "bin"), version, []Command{{Package: g.Init, Path: "/init"}})
	if err != nil {
		return 0, fmt.Errorf("guest: %w", err)
	}
	arch := archive{
		base:      guestRecords(kver, mods.dep),
		binaries:  bins,
		files:     mods.files,
		tempDir:   dir,
		outputTmp: output,
	}
	raw, err := arch.write(log)
	if err != nil {
		return 0, fmt.Errorf("guest: %w", err)
	}
	log.Info("guest initramfs written", "modules", mods.selection.Names(), "uncompressed_bytes", raw)
	return raw, nil
}

// guestRecords are the guest initramfs entries that come from no file: the
// mount points of its init and the console the kernel opens as the init's
// standard streams before devtmpfs exists.
func guestRecords(kver string, modDep []byte) []cpio.Record {
	return []cpio.Record{
		cpio.Directory("dev", 0o755),
		cpio.Directory("proc", 0o555),
		cpio.Directory("sys", 0o555),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.StaticFile(relative("/lib/modules/"+kver+"/modules.dep"), string(modDep), 0o644),
	}
}
