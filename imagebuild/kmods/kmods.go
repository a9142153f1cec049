// Package kmods selects kernel modules and their dependency closure from a
// depmod-generated modules tree (/lib/modules/<kver>) and writes a modules.dep
// that describes exactly the selected modules.
package kmods

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

// Entry is one line of modules.dep: a module file and the module files it
// needs, both relative to /lib/modules/<kver>.
type Entry struct {
	Path string
	Deps []string
}

// Name is the kernel's name for the module: the file name without its .ko
// suffix (and compression suffix) with dashes folded to underscores.
func (e Entry) Name() string { return Name(e.Path) }

// Dep is a parsed modules.dep, kept in file order because depmod writes it in
// modules.order order and consumers load modules in that order.
type Dep struct {
	entries []Entry
	byName  map[string]int
	byPath  map[string]int
}

// moduleSuffixes are the file suffixes depmod accepts for modules.
var moduleSuffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

// maxLine bounds one modules.dep line; real lines are far below 64 KiB even
// for modules with dozens of dependencies.
const maxLine = 1 << 20

// Name returns the module name for a module file path such as
// "kernel/drivers/char/hw_random/virtio-rng.ko.xz" ("virtio_rng"). A plain
// name without a suffix is folded the same way, so Name("dm-mod") is "dm_mod".
func Name(p string) string {
	base := path.Base(p)
	for _, s := range moduleSuffixes {
		if strings.HasSuffix(base, s) {
			base = strings.TrimSuffix(base, s)
			break
		}
	}
	return strings.ReplaceAll(base, "-", "_")
}

// ParseDep parses modules.dep. Every line is "path:[ dep...]"; paths must be
// clean relative module file paths, and every dependency must itself have a
// line, so a closure computed from the result never refers to a file that
// the tree does not describe.
func ParseDep(r io.Reader) (*Dep, error) {
	d := &Dep{byName: map[string]int{}, byPath: map[string]int{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), maxLine)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		head, tail, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("modules.dep line %d: missing ':' in %q", lineNo, line)
		}
		if err := checkModulePath(head); err != nil {
			return nil, fmt.Errorf("modules.dep line %d: %w", lineNo, err)
		}
		e := Entry{Path: head}
		seen := map[string]bool{}
		for _, dep := range strings.Fields(tail) {
			if err := checkModulePath(dep); err != nil {
				return nil, fmt.Errorf("modules.dep line %d: dependency: %w", lineNo, err)
			}
			if dep == head {
				return nil, fmt.Errorf("modules.dep line %d: %s depends on itself", lineNo, head)
			}
			if seen[dep] {
				return nil, fmt.Errorf("modules.dep line %d: %s listed twice as a dependency", lineNo, dep)
			}
			seen[dep] = true
			e.Deps = append(e.Deps, dep)
		}
		if _, dup := d.byPath[head]; dup {
			return nil, fmt.Errorf("modules.dep line %d: %s listed twice", lineNo, head)
		}
		name := e.Name()
		if prev, dup := d.byName[name]; dup {
			return nil, fmt.Errorf("modules.dep line %d: module name %s used by both %s and %s", lineNo, name, d.entries[prev].Path, head)
		}
		d.byPath[head] = len(d.entries)
		d.byName[name] = len(d.entries)
		d.entries = append(d.entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading modules.dep: %w", err)
	}
	for _, e := range d.entries {
		for _, dep := range e.Deps {
			if _, ok := d.byPath[dep]; !ok {
				return nil, fmt.Errorf("modules.dep: %s depends on %s, which has no line of its own", e.Path, dep)
			}
		}
	}
	return d, nil
}

func checkModulePath(p string) error {
	switch {
	case p == "":
		return errors.New("empty module path")
	case strings.ContainsFunc(p, unicode.IsSpace):
		return fmt.Errorf("module path %q contains white space", p)
	case path.IsAbs(p):
		return fmt.Errorf("module path %q is absolute", p)
	case path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../"):
		return fmt.Errorf("module path %q is not a clean path inside the modules tree", p)
	case !hasModuleSuffix(p):
		return fmt.Errorf("module path %q does not end in one of %v", p, moduleSuffixes)
	case Name(p) == "":
		return fmt.Errorf("module path %q has an empty module name", p)
	}
	return nil
}

func hasModuleSuffix(p string) bool {
	for _, s := range moduleSuffixes {
		if strings.HasSuffix(p, s) {
			return true
		}
	}
	return false
}

// Entries returns the modules in file order.
func (d *Dep) Entries() []Entry { return slices.Clone(d.entries) }

// canonical folds dashes to underscores, as the kernel does for module
// names given by users.
func canonical(name string) string { return strings.ReplaceAll(name, "-", "_") }

// Lookup finds a module by name (dashes and underscores are equivalent).
func (d *Dep) Lookup(name string) (Entry, bool) {
	i, ok := d.byName[canonical(name)]
	if !ok {
		return Entry{}, false
	}
	return d.entries[i], true
}

// ParseBuiltin parses modules.builtin (one module path per line) into the set
// of built-in module names.
func ParseBuiltin(r io.Reader) (map[string]bool, error) {
	names := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), maxLine)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if err := checkModulePath(line); err != nil {
			return nil, fmt.Errorf("modules.builtin line %d: %w", lineNo, err)
		}
		names[Name(line)] = true
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
	Modules []Entry
	// Builtin are the wanted names compiled into the kernel, sorted; they
	// need no file.
	Builtin []string
}

// Names returns the names of the selected loadable modules, sorted.
func (s Selection) Names() []string {
	names := make([]string, 0, len(s.Modules))
	for _, e := range s.Modules {
		names = append(names, e.Name())
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
		for _, dep := range d.entries[d.byPath[p]].Deps {
			walk(dep)
		}
	}
	for _, w := range wanted {
		if e, ok := d.Lookup(w); ok {
			walk(e.Path)
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
	for _, e := range d.entries {
		if include[e.Path] {
			sel.Modules = append(sel.Modules, Entry{Path: e.Path, Deps: slices.Clone(e.Deps)})
		}
	}
	slices.Sort(sel.Builtin)
	return sel, nil
}

// WriteDep writes entries in modules.dep format, the exact format depmod
// produces: "path:" followed by " dep" for each dependency.
func WriteDep(w io.Writer, entries []Entry) error {
	bw := bufio.NewWriter(w)
	for _, e := range entries {
		bw.WriteString(e.Path)
		bw.WriteByte(':')
		for _, dep := range e.Deps {
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
