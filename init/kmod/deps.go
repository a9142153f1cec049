package kmod

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
)

// Module is one line of modules.dep: a module file and the files it needs
// loaded first, as paths relative to the modules directory.
type Module struct {
	Path string
	Deps []string
}

// Name is the kernel's name for the module at p: the file name without
// ".ko", with '-' folded to '_' as the kernel does (dm-mod.ko is dm_mod).
func Name(p string) string {
	return strings.ReplaceAll(strings.TrimSuffix(path.Base(p), ".ko"), "-", "_")
}

// ParseDeps parses modules.dep as written by depmod: one line per module,
// "kernel/a.ko: kernel/b.ko kernel/c.ko", dependencies listed so that the
// last one is loaded first. Modules come back in file order.
func ParseDeps(r io.Reader) ([]Module, error) {
	var mods []Module
	seen := make(map[string]int)
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, rest, ok := strings.Cut(line, ":")
		p = strings.TrimSpace(p)
		if !ok || p == "" || strings.ContainsAny(p, " \t") {
			return nil, fmt.Errorf("modules.dep line %d: want \"module.ko: dependency.ko ...\", got %q", n, line)
		}
		if prev, dup := seen[p]; dup {
			return nil, fmt.Errorf("modules.dep line %d: %s already listed on line %d", n, p, prev)
		}
		seen[p] = n
		deps := strings.Fields(rest)
		if slices.Contains(deps, p) {
			return nil, fmt.Errorf("modules.dep line %d: %s depends on itself", n, p)
		}
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
