package kmod

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// testdata/modules.dep is an excerpt of the Debian 6.1.0-56-amd64
// modules.dep, lines kept verbatim and in depmod's order.
func readTestdata(t testing.TB) []Module {
	t.Helper()
	f, err := os.Open("testdata/modules.dep")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mods, err := ParseDeps(f)
	if err != nil {
		t.Fatal(err)
	}
	return mods
}

func names(mods []Module) []string {
	var n []string
	for _, m := range mods {
		n = append(n, Name(m.Path))
	}
	return n
}

func TestName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"kernel/drivers/md/dm-mod.ko", "dm_mod"},
		{"kernel/drivers/block/drbd/drbd.ko", "drbd"},
		{"kernel/net/ipv4/netfilter/nf_nat.ko", "nf_nat"},
		{"kernel/drivers/net/ethernet/e1000e.ko", "e1000e"},
		{"kernel/drivers/char/hw_random/virtio-rng.ko", "virtio_rng"},
		{"kernel/drivers/md/dm-mod.ko.xz", "dm_mod"},
		{"kernel/net/8021q/8021q.ko.zst", "8021q"},
		{"kernel/x/0000000.ko.ko", "0000000.ko"},
		{"dm-thin-pool", "dm_thin_pool"},
		{"virtio_blk", "virtio_blk"},
	} {
		if got := Name(tc.in); got != tc.want {
			t.Errorf("Name(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseDeps(t *testing.T) {
	mods := readTestdata(t)
	if len(mods) != 24 {
		t.Fatalf("parsed %d modules, want 24", len(mods))
	}
	i := slices.IndexFunc(mods, func(m Module) bool { return Name(m.Path) == "drbd" })
	want := Module{Path: "kernel/drivers/block/drbd/drbd.ko", Deps: []string{"kernel/lib/lru_cache.ko", "kernel/lib/libcrc32c.ko"}}
	if i < 0 || mods[i].Path != want.Path || !slices.Equal(mods[i].Deps, want.Deps) {
		t.Errorf("drbd line parsed as %+v, want %+v", mods[max(i, 0)], want)
	}
	if m := mods[0]; m.Path != "kernel/fs/mbcache.ko" || len(m.Deps) != 0 {
		t.Errorf("first module = %+v, want mbcache without deps", m)
	}
}

func TestParseDepsErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"no colon", "kernel/a.ko kernel/b.ko\n", "line 1"},
		{"no colon message", "kernel/a.ko\n", "missing ':'"},
		{"empty module", "a.ko:\n: b.ko\n", "line 2"},
		{"space in module", "kernel/a b.ko: c.ko\n", "line 1"},
		{"absolute", "/kernel/a.ko:\n", "is absolute"},
		{"escapes tree", "../a.ko:\n", "not a clean path"},
		{"unclean", "kernel//a.ko:\n", "not a clean path"},
		{"not a module", "kernel/a.o:\n", "does not end in"},
		{"empty name", "kernel/.ko:\n", "empty module name"},
		{"listed twice", "a.ko:\nb.ko: a.ko\n\na.ko: b.ko\n", "line 4: a.ko already listed on line 1"},
		{"duplicate line", "a.ko:\na.ko:\n", "line 2: a.ko already listed on line 1"},
		{"duplicate name", "x/a-b.ko:\ny/a_b.ko:\n", "used by both"},
		{"self dependency", "a.ko: b.ko a.ko\n", "depends on itself"},
		{"repeated dependency", "a.ko: b.ko b.ko\nb.ko:\n", "listed twice as a dependency"},
		{"dependency escapes", "a.ko: ../b.ko\n", "not a clean path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseDeps(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseDeps(%q) error = %v, want one mentioning %q", tt.in, err, tt.want)
			}
		})
	}
	mods, err := ParseDeps(strings.NewReader("# comment\n\n  a.ko:   b.ko\tc.ko  \n"))
	if err != nil || len(mods) != 1 || !slices.Equal(mods[0].Deps, []string{"b.ko", "c.ko"}) {
		t.Errorf("ParseDeps with comment and odd spacing = %+v, %v", mods, err)
	}
}

// checkOrder fails unless order holds every module of mods exactly once,
// each after all its dependencies.
func checkOrder(t *testing.T, mods []Module, order []Module) {
	t.Helper()
	pos := make(map[string]int)
	for i, m := range order {
		if _, dup := pos[m.Path]; dup {
			t.Errorf("%s appears twice in the order", m.Path)
		}
		pos[m.Path] = i
	}
	for _, m := range mods {
		if _, ok := pos[m.Path]; !ok {
			t.Errorf("%s missing from the order", m.Path)
		}
		for _, d := range m.Deps {
			if pos[d] > pos[m.Path] {
				t.Errorf("%s ordered after %s, which needs it", d, m.Path)
			}
		}
	}
}

