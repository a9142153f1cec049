package kmods

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dyad-ha/dyad/init/kmod"
)

func parseFile(t *testing.T, name string) *Dep {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := ParseDep(f)
	if err != nil {
		t.Fatalf("ParseDep(%s): %v", name, err)
	}
	return d
}

func builtinFile(t *testing.T, name string) map[string]bool {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := ParseBuiltin(f)
	if err != nil {
		t.Fatalf("ParseBuiltin(%s): %v", name, err)
	}
	return b
}

func TestSelect(t *testing.T) {
	d := parseFile(t, "testdata/modules.dep")
	builtin := builtinFile(t, "testdata/modules.builtin")
	for _, tc := range []struct {
		name        string
		wanted      []string
		wantPaths   []string
		wantBuiltin []string
		wantErr     string
	}{
		{
			name:   "closure in file order",
			wanted: []string{"virtio_pci", "virtio_rng"},
			wantPaths: []string{
				"kernel/drivers/virtio/virtio_ring.ko",
				"kernel/drivers/virtio/virtio.ko",
				"kernel/drivers/virtio/virtio_pci_modern_dev.ko",
				"kernel/drivers/virtio/virtio_pci.ko",
				"kernel/drivers/char/hw_random/virtio-rng.ko",
			},
		},
		{
			name:   "dash and underscore are the same module",
			wanted: []string{"dm_snapshot", "dm-mod"},
			wantPaths: []string{
				"kernel/drivers/md/dm-mod.ko",
				"kernel/drivers/md/dm-snapshot.ko",
				"kernel/drivers/md/dm-bufio.ko",
			},
		},
		{
			name:   "dependency listed after its user",
			wanted: []string{"drbd", "crc32c_generic"},
			wantPaths: []string{
				"kernel/crypto/crc32c_generic.ko",
				"kernel/lib/libcrc32c.ko",
				"kernel/drivers/block/drbd/drbd.ko",
				"kernel/lib/lru_cache.ko",
			},
		},
		{
			name:        "built-in names need no file",
			wanted:      []string{"af_packet", "virtio-mmio", "af_packet"},
			wantBuiltin: []string{"af_packet", "virtio_mmio"},
		},
		{
			name:    "unknown names are reported together",
			wanted:  []string{"virtio_blk", "drbd", "nosuch"},
			wantErr: "kernel modules virtio_blk, nosuch are neither in modules.dep nor in modules.builtin",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := d.Select(tc.wanted, builtin)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("Select error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var paths []string
			for _, e := range sel.Modules {
				paths = append(paths, e.Path)
			}
			if !slices.Equal(paths, tc.wantPaths) {
				t.Errorf("modules = %q, want %q", paths, tc.wantPaths)
			}
			if !slices.Equal(sel.Builtin, tc.wantBuiltin) {
				t.Errorf("builtin = %q, want %q", sel.Builtin, tc.wantBuiltin)
			}
			assertClosed(t, sel.Modules)
		})
	}
}

// assertClosed checks the property the image relies on: every dependency of
// a selected module is itself selected.
func assertClosed(t *testing.T, mods []kmod.Module) {
	t.Helper()
	have := map[string]bool{}
	for _, m := range mods {
		have[m.Path] = true
	}
	for _, m := range mods {
		for _, dep := range m.Deps {
			if !have[dep] {
				t.Errorf("%s needs %s, which is not selected", m.Path, dep)
			}
		}
	}
}

