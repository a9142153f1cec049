package manifest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func sample() Manifest {
	return Manifest{
		Version:       "v1.0.0",
		GitRevision:   "0123456789abcdef0123456789abcdef01234567",
		BuiltAt:       "2026-01-02T03:04:05Z",
		GoVersion:     "go1.26.8",
		KernelVersion: "6.1.0-56-amd64",
		Packages:      map[string]string{"libc6": "2.36-9", "e2fsprogs": "1.47.0-2", "linux-image-6.1.0-56-amd64": "6.1.192-2"},
		Modules:       []string{"virtio_ring", "drbd", "virtio", "drbd"},
		Files: []File{
			{Path: "/sbin/mke2fs", Source: "/sbin/mke2fs", Size: 3, SHA256: "aa"},
			{Path: "/etc/mke2fs.conf", Source: "/etc/mke2fs.conf", Size: 1, SHA256: "bb"},
			{Path: "/lib64/ld-linux-x86-64.so.2", Symlink: "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"},
		},
		Artifacts: []Artifact{{Name: "dyad-kernel", Size: 1, SHA256: "cc"}, {Name: "dyad-initramfs.cpio.gz", Size: 2, SHA256: "dd"}},
	}
}

// reversed is sample with every list in another order.
func reversed() Manifest {
	m := sample()
	m.Modules = []string{"drbd", "virtio", "virtio_ring"}
	m.Files = []File{m.Files[2], m.Files[0], m.Files[1]}
	m.Artifacts = []Artifact{m.Artifacts[1], m.Artifacts[0]}
	m.Packages = map[string]string{"linux-image-6.1.0-56-amd64": "6.1.192-2", "e2fsprogs": "1.47.0-2", "libc6": "2.36-9"}
	return m
}

func TestMarshalDeterministic(t *testing.T) {
	a, err := sample().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	b, err := reversed().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("same content in another order marshals differently:\n%s\n%s", a, b)
	}
	var back Manifest
	if err := json.Unmarshal(a, &back); err != nil {
		t.Fatal(err)
	}
	wantModules := []string{"drbd", "virtio", "virtio_ring"}
	if len(back.Modules) != 3 || back.Modules[0] != wantModules[0] || back.Modules[2] != wantModules[2] {
		t.Errorf("modules = %v, want %v", back.Modules, wantModules)
	}
	if back.Files[0].Path != "/etc/mke2fs.conf" || back.Artifacts[0].Name != "dyad-initramfs.cpio.gz" {
		t.Errorf("lists not sorted: files %v artifacts %v", back.Files, back.Artifacts)
	}
}

func TestMarshalDoesNotModifyCaller(t *testing.T) {
	m := sample()
	if _, err := m.Marshal(); err != nil {
		t.Fatal(err)
	}
	if m.Modules[0] != "virtio_ring" || m.Files[0].Path != "/sbin/mke2fs" {
		t.Errorf("Marshal reordered the caller's slices: %v %v", m.Modules, m.Files)
	}
}

func TestMarshalEmptyListsAreArrays(t *testing.T) {
	b, err := Manifest{Version: "0.0.0-dev"}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"modules", "builtin_modules", "binaries", "files", "artifacts"} {
		if string(raw[k]) != "[]" {
			t.Errorf("%s = %s, want []", k, raw[k])
		}
	}
	if string(raw["packages"]) != "{}" {
		t.Errorf("packages = %s, want {}", raw["packages"])
	}
}

func TestHash(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	size, sum, err := Hash(p)
	if err != nil {
		t.Fatal(err)
	}
	if size != 3 || sum != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("Hash = %d %s", size, sum)
	}
	if _, _, err := Hash(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("Hash of a missing file succeeded")
	}
}
