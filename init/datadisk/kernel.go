package datadisk

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"
)

// kernel is the real system: ioctls, mke2fs and mount(2).
type kernel struct{}

func (kernel) rereadPartitions(f *os.File) error {
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); err != nil {
		return fmt.Errorf("BLKRRPART: %w", err)
	}
	return nil
}

func (kernel) mkfs(ctx context.Context, mkfs, dev, label string) error {
	cmd := exec.CommandContext(ctx, mkfs, "-t", "ext4", "-L", label, "-q", "-F", dev)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", cmd, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

func (kernel) mount(dev, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// noatime: the unit database and logs are read constantly; access
	// times would turn every read into a write.
	if err := unix.Mount(dev, dir, "ext4", unix.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("mount %s on %s: %w", dev, dir, err)
	}
	return nil
}
