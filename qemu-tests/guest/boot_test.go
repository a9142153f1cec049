package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/imagebuild/image"
	"github.com/dyad-ha/dyad/qemu-tests/guest/serial"
)

const qemuBinary = "qemu-system-x86_64"

// bootTimeout bounds one wait on the guest's serial output. Under TCG on a
// 2-core CI machine the Debian kernel reaches the guest's init in a few
// seconds; the margin is for loaded machines.
const bootTimeout = 3 * time.Minute

// TestBootCounterSurvivesKill boots the guest, SIGKILLs QEMU after a few
// durable writes and boots it again on the same disk: every value the guest
// printed as durable must be on the disk, and the boot must be a new one.
func TestBootCounterSurvivesKill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	guest := buildTestGuest(ctx, t, dir)

	disk := blankDisk(t, dir)

	// A kernel panic ends the test at once instead of rebooting.
	first := startGuest(ctx, t, guest, disk, dir, "boot1", "-no-reboot")
	lines := first.waitFor(ctx, t, func(ls []serial.Line) bool { return count(ls, serial.Durable) >= 5 })
	first.kill(t)
	// The serial file may hold lines printed after those waitFor saw, up
	// to the kill: all of them count as reported durable.
	lines = first.lines(t)
	if lines[0].Kind != "START" || lines[0].N != 0 {
		t.Fatalf("first boot on a blank disk: first line %+v, want START n=0", lines[0])
	}
	last := lines[len(lines)-1]
	// Strictly increasing rather than consecutive: a kernel warning
	// printed in the middle of a line would hide that line from serial.Parse.
	for i := 1; i < len(lines); i++ {
		if l := lines[i]; l.Kind != "DURABLE" || l.Boot != lines[0].Boot || l.N <= lines[i-1].N {
			t.Fatalf("first boot, line %d: %+v; want DURABLE boot=%s n>%d", i+1, l, lines[0].Boot, lines[i-1].N)
		}
	}
	t.Logf("first boot: QEMU start to first DURABLE line %s under TCG; killed after n=%d", first.firstDurable.Round(10*time.Millisecond), last.N)

	second := startGuest(ctx, t, guest, disk, dir, "boot2", "-no-reboot")
	lines = second.waitFor(ctx, t, func(ls []serial.Line) bool { return count(ls, serial.Durable) >= 1 })
	second.kill(t)
	start := lines[0]
	if start.Kind != "START" {
		t.Fatalf("second boot: first line %+v, want START", start)
	}
	if start.N < last.N {
		t.Errorf("second boot read n=%d from the disk, but the first boot reported n=%d durable", start.N, last.N)
	}
	if start.Boot == last.Boot {
		t.Errorf("second boot has the first boot's id %s", start.Boot)
	}
	if next := lines[1]; next.Kind != "DURABLE" || next.Boot != start.Boot || next.N != start.N+1 {
		t.Errorf("second boot: line after START is %+v, want DURABLE boot=%s n=%d", next, start.Boot, start.N+1)
	}
	t.Logf("second boot: read n=%d, first DURABLE after %s", start.N, second.firstDurable.Round(10*time.Millisecond))
}