func TestOrder(t *testing.T) {
	mods := readTestdata(t)
	order, broken := Order(mods, softDeps())
	if len(broken) != 0 {
		t.Errorf("broken edges %v in an acyclic file", broken)
	}
	checkOrder(t, mods, order)
	want := []string{
		"mbcache", "jbd2", "crc16", "ext4",
		"crc32c_generic", "libcrc32c", "xfs",
		"lru_cache", "virtio_ring", "virtio", "virtio_console", "virtio_blk", "drbd",
		"tls", "bonding", "failover", "net_failover", "virtio_net",
		"watchdog", "softdog", "dm_mod",
		"nf_defrag_ipv4", "nf_defrag_ipv6", "nf_conntrack",
	}
	if got := names(order); !slices.Equal(got, want) {
		t.Errorf("order\n got %v\nwant %v", got, want)
	}
	// The file lists xfs (which pulls in libcrc32c) before crc32c_generic:
	// only the soft dependency puts the provider first.
	plain, _ := Order(mods, nil)
	n := names(plain)
	if slices.Index(n, "libcrc32c") > slices.Index(n, "crc32c_generic") {
		t.Errorf("testdata no longer needs the soft dependency: %v", n)
	}
}

func TestOrderCyclesAndMissingLines(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		soft       []SoftDep
		want       []string
		wantBroken []string
	}{
		{
			name: "two-cycle",
			in:   "a.ko: b.ko\nb.ko: a.ko\n",
			want: []string{"b", "a"}, wantBroken: []string{"b.ko -> a.ko"},
		},
		{
			name: "three-cycle behind a root",
			in:   "r.ko: a.ko\na.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n",
			want: []string{"c", "b", "a", "r"}, wantBroken: []string{"c.ko -> a.ko"},
		},
		{
			name: "soft dependency closing a cycle",
			in:   "a.ko: b.ko\nb.ko:\n",
			soft: []SoftDep{{Name: "b", Pre: []string{"a"}}},
			want: []string{"b", "a"}, wantBroken: []string{"b.ko -> a.ko"},
		},
		{
			name: "dependency without its own line",
			in:   "x/a.ko: x/b.ko x/c.ko\n",
			want: []string{"c", "b", "a"},
		},
		{
			name: "soft dependency on an absent module",
			in:   "libcrc32c.ko:\n",
			soft: softDeps(),
			want: []string{"libcrc32c"},
		},
	}
	for _, tt := range tests {
		mods, err := ParseDeps(strings.NewReader(tt.in))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		order, broken := Order(mods, tt.soft)
		if got := names(order); !slices.Equal(got, tt.want) {
			t.Errorf("%s: order %v, want %v", tt.name, got, tt.want)
		}
		if !slices.Equal(broken, tt.wantBroken) {
			t.Errorf("%s: broken %v, want %v", tt.name, broken, tt.wantBroken)
		}
	}
}

type call struct{ name, params string }

// fakeLoader records calls and answers from errs by module name.
type fakeLoader struct {
	errs  map[string]error
	calls []call
}

func (f *fakeLoader) load(path, params string) error {
	f0, err := os.Open(path)
	if err != nil {
		return err
	}
	f0.Close()
	n := Name(path)
	f.calls = append(f.calls, call{n, params})
	return f.errs[n]
}

