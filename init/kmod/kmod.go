// Package kmod loads kernel modules in dependency order without modprobe,
// which the initramfs does not carry.
package kmod

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// softDeps are load-order rules modules.dep does not record, learned on the
// Debian kernel Dyad ships.
func softDeps() []SoftDep {
	return []SoftDep{
		// libcrc32c needs a "crc32c" crypto provider when it initialises;
		// without crc32c_generic loaded first it fails and takes drbd
		// (and xfs, btrfs, nf_conntrack...) with it.
		{Name: "libcrc32c", Pre: []string{"crc32c_generic"}},
	}
}

// params are module parameters, by module name.
func params() map[string]string {
	return map[string]string{
		// A hung PID 1 must reset the PM well before the peer's failover
		// timers give up on it; the default margin is 60 s.
		"softdog": "soft_margin=30",
	}
}

// loader puts one module file into the kernel.
type loader interface {
	load(path, params string) error
}

// finitLoader loads with finit_module(2). The host running `go test` has no
// module support, so only its error path is tested here; the QEMU tier
// (qemu-tests) boots the real kernel and exercises it for every module.
type finitLoader struct{}

func (finitLoader) load(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil {
		return fmt.Errorf("finit_module %s: %w", path, err)
	}
	return nil
}

// LoadAll loads every module listed in dir/modules.dep, dependencies first.
// A module already loaded or built in counts as loaded. A module that fails
// is logged and skipped together with the modules that depend on it; the
// others are still loaded. loaded lists, in load order, the names of the
// modules present in the kernel afterwards; err joins every failure.
func LoadAll(ctx context.Context, log *slog.Logger, dir string) (loaded []string, err error) {
	return loadAll(ctx, log, dir, finitLoader{})
}

func loadAll(ctx context.Context, log *slog.Logger, dir string, l loader) ([]string, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("load kernel modules: %w", err)
	}
	mods, err := ParseDeps(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("load kernel modules from %s: %w", dir, err)
	}
	order, broken := Order(mods, softDeps())
	for _, e := range broken {
		log.Warn("kernel module dependency cycle; loading in file order", "edge", e)
	}

	par := params()
	var loaded []string
	var errs []error
	failed := make(map[string]bool)
	for _, m := range order {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("stopped before %s: %w", Name(m.Path), err))
			break
		}
		name := Name(m.Path)
		if dep := firstFailed(m.Deps, failed); dep != "" {
			failed[m.Path] = true
			errs = append(errs, fmt.Errorf("module %s: not loaded because its dependency %s failed", name, Name(dep)))
			continue
		}
		err := l.load(filepath.Join(dir, m.Path), par[name])
		switch {
		case err == nil:
			log.Debug("kernel module loaded", "module", name, "params", par[name])
		case errors.Is(err, unix.EEXIST):
			log.Debug("kernel module already present", "module", name)
		case errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EOPNOTSUPP):
			// The image carries drivers for hardware a given PM may lack
			// (kvm_intel on an AMD CPU or without VMX, a NIC driver with no
			// card): the kernel refuses them, which is not a failure.
			failed[m.Path] = true
			log.Info("kernel module not applicable to this machine", "module", name, "reason", err)
			continue
		default:
			failed[m.Path] = true
			log.Warn("kernel module failed to load", "module", name, "err", err)
			errs = append(errs, fmt.Errorf("module %s: %w", name, err))
			continue
		}
		loaded = append(loaded, name)
	}
	if len(errs) > 0 {
		return loaded, fmt.Errorf("%d kernel modules not loaded: %w", len(errs), errors.Join(errs...))
	}
	return loaded, nil
}

func firstFailed(deps []string, failed map[string]bool) string {
	for _, d := range deps {
		if failed[d] {
			return d
		}
	}
	return ""
}
