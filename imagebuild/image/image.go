// Package image builds the Dyad boot artifacts: the Debian kernel, an
// initramfs (assembled with the u-root mkuimage API) holding PID 1, the
// agent, the CLI, host tools with their shared libraries and the kernel
// modules a PM needs, and a manifest describing all of it.
package image

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dyad-ha/dyad/imagebuild/debpkg"
	"github.com/dyad-ha/dyad/imagebuild/elfdeps"
	"github.com/dyad-ha/dyad/imagebuild/manifest"
	"github.com/dyad-ha/dyad/imagebuild/vcs"
)

// Artifact names in the output directory.
const (
	KernelName    = "dyad-kernel"
	InitramfsName = "dyad-initramfs.cpio.gz"
	ManifestName  = "manifest.json"
	// ManifestPath is where the initramfs carries the manifest.
	ManifestPath = "/etc/dyad/manifest.json"
)

// Command is a Go main package compiled into the image.
type Command struct {
	// Package is an import path or a path relative to Config.SourceDir.
	Package string
	// Path is the absolute path of the binary in the image.
	Path string
}

// HostFile is a file copied from the build host. Dynamically linked ELF
// files bring their interpreter and shared libraries along.
type HostFile struct {
	// Source is the host path.
	Source string
	// Path is the absolute path in the image; empty means Source.
	Path string
}

// Config says what to build and from where.
type Config struct {
	// SourceDir is the root of the Go module the Commands belong to.
	SourceDir string
	// OutDir receives the artifacts.
	OutDir string
	// KernelVersion selects /boot/vmlinuz-<version>; empty means the newest
	// kernel that has both a vmlinuz and a modules tree.
	KernelVersion string
	BootDir       string
	ModulesDir    string
	Commands      []Command
	HostFiles     []HostFile
	// LibDirs is the loader search path used to find shared libraries.
	LibDirs []string
	// Modules are kernel module names; their dependencies come along.
	Modules []string
	// Packages are Debian packages always recorded in the manifest, on top
	// of those owning a copied file.
	Packages []string
	// SourceDateEpoch, if set, is the build time (Unix seconds) recorded in
	// the manifest, as in https://reproducible-builds.org/specs/source-date-epoch/.
	SourceDateEpoch string
	// Guest, when its Init is set, also builds GuestInitramfsName, the
	// test guest that boots the same kernel.
	Guest Guest
	// GuestDir, when set (and Guest.Init is), is where the PM image
	// carries the test guest for the agent to boot: GuestKernelFile,
	// GuestInitrdFile and GuestCmdlineFile.
	GuestDir string
}

// Where the PM image carries the test guest (CONTRACTS: in the PM image).
const (
	TestGuestDir     = "/usr/share/dyad/test-guest"
	GuestKernelFile  = "vmlinuz"
	GuestInitrdFile  = "initrd.img"
	GuestCmdlineFile = "cmdline"
)

// Defaults is the configuration of the Dyad image: the paths and lists
// later issues extend (QEMU, drbd-utils, lvm2 join HostFiles).
func Defaults() Config {
	cfg := Config{
		BootDir:    "/boot",
		ModulesDir: "/lib/modules",
		Commands: []Command{
			{Package: "./init", Path: "/init"},
			{Package: "./services/cmd/dyad-agent", Path: "/bin/dyad-agent"},
			{Package: "./services/cmd/dyadctl", Path: "/bin/dyadctl"},
			// The DRBD kernel module's usermode helper (the agent points
			// /sys/module/drbd/parameters/usermode_helper at it).
			{Package: "./services/cmd/dyad-drbd-helper", Path: "/bin/dyad-drbd-helper"},
		},
		HostFiles: []HostFile{
			{Source: "/sbin/mke2fs"},
			{Source: "/etc/mke2fs.conf"},
			// Mirrored storage. Only the multi-call lvm binary is needed:
			// Debian's vgcreate, lvs, ... are symlinks to it, and Dyad
			// always calls `lvm <subcommand>`. Its configuration is the
			// image's own (lvmConfig), not Debian's, which sets nothing.
			{Source: "/sbin/lvm"},
			// DRBD 8.4 userland for the in-tree 8.4 kernel module.
			// drbdadm-84 runs drbdsetup-84 from its own directory and
			// drbdmeta through PATH (/sbin).
			{Source: "/lib/drbd/drbdadm-84"},
			{Source: "/lib/drbd/drbdsetup-84"},
			{Source: "/sbin/drbdmeta"},
			// Running VMs (DESIGN.md §5): qemuFiles are appended below.
		},
		LibDirs: elfdeps.DebianAMD64Dirs(),
		Modules: []string{
			// virtual hardware of the QEMU lab and of PMs that are VMs
			"virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "virtio_rng", "virtio_scsi", "qemu_fw_cfg",
			// networking: raw sockets for heartbeats, bonds, VM bridges and taps
			"af_packet", "bonding", "bridge", "8021q", "tun", "veth", "vhost_net",
			// storage: DRBD over LVM, ext4 data partition, real disk controllers
			"drbd", "dm_mod", "dm_snapshot", "dm_thin_pool", "ext4", "ahci", "nvme", "sd_mod",
			// drbd needs crc32c through the crypto API, which modules.dep does not list
			"crc32c_generic", "libcrc32c",
			// watchdog fencing, ACPI power button
			"softdog", "button", "evdev",
			// real NICs
			"e1000", "e1000e", "igb", "ixgbe",
			// running VMs
			"kvm", "kvm_intel", "kvm_amd",
		},
		Packages: []string{"drbd-utils", "e2fsprogs", "libc6", "lvm2", "qemu-system-x86", "seabios"},
		Guest:    DefaultGuest(),
		GuestDir: TestGuestDir,
	}
	cfg.HostFiles = append(cfg.HostFiles, qemuFiles()...)
	return cfg
}