// moduleTree writes testdata/modules.dep and empty .ko files into a fresh
// directory laid out like /lib/modules/<kver>.
func moduleTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	dep, err := os.ReadFile("testdata/modules.dep")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), dep, 0o644); err != nil {
		t.Fatal(err)
	}
	order, _ := Order(readTestdata(t), nil)
	for _, m := range order {
		p := filepath.Join(dir, m.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadAll(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := moduleTree(t)
	if err := os.Remove(filepath.Join(dir, "kernel/net/tls/tls.ko")); err != nil {
		t.Fatal(err)
	}
	l := &fakeLoader{errs: map[string]error{
		"crc16":     unix.EEXIST, // built in
		"libcrc32c": errors.New("finit_module: bad module"),
		// No such hardware: skipped quietly, not an error.
		"dm_mod": fmt.Errorf("finit_module: %w", unix.EOPNOTSUPP),
	}}
	loaded, err := loadAll(context.Background(), log, dir, l)

	wantLoaded := []string{
		"mbcache", "jbd2", "crc16", "ext4", "crc32c_generic",
		"lru_cache", "virtio_ring", "virtio", "virtio_console", "virtio_blk",
		"failover", "net_failover", "virtio_net", "watchdog", "softdog",
		"nf_defrag_ipv4", "nf_defrag_ipv6",
	}
	if !slices.Equal(loaded, wantLoaded) {
		t.Errorf("loaded\n got %v\nwant %v", loaded, wantLoaded)
	}
	if err == nil {
		t.Fatal("LoadAll reported no error")
	}
	for _, want := range []string{
		"6 kernel modules not loaded",
		"module libcrc32c: finit_module: bad module",
		"module xfs: not loaded because its dependency libcrc32c failed",
		"module drbd: not loaded because its dependency libcrc32c failed",
		"module nf_conntrack: not loaded because its dependency libcrc32c failed",
		"module tls: open",
		"module bonding: not loaded because its dependency tls failed",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "dm_mod") {
		t.Errorf("a module for absent hardware counted as a failure: %v", err)
	}
	for _, c := range l.calls {
		if c.name == "xfs" || c.name == "drbd" || c.name == "bonding" {
			t.Errorf("%s was loaded although a dependency failed", c.name)
		}
		if wantP := map[string]string{"softdog": "soft_margin=30"}[c.name]; c.params != wantP {
			t.Errorf("%s loaded with params %q, want %q", c.name, c.params, wantP)
		}
	}
}

func TestLoadAllStopsWhenCancelled(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l := &fakeLoader{}
	loaded, err := loadAll(ctx, log, moduleTree(t), l)
	if len(loaded) != 0 || len(l.calls) != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled LoadAll loaded %v (calls %v), err %v", loaded, l.calls, err)
	}
}

func TestLoadAllWithoutModulesDep(t *testing.T) {
	_, err := LoadAll(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), t.TempDir())
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadAll on an empty directory: %v, want a not-exist error", err)
	}
}

// TestFinitLoaderRejects runs the real finit_module(2) adapter on a file that
// is not a module. Whatever the host kernel supports, that must fail with an
// error naming the file, never be taken for success or "already loaded".
func TestFinitLoaderRejects(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bogus.ko")
	if err := os.WriteFile(p, []byte("not an ELF module"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := finitLoader{}.load(p, "")
	if err == nil || errors.Is(err, unix.EEXIST) || !strings.Contains(err.Error(), p) {
		t.Errorf("finit_module on a bogus file: %v", err)
	}
	if err := (finitLoader{}).load(p+".missing", ""); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("finit_module on a missing file: %v, want not-exist", err)
	}
}

func FuzzParseDeps(f *testing.F) {
	dep, err := os.ReadFile("testdata/modules.dep")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(dep)
	f.Add([]byte("a.ko: b.ko\nb.ko: a.ko\n"))
	f.Add([]byte("a.ko\n: \n"))
	f.Add([]byte("a.ko: b.ko\nb.ko:\n"))
	f.Add([]byte("a.ko:b.ko\n\nb.ko.xz:  \n"))
	f.Add([]byte("x/a-b.ko:\ny/a_b.ko:\n"))
	f.Add([]byte("kernel/drivers/md/dm-snapshot.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko\n" +
		"kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/virtio/virtio.ko.zst\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		mods, err := ParseDeps(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		// What parses is safe to hand to the loader and the image builder:
		// paths inside the tree, one line per module and per name.
		lines := make(map[string]bool)
		byName := make(map[string]string)
		for _, m := range mods {
			if err := CheckPath(m.Path); err != nil {
				t.Fatalf("accepted module %q: %v", m.Path, err)
			}
			if lines[m.Path] {
				t.Fatalf("accepted %s twice", m.Path)
			}
			lines[m.Path] = true
			if prev, dup := byName[Name(m.Path)]; dup {
				t.Fatalf("accepted %s and %s, both named %s", prev, m.Path, Name(m.Path))
			}
			byName[Name(m.Path)] = m.Path
			seen := make(map[string]bool)
			for _, d := range m.Deps {
				if err := CheckPath(d); err != nil || d == m.Path || seen[d] {
					t.Fatalf("accepted dependency %q of %s (check: %v, repeated: %v)", d, m.Path, err, seen[d])
				}
				seen[d] = true
			}
		}

		order, broken := Order(mods, softDeps())
		pos := make(map[string]int)
		for i, m := range order {
			if _, dup := pos[m.Path]; dup {
				t.Fatalf("%s twice in order", m.Path)
			}
			pos[m.Path] = i
		}
		brokenSet := make(map[string]bool)
		for _, e := range broken {
			brokenSet[e] = true
		}
		for _, m := range mods {
			for _, d := range m.Deps {
				if pd, ok := pos[d]; !ok || (pd > pos[m.Path] && !brokenSet[m.Path+" -> "+d]) {
					t.Fatalf("%s (at %d) needs %s (at %d, present %v), edge not reported broken", m.Path, pos[m.Path], d, pd, ok)
				}
			}
		}
	})
}