// buildTestGuest builds the guest initramfs and kernel into dir as the PM
// image carries them, skipping the test when the host cannot boot them.
func buildTestGuest(ctx context.Context, t *testing.T, dir string) image.GuestResult {
	t.Helper()
	if _, err := exec.LookPath(qemuBinary); err != nil {
		t.Skipf("%s not installed: %v", qemuBinary, err)
	}
	if matches, _ := filepath.Glob("/boot/vmlinuz-*"); len(matches) == 0 {
		t.Skip("host has no Debian kernel in /boot to boot the guest with")
	}
	src, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	guest, err := image.BuildGuest(ctx, log, image.GuestConfig{
		SourceDir: src,
		Output:    filepath.Join(dir, image.GuestInitramfsName),
		Guest:     image.DefaultGuest(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(guest.Initramfs); err == nil {
		t.Logf("guest initramfs: %d KiB compressed, %d KiB uncompressed, kernel %s", st.Size()>>10, guest.Uncompressed>>10, guest.KernelVersion)
	}
	// The kernel as the PM image carries it: unpacked, booted through PVH.
	kernel := filepath.Join(dir, "vmlinux")
	if err := image.GuestKernel(ctx, guest.Kernel, kernel); err != nil {
		t.Fatal(err)
	}
	guest.Kernel = kernel
	return guest
}

// blankDisk makes a 1 MiB zeroed disk image in dir: a counter of 0.
func blankDisk(t *testing.T, dir string) string {
	t.Helper()
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 1<<20); err != nil {
		t.Fatal(err)
	}
	return disk
}

// runningGuest is one QEMU process with its serial output in a file.
type runningGuest struct {
	cmd *exec.Cmd
	// serial is the log of the serial console; serialSocket and
	// qmpSocket are where a test connects to type on the console and
	// to control QEMU.
	serial       string
	serialSocket string
	qmpSocket    string
	started      time.Time
	exited       chan struct{}
	waitErr      error
	// firstDurable is the time from QEMU's start to the first DURABLE
	// line seen on the serial port.
	firstDurable time.Duration
}

// startGuest boots the guest on disk with QEMU under TCG. Its files
// (serial log, sockets) are named after name in dir. extra arguments are
// appended to QEMU's.
func startGuest(ctx context.Context, t *testing.T, g image.GuestResult, disk, dir, name string, extra ...string) *runningGuest {
	t.Helper()
	r := &runningGuest{
		serial:       filepath.Join(dir, name+"-serial.log"),
		serialSocket: filepath.Join(dir, name+"-serial.sock"),
		qmpSocket:    filepath.Join(dir, name+"-qmp.sock"),
		exited:       make(chan struct{}),
	}
	args := []string{
		"-accel", "tcg",
		"-nodefaults", "-no-user-config",
		"-m", "256",
		"-kernel", g.Kernel,
		"-initrd", g.Initramfs,
		"-append", image.DefaultGuest().Cmdline,
		// The console is a socket a test may type into; QEMU logs what
		// the guest prints to a file whether or not anyone is connected.
		"-chardev", "socket,id=serial0,path=" + r.serialSocket + ",server=on,wait=off,logfile=" + r.serial,
		"-serial", "chardev:serial0",
		"-chardev", "socket,id=qmp,path=" + r.qmpSocket + ",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-drive", "file=" + disk + ",if=virtio,format=raw,cache=none",
		"-display", "none",
	}
	cmd := exec.CommandContext(ctx, qemuBinary, append(args, extra...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	r.cmd = cmd
	r.started = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", qemuBinary, err)
	}
	go func() {
		r.waitErr = cmd.Wait()
		if stderr.Len() > 0 {
			r.waitErr = fmt.Errorf("%w: %s", r.waitErr, bytes.TrimSpace(stderr.Bytes()))
		}
		close(r.exited)
	}()
	t.Cleanup(func() { r.kill(t) })
	return r
}

// waitFor polls the serial log until done holds for the protocol lines
// seen so far, and returns them. QEMU exiting, the guest reporting a
// failure or the deadline fail the test.
func (r *runningGuest) waitFor(ctx context.Context, t *testing.T, done func([]serial.Line) bool) []serial.Line {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		ls, failure := r.read(t)
		if r.firstDurable == 0 && count(ls, serial.Durable) > 0 {
			r.firstDurable = time.Since(r.started)
		}
		if failure != "" {
			t.Fatalf("guest reported: %s\nserial log:\n%s", failure, r.log())
		}
		if done(ls) {
			return ls
		}
		select {
		case <-poll.C:
		case <-r.exited:
			t.Fatalf("QEMU exited before the guest got there: %v\nserial log:\n%s", r.waitErr, r.log())
		case <-ctx.Done():
			t.Fatalf("guest not there after %s: %v\nserial log:\n%s", bootTimeout, ctx.Err(), r.log())
		}
	}
}

// kill ends QEMU with SIGKILL, the closest a host process gets to pulling
// the VM's power cord, and waits for it to be gone.
func (r *runningGuest) kill(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("killing QEMU: %v", err)
	}
	<-r.exited
}

// lines returns the protocol lines of the complete serial log.
func (r *runningGuest) lines(t *testing.T) []serial.Line {
	t.Helper()
	ls, _ := r.read(t)
	if len(ls) == 0 {
		t.Fatalf("no guest output\nserial log:\n%s", r.log())
	}
	return ls
}

// read parses the serial log; a trailing line without its newline is
// still being written and is left for the next poll.
func (r *runningGuest) read(t *testing.T) (lines []serial.Line, failure string) {
	t.Helper()
	b, err := os.ReadFile(r.serial)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ""
	}
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		b = nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		text := sc.Text()
		if l, ok := serial.Parse(text); ok {
			lines = append(lines, l)
		} else if bytes.HasPrefix(bytes.TrimLeft([]byte(text), "\r"), []byte(serial.FailedPrefix)) {
			failure = text
		}
	}
	return lines, failure
}

func (r *runningGuest) log() string {
	b, _ := os.ReadFile(r.serial)
	return string(b)
}

func count(ls []serial.Line, kind string) int {
	n := 0
	for _, l := range ls {
		if l.Kind == kind {
			n++
		}
	}
	return n
}

// testWriter sends log output to t.Log.
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
