// Command imagebuild builds the Dyad boot artifacts into a directory:
// dyad-kernel, dyad-initramfs.cpio.gz, manifest.json and the test guest's
// dyad-guest-initramfs.cpio.gz (booted with dyad-kernel).
//
//	go run ./imagebuild -o out [--kernel-version 6.1.0-56-amd64] [--src DIR]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/dyad-ha/dyad/imagebuild/image"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, os.Args[1:]); err != nil {
		// Printed plainly: the error may span lines (e.g. compiler output).
		fmt.Fprintf(os.Stderr, "imagebuild: %v\n", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("imagebuild", flag.ContinueOnError)
	outDir := fs.String("o", "out", "output `directory` for the artifacts")
	kver := fs.String("kernel-version", "", "Debian kernel `release` to use (default: newest in /boot with modules)")
	src := fs.String("src", "", "Go module `directory` holding the image's commands (default: the module containing the current directory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := image.Defaults()
	cfg.OutDir = *outDir
	cfg.KernelVersion = *kver
	cfg.SourceDateEpoch = os.Getenv("SOURCE_DATE_EPOCH")
	cfg.SourceDir = *src
	if cfg.SourceDir == "" {
		root, err := moduleRoot(ctx)
		if err != nil {
			return err
		}
		cfg.SourceDir = root
	}
	res, err := image.Build(ctx, log, cfg)
	if err != nil {
		return err
	}
	fmt.Printf("Dyad image %s (kernel %s) built in %s\n", res.Manifest.Version, res.Manifest.KernelVersion, res.Duration.Round(100_000_000))
	for _, a := range res.Manifest.Artifacts {
		fmt.Printf("  %-24s %6.1f MiB  sha256:%s\n", a.Name, float64(a.Size)/(1<<20), a.SHA256)
	}
	fmt.Printf("  %-24s %6.1f MiB  uncompressed\n", "initramfs cpio", float64(res.InitramfsUncompressed)/(1<<20))
	fmt.Printf("  %d kernel modules, %d host files, %d Debian packages; manifest %s\n",
		len(res.Manifest.Modules), len(res.Manifest.Files), len(res.Manifest.Packages), filepath.Join(cfg.OutDir, image.ManifestName))
	return nil
}

// moduleRoot is the directory of the go.mod governing the working directory.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the Go module root (go env GOMOD): %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module; run from the Dyad repository or pass --src")
	}
	return filepath.Dir(gomod), nil
}
