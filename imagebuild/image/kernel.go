package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"github.com/dyad-ha/dyad/imagebuild/kmods"
)

// findKernel returns the kernel version and vmlinuz path: the requested
// version, or the newest one installed with its modules.
func findKernel(bootDir, modulesDir, want string) (string, string, error) {
	usable := func(kver string) error {
		if _, err := os.Stat(filepath.Join(bootDir, "vmlinuz-"+kver)); err != nil {
			return err
		}
		_, err := os.Stat(filepath.Join(modulesDir, kver, "modules.dep"))
		return err
	}
	if want != "" {
		if err := usable(want); err != nil {
			return "", "", fmt.Errorf("kernel %s: %w (is its Debian linux-image package installed?)", want, err)
		}
		return want, filepath.Join(bootDir, "vmlinuz-"+want), nil
	}
	images, err := filepath.Glob(filepath.Join(bootDir, "vmlinuz-*"))
	if err != nil {
		return "", "", err
	}
	best := ""
	for _, img := range images {
		kver := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		if usable(kver) != nil {
			continue
		}
		if best == "" || compareVersions(kver, best) > 0 {
			best = kver
		}
	}
	if best == "" {
		return "", "", fmt.Errorf("no kernel in %s has a modules tree in %s: install a Debian linux-image package", bootDir, modulesDir)
	}
	return best, filepath.Join(bootDir, "vmlinuz-"+best), nil
}

// compareVersions orders kernel release strings with numeric runs compared
// as numbers, so 6.1.0-56 sorts after 6.1.0-9.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		ra, restA := leadingRun(a)
		rb, restB := leadingRun(b)
		if c := compareRuns(ra, rb); c != 0 {
			return c
		}
		a, b = restA, restB
	}
	return len(a) - len(b)
}

func leadingRun(s string) (string, string) {
	digit := unicode.IsDigit(rune(s[0]))
	i := 1
	for i < len(s) && unicode.IsDigit(rune(s[i])) == digit {
		i++
	}
	return s[:i], s[i:]
}

func compareRuns(a, b string) int {
	if unicode.IsDigit(rune(a[0])) && unicode.IsDigit(rune(b[0])) {
		a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		if len(a) != len(b) {
			return len(a) - len(b)
		}
	}
	return strings.Compare(a, b)
}

// moduleSet is the kernel module part of the image.
type moduleSet struct {
	selection kmods.Selection
	// dep is the generated modules.dep listing only the selected modules.
	dep []byte
	// files are the .ko files and the copied module metadata.
	files []imageFile
}

func selectModules(tree, kver string, wanted []string) (moduleSet, error) {
	depFile, err := os.Open(filepath.Join(tree, "modules.dep"))
	if err != nil {
		return moduleSet{}, fmt.Errorf("kernel modules: %w", err)
	}
	defer depFile.Close()
	dep, err := kmods.ParseDep(depFile)
	if err != nil {
		return moduleSet{}, fmt.Errorf("%s: %w", depFile.Name(), err)
	}
	builtin := map[string]bool{}
	if f, err := os.Open(filepath.Join(tree, "modules.builtin")); err == nil {
		builtin, err = kmods.ParseBuiltin(f)
		f.Close()
		if err != nil {
			return moduleSet{}, fmt.Errorf("%s: %w", f.Name(), err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return moduleSet{}, fmt.Errorf("kernel modules: %w", err)
	}
	sel, err := dep.Select(wanted, builtin)
	if err != nil {
		return moduleSet{}, fmt.Errorf("kernel %s: %w", kver, err)
	}
	var buf strings.Builder
	if err := kmods.WriteDep(&buf, sel.Modules); err != nil {
		return moduleSet{}, err
	}
	imageTree := "/lib/modules/" + kver
	set := moduleSet{selection: sel, dep: []byte(buf.String())}
	for _, e := range sel.Modules {
		set.files = append(set.files, imageFile{path: imageTree + "/" + e.Path, source: filepath.Join(tree, e.Path)})
	}
	for _, name := range []string{"modules.builtin", "modules.order"} {
		p := filepath.Join(tree, name)
		if _, err := os.Stat(p); err == nil {
			set.files = append(set.files, imageFile{path: imageTree + "/" + name, source: p})
		}
	}
	return set, nil
}