func TestWriteDep(t *testing.T) {
	d := parseFile(t, "testdata/modules.dep")
	sel, err := d.Select([]string{"dm_snapshot", "libcrc32c"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteDep(&buf, sel.Modules); err != nil {
		t.Fatal(err)
	}
	want := "kernel/lib/libcrc32c.ko:\n" +
		"kernel/drivers/md/dm-mod.ko:\n" +
		"kernel/drivers/md/dm-snapshot.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko\n" +
		"kernel/drivers/md/dm-bufio.ko:\n"
	if buf.String() != want {
		t.Errorf("WriteDep wrote\n%s\nwant\n%s", buf.String(), want)
	}
	// The written file must parse on its own: no reference outside it.
	if _, err := ParseDep(&buf); err != nil {
		t.Errorf("written modules.dep does not parse: %v", err)
	}
}

func TestWriteDepReproducesDepmodFormat(t *testing.T) {
	raw, err := os.ReadFile("testdata/modules.dep")
	if err != nil {
		t.Fatal(err)
	}
	d, err := ParseDep(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteDep(&buf, d.Entries()); err != nil {
		t.Fatal(err)
	}
	if buf.String() != string(raw) {
		t.Errorf("round trip changed the file:\n%s\nwant\n%s", buf.String(), raw)
	}
}

// The line-level checks are kmod.ParseDeps'; the image additionally needs
// every dependency to have a line so that a closure stays inside the file.
func TestParseDepRejectsDanglingDependency(t *testing.T) {
	in := "a.ko: b.ko\n"
	_, err := ParseDep(strings.NewReader(in))
	if err == nil || !strings.Contains(err.Error(), "has no line of its own") {
		t.Fatalf("ParseDep(%q) error = %v, want one containing %q", in, err, "has no line of its own")
	}
}

func TestParseBuiltinRejects(t *testing.T) {
	if _, err := ParseBuiltin(strings.NewReader("kernel/a.ko\n/abs.ko\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("ParseBuiltin error = %v, want one about line 2", err)
	}
}

// hostModules is the Debian kernel this appliance is built with; the test
// runs only where linux-image-6.1.0-56-amd64 is installed.
const hostModules = "/lib/modules/6.1.0-56-amd64"

func TestSelectHostModules(t *testing.T) {
	if _, err := os.Stat(filepath.Join(hostModules, "modules.dep")); err != nil {
		t.Skipf("host lacks the Debian kernel modules tree %s: %v", hostModules, err)
	}
	d := parseFile(t, filepath.Join(hostModules, "modules.dep"))
	builtin := builtinFile(t, filepath.Join(hostModules, "modules.builtin"))
	if len(d.Entries()) < 1000 {
		t.Fatalf("host modules.dep has only %d modules", len(d.Entries()))
	}
	sel, err := d.Select([]string{"drbd", "virtio_net", "bonding", "ext4", "kvm_intel", "af_packet"}, builtin)
	if err != nil {
		t.Fatal(err)
	}
	assertClosed(t, sel.Modules)
	for _, name := range []string{"drbd", "libcrc32c", "lru_cache", "virtio_net", "net_failover", "failover", "virtio", "virtio_ring", "bonding", "ext4", "jbd2", "mbcache", "kvm", "kvm_intel"} {
		if !slices.Contains(sel.Names(), name) {
			t.Errorf("closure lacks %s; got %v", name, sel.Names())
		}
	}
	if !slices.Equal(sel.Builtin, []string{"af_packet"}) {
		t.Errorf("builtin = %v, want [af_packet]", sel.Builtin)
	}
	for _, e := range sel.Modules {
		if _, err := os.Stat(filepath.Join(hostModules, e.Path)); err != nil {
			t.Errorf("selected module file missing on host: %v", err)
		}
	}
}

// TestRoundTripAndSelectAll holds, for the inputs that kmod's fuzz target
// seeds with, what the image relies on: a parsed file survives WriteDep and a
// re-parse unchanged, and every module is found again by its kmod.Name.
func TestRoundTripAndSelectAll(t *testing.T) {
	seed, err := os.ReadFile("testdata/modules.dep")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{
		string(seed),
		"a.ko: b.ko\nb.ko:\n",
		"a.ko:b.ko.xz\n\nb.ko.xz:  \n",
		// Regression: the name of 0000000.ko.ko is "0000000.ko", which
		// Lookup must not strip again.
		"0000000.ko.ko:",
	} {
		d, err := ParseDep(strings.NewReader(in))
		if err != nil {
			t.Fatalf("ParseDep(%q): %v", in, err)
		}
		var buf bytes.Buffer
		if err := WriteDep(&buf, d.Entries()); err != nil {
			t.Fatal(err)
		}
		again, err := ParseDep(&buf)
		if err != nil {
			t.Fatalf("re-parsing written modules.dep: %v\n%s", err, buf.String())
		}
		if !slices.EqualFunc(d.Entries(), again.Entries(), func(a, b kmod.Module) bool {
			return a.Path == b.Path && slices.Equal(a.Deps, b.Deps)
		}) {
			t.Fatalf("round trip changed modules: %v vs %v", d.Entries(), again.Entries())
		}
		var names []string
		for _, m := range d.Entries() {
			names = append(names, kmod.Name(m.Path))
		}
		sel, err := d.Select(names, nil)
		if err != nil {
			t.Fatalf("selecting every parsed module of %q: %v", in, err)
		}
		if len(sel.Modules) != len(d.Entries()) {
			t.Fatalf("selecting all modules of %q gave %d of %d", in, len(sel.Modules), len(d.Entries()))
		}
		assertClosed(t, sel.Modules)
	}
}
