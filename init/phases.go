package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/dyad-ha/dyad/init/cmdline"
	"github.com/dyad-ha/dyad/init/datadisk"
	"github.com/dyad-ha/dyad/init/kmod"
	"github.com/dyad-ha/dyad/init/logfile"
	"github.com/dyad-ha/dyad/init/loopback"
	"github.com/dyad-ha/dyad/init/mount"
	"github.com/dyad-ha/dyad/init/phase"
	"github.com/dyad-ha/dyad/init/shutdown"
	"github.com/dyad-ha/dyad/init/testchan"
	"github.com/dyad-ha/dyad/init/watchdog"
	"golang.org/x/sys/unix"
)

const (
	dataDir         = "/data"
	watchdogDevice  = "/dev/watchdog"
	watchdogTimeout = 30 * time.Second
)

// bootPhases is the boot sequence. The order matters:
//   - cmdline needs /proc;
//   - modules must precede everything that needs a driver (watchdog: softdog,
//     data: virtio_blk and ext4, powerbutton: button and evdev, testchannel:
//     virtio_console);
//   - the reaper starts only after data: it reaps every child with wait4(-1)
//     and would steal the exit status of mke2fs, which datadisk waits for
//     itself; from then on every child must be started through the reaper;
//   - services need /data for their logs and lo for local traffic;
//   - the watchdog is armed after the slow phases, shortly before the main
//     loop that feeds it takes over, so a slow mkfs cannot reset a booting PM.
//
// Only mount is critical: without /proc, /sys and /dev nothing else can
// work. Every other failure leaves a PM that can still be diagnosed over the
// console and the test channel (without data, /data stays on the initramfs).
func bootPhases() []phase.Phase[*State] {
	return []phase.Phase[*State]{
		{Name: "mount", Run: mountPhase, Critical: true},
		{Name: "cmdline", Run: cmdlinePhase},
		{Name: "modules", Run: modulesPhase},
		{Name: "powerbutton", Run: powerButtonPhase},
		{Name: "hostname", Run: hostnamePhase},
		{Name: "data", Run: dataPhase},
		{Name: "reaper", Run: reaperPhase},
		{Name: "network", Run: networkPhase},
		{Name: "watchdog", Run: watchdogPhase},
		{Name: "testchannel", Run: testChannelPhase},
		{Name: "services", Run: servicesPhase},
	}
}

func mountPhase(ctx context.Context, st *State) error {
	if err := mount.All(ctx, st.Log, mount.Linux{}, mount.Base()); err != nil {
		return err
	}
	if err := attachConsole(st); err != nil {
		// Not fatal: the kernel may already have given us the console.
		st.Log.Warn("dyad-init: logging to the inherited stderr", "err", err)
	}
	return nil
}

// attachConsole makes /dev/console our stdin, stdout and stderr (where the
// Go runtime writes a crash) and the destination of every log line. The
// kernel only opens it for us if the initramfs carries a /dev/console node.
func attachConsole(st *State) error {
	f, err := os.OpenFile("/dev/console", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("open console: %w", err)
	}
	for fd := range 3 {
		if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
			return fmt.Errorf("console as fd %d: %w", fd, err)
		}
	}
	st.Console.set(f)
	return nil
}

func cmdlinePhase(ctx context.Context, st *State) error {
	p, err := cmdline.Read()
	if err != nil {
		return fmt.Errorf("%w; booting with defaults", err)
	}
	st.Params = p
	switch v := p["dyad.loglevel"]; v {
	case "debug":
		st.Level.Set(slog.LevelDebug)
	case "", "info":
	default:
		return fmt.Errorf("dyad.loglevel=%q: want debug or info; using info", v)
	}
	st.Log.Info("dyad-init: kernel command line", "mode", p["dyad.mode"], "node", p["dyad.node"], "unit", p["dyad.unit"],
		"testchannel", p.Bool("dyad.testchannel"))
	return nil
}

func modulesPhase(ctx context.Context, st *State) error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return fmt.Errorf("uname: %w", err)
	}
	dir := filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
	loaded, err := kmod.LoadAll(ctx, st.Log, dir)
	st.Log.Info("dyad-init: kernel modules", "dir", dir, "loaded", len(loaded))
	return err
}

