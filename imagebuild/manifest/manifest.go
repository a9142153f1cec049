// Package manifest describes what a Dyad image was built from and what it
// contains. The same inputs always give byte-identical JSON, so two builds
// can be compared with cmp(1).
package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// Manifest is the image manifest (/etc/dyad/manifest.json in the initramfs,
// manifest.json next to the artifacts).
type Manifest struct {
	// Version is the image version shown by the API.
	Version     string `json:"version"`
	GitRevision string `json:"git_revision"`
	// BuiltAt is RFC 3339 UTC from SOURCE_DATE_EPOCH or the commit time,
	// never the wall clock, so rebuilding gives the same manifest.
	BuiltAt       string `json:"built_at"`
	GoVersion     string `json:"go_version"`
	KernelVersion string `json:"kernel_version"`
	// Packages maps Debian package name to installed version.
	Packages map[string]string `json:"packages"`
	// Modules are the loadable kernel modules shipped (requested ones and
	// their dependencies); BuiltinModules the requested ones that are
	// compiled into the kernel.
	Modules        []string `json:"modules"`
	BuiltinModules []string `json:"builtin_modules"`
	// Binaries are the Go programs built for the image.
	Binaries []File `json:"binaries"`
	// Files are the host files copied into the image.
	Files []File `json:"files"`
	// Artifacts are the files written next to the manifest. The copy inside
	// the initramfs lists only the kernel: it cannot contain the hash of the
	// archive that contains it.
	Artifacts []Artifact `json:"artifacts"`
}

// File is a file in the image. Symlink is set instead of Size and SHA256
// when the image holds a symbolic link.
type File struct {
	// Path is the absolute path inside the image.
	Path string `json:"path"`
	// Source is the host path it was copied from (empty for built files).
	Source  string `json:"source,omitempty"`
	Size    int64  `json:"size,omitempty"`
	SHA256  string `json:"sha256,omitempty"`
	Symlink string `json:"symlink,omitempty"`
}

// Artifact is a build output.
type Artifact struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Marshal returns indented JSON with every list sorted and nil lists
// written as [] so consumers never see null.
func (m Manifest) Marshal() ([]byte, error) {
	m.Modules = sortedStrings(m.Modules)
	m.BuiltinModules = sortedStrings(m.BuiltinModules)
	m.Binaries = sortedFiles(m.Binaries)
	m.Files = sortedFiles(m.Files)
	m.Artifacts = slices.Clone(m.Artifacts)
	if m.Artifacts == nil {
		m.Artifacts = []Artifact{}
	}
	slices.SortFunc(m.Artifacts, func(a, b Artifact) int { return strings.Compare(a.Name, b.Name) })
	if m.Packages == nil {
		m.Packages = map[string]string{}
	}
	// encoding/json writes map keys in sorted order.
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding manifest: %w", err)
	}
	return append(b, '\n'), nil
}

func sortedStrings(s []string) []string {
	out := slices.Clone(s)
	if out == nil {
		return []string{}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func sortedFiles(f []File) []File {
	out := slices.Clone(f)
	if out == nil {
		return []File{}
	}
	slices.SortFunc(out, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// Hash returns the size and hex SHA-256 of the file at path (following
// symbolic links).
func Hash(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
