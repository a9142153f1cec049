// Package kmods selects kernel modules and their dependency closure from a
// depmod-generated modules tree (/lib/modules/<kver>) and writes a modules.dep
// that describes exactly the selected modules. The modules.dep format itself
// belongs to init/kmod, whose parser PID 1 runs on the file written here.
package kmods

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/dyad-ha/dyad/init/kmod"
)

// Dep is a parsed modules.dep, kept in file order because depmod writes it in
// modules.order order and consumers load modules in that order.
type Dep struct {
	mods   []kmod.Module
	byName map[string]int
	byPath map[string]int
}

// ParseDep parses modules.dep with kmod.ParseDeps and additionally requires
// every dependency to have a line of its own, so a closure computed from the
// result never refers to a file that the tree does not describe.
func ParseDep(r io.Reader) (*Dep, error) {
	mods, err := kmod.ParseDeps(r)
	if err != nil {
		return nil, err
	}
	d := &Dep{mods: mods, byName: make(map[string]int, len(mods)), byPath: make(map[string]int, len(mods))}
	for i, m := range mods {
		d.byPath[m.Path] = i
		d.byName[kmod.Name(m.Path)] = i
	}
	for _, m := range mods {
		for _, dep := range m.Deps {
			if _, ok := d.byPath[dep]; !ok {
				return nil, fmt.Errorf("modules.dep: %s depends on %s, which has no line of its own", m.Path, dep)
			}
		}
	}
	return d, nil
}

// Entries returns the modules in file order.
func (d *Dep) Entries() []kmod.Module { return slices.Clone(d.mods) }

// canonical folds dashes to underscores, as the kernel does for module
// names given by users. Unlike kmod.Name it strips no suffix: a name such as
// "0000000.ko" (from 0000000.ko.ko) must find its module again.
func canonical(name string) string { return strings.ReplaceAll(name, "-", "_") }

// Lookup finds a module by name (dashes and underscores are equivalent).
func (d *Dep) Lookup(name string) (kmod.Module, bool) {
	i, ok := d.byName[canonical(name)]
	if !ok {
		return kmod.Module{}, false
	}
	return d.mods[i], true
}

// ParseBuiltin parses modules.builtin (one module path per line) into the set
// of built-in module names.
func ParseBuiltin(r io.Reader) (map[string]bool, error) {
	names := map[string]bool{}
	// One path per line: the scanner's default 64 KiB line limit is far
	// above PATH_MAX.
	sc := bufio.NewScanner(r)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if err := kmod.CheckPath(line); err != nil {
			return nil, fmt.Errorf("modules.builtin line %d: %w", lineNo, err)
		}
		names[kmod.Name(line)] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading modules.builtin: %w", err)
	}
	return names, nil
}

// Selection is the outcome of Select.
type Selection struct {
	// Modules are the loadable modules to ship, wanted ones and their
	// dependencies, in modules.dep order.
	Modules []kmod.Module
	// Builtin are the wanted names compiled into the kernel, sorted; they
	// need no file.
	Builtin []string
}

// Names returns the names of the selected loadable modules, sorted.
func (s Selection) Names() []string {
	names := make([]string, 0, len(s.Modules))
	for _, m := range s.Modules {
		names = append(names, kmod.Name(m.Path))
	}
	slices.Sort(names)
	return names
}

// Select resolves the wanted module names to the full dependency closure.
// A name that is neither a loadable module nor built in is an error, because
// an image silently missing a driver fails far from its cause.
func (d *Dep) Select(wanted []string, builtin map[string]bool) (Selection, error) {
	include := map[string]bool{}
	var sel Selection
	var missing []string
	var walk func(p string)
	walk = func(p string) {
		if include[p] {
			return
		}
		include[p] = true
		for _, dep := range d.mods[d.byPath[p]].Deps {
			walk(dep)
		}
	}
	for _, w := range wanted {
		if m, ok := d.Lookup(w); ok {
			walk(m.Path)
			continue
		}
		if n := canonical(w); builtin[n] {
			if !slices.Contains(sel.Builtin, n) {
				sel.Builtin = append(sel.Builtin, n)
			}
			continue
		}
		missing = append(missing, w)
	}
	if len(missing) > 0 {
		return Selection{}, fmt.Errorf("kernel modules %s are neither in modules.dep nor in modules.builtin", strings.Join(missing, ", "))
	}
	for _, m := range d.mods {
		if include[m.Path] {
			sel.Modules = append(sel.Modules, kmod.Module{Path: m.Path, Deps: slices.Clone(m.Deps)})
		}
	}
	slices.Sort(sel.Builtin)
	return sel, nil
}

// WriteDep writes modules in modules.dep format, the exact format depmod
// produces: "path:" followed by " dep" for each dependency.
func WriteDep(w io.Writer, mods []kmod.Module) error {
	bw := bufio.NewWriter(w)
	for _, m := range mods {
		bw.WriteString(m.Path)
		bw.WriteByte(':')
		for _, dep := range m.Deps {
			bw.WriteByte(' ')
			bw.WriteString(dep)
		}
		bw.WriteByte('\n')
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing modules.dep: %w", err)
	}
	return nil
}