// qemuFiles are QEMU and what it opens at run time besides its shared
// libraries, found by tracing (strace -e openat) QEMU 7.2 running the
// command lines services/vm.Argv builds, for both machine types (q35, pc),
// with -nodefaults, a VGA card, VNC and a directly booted kernel. QEMU
// finds its data relative to its binary (/usr/bin/../share/qemu, then
// Debian's /usr/share/seabios) and its modules in
// /usr/bin/../lib/x86_64-linux-gnu/qemu, so every file keeps its Debian
// path.
func qemuFiles() []HostFile {
	return []HostFile{
		{Source: "/usr/bin/qemu-system-x86_64"},
		// Debian builds the TCG accelerator as a module that QEMU loads
		// with dlopen (no DT_NEEDED names it): without it a PM without
		// KVM cannot run a VM at all ("invalid accelerator tcg").
		{Source: "/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so"},
		// SeaBIOS for both machine types, and the VGA BIOS of -device VGA.
		{Source: "/usr/share/seabios/bios-256k.bin"},
		{Source: "/usr/share/seabios/vgabios-stdvga.bin"},
		// Option ROMs QEMU adds itself: the TPR patching helper of the
		// x86 machines and the loader of -kernel (linuxboot.bin is the
		// variant for a fw_cfg without DMA, older machine versions).
		{Source: "/usr/share/qemu/kvmvapic.bin"},
		{Source: "/usr/share/qemu/linuxboot_dma.bin"},
		{Source: "/usr/share/qemu/linuxboot.bin"},
		// The loader of an ELF -kernel with a PVH entry: the test guest's
		// kernel (GuestKernel).
		{Source: "/usr/share/qemu/pvh.bin"},
		// The VNC server reads its key map even when none is asked for.
		{Source: "/usr/share/qemu/keymaps/en-us"},
	}
}

// Result describes a finished build.
type Result struct {
	Kernel    string
	Initramfs string
	// InitramfsUncompressed is the size of the cpio archive before gzip.
	InitramfsUncompressed int64
	Manifest              manifest.Manifest
	Duration              time.Duration
}

