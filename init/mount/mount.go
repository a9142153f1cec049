// Package mount sets up the pseudo and temporary file systems PID 1 needs
// before anything else runs. Every step skips targets that are already mount
// points, so running it twice is safe.
package mount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Point is one mount.
type Point struct {
	Source string
	Target string
	FSType string
	Flags  uintptr
	Data   string
}

// Base returns the mounts of the appliance contract, parents before children.
func Base() []Point {
	const nodev = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	return []Point{
		{"proc", "/proc", "proc", nodev, ""},
		{"sysfs", "/sys", "sysfs", nodev, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", nodev, ""},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	}
}

// Kernel is the narrow part of the kernel mounting needs.
type Kernel interface {
	Mounted(target string) (bool, error)
	Mount(p Point) error
}

// All mounts each point in order, creating targets and skipping those already
// mounted. It stops at the first failure because later points usually live
// below earlier ones.
func All(ctx context.Context, log *slog.Logger, k Kernel, points []Point) error {
	for _, p := range points {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := os.MkdirAll(p.Target, 0o755); err != nil {
			return fmt.Errorf("create mount point %s: %w", p.Target, err)
		}
		ok, err := k.Mounted(p.Target)
		if err != nil {
			return err
		}
		if ok {
			log.Debug("dyad-init: already mounted", "target", p.Target)
			continue
		}
		if err := k.Mount(p); err != nil {
			return err
		}
		log.Debug("dyad-init: mounted", "target", p.Target, "fstype", p.FSType)
	}
	return nil
}

// Linux is the real Kernel.
type Linux struct{}

// Mount calls mount(2).
func (Linux) Mount(p Point) error {
	if err := unix.Mount(p.Source, p.Target, p.FSType, p.Flags, p.Data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", p.FSType, p.Target, err)
	}
	return nil
}

// Mounted reports whether target is a mount point: its device differs from
// its parent's, or it is the root. Every file system mounted here is a new
// superblock, so bind mounts (same device) need not be recognised.
func (Linux) Mounted(target string) (bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("stat %s: %w", target, err)
	}
	if err := unix.Stat(filepath.Join(target, ".."), &parent); err != nil {
		return false, fmt.Errorf("stat parent of %s: %w", target, err)
	}
	return st.Dev != parent.Dev || st.Ino == parent.Ino, nil
}
