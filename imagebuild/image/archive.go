package image

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/u-root/mkuimage/cpio"
	"github.com/u-root/mkuimage/uimage"
	"github.com/u-root/mkuimage/uimage/initramfs"
	"github.com/u-root/uio/llog"
)

// archive is the content of an initramfs.
type archive struct {
	// base are the entries that come from no file (pmRecords, guestRecords).
	base      []cpio.Record
	binaries  []builtBinary
	files     []imageFile
	tempDir   string
	outputTmp string
}

// LVMConfigPath is where lvm reads its configuration.
const LVMConfigPath = "/etc/lvm/lvm.conf"

// lvmConfig replaces Debian's lvm.conf, which sets nothing: everything not
// here is lvm's built-in default.
const lvmConfig = `# Dyad: written by imagebuild.
activation {
	# There is no udev in the image: lvm creates and removes the device
	# nodes (/dev/<vg>/<lv>, /dev/mapper/<vg>-<lv>) itself. With udev
	# synchronisation on, lvcreate fails ("device not cleared").
	udev_sync = 0
	udev_rules = 0
	# There is no dmeventd either (snapshots would warn on every change).
	monitoring = 0
}
devices {
	# A DRBD device carries what its backing LV holds, a VM's disk: a PV
	# a guest made there must never be seen (or activated) on the PM.
	global_filter = [ "r|^/dev/drbd|" ]
}
`

// pmRecords are the PM initramfs entries that exist in no host file: the
// directories PID 1 mounts on, the console device the kernel opens for PID
// 1's stdio before devtmpfs is mounted, and generated files and links.
func pmRecords(kver string, modDep, manifest []byte) []cpio.Record {
	return []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.Directory("data", 0o755),
		cpio.Directory("dev", 0o755),
		cpio.Directory("etc", 0o755),
		cpio.Directory("etc/dyad", 0o755),
		cpio.Directory("proc", 0o555),
		cpio.Directory("run", 0o755),
		cpio.Directory("sbin", 0o755),
		cpio.Directory("sys", 0o555),
		cpio.Directory("tmp", 0o1777),
		cpio.Directory("var", 0o755),
		// drbd-utils keep state here and fail without the directories:
		// drbdsetup and drbdmeta take a lock file /var/lock/drbd-147-<minor>,
		// drbdadm registers resources in /var/run/drbd and keeps
		// /var/lib/drbd. They are real directories on the initramfs
		// rather than Debian's links into /run, whose tmpfs is mounted
		// empty at boot.
		cpio.Directory("var/lib", 0o755),
		cpio.Directory("var/lib/drbd", 0o700),
		cpio.Directory("var/lock", 0o755),
		cpio.Directory("var/run", 0o755),
		cpio.Directory("var/run/drbd", 0o755),
		cpio.Directory("etc/lvm", 0o755),
		cpio.StaticFile(relative(LVMConfigPath), lvmConfig, 0o644),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.CharDev("dev/null", 0o666, 1, 3),
		// e2fsprogs and util-linux consult /etc/mtab to refuse working on
		// mounted file systems.
		cpio.Symlink("etc/mtab", "../proc/self/mounts"),
		cpio.StaticFile(relative(ManifestPath), string(manifest), 0o644),
		cpio.StaticFile(relative("/lib/modules/"+kver+"/modules.dep"), string(modDep), 0o644),
	}
}

// write assembles the archive with mkuimage into a.outputTmp and returns
// its uncompressed size.
func (a archive) write(log *slog.Logger) (int64, error) {
	base, err := cpio.ArchiveFromRecords(a.base)
	if err != nil {
		return 0, fmt.Errorf("initramfs base records: %w", err)
	}
	// Shared libraries were resolved by elfdeps and are in a.files, so
	// mkuimage's ldd pass (which runs the host loader) is off.
	mods := []uimage.Modifier{
		uimage.WithSkipLDD(),
		uimage.WithTempDir(a.tempDir),
		uimage.WithBaseArchive(base),
	}
	for _, b := range a.binaries {
		mods = append(mods, uimage.WithFiles(b.source+":"+relative(b.path)))
	}
	for _, f := range a.files {
		if f.symlink != "" {
			mods = append(mods, uimage.WithSymlink(relative(f.path), filepath.Join(filepath.Dir(f.path), f.symlink)))
			continue
		}
		real, err := filepath.EvalSymlinks(f.source)
		if err != nil {
			return 0, fmt.Errorf("initramfs: %w", err)
		}
		// mkuimage splits "source:destination" at the first colon.
		if strings.Contains(real, ":") {
			return 0, fmt.Errorf("initramfs: host file %s has a colon in its path, which mkuimage cannot take", real)
		}
		mods = append(mods, uimage.WithFiles(real+":"+relative(f.path)))
	}
	out := &gzipCPIO{path: a.outputTmp}
	mods = append(mods, uimage.WithOutput(out))
	err = uimage.Create(mkuimageLogger(log), mods...)
	if cerr := out.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("creating initramfs with mkuimage: %w", err)
	}
	return out.raw.n, nil
}

// mkuimageLogger forwards mkuimage's printf-style log to slog.
func mkuimageLogger(log *slog.Logger) *llog.Logger {
	return &llog.Logger{
		Level: slog.LevelInfo,
		Sink: func(level slog.Level, format string, v ...any) {
			log.Log(context.Background(), level, fmt.Sprintf(format, v...), "component", "mkuimage")
		},
	}
}

// gzipCPIO is an initramfs.WriteOpener producing a gzip-compressed newc
// archive. The gzip header carries no name or time, so equal archives
// compress to equal bytes.
type gzipCPIO struct {
	path string
	f    *os.File
	gz   *gzip.Writer
	raw  *countingWriter
}

// countingWriter measures the uncompressed archive, the figure that bounds
// the RAM the unpacked initramfs takes on a PM.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

var _ initramfs.WriteOpener = (*gzipCPIO)(nil)

func (g *gzipCPIO) OpenWriter() (initramfs.Writer, error) {
	f, err := os.OpenFile(g.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	g.f = f
	g.gz = gzip.NewWriter(f)
	g.raw = &countingWriter{w: g.gz}
	return gzipWriter{RecordWriter: cpio.Newc.Writer(g.raw), g: g}, nil
}

// close releases the file whether or not the archive was finished.
func (g *gzipCPIO) close() error {
	if g.f == nil {
		return nil
	}
	err := g.f.Close()
	g.f = nil
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

type gzipWriter struct {
	cpio.RecordWriter
	g *gzipCPIO
}

// Finish writes the cpio trailer and flushes the compressor and the file.
func (w gzipWriter) Finish() error {
	if err := cpio.WriteTrailer(w); err != nil {
		return err
	}
	if err := w.g.gz.Close(); err != nil {
		return err
	}
	return w.g.f.Sync()
}