// Build produces KernelName, InitramfsName, ManifestName and, when
// cfg.Guest.Init is set, GuestInitramfsName in cfg.OutDir.
// Each is written under a temporary name and renamed, so a failed build
// leaves the previous artifacts in place.
func Build(ctx context.Context, log *slog.Logger, cfg Config) (Result, error) {
	start := time.Now()
	if cfg.SourceDir == "" || cfg.OutDir == "" {
		return Result{}, errors.New("image: SourceDir and OutDir must be set")
	}
	kver, vmlinuz, err := findKernel(cfg.BootDir, cfg.ModulesDir, cfg.KernelVersion)
	if err != nil {
		return Result{}, err
	}
	log.Info("kernel selected", "version", kver, "vmlinuz", vmlinuz)

	src, err := vcs.Describe(ctx, cfg.SourceDir)
	if err != nil {
		return Result{}, err
	}
	builtAt, err := buildTime(cfg.SourceDateEpoch, src.CommitTime)
	if err != nil {
		return Result{}, err
	}
	log.Info("source identified", "version", src.Version, "revision", src.Revision, "built_at", builtAt)

	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return Result{}, fmt.Errorf("creating output directory: %w", err)
	}
	work, err := os.MkdirTemp("", "dyad-imagebuild-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(work)

	modules, err := selectModules(filepath.Join(cfg.ModulesDir, kver), kver, cfg.Modules)
	if err != nil {
		return Result{}, err
	}
	log.Info("kernel modules selected", "loadable", len(modules.selection.Modules), "builtin", modules.selection.Builtin)

	hostFiles, err := collectHostFiles(cfg.HostFiles, cfg.LibDirs)
	if err != nil {
		return Result{}, err
	}
	log.Info("host files collected", "files", len(hostFiles))

	goVersion, binaries, err := buildCommands(ctx, log, cfg.SourceDir, filepath.Join(work, "bin"), src.Version, cfg.Commands)
	if err != nil {
		return Result{}, err
	}

	m := manifest.Manifest{
		Version:        src.Version,
		GitRevision:    src.Revision,
		BuiltAt:        builtAt,
		GoVersion:      goVersion,
		KernelVersion:  kver,
		Modules:        modules.selection.Names(),
		BuiltinModules: modules.selection.Builtin,
	}
	for _, b := range binaries {
		size, sum, err := manifest.Hash(b.source)
		if err != nil {
			return Result{}, err
		}
		m.Binaries = append(m.Binaries, manifest.File{Path: b.path, Size: size, SHA256: sum})
	}
	copied := append(slices.Clone(hostFiles), modules.files...)
	for _, f := range copied {
		mf := manifest.File{Path: f.path, Source: f.source, Symlink: f.symlink}
		if f.symlink == "" {
			if mf.Size, mf.SHA256, err = manifest.Hash(f.source); err != nil {
				return Result{}, err
			}
		}
		m.Files = append(m.Files, mf)
	}
	if m.Packages, err = packageVersions(ctx, cfg.Packages, vmlinuz, copied); err != nil {
		return Result{}, err
	}
	log.Info("Debian packages recorded", "packages", len(m.Packages))

	kernelOut := filepath.Join(cfg.OutDir, KernelName)
	initramfsOut := filepath.Join(cfg.OutDir, InitramfsName)
	manifestOut := filepath.Join(cfg.OutDir, ManifestName)
	// The manifest is published last: it describes the others.
	outputs := []string{kernelOut, initramfsOut}
	guestOut := filepath.Join(cfg.OutDir, GuestInitramfsName)
	if cfg.Guest.Init != "" {
		outputs = append(outputs, guestOut)
	}
	outputs = append(outputs, manifestOut)
	published := false
	defer func() {
		if !published {
			for _, p := range outputs {
				os.Remove(p + ".tmp")
			}
		}
	}()
	if err := copyFile(vmlinuz, kernelOut+".tmp"); err != nil {
		return Result{}, err
	}
	kernelArtifact, err := artifact(KernelName, kernelOut+".tmp")
	if err != nil {
		return Result{}, err
	}
	m.Artifacts = []manifest.Artifact{kernelArtifact}
	var guest guestInImage
	if cfg.Guest.Init != "" {
		// Built before the PM initramfs so that the manifest the PM
		// carries lists the guest too, and the PM can carry the guest.
		if _, err := buildGuest(ctx, log, cfg.SourceDir, cfg.ModulesDir, kver, src.Version, cfg.Guest, work, guestOut+".tmp"); err != nil {
			return Result{}, err
		}
		guestArtifact, err := artifact(GuestInitramfsName, guestOut+".tmp")
		if err != nil {
			return Result{}, err
		}
		m.Artifacts = append(m.Artifacts, guestArtifact)
		if cfg.GuestDir != "" {
			if guest, err = carryGuest(ctx, cfg.GuestDir, vmlinuz, guestOut+".tmp", cfg.Guest.Cmdline, work); err != nil {
				return Result{}, err
			}
			m.Files = append(m.Files, guest.manifest...)
		}
	}
	embedded, err := m.Marshal()
	if err != nil {
		return Result{}, err
	}

	arch := archive{
		base:      append(pmRecords(kver, modules.dep, embedded), guest.records...),
		binaries:  binaries,
		files:     append(slices.Clone(copied), guest.files...),
		tempDir:   work,
		outputTmp: initramfsOut + ".tmp",
	}
	archiveStart := time.Now()
	rawSize, err := arch.write(log)
	if err != nil {
		return Result{}, err
	}
	initramfsArtifact, err := artifact(InitramfsName, initramfsOut+".tmp")
	if err != nil {
		return Result{}, err
	}
	log.Info("initramfs written", "uncompressed_bytes", rawSize, "compressed_bytes", initramfsArtifact.Size, "duration", time.Since(archiveStart).Round(time.Millisecond))
	m.Artifacts = append(m.Artifacts, initramfsArtifact)
	outer, err := m.Marshal()
	if err != nil {
		return Result{}, err
	}
	if err := os.WriteFile(manifestOut+".tmp", outer, 0o644); err != nil {
		return Result{}, fmt.Errorf("writing manifest: %w", err)
	}
	for _, p := range outputs {
		if err := os.Rename(p+".tmp", p); err != nil {
			return Result{}, fmt.Errorf("publishing artifact: %w", err)
		}
	}
	published = true
	return Result{Kernel: kernelOut, Initramfs: initramfsOut, InitramfsUncompressed: rawSize, Manifest: m, Duration: time.Since(start)}, nil
}

