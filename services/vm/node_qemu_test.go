//go:build linux

package vm

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/imagebuild/image"
	"github.com/dyad-ha/dyad/qemu-tests/guest/serial"
)

// nodeEnv is a host directory laid out like a PM for Node: the test guest's
// files, a run and a data directory per simulated PM, one disk file.
type nodeEnv struct {
	bin      string
	guestDir string
	disk     string
	dir      string
}

func newNodeEnv(ctx context.Context, t *testing.T) nodeEnv {
	t.Helper()
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 is not installed on this host")
	}
	if m, _ := filepath.Glob("/boot/vmlinuz-*"); len(m) == 0 {
		t.Skip("host has no kernel in /boot/vmlinuz-* to boot the tiny guest with")
	}
	dir := t.TempDir()
	src, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	g, err := image.BuildGuest(ctx, slog.New(slog.DiscardHandler), image.GuestConfig{
		SourceDir: src, Output: filepath.Join(dir, image.GuestInitramfsName), Guest: image.DefaultGuest(),
	})
	if err != nil {
		t.Fatal(err)
	}
	gd := filepath.Join(dir, "guest")
	os.MkdirAll(gd, 0o755)
	for name, from := range map[string]string{"vmlinuz": g.Kernel, "initrd.img": g.Initramfs} {
		if err := os.Symlink(from, filepath.Join(gd, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(gd, "cmdline"), []byte("console=ttyS0 quiet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, MiB); err != nil {
		t.Fatal(err)
	}
	if !supportsDirect(disk) {
		t.Skipf("%s does not take O_DIRECT, which the runner uses for volumes", dir)
	}
	return nodeEnv{bin: bin, guestDir: gd, disk: disk, dir: dir}
}

// pm is one simulated PM: a Node with its own directories.
type pm struct {
	*Node
	changed chan struct{}
}

func (e nodeEnv) node(ctx context.Context, t *testing.T, self int) pm {
	t.Helper()
	ch := make(chan struct{}, 16)
	n, err := NewNode(ctx, NodeConfig{
		Self: self, QEMU: e.bin, Accel: TCG, GuestDir: e.guestDir,
		RunDir:  filepath.Join(e.dir, "run"+strconv.Itoa(self)),
		DataDir: filepath.Join(e.dir, "data"+strconv.Itoa(self)),
		Changed: func() {
			select {
			case ch <- struct{}{}:
			default:
			}
		},
		Log: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return pm{Node: n, changed: ch}
}

func (e nodeEnv) desired(rs ...Record) NodeDesired {
	return NodeDesired{VMs: rs, Device: func(int) (string, bool) { return e.disk, true }}
}

// until reconciles p with d every 200 ms until cond holds on its report.
func until(ctx context.Context, t *testing.T, p pm, d func() NodeDesired, what string, cond func(VMReport) bool) VMReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, guestWait)
	defer cancel()
	for {
		p.Reconcile(ctx, d())
		rep := p.Report()
		v, _ := rep.VM(1)
		if cond(v) {
			return v
		}
		select {
		case <-ctx.Done():
			log, _ := p.SerialLog(1)
			t.Fatalf("waiting for %s: %v; last report %+v\nserial log tail:\n%s", what, ctx.Err(), v, tail(log))
		case <-time.After(200 * time.Millisecond):
		case <-p.changed:
		}
	}
}

func tail(b []byte) string {
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return string(b)
}

// durableLines are the DURABLE lines of a serial log.
func durableLines(b []byte) []guestLine {
	var ls []guestLine
	for _, line := range strings.Split(string(b), "\n") {
		if l, ok := serial.Parse(line); ok && l.Kind == serial.Durable {
			ls = append(ls, guestLine{l.Boot, l.N})
		}
	}
	return ls
}

// TestNodeRunsTinyGuest drives the runner through a VM's life with the
// real QEMU and the tiny guest: start, serial console, crash and restart,
// adoption by a restarted agent, live migration to a second runner, the
// MTBF threshold, and power off.
func TestNodeRunsTinyGuest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	e := newNodeEnv(ctx, t)
	rec := Record{ID: 1, UUID: "6f1c2a9e-4b7d-4e2a-9c3b-0123456789ab", Name: "tiny", VCPUs: 1, MemoryBytes: 256 * MiB,
		Volumes: []VolumeRef{{ID: 1, Boot: true}}, Boot: BootTestGuest, Node: 1, Run: true, StartSeq: 1}
	var mu sync.Mutex
	cur := func() NodeDesired { mu.Lock(); defer mu.Unlock(); return e.desired(rec) }
	set := func(fn func(r *Record)) { mu.Lock(); fn(&rec); mu.Unlock() }

	a := e.node(ctx, t, 1)
	t.Cleanup(func() { a.Reconcile(context.Background(), e.desired()) })
	until(ctx, t, a, cur, "the guest to boot", func(v VMReport) bool { return v.Running && v.Booted && v.Status == "running" })
	waitLog := func(p pm, what string, ok func([]guestLine) bool) []guestLine {
		t.Helper()
		var ls []guestLine
		until(ctx, t, p, cur, what, func(VMReport) bool {
			b, _ := p.SerialLog(1)
			ls = durableLines(b)
			return len(ls) > 0 && ok(ls)
		})
		return ls
	}
	ls := waitLog(a, "DURABLE lines", func(ls []guestLine) bool { return len(ls) >= 3 })
	boot := ls[len(ls)-1].boot

	t.Run("serial console", func(t *testing.T) {
		c, err := a.DialConsole(ctx, 1, "serial")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(time.Minute))
		buf := make([]byte, 0, 512)
		for !strings.Contains(string(buf), "DURABLE boot="+boot) {
			tmp := make([]byte, 256)
			k, err := c.Read(tmp)
			if err != nil {
				t.Fatalf("reading the console: %v (got %q)", err, buf)
			}
			buf = append(buf, tmp[:k]...)
		}
		v, err := a.DialConsole(ctx, 1, "vnc")
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		v.SetReadDeadline(time.Now().Add(30 * time.Second))
		hello := make([]byte, 12)
		if _, err := io.ReadFull(v, hello); err != nil || !strings.HasPrefix(string(hello), "RFB ") {
			t.Fatalf("VNC greeting %q, %v; want RFB", hello, err)
		}
	})

	t.Run("agent restart adopts the running QEMU", func(t *testing.T) {
		pid := readPid(t, a.PidFile(1))
		a.Release()
		// A Shutdown the previous agent had already carried out must not
		// be carried out again by the one adopting the VM.
		set(func(r *Record) { r.ShutdownSeq = 1 })
		b := e.node(ctx, t, 1)
		if !b.Runs(1) {
			t.Fatal("a new runner over the same directories did not adopt the running QEMU")
		}
		if syscall.Kill(pid, 0) != nil {
			t.Fatal("releasing the runner stopped QEMU")
		}
		a = b
		n := waitLog(a, "counting after adoption", func(ls []guestLine) bool { return true })
		last := n[len(n)-1].n
		waitLog(a, "counting after adoption", func(ls []guestLine) bool { return ls[len(ls)-1].n > last })
		rep := a.Report()
		if v, _ := rep.VM(1); !v.Running || v.Stopping {
			t.Fatalf("adopted VM %+v: want it running, not shutting down", v)
		}
	})

	t.Run("crash restarts", func(t *testing.T) {
		pid := readPid(t, a.PidFile(1))
		syscall.Kill(pid, syscall.SIGKILL)
		v := until(ctx, t, a, cur, "a restart after the crash", func(v VMReport) bool {
			return v.Running && len(v.Crashes) == 1 && readPid(t, a.PidFile(1)) != pid
		})
		if v.LastExit == nil || v.LastExit.Kind != ExitCrash {
			t.Fatalf("last exit %+v, want a crash", v.LastExit)
		}
		ls := waitLog(a, "the guest after the restart", func(ls []guestLine) bool { return ls[len(ls)-1].boot != boot })
		if got := ls[len(ls)-1].boot; got == boot {
			t.Fatalf("boot id %s unchanged after a crash", got)
		}
		boot = ls[len(ls)-1].boot
	})

	t.Run("live migration to another PM", func(t *testing.T) {
		b := e.node(ctx, t, 2)
		set(func(r *Record) { r.Migration = &Migration{From: 1, To: 2, Status: MigrationRunning} })
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		uri, err := b.PrepareIncoming(ctx, rec, cur(), addr)
		if err != nil {
			t.Fatal(err)
		}
		before := durableLines(mustLog(t, a))
		st, err := a.Migrate(ctx, 1, uri, MigrateOptions{BandwidthBytes: 1 << 30, DowntimeLimit: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("migrated: total %s, downtime %s", st.TotalTime, st.Downtime)
		set(func(r *Record) { r.Node = 2; r.Migration.Status = MigrationCompleted })
		until(ctx, t, a, cur, "the source to quit", func(v VMReport) bool { return !v.Running })
		v := until(ctx, t, b, cur, "the target to run the guest", func(v VMReport) bool { return v.Running && !v.Incoming })
		if !v.Booted {
			t.Error("a migrated guest is reported as not booted")
		}
		last := before[len(before)-1].n
		ls := waitLog(b, "counting on the target", func(ls []guestLine) bool { return ls[len(ls)-1].n > last })
		if got := ls[len(ls)-1].boot; got != boot {
			t.Fatalf("boot id %s on the target, want %s: the guest rebooted", got, boot)
		}
		rep := a.Report()
		if r, _ := rep.VM(1); r.LastExit == nil || r.LastExit.Kind != ExitMigrated {
			t.Fatalf("source's last exit %+v, want migrated", r.LastExit)
		}
		a = b
	})

	t.Run("MTBF", func(t *testing.T) {
		// Three crashes on this PM within the hour.
		for i := 1; i <= 3; i++ {
			pid := readPid(t, a.PidFile(1))
			syscall.Kill(pid, syscall.SIGKILL)
			if i < 3 {
				until(ctx, t, a, cur, "a restart", func(v VMReport) bool { return v.Running && len(v.Crashes) == i })
				continue
			}
			v := until(ctx, t, a, cur, "Critical", func(v VMReport) bool { return v.Critical })
			if v.Running {
				t.Fatal("a Critical VM was restarted")
			}
		}
		a.Reconcile(ctx, cur())
		if a.Runs(1) {
			t.Fatal("a Critical VM was restarted")
		}
		// Reset Device: a new start with the crashes forgotten; the
		// runner drops its own count of the earlier start's crashes.
		set(func(r *Record) { r.StartSeq++; r.Crashes = nil })
		until(ctx, t, a, cur, "a start after Reset Device", func(v VMReport) bool { return v.Running && !v.Critical })
	})

	t.Run("power off", func(t *testing.T) {
		set(func(r *Record) { r.Run = false })
		v := until(ctx, t, a, cur, "power off", func(v VMReport) bool { return !v.Running })
		if v.LastExit == nil || v.LastExit.Kind != ExitPowerOff {
			t.Fatalf("last exit %+v, want poweroff", v.LastExit)
		}
	})
}

func mustLog(t *testing.T, p pm) []byte {
	t.Helper()
	b, err := p.SerialLog(1)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}