func powerButtonPhase(ctx context.Context, st *State) error {
	w := &shutdown.PowerButtonWatcher{
		Log:      st.Log,
		SysInput: "/sys/class/input",
		DevInput: "/dev/input",
		Rescan:   time.Minute,
		Interval: 500 * time.Millisecond,
	}
	go w.Run(ctx, st.Requests)
	return nil
}

var hostLabel = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// hostname is dyad.hostname, else pm<dyad.node>, else "dyad". An invalid
// value is reported and the fallback used.
func hostname(p cmdline.Params) (string, error) {
	if h, ok := p["dyad.hostname"]; ok {
		if !hostLabel.MatchString(h) {
			return "dyad", fmt.Errorf("dyad.hostname=%q is not a valid host name (letters, digits, '-', at most 63)", h)
		}
		return h, nil
	}
	if n, ok := p["dyad.node"]; ok {
		if n != "1" && n != "2" {
			return "dyad", fmt.Errorf("dyad.node=%q: want 1 or 2", n)
		}
		return "pm" + n, nil
	}
	return "dyad", nil
}

func hostnamePhase(ctx context.Context, st *State) error {
	name, perr := hostname(st.Params)
	if err := unix.Sethostname([]byte(name)); err != nil {
		return errors.Join(perr, fmt.Errorf("set host name %q: %w", name, err))
	}
	st.Log.Info("dyad-init: host name", "name", name)
	return perr
}

func watchdogPhase(ctx context.Context, st *State) error {
	w, err := watchdog.Open(watchdogDevice, watchdogTimeout)
	if w != nil {
		st.Watchdog = w
		st.Log.Info("dyad-init: watchdog armed", "device", watchdogDevice, "timeout", watchdogTimeout)
	}
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no %s (softdog not loaded?); running without a watchdog: %w", watchdogDevice, err)
	}
	return err
}

func dataPhase(ctx context.Context, st *State) error {
	if ok, err := (mount.Linux{}).Mounted(dataDir); err == nil && ok {
		st.Log.Info("dyad-init: data already mounted", "dir", dataDir)
		return nil
	}
	res, err := datadisk.Ensure(ctx, st.Log, datadisk.Options{Prefer: st.Params["dyad.datadisk"], Mountpoint: dataDir})
	if err == nil && res.Mounted {
		st.Console.persist(&logfile.File{Path: filepath.Join(dataDir, "log", "console.log"), Max: 8 << 20})
		st.Log.Info("dyad-init: data partition mounted", "partition", res.Partition, "created", res.Created, "dir", dataDir)
		return nil
	}
	reason := res.Reason
	if err != nil {
		reason = err.Error()
	}
	banner := strings.Repeat("*", 78)
	fmt.Fprintf(st.Console, "%s\ndyad-init: WARNING: no data partition: %s\n"+
		"dyad-init: WARNING: %s is a tmpfs; the unit database, logs and config are LOST at power off\n%s\n",
		banner, reason, dataDir, banner)
	if err := mount.All(ctx, st.Log, mount.Linux{}, []mount.Point{
		{Source: "tmpfs", Target: dataDir, FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=0755"},
	}); err != nil {
		return fmt.Errorf("no data partition (%s) and no tmpfs fallback: %w", reason, err)
	}
	return nil
}

func reaperPhase(ctx context.Context, st *State) error {
	go st.Reaper.Run(ctx, st.Log)
	return nil
}

func networkPhase(ctx context.Context, st *State) error {
	return loopback.Up()
}

func testChannelPhase(ctx context.Context, st *State) error {
	if !st.Params.Bool("dyad.testchannel") {
		return nil
	}
	srv := &testchan.Server{
		Log:    st.Log,
		Reaper: st.Reaper,
		Env:    serviceEnv(),
		Logs:   st.Services.Log,
		Signal: st.Services.Signal,
		Shutdown: func(reboot bool) {
			req := shutdown.Request{Action: shutdown.PowerOff, Reason: "test channel"}
			if reboot {
				req.Action = shutdown.Reboot
			}
			st.Requests <- req
		},
	}
	st.Log.Warn("dyad-init: test channel enabled (dyad.testchannel=1); never use this in production")
	go srv.ServePort(ctx, testchan.Port{SysPorts: "/sys/class/virtio-ports", Dev: "/dev", Name: "dyad.test", Interval: 250 * time.Millisecond})
	return nil
}

func servicesPhase(ctx context.Context, st *State) error {
	st.Services.Start(ctx)
	return nil
}
