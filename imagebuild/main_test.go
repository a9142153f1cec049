package main

import (
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dyad-ha/dyad/imagebuild/image"
	"github.com/dyad-ha/dyad/imagebuild/manifest"
)

// TestRunRepo builds the real image from this repository, the way
// `go run ./imagebuild -o out` does.
func TestRunRepo(t *testing.T) {
	if err := exec.Command("dpkg-query", "-W", "e2fsprogs").Run(); err != nil {
		t.Skipf("host has no Debian e2fsprogs in its dpkg database: %v", err)
	}
	if matches, _ := filepath.Glob("/boot/vmlinuz-*"); len(matches) == 0 {
		t.Skip("host has no Debian kernel in /boot")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	var absent []string
	for _, c := range image.Defaults().Commands {
		if m, _ := filepath.Glob(filepath.Join(root, c.Package, "*.go")); len(m) == 0 {
			absent = append(absent, c.Package)
		}
	}
	if len(absent) > 0 {
		// The builder itself is covered by the image package's tests on a
		// scratch module; this one waits for the real commands.
		t.Skipf("command packages not in the repository yet: %s", strings.Join(absent, ", "))
	}
	out := t.TempDir()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(log, []string{"-o", out}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, image.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	var m manifest.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Binaries) != len(image.Defaults().Commands) || len(m.Artifacts) != 3 {
		t.Errorf("manifest lists %d binaries and %d artifacts", len(m.Binaries), len(m.Artifacts))
	}
}

func TestRunRejectsArguments(t *testing.T) {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, []string{"-o", t.TempDir(), "extra"}); err == nil || !strings.Contains(err.Error(), "unexpected arguments") {
		t.Errorf("run with a stray argument: %v", err)
	}
}
