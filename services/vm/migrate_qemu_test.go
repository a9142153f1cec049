//go:build linux

package vm

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/imagebuild/image"
	"github.com/dyad-ha/dyad/qemu-tests/guest/serial"
	"github.com/dyad-ha/dyad/services/qmp"
)

// guestWait bounds one wait on the tiny guest's serial output; under TCG
// on a 2-core machine the guest prints its first DURABLE line within
// seconds, the margin is for loaded machines.
const guestWait = 3 * time.Minute

// TestMigrateTinyGuest live-migrates the tiny test guest between two QEMU
// processes on this host, over a unix socket, on one shared raw file
// opened with cache=none by both (as both PMs open the dual-primary DRBD
// device during a migration). QEMU 7.2 needs no file.locking=off for
// this: the -incoming target opens its images inactive and takes the
// image locks only when it activates them at the switchover, after the
// source has released them. Before that, the test checks the failure
// paths: each must leave the guest running on the source, still counting.
func TestMigrateTinyGuest(t *testing.T) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 is not installed on this host")
	}
	if matches, _ := filepath.Glob("/boot/vmlinuz-*"); len(matches) == 0 {
		t.Skip("host has no kernel in /boot/vmlinuz-* to boot the tiny guest with")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	srcDir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	guest, err := image.BuildGuest(ctx, slog.New(slog.DiscardHandler), image.GuestConfig{
		SourceDir: srcDir,
		Output:    filepath.Join(dir, image.GuestInitramfsName),
		Guest:     image.DefaultGuest(),
	})
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 1*MiB); err != nil {
		t.Fatal(err)
	}
	direct := supportsDirect(disk)
	if !direct {
		t.Logf("%s does not take O_DIRECT: the shared disk uses the page cache", dir)
	}
	machine := func(name string) Machine {
		m := Machine{
			Name: "mig", UUID: "6f1c2a9e-4b7d-4e2a-9c3b-0123456789ab",
			Accel: TCG, VCPUs: 1, MemoryBytes: 256 * MiB,
			Disks:      []Disk{{Path: disk, Direct: direct}},
			Kernel:     guest.Kernel,
			Initrd:     guest.Initramfs,
			Append:     "console=ttyS0 quiet",
			SerialFile: filepath.Join(dir, name+"-serial.log"),
			QMPSocket:  filepath.Join(dir, name+"-qmp.sock"),
			VNCSocket:  filepath.Join(dir, name+"-vnc.sock"),
		}
		m.Incoming = name != "src"
		return m
	}

	src := startQEMU(ctx, t, bin, machine("src"))
	lines := src.waitDurable(ctx, t, func(ls []guestLine) bool { return len(ls) >= 3 })
	boot := lines[0].boot
	t.Logf("source guest boot=%s counting, n=%d", boot, lines[len(lines)-1].n)

	// stillCounting waits for the source to print a DURABLE line of the
	// same boot beyond every line seen so far.
	stillCounting := func(t *testing.T) {
		t.Helper()
		last := src.durable(t)
		n := last[len(last)-1].n
		if st := status(ctx, t, src.qmp); st != "running" {
			t.Errorf("source status %q after the failure, want running", st)
		}
		src.waitDurable(ctx, t, func(ls []guestLine) bool { return ls[len(ls)-1].n > n })
		for _, l := range src.durable(t) {
			if l.boot != boot {
				t.Fatalf("source printed %+v: the guest rebooted (boot was %s)", l, boot)
			}
		}
	}
	slow := MigrateOptions{BandwidthBytes: 1 << 20, DowntimeLimit: 300 * time.Millisecond, Log: testLogger(t)}

	t.Run("unreachable target", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		uri := "tcp:" + l.Addr().String()
		l.Close()
		_, err = LiveMigrate(ctx, src.qmp, nil, uri, slow)
		if !errors.Is(err, ErrMigrationFailed) {
			t.Fatalf("LiveMigrate to the closed port %s: %v, want ErrMigrationFailed", uri, err)
		}
		t.Logf("as expected: %v", err)
		stillCounting(t)
	})

	t.Run("target dies mid-migration", func(t *testing.T) {
		dst := startQEMU(ctx, t, bin, machine("dead"))
		res := migrateAsync(ctx, src.qmp, dst.qmp, "unix:"+filepath.Join(dir, "dead.sock"), slow)
		waitMigrationActive(ctx, t, src.qmp, res)
		dst.kill(t)
		r := <-res
		if !errors.Is(r.err, ErrMigrationFailed) {
			t.Fatalf("LiveMigrate with the target killed: %+v, %v; want ErrMigrationFailed", r.stats, r.err)
		}
		t.Logf("as expected: %v", r.err)
		stillCounting(t)
	})

	t.Run("cancelled by the caller", func(t *testing.T) {
		dst := startQEMU(ctx, t, bin, machine("cancelled"))
		mctx, mcancel := context.WithCancel(ctx)
		defer mcancel()
		res := migrateAsync(mctx, src.qmp, dst.qmp, "unix:"+filepath.Join(dir, "cancelled.sock"), slow)
		waitMigrationActive(ctx, t, src.qmp, res)
		mcancel()
		r := <-res
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("LiveMigrate cancelled: %+v, %v; want context.Canceled", r.stats, r.err)
		}
		stillCounting(t)
		// QEMU 7.2 exits when its incoming migration breaks off; if it
		// has not yet, it must not run the guest.
		var st struct{ Status string }
		err := dst.qmp.Execute(ctx, "query-status", nil, &st)
		if err == nil && st.Status != "inmigrate" {
			t.Errorf("target status %q after the cancelled migration, want it never to have run", st.Status)
		} else if err != nil && !errors.Is(err, qmp.ErrClosed) {
			t.Error(err)
		}
		dst.kill(t)
	})
	if t.Failed() {
		return
	}

	dst := startQEMU(ctx, t, bin, machine("dst"))
	before := src.durable(t)
	stats, err := LiveMigrate(ctx, src.qmp, dst.qmp, "unix:"+filepath.Join(dir, "migrate.sock"),
		MigrateOptions{BandwidthBytes: 1 << 30, DowntimeLimit: 300 * time.Millisecond, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("migration under TCG (256 MiB guest, unix socket, 1 GiB/s limit, 300 ms downtime limit): total %s, downtime %s, expected downtime %s, setup %s, %d of %d bytes transferred",
		stats.TotalTime, stats.Downtime, stats.ExpectedDowntime, stats.SetupTime, stats.TransferredBytes, stats.TotalBytes)
	if stats.TotalTime <= 0 || stats.TransferredBytes <= 0 {
		t.Errorf("implausible stats %+v", stats)
	}
	if st := status(ctx, t, src.qmp); st != "postmigrate" {
		t.Errorf("source status %q after the migration, want postmigrate", st)
	}
	// Every line the source printed, up to the switchover.
	srcLines := src.durable(t)
	last := srcLines[len(srcLines)-1]
	if len(srcLines) < len(before) || last.boot != boot {
		t.Fatalf("source lines went from %d to %d, last %+v", len(before), len(srcLines), last)
	}
	got := dst.waitDurable(ctx, t, func(ls []guestLine) bool { return ls[len(ls)-1].n > last.n+2 })
	for i, l := range got {
		if l.boot != boot {
			t.Fatalf("target line %d: %+v, want boot=%s: the guest was restarted, not migrated", i, l, boot)
		}
		if i > 0 && l.n <= got[i-1].n {
			t.Fatalf("target line %d: %+v after n=%d: the counter went back", i, l, got[i-1].n)
		}
	}
	if got[0].n <= last.n && got[0].n != last.n+1 {
		// The first line on the target may be cut at the switchover;
		// the ones after it must continue the source's count.
		t.Logf("first target line %+v, source ended at n=%d", got[0], last.n)
	}
	if got[len(got)-1].n <= last.n {
		t.Errorf("target counted to n=%d, not beyond the source's n=%d", got[len(got)-1].n, last.n)
	}
	if st := status(ctx, t, dst.qmp); st != "running" {
		t.Errorf("target status %q, want running", st)
	}
	t.Logf("source ended at n=%d, target continued to n=%d with boot=%s", last.n, got[len(got)-1].n, boot)

	if err := src.qmp.Execute(ctx, "quit", nil, nil); err != nil && !errors.Is(err, qmp.ErrClosed) {
		t.Fatal(err)
	}
	select {
	case <-src.exited:
	case <-ctx.Done():
		t.Fatal("source QEMU did not exit after quit")
	}
}

type migrateResult struct {
	stats MigrateStats
	err   error
}

func migrateAsync(ctx context.Context, src, dst *qmp.Client, uri string, opt MigrateOptions) <-chan migrateResult {
	res := make(chan migrateResult, 1)
	go func() {
		st, err := LiveMigrate(ctx, src, dst, uri, opt)
		res <- migrateResult{st, err}
	}()
	return res
}

// waitMigrationActive waits until the source reports the migration as
// active, that is, RAM is streaming to the target.
func waitMigrationActive(ctx context.Context, t *testing.T, src *qmp.Client, res <-chan migrateResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := queryMigrate(ctx, src)
		if err != nil {
			t.Fatal(err)
		}
		if info.Status == "active" && info.TransferredBytes > 0 {
			return
		}
		select {
		case r := <-res:
			t.Fatalf("migration ended before it was active: %+v, %v", r.stats, r.err)
		case <-ctx.Done():
			t.Fatalf("migration not active: status %s", info.Status)
		case <-tick.C:
		}
	}
}

