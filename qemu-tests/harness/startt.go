package harness

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serialTailLines is how much of each serial log a failed test prints.
const serialTailLines = 80

// startTimeout bounds Start inside StartT; guests boot afterwards.
const startTimeout = 2 * time.Minute

// StartT starts a unit for a test and closes it when the test ends. It
// skips the test only when the Dyad image has not been built and
// DYAD_REQUIRE_IMAGE is unset (make test sets it, so a missing image fails
// there). A failed test gets the tail of every PM's serial log.
func StartT(t testing.TB, opts Options) *Unit {
	t.Helper()
	if opts.Out == "" {
		out, err := DefaultOut()
		if err != nil {
			t.Fatal(err)
		}
		opts.Out = out
	}
	kernel := filepath.Join(opts.Out, KernelFile)
	if _, err := os.Stat(kernel); errors.Is(err, os.ErrNotExist) && os.Getenv("DYAD_REQUIRE_IMAGE") == "" {
		t.Skipf("no Dyad image: %s does not exist (run make image; DYAD_REQUIRE_IMAGE=1 turns this skip into a failure)", kernel)
	}
	if d := os.Getenv("DYAD_KEEP_WORKDIR"); opts.WorkDir == "" && d != "" {
		// Kept for a post-mortem: the PMs' console logs, disks, QEMU logs.
		w, err := os.MkdirTemp(d, strings.ReplaceAll(t.Name(), "/", "_")+"-")
		if err != nil {
			t.Fatal(err)
		}
		opts.WorkDir = w
	}
	if opts.WorkDir == "" {
		opts.WorkDir = t.TempDir()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	u, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start unit: %v", err)
	}
	t.Cleanup(func() {
		if err := u.Close(); err != nil {
			t.Errorf("close unit: %v", err)
		}
		if t.Failed() {
			for _, pm := range u.pms {
				t.Logf("last %d lines of pm%d serial log %s:\n%s", serialTailLines, pm.n, pm.serial, tail(pm.SerialLog(), serialTailLines))
			}
		}
	})
	return u
}
