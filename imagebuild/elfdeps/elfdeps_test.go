package elfdeps

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const hostMke2fs = "/sbin/mke2fs"

func TestResolveMke2fs(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skipf("the Debian search path under test is amd64's; GOARCH is %s", runtime.GOARCH)
	}
	if _, err := os.Stat(hostMke2fs); err != nil {
		t.Skipf("host lacks Debian e2fsprogs (%s): %v", hostMke2fs, err)
	}
	got, err := Resolve(hostMke2fs, DebianAMD64Dirs())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
		"/lib/x86_64-linux-gnu/libblkid.so.1",
		"/lib/x86_64-linux-gnu/libc.so.6",
		"/lib/x86_64-linux-gnu/libcom_err.so.2",
		"/lib/x86_64-linux-gnu/libe2p.so.2",
		"/lib/x86_64-linux-gnu/libext2fs.so.2",
		"/lib/x86_64-linux-gnu/libuuid.so.1",
		"/lib64/ld-linux-x86-64.so.2",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Resolve(%s) =\n%q\nwant\n%q", hostMke2fs, got, want)
	}
}

// TestResolveMatchesLoader cross-checks against the host loader's own
// answer (ld.so --list), which is what mkuimage's ldd package relies on.
func TestResolveMatchesLoader(t *testing.T) {
	const loader = "/lib64/ld-linux-x86-64.so.2"
	if runtime.GOARCH != "amd64" {
		t.Skipf("the Debian search path under test is amd64's; GOARCH is %s", runtime.GOARCH)
	}
	for _, p := range []string{hostMke2fs, loader} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("host lacks %s: %v", p, err)
		}
	}
	out, err := exec.Command(loader, "--list", hostMke2fs).Output()
	if err != nil {
		t.Fatalf("%s --list %s: %v", loader, hostMke2fs, err)
	}
	var fromLoader []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>":
			fromLoader = append(fromLoader, f[2])
		case len(f) == 2 && strings.HasPrefix(f[0], "/"):
			fromLoader = append(fromLoader, f[0])
		}
	}
	got, err := Resolve(hostMke2fs, DebianAMD64Dirs())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range fromLoader {
		if !slices.Contains(got, p) {
			t.Errorf("loader needs %s; Resolve gave %q", p, got)
		}
	}
}

func TestResolveStatic(t *testing.T) {
	// The test binary itself is static when built with CGO_ENABLED=0, but
	// that depends on the caller's environment; build one that surely is.
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "static")
	cmd := exec.Command("go", "build", "-o", bin, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	got, err := Resolve(bin, DebianAMD64Dirs())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("static binary resolved to %q, want nothing", got)
	}
}

func TestResolveErrors(t *testing.T) {
	if _, err := os.Stat(hostMke2fs); err != nil {
		t.Skipf("host lacks Debian e2fsprogs (%s): %v", hostMke2fs, err)
	}
	notELF := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		dirs       []string
		wantErr    string
	}{
		{"library nowhere", hostMke2fs, []string{t.TempDir()}, "needs libext2fs.so.2: not found in"},
		{"not an ELF file", notELF, DebianAMD64Dirs(), "reading ELF"},
		{"missing file", filepath.Join(t.TempDir(), "nope"), DebianAMD64Dirs(), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Resolve(tc.path, tc.dirs)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Resolve error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
