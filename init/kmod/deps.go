package kmod

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"unicode"
)

// Module is one line of modules.dep: a module file and the files it needs
// loaded first, as paths relative to the modules directory.
type Module struct {
	Path string
	Deps []string
}

// maxLine bounds one modules.dep line; real lines are far below 64 KiB even
// for modules with dozens of dependencies.
const maxLine = 1 << 20

// moduleSuffixes are the file suffixes depmod accepts for modules.
func moduleSuffixes() []string { return []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} }

// Name is the kernel's name for the module at p: the file name without its
// .ko (or compressed .ko) suffix, with '-' folded to '_' as the kernel does
// (dm-mod.ko.xz is dm_mod). A plain name without a suffix is folded the same
// way, so Name("dm-mod") is "dm_mod". Only one suffix is removed
// (0000000.ko.ko is "0000000.ko").
func Name(p string) string {
	base := path.Base(p)
	for _, s := range moduleSuffixes() {
		if strings.HasSuffix(base, s) {
			base = strings.TrimSuffix(base, s)
			break
		}
	}
	return strings.ReplaceAll(base, "-", "_")
}

// CheckPath reports why p cannot be a module file path in a modules tree:
// it must be a clean relative path that stays inside the tree, so a damaged
// or hostile modules.dep cannot make PID 1 load, or the image builder copy,
// a file from elsewhere, and it must end in a module suffix.
func CheckPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty module path")
	case strings.ContainsFunc(p, unicode.IsSpace):
		return fmt.Errorf("module path %q contains white space", p)
	case path.IsAbs(p):
		return fmt.Errorf("module path %q is absolute", p)
	case path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../"):
		return fmt.Errorf("module path %q is not a clean path inside the modules tree", p)
	case !slices.ContainsFunc(moduleSuffixes(), func(s string) bool { return strings.HasSuffix(p, s) }):
		return fmt.Errorf("module path %q does not end in one of %v", p, moduleSuffixes())
	case Name(p) == "":
		return fmt.Errorf("module path %q has an empty module name", p)
	}
	return nil
}

// ParseDeps parses modules.dep as written by depmod: one line per module,
// "kernel/a.ko: kernel/b.ko kernel/c.ko", dependencies listed so that the
// last one is loaded first. Modules come back in file order. Every path must
// pass CheckPath, and no module or module name may be listed twice.
//
// A dependency without a line of its own is accepted: at boot its file may
// still be present, and LoadAll skips only what actually fails to load.
func ParseDeps(r io.Reader) ([]Module, error) {
	var mods []Module
	lineOf := make(map[string]int)
	byName := make(map[string]int)
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, maxLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, rest, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("modules.dep line %d: missing ':' in %q", n, line)
		}
		if err := CheckPath(p); err != nil {
			return nil, fmt.Errorf("modules.dep line %d: %w", n, err)
		}
		if prev, dup := lineOf[p]; dup {
			return nil, fmt.Errorf("modules.dep line %d: %s already listed on line %d", n, p, prev)
		}
		name := Name(p)
		if prev, dup := byName[name]; dup {
			return nil, fmt.Errorf("modules.dep line %d: module name %s used by both %s (line %d) and %s", n, name, mods[prev].Path, lineOf[mods[prev].Path], p)
		}
		deps := strings.Fields(rest)
		seen := make(map[string]bool, len(deps))
		for _, d := range deps {
			if err := CheckPath(d); err != nil {
				return nil, fmt.Errorf("modules.dep line %d: dependency: %w", n, err)
			}
			if d == p {
				return nil, fmt.Errorf("modules.dep line %d: %s depends on itself", n, p)
			}
			if seen[d] {
				return nil, fmt.Errorf("modules.dep line %d: %s listed twice as a dependency", n, d)
			}
			seen[d] = true
		}
		lineOf[p] = n
		byName[name] = len(mods)
		mods = append(mods, Module{Path: p, Deps: deps})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	return mods, nil
}

// SoftDep says module Name must be loaded after the modules in Pre when they
// are present. modules.dep only records symbol dependencies; some modules
// look up others at run time (libcrc32c asks the crypto API for "crc32c")
// and fail if the provider is not loaded yet.
type SoftDep struct {
	Name string
	Pre  []string
}

// Order returns mods (and any dependency that has no line of its own) in a
// load order where every module follows its dependencies and soft
// dependencies. It is deterministic for a given input: roots in file order,
// dependencies last-listed first as modprobe does. A dependency cycle cannot
// be loaded by the kernel either; Order breaks each cycle at the edge that
// closes it and reports that edge in broken ("a.ko -> b.ko") so the caller
// can warn, instead of looping.
func Order(mods []Module, soft []SoftDep) (order []Module, broken []string) {
	deps := make(map[string][]string, len(mods))
	var paths []string
	add := func(p string) {
		if _, ok := deps[p]; !ok {
			deps[p] = nil
			paths = append(paths, p)
		}
	}
	for _, m := range mods {
		add(m.Path)
		for _, d := range m.Deps {
			add(d)
		}
	}
	edges := make(map[string][]string, len(deps))
	for _, m := range mods {
		deps[m.Path] = m.Deps
		edges[m.Path] = slices.Clone(m.Deps)
		slices.Reverse(edges[m.Path])
	}

	byName := make(map[string]string, len(paths))
	for _, p := range paths {
		byName[Name(p)] = p
	}
	for _, s := range soft {
		p, ok := byName[s.Name]
		if !ok {
			continue
		}
		// Soft dependencies go first so they are loaded before the hard
		// ones, which may pull in the module that needs them.
		var pre []string
		for _, name := range s.Pre {
			if q, ok := byName[name]; ok && q != p {
				pre = append(pre, q)
			}
		}
		edges[p] = append(pre, edges[p]...)
	}

	const (
		unseen = iota
		visiting
		done
	)
	state := make(map[string]int, len(paths))
	var visit func(p string)
	visit = func(p string) {
		state[p] = visiting
		for _, d := range edges[p] {
			switch state[d] {
			case unseen:
				visit(d)
			case visiting:
				broken = append(broken, p+" -> "+d)
			}
		}
		state[p] = done
		order = append(order, Module{Path: p, Deps: deps[p]})
	}
	for _, p := range paths {
		if state[p] == unseen {
			visit(p)
		}
	}
	return order, broken
}
