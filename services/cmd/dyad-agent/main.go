// Command dyad-agent is the node agent of a Dyad PM, supervised by init.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/dyad-ha/dyad/hwcompat"
	"github.com/dyad-ha/dyad/init/cmdline"
	"github.com/dyad-ha/dyad/services/agent"
	"github.com/dyad-ha/dyad/services/network"
	"github.com/dyad-ha/dyad/services/pmconfig"
	"github.com/dyad-ha/dyad/services/storage"
	"github.com/dyad-ha/dyad/services/storage/drbd"
	"github.com/dyad-ha/dyad/services/storage/drbdhelper"
	"github.com/dyad-ha/dyad/services/storage/lvm"
	"github.com/dyad-ha/dyad/services/vm"
	"golang.org/x/sys/unix"
)

// exitConfig tells init the configuration is wrong: restarting cannot help.
const exitConfig = 78

func main() {
	os.Exit(run())
}

func run() int {
	params, err := cmdline.Read()
	if err == nil {
		var cfg pmconfig.Config
		cfg, err = pmconfig.Load(params, pmconfig.DefaultPath)
		if err == nil {
			return serve(cfg)
		}
	}
	fmt.Fprintf(os.Stderr, "dyad-agent: configuration error:\n%s\n", indent(err.Error()))
	return exitConfig
}

func serve(cfg pmconfig.Config) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	nm, err := network.New(ctx, network.Options{Log: log})
	if err != nil {
		log.Error("netlink", "err", err)
		return 1
	}
	defer nm.Close()
	st, err := newStorage(cfg, log)
	if err != nil {
		log.Error("storage", "err", err)
		return 1
	}
	a, err := agent.New(agent.Options{
		Config:           cfg,
		DataDir:          "/data/dyad",
		Version:          imageVersion("/etc/dyad/manifest.json"),
		BootID:           bootID(),
		Uptime:           agent.ReadUptime,
		Hardware:         func(ctx context.Context) (any, error) { return hwcompat.Collect(ctx, "/") },
		Net:              agent.Netlink{M: nm, Log: log},
		Log:              log,
		DataPersistent:   persistent("/data"),
		Storage:          st,
		DRBDHelperSocket: drbdhelper.SocketPath,
		Enslave:          nm.Enslave,
		NewVMs: func(taps vm.Taps, changed func()) (agent.VMRunner, error) {
			return newVMs(ctx, cfg, taps, changed, log)
		},
	})
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	if err := a.Run(ctx); err != nil {
		log.Error("agent stopped", "err", err)
		return 1
	}
	return 0
}

func imageVersion(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "dev"
	}
	var m struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(b, &m) != nil || m.Version == "" {
		return "dev"
	}
	return m.Version
}

func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// persistent reports whether dir is on a real filesystem rather than tmpfs.
func persistent(dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false
	}
	return st.Type != unix.TMPFS_MAGIC
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// drbdHelperParam is where the DRBD module takes the program it calls on
// fencing, split brain and I/O errors.
const drbdHelperParam = "/sys/module/drbd/parameters/usermode_helper"

// newStorage builds the storage reconciler on the PM's real LVM, DRBD and
// disks. Without the drbd module the PM runs without storage, loudly.
func newStorage(cfg pmconfig.Config, log *slog.Logger) (agent.Storage, error) {
	if _, err := os.Stat(drbdHelperParam); err != nil {
		log.Error("no DRBD kernel module: this PM runs without mirrored storage", "err", err)
		return nil, nil
	}
	// The kernel runs this program for fencing and split brain; it asks
	// the agent (drbdadm's handlers would need a shell).
	if err := os.WriteFile(drbdHelperParam, []byte("/bin/dyad-drbd-helper"), 0o644); err != nil {
		return nil, fmt.Errorf("setting the DRBD helper: %w", err)
	}
	n, err := storage.NewNode(cfg.Node,
		storage.KernelLVM{L: lvm.New(lvm.ExecRunner("/sbin/lvm"))},
		storage.KernelDRBD{A: &drbd.Admin{Run: drbd.ExecRunner(), Config: "/run/dyad/drbd.conf"}, Addrs: agent.ReplicationAddrs(cfg)},
		storage.KernelDisks{PM: cfg.Node},
		"/data/dyad/storage", log.With("part", "storage"))
	if err != nil {
		return nil, err
	}
	return n, nil
}

// qemuPath is where the image carries QEMU.
const qemuPath = "/usr/bin/qemu-system-x86_64"

// newVMs builds the PM's VM runner: KVM when /dev/kvm opens, TCG
// otherwise. Without QEMU in the image the PM runs no VMs, loudly.
func newVMs(ctx context.Context, cfg pmconfig.Config, taps vm.Taps, changed func(), log *slog.Logger) (agent.VMRunner, error) {
	if _, err := os.Stat(qemuPath); err != nil {
		log.Error("no QEMU in the image: this PM runs no VMs", "err", err)
		return nil, nil
	}
	accel := vm.TCG
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		accel = vm.KVM
	}
	log.Info("virtual machines", "accel", accel)
	return vm.NewNode(ctx, vm.NodeConfig{
		Self: cfg.Node, QEMU: qemuPath, RunDir: "/run/dyad/vm", DataDir: "/data/dyad/vm",
		GuestDir: "/usr/share/dyad/test-guest", VCDDir: "/data/dyad/vcd", Accel: accel, Taps: taps, Changed: changed,
		Log: log.With("part", "vm"),
	})
}
