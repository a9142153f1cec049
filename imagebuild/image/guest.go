package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/u-root/mkuimage/cpio"

	"github.com/dyad-ha/dyad/imagebuild/manifest"
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
	// Cmdline is the kernel command line to boot the guest with; the PM
	// image carries it in GuestCmdlineFile.
	Cmdline string
}

// DefaultGuest is the guest of the Dyad image: a counter on a virtio disk,
// reported on the 8250 serial port, which the Debian kernel has built in.
func DefaultGuest() Guest {
	return Guest{
		Init: "./qemu-tests/guest",
		Modules: []string{
			"virtio_pci", "virtio_blk",
			// The ACPI power button as an input device (QMP
			// system_powerdown), read through evdev.
			"button", "evdev",
			// The driver of QEMU's ISA pvpanic device (ACPI QEMU0001),
			// which tells QEMU of a guest kernel panic (GUEST_PANICKED).
			"pvpanic_mmio",
		},
		Cmdline: GuestCmdline,
	}
}

// GuestCmdline is the test guest's kernel command line. console=ttyS0 is
// its protocol channel; the rest shortens a boot that runs under TCG inside
// a TCG PM, where every printed line and every piece of kernel code run
// once costs: quiet keeps the boot messages off the serial port,
// cryptomgr.notests skips the crypto self-tests (the largest initcall),
// no_timer_check the timer IRQ check, tsc=reliable the TSC watchdog that
// may otherwise move timekeeping to the far costlier ACPI PM timer, and
// mitigations=off the speculation workarounds a test guest needs not.
// Measured inside a TCG PM on a 2-core host shared with other PMs (so
// give or take a minute): about 220 s with "console=ttyS0 quiet", about
// 200 s with this line; 230-270 s with console=ttyS0 alone.
// panic= is left at the Debian default 0: a panicking guest hangs, so QEMU
// hears of the panic through pvpanic instead of seeing a reboot.
const GuestCmdline = "console=ttyS0 quiet cryptomgr.notests no_timer_check tsc=reliable mitigations=off"

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

// guestInImage is the test guest as the PM image carries it.
type guestInImage struct {
	files    []imageFile
	records  []cpio.Record
	manifest []manifest.File
}

// carryGuest puts the guest's kernel (made from vmlinuz by GuestKernel,
// in work), initramfs (initrd, just built) and command line under dir in
// the PM image, where the agent boots it from.
func carryGuest(ctx context.Context, dir, vmlinuz, initrd, cmdline, work string) (guestInImage, error) {
	if !path.IsAbs(dir) || path.Clean(dir) != dir || dir == "/" {
		return guestInImage{}, fmt.Errorf("guest directory %q must be absolute and clean", dir)
	}
	if cmdline == "" || strings.ContainsAny(cmdline, "\n\x00") {
		return guestInImage{}, fmt.Errorf("guest kernel command line %q: want one non-empty line", cmdline)
	}
	kernel := filepath.Join(work, "guest-kernel.elf")
	if err := GuestKernel(ctx, vmlinuz, kernel); err != nil {
		return guestInImage{}, err
	}
	var g guestInImage
	for _, f := range []struct{ name, source string }{
		{GuestKernelFile, kernel},
		{GuestInitrdFile, initrd},
	} {
		p := path.Join(dir, f.name)
		size, sum, err := manifest.Hash(f.source)
		if err != nil {
			return guestInImage{}, fmt.Errorf("guest %s: %w", f.name, err)
		}
		// Built, not copied: no Source.
		g.files = append(g.files, imageFile{path: p, source: f.source})
		g.manifest = append(g.manifest, manifest.File{Path: p, Size: size, SHA256: sum})
	}
	line := cmdline + "\n"
	p := path.Join(dir, GuestCmdlineFile)
	h := sha256.Sum256([]byte(line))
	g.records = append(g.records, cpio.StaticFile(relative(p), line, 0o644))
	g.manifest = append(g.manifest, manifest.File{Path: p, Size: int64(len(line)), SHA256: hex.EncodeToString(h[:])})
	return g, nil
}