// buildTime prefers SOURCE_DATE_EPOCH, then the commit time; a tree with
// neither gets the Unix epoch rather than the wall clock, which would make
// every build differ.
func buildTime(sourceDateEpoch string, commit time.Time) (string, error) {
	switch {
	case sourceDateEpoch != "":
		sec, err := strconv.ParseInt(sourceDateEpoch, 10, 64)
		if err != nil {
			return "", fmt.Errorf("SOURCE_DATE_EPOCH %q is not a number of seconds: %w", sourceDateEpoch, err)
		}
		return time.Unix(sec, 0).UTC().Format(time.RFC3339), nil
	case !commit.IsZero():
		return commit.UTC().Format(time.RFC3339), nil
	default:
		return time.Unix(0, 0).UTC().Format(time.RFC3339), nil
	}
}

// imageFile is one file placed in the image.
type imageFile struct {
	// path is absolute in the image.
	path string
	// source is the host path as found (possibly a symlink); the content
	// comes from its resolved target.
	source string
	// symlink, when set, makes path a symbolic link with this target
	// instead of a copy.
	symlink string
}

// collectHostFiles expands the host file list with shared libraries. When
// several image paths resolve to the same host file (the loader is both
// /lib64/ld-linux-x86-64.so.2 and a DT_NEEDED of libc), the first path
// gets the content and the others become relative symlinks to it, as on
// Debian.
func collectHostFiles(files []HostFile, libDirs []string) ([]imageFile, error) {
	paths := map[string]string{} // image path -> host path
	add := func(imagePath, hostPath string) error {
		if prev, ok := paths[imagePath]; ok && prev != hostPath {
			return fmt.Errorf("image path %s would hold both %s and %s", imagePath, prev, hostPath)
		}
		paths[imagePath] = hostPath
		return nil
	}
	for _, hf := range files {
		dst := hf.Path
		if dst == "" {
			dst = hf.Source
		}
		if !path.IsAbs(dst) || path.Clean(dst) != dst {
			return nil, fmt.Errorf("image path %q must be absolute and clean", dst)
		}
		info, err := os.Stat(hf.Source)
		if err != nil {
			return nil, fmt.Errorf("host file: %w", err)
		}
		if !info.Mode().IsRegular() {
			return nil, fmt.Errorf("host file %s is not a regular file", hf.Source)
		}
		if err := add(dst, hf.Source); err != nil {
			return nil, err
		}
		if !isELF(hf.Source) {
			continue
		}
		libs, err := elfdeps.Resolve(hf.Source, libDirs)
		if err != nil {
			return nil, fmt.Errorf("shared libraries of %s: %w", hf.Source, err)
		}
		for _, lib := range libs {
			if err := add(lib, lib); err != nil {
				return nil, err
			}
		}
	}
	imagePaths := make([]string, 0, len(paths))
	for p := range paths {
		imagePaths = append(imagePaths, p)
	}
	slices.Sort(imagePaths)
	holder := map[string]string{} // resolved host path -> image path with the content
	var out []imageFile
	for _, p := range imagePaths {
		real, err := filepath.EvalSymlinks(paths[p])
		if err != nil {
			return nil, fmt.Errorf("host file: %w", err)
		}
		f := imageFile{path: p, source: paths[p]}
		if first, ok := holder[real]; ok {
			rel, err := filepath.Rel(path.Dir(p), first)
			if err != nil {
				return nil, err
			}
			f.symlink = rel
		} else {
			holder[real] = p
		}
		out = append(out, f)
	}
	return out, nil
}

func isELF(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	magic := make([]byte, 4)
	_, err = f.ReadAt(magic, 0)
	return err == nil && string(magic) == "\x7fELF"
}

// packageVersions records the versions of the required packages and of the
// packages owning the kernel and every copied file.
func packageVersions(ctx context.Context, required []string, vmlinuz string, files []imageFile) (map[string]string, error) {
	paths := []string{vmlinuz}
	for _, f := range files {
		paths = append(paths, f.source)
	}
	owners, err := debpkg.Owners(ctx, paths)
	if err != nil {
		return nil, err
	}
	pkgs := slices.Clone(required)
	for _, p := range owners {
		pkgs = append(pkgs, p)
	}
	slices.Sort(pkgs)
	return debpkg.Versions(ctx, slices.Compact(pkgs))
}

func artifact(name, p string) (manifest.Artifact, error) {
	size, sum, err := manifest.Hash(p)
	if err != nil {
		return manifest.Artifact{}, err
	}
	return manifest.Artifact{Name: name, Size: size, SHA256: sum}, nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return nil
}

// relative turns an absolute image path into the archive-relative form
// mkuimage expects.
func relative(imagePath string) string { return strings.TrimPrefix(imagePath, "/") }