func status(ctx context.Context, t *testing.T, c *qmp.Client) string {
	t.Helper()
	var st struct{ Status string }
	if err := c.Execute(ctx, "query-status", nil, &st); err != nil {
		t.Fatal(err)
	}
	return st.Status
}

// qemuProc is one QEMU process run from a Machine.
type qemuProc struct {
	cmd    *exec.Cmd
	m      Machine
	out    *limitedBuffer
	exited chan struct{}
	qmp    *qmp.Client
}

func startQEMU(ctx context.Context, t *testing.T, bin string, m Machine) *qemuProc {
	t.Helper()
	argv, err := Argv(m)
	if err != nil {
		t.Fatal(err)
	}
	p := &qemuProc{cmd: exec.Command(bin, argv...), m: m, out: &limitedBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.kill(t) })
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	p.qmp = dialQMP(dctx, t, m.QMPSocket, p.exited, p.out)
	t.Cleanup(func() { p.qmp.Close() })
	return p
}

func (p *qemuProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("killing QEMU: %v", err)
	}
	<-p.exited
}

// guestLine is a DURABLE line of the tiny guest (qemu-tests/guest).
type guestLine struct {
	boot string
	n    uint64
}

// durable parses the complete lines of the serial log; a last line
// without its newline is still being written.
func (p *qemuProc) durable(t *testing.T) []guestLine {
	t.Helper()
	b, err := os.ReadFile(p.m.SerialFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	b = b[:bytes.LastIndexByte(b, '\n')+1]
	if i := bytes.Index(b, []byte(serial.FailedPrefix)); i >= 0 {
		t.Fatalf("guest reported: %s", b[i:])
	}
	return durableLines(b)
}

// waitDurable polls the serial log until done holds for a non-empty list
// of DURABLE lines, and returns them.
func (p *qemuProc) waitDurable(ctx context.Context, t *testing.T, done func([]guestLine) bool) []guestLine {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, guestWait)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if ls := p.durable(t); len(ls) > 0 && done(ls) {
			return ls
		}
		select {
		case <-tick.C:
		case <-p.exited:
			t.Fatalf("QEMU %s exited: %s\nserial:\n%s", p.m.SerialFile, p.out, p.serial())
		case <-ctx.Done():
			t.Fatalf("waiting for the guest on %s: %v\nserial:\n%s", p.m.SerialFile, ctx.Err(), p.serial())
		}
	}
}

func (p *qemuProc) serial() string {
	b, _ := os.ReadFile(p.m.SerialFile)
	if len(b) > 4096 {
		b = append([]byte("…"), b[len(b)-4096:]...)
	}
	return string(b)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
