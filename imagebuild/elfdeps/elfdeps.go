// Package elfdeps finds the shared objects a dynamically linked ELF program
// needs at run time, the way the glibc dynamic loader would find them, by
// reading the ELF headers (never by running the host's loader).
package elfdeps

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// DebianAMD64Dirs is the search path of Debian's x86-64 glibc loader
// without /etc/ld.so.cache (the image has none), followed by the lib64
// directories some packages install into.
func DebianAMD64Dirs() []string {
	return []string{
		"/lib/x86_64-linux-gnu",
		"/usr/lib/x86_64-linux-gnu",
		"/lib",
		"/usr/lib",
		"/lib64",
		"/usr/lib64",
	}
}

// Resolve returns the host paths of the interpreter and of every shared
// object in the DT_NEEDED closure of the ELF file at path, sorted. Each path
// is where the loader finds the object (e.g. /lib/x86_64-linux-gnu/libc.so.6),
// which may be a symbolic link; callers that copy it must keep that name.
// A statically linked file yields nothing. A needed object found nowhere in
// dirs (or the file's own DT_RUNPATH/DT_RPATH) is an error.
func Resolve(path string, dirs []string) ([]string, error) {
	r := resolver{dirs: dirs, found: map[string]bool{}, done: map[string]bool{}}
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading ELF %s: %w", path, err)
	}
	defer f.Close()
	r.machine, r.class = f.Machine, f.Class
	if interp, err := interpreter(f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	} else if interp != "" {
		r.found[interp] = true
	}
	if err := r.walk(path, f); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(r.found))
	for p := range r.found {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

type resolver struct {
	dirs    []string
	machine elf.Machine
	class   elf.Class
	// found holds the paths to return; done the sonames already walked.
	found map[string]bool
	done  map[string]bool
}

func (r *resolver) walk(path string, f *elf.File) error {
	needed, err := f.DynString(elf.DT_NEEDED)
	if err != nil {
		return fmt.Errorf("%s: reading DT_NEEDED: %w", path, err)
	}
	search, err := r.searchPath(path, f)
	if err != nil {
		return err
	}
	for _, name := range needed {
		if r.done[name] {
			continue
		}
		r.done[name] = true
		libPath, lib, err := r.find(name, search)
		if err != nil {
			return fmt.Errorf("%s needs %s: %w", path, name, err)
		}
		r.found[libPath] = true
		err = r.walk(libPath, lib)
		lib.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// searchPath puts the object's own run paths first. glibc treats DT_RPATH
// and DT_RUNPATH differently in subtle ways (inheritance, LD_LIBRARY_PATH
// ordering) that do not matter here: the image sets no LD_LIBRARY_PATH.
func (r *resolver) searchPath(path string, f *elf.File) ([]string, error) {
	var own []string
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		vals, err := f.DynString(tag)
		if err != nil {
			return nil, fmt.Errorf("%s: reading %v: %w", path, tag, err)
		}
		for _, v := range vals {
			for _, d := range strings.Split(v, ":") {
				d = strings.ReplaceAll(d, "${ORIGIN}", "$ORIGIN")
				d = strings.ReplaceAll(d, "$ORIGIN", filepath.Dir(path))
				if d != "" {
					own = append(own, d)
				}
			}
		}
	}
	return append(own, r.dirs...), nil
}

// find returns the first object called name in dirs that matches the
// program's class and machine, as the loader skips e.g. 32-bit libraries.
func (r *resolver) find(name string, dirs []string) (string, *elf.File, error) {
	if strings.Contains(name, "/") {
		dirs, name = []string{filepath.Dir(name)}, filepath.Base(name)
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		f, err := elf.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			var fe *elf.FormatError
			if errors.As(err, &fe) {
				continue
			}
			return "", nil, err
		}
		if f.Machine != r.machine || f.Class != r.class {
			f.Close()
			continue
		}
		return p, f, nil
	}
	return "", nil, fmt.Errorf("not found in %s", strings.Join(dirs, ":"))
}

func interpreter(f *elf.File) (string, error) {
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return "", fmt.Errorf("reading PT_INTERP: %w", err)
		}
		return strings.TrimRight(string(b), "\x00"), nil
	}
	return "", nil
}
