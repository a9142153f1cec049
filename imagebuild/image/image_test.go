package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/dyad-ha/dyad/imagebuild/kmods"
	"github.com/dyad-ha/dyad/imagebuild/manifest"
	"github.com/dyad-ha/dyad/init/kmod"
)

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"6.1.0-56-amd64", "6.1.0-9-amd64", 1},
		{"6.1.0-9-amd64", "6.1.0-56-amd64", -1},
		{"6.10.0-1-amd64", "6.9.0-1-amd64", 1},
		{"6.1.0-56-amd64", "6.1.0-56-amd64", 0},
		{"6.1.0-56-amd64", "6.1.0-56-cloud-amd64", -1},
		{"6.1.0-056-amd64", "6.1.0-56-amd64", 0},
		{"6.1.0-56", "6.1.0-56-amd64", -1},
	} {
		got := compareVersions(tc.a, tc.b)
		if (got > 0) != (tc.want > 0) || (got < 0) != (tc.want < 0) {
			t.Errorf("compareVersions(%q, %q) = %d, want sign of %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestFindKernel(t *testing.T) {
	boot, mods := t.TempDir(), t.TempDir()
	for _, kver := range []string{"6.1.0-9-amd64", "6.1.0-56-amd64", "6.1.0-60-amd64"} {
		if err := os.WriteFile(filepath.Join(boot, "vmlinuz-"+kver), []byte("k"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// 6.1.0-60 has a vmlinuz but no modules: it cannot be used.
	for _, kver := range []string{"6.1.0-9-amd64", "6.1.0-56-amd64"} {
		if err := os.MkdirAll(filepath.Join(mods, kver), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mods, kver, "modules.dep"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kver, vmlinuz, err := findKernel(boot, mods, "")
	if err != nil || kver != "6.1.0-56-amd64" || vmlinuz != filepath.Join(boot, "vmlinuz-6.1.0-56-amd64") {
		t.Errorf("newest: findKernel = %q, %q, %v", kver, vmlinuz, err)
	}
	if kver, _, err := findKernel(boot, mods, "6.1.0-9-amd64"); err != nil || kver != "6.1.0-9-amd64" {
		t.Errorf("chosen: findKernel = %q, %v", kver, err)
	}
	if _, _, err := findKernel(boot, mods, "6.1.0-60-amd64"); err == nil || !strings.Contains(err.Error(), "linux-image") {
		t.Errorf("kernel without modules: err = %v", err)
	}
	if _, _, err := findKernel(t.TempDir(), mods, ""); err == nil || !strings.Contains(err.Error(), "no kernel") {
		t.Errorf("empty /boot: err = %v", err)
	}
}

func TestBuildTime(t *testing.T) {
	commit := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		epoch  string
		commit time.Time
		want   string
	}{
		{"1700000000", commit, "2023-11-14T22:13:20Z"},
		{"", commit, "2026-01-02T03:04:05Z"},
		{"", time.Time{}, "1970-01-01T00:00:00Z"},
	} {
		got, err := buildTime(tc.epoch, tc.commit)
		if err != nil || got != tc.want {
			t.Errorf("buildTime(%q, %v) = %q, %v; want %q", tc.epoch, tc.commit, got, err, tc.want)
		}
	}
	if _, err := buildTime("yesterday", commit); err == nil {
		t.Error("buildTime accepted a non-numeric SOURCE_DATE_EPOCH")
	}
}

func TestCollectHostFilesRejects(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		files   []HostFile
		wantErr string
	}{
		{"relative image path", []HostFile{{Source: a, Path: "etc/a"}}, "must be absolute"},
		{"two sources one path", []HostFile{{Source: a, Path: "/etc/x"}, {Source: b, Path: "/etc/x"}}, "would hold both"},
		{"missing source", []HostFile{{Source: filepath.Join(dir, "nope")}}, "no such file"},
		{"directory", []HostFile{{Source: dir}}, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := collectHostFiles(tc.files, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("collectHostFiles error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	// The same file under two image paths is stored once.
	got, err := collectHostFiles([]HostFile{{Source: a, Path: "/etc/one"}, {Source: a, Path: "/usr/two"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []imageFile{{path: "/etc/one", source: a}, {path: "/usr/two", source: a, symlink: "../etc/one"}}
	if !slices.Equal(got, want) {
		t.Errorf("collectHostFiles = %+v, want %+v", got, want)
	}
}

// scratchModule writes a Go module with the command packages of the image,
// each printing its stamped version, so the builder is tested on its own,
// independently of the state of init/ and services/.
func scratchModule(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"go.mod": "module example.com/scratch\n\ngo 1.26\n",
	}
	pkgs := []string{Defaults().Guest.Init}
	for _, c := range Defaults().Commands {
		pkgs = append(pkgs, c.Package)
	}
	for _, p := range pkgs {
		pkg := strings.TrimPrefix(p, "./")
		files[pkg+"/main.go"] = "package main\n\nimport \"fmt\"\n\nvar version = \"unstamped\"\n\nfunc main() { fmt.Println(\"" + pkg + "\", version) }\n"
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// needHost skips when the build host lacks what the image is made of.
func needHost(t *testing.T) {
	t.Helper()
	if _, _, err := findKernel("/boot", "/lib/modules", ""); err != nil {
		t.Skipf("host has no Debian kernel with modules: %v", err)
	}
	for _, p := range []string{"/sbin/mke2fs", "/etc/mke2fs.conf"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("host lacks Debian e2fsprogs: %v", err)
		}
	}
	for _, p := range []string{"/sbin/lvm", "/lib/drbd/drbdadm-84", "/lib/drbd/drbdsetup-84", "/sbin/drbdmeta"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("host lacks Debian lvm2 or drbd-utils: %v", err)
		}
	}
	for _, f := range qemuFiles() {
		if _, err := os.Stat(f.Source); err != nil {
			t.Skipf("host lacks Debian QEMU (qemu-system-x86, seabios): %v", err)
		}
	}
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		t.Skipf("host has no dpkg database: %v", err)
	}
}

func readArchive(t *testing.T, p string) (map[string]cpio.Record, int64) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s is not gzip: %v", p, err)
	}
	raw, err := io.ReadAll(gz)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("reading cpio: %v", err)
	}
	byName := map[string]cpio.Record{}
	for _, r := range recs {
		if _, dup := byName[r.Name]; dup {
			t.Errorf("archive holds %s twice", r.Name)
		}
		byName[r.Name] = r
	}
	return byName, int64(len(raw))
}

func content(t *testing.T, r cpio.Record) []byte {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	if err != nil {
		t.Fatalf("reading %s: %v", r.Name, err)
	}
	return b
}

func TestBuild(t *testing.T) {
	needHost(t)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(&testWriter{t}, nil))
	cfg := Defaults()
	cfg.SourceDir = scratchModule(t)
	cfg.OutDir = t.TempDir()
	cfg.SourceDateEpoch = "1700000000"

	start := time.Now()
	res, err := Build(ctx, log, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first build took %s", time.Since(start))

	outer := readManifest(t, filepath.Join(cfg.OutDir, ManifestName))
	for _, a := range outer.Artifacts {
		size, sum, err := manifest.Hash(filepath.Join(cfg.OutDir, a.Name))
		if err != nil || size != a.Size || sum != a.SHA256 {
			t.Errorf("artifact %s: on disk %d %s (%v), manifest %d %s", a.Name, size, sum, err, a.Size, a.SHA256)
		}
	}
	if len(outer.Artifacts) != 3 {
		t.Errorf("artifacts = %+v, want kernel, initramfs and guest initramfs", outer.Artifacts)
	}
	if outer.BuiltAt != "2023-11-14T22:13:20Z" || outer.Version != "0.0.0-dev" || outer.KernelVersion == "" {
		t.Errorf("manifest header = %q %q %q", outer.Version, outer.BuiltAt, outer.KernelVersion)
	}
	for _, pkg := range []string{"drbd-utils", "e2fsprogs", "libc6", "libdevmapper1.02.1", "lvm2", "linux-image-" + outer.KernelVersion,
		"qemu-system-x86", "qemu-system-data", "seabios"} {
		if outer.Packages[pkg] == "" {
			t.Errorf("manifest lacks package %s: %v", pkg, outer.Packages)
		}
	}

	recs, rawSize := readArchive(t, res.Initramfs)
	if rawSize != res.InitramfsUncompressed {
		t.Errorf("uncompressed archive is %d bytes, Build reported %d", rawSize, res.InitramfsUncompressed)
	}

	// The embedded manifest is the outer one without the initramfs.
	embeddedRec, ok := recs[relative(ManifestPath)]
	if !ok {
		t.Fatalf("archive lacks %s", ManifestPath)
	}
	var embedded manifest.Manifest
	if err := json.Unmarshal(content(t, embeddedRec), &embedded); err != nil {
		t.Fatalf("embedded manifest: %v", err)
	}
	wantEmbedded := outer
	wantEmbedded.Artifacts = slices.DeleteFunc(slices.Clone(outer.Artifacts), func(a manifest.Artifact) bool { return a.Name == InitramfsName })
	a, _ := wantEmbedded.Marshal()
	b, _ := embedded.Marshal()
	if !bytes.Equal(a, b) {
		t.Errorf("embedded manifest differs from the outer one:\n%s\nvs\n%s", b, a)
	}

	// Commands: static, at their paths, stamped with the version.
	for _, c := range cfg.Commands {
		r, ok := recs[relative(c.Path)]
		if !ok {
			t.Errorf("archive lacks %s", c.Path)
			continue
		}
		if r.Mode&cpio.S_IFMT != cpio.S_IFREG || r.Mode&0o111 == 0 {
			t.Errorf("%s: mode %o, want an executable regular file", c.Path, r.Mode)
		}
		bin := filepath.Join(t.TempDir(), path.Base(c.Path))
		if err := os.WriteFile(bin, content(t, r), 0o755); err != nil {
			t.Fatal(err)
		}
		if ef, err := elf.Open(bin); err != nil {
			t.Errorf("%s: %v", c.Path, err)
		} else {
			for _, p := range ef.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("%s is dynamically linked", c.Path)
				}
			}
			ef.Close()
		}
		out, err := exec.Command(bin).Output()
		if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), " 0.0.0-dev") {
			t.Errorf("running %s: %q, %v; want the version stamped", c.Path, out, err)
		}
	}

	// The guest: its init, the virtio drivers with their dependencies in a
	// modules.dep of their own, the console; nothing of the PM.
	guest, guestRaw := readArchive(t, filepath.Join(cfg.OutDir, GuestInitramfsName))
	if r, ok := guest["init"]; !ok || r.Mode&cpio.S_IFMT != cpio.S_IFREG || r.Mode&0o111 == 0 {
		t.Errorf("guest archive lacks an executable /init")
	}
	if r, ok := guest["dev/console"]; !ok || r.Mode&cpio.S_IFMT != cpio.S_IFCHR {
		t.Errorf("guest archive lacks /dev/console")
	}
	guestTree := "lib/modules/" + outer.KernelVersion + "/"
	if r, ok := guest[guestTree+"modules.dep"]; !ok {
		t.Errorf("guest archive lacks %smodules.dep", guestTree)
	} else {
		sel, err := kmods.ParseDep(bytes.NewReader(content(t, r)))
		if err != nil {
			t.Fatalf("guest modules.dep: %v", err)
		}
		var names []string
		for _, e := range sel.Entries() {
			names = append(names, kmod.Name(e.Path))
			if _, ok := guest[guestTree+e.Path]; !ok {
				t.Errorf("guest archive lacks %s", e.Path)
			}
		}
		for _, want := range Defaults().Guest.Modules {
			if !slices.Contains(names, want) {
				t.Errorf("guest modules %v lack %s", names, want)
			}
		}
	}
	for _, pmOnly := range []string{"bin/dyad-agent", "sbin/lvm", relative(ManifestPath)} {
		if _, ok := guest[pmOnly]; ok {
			t.Errorf("guest archive holds the PM's %s", pmOnly)
		}
	}
	// Tiny: the guest must boot quickly under TCG inside a TCG PM.
	if guestRaw > 8<<20 {
		t.Errorf("guest initramfs is %d bytes uncompressed, want a few MiB at most", guestRaw)
	}

	// QEMU with the module and firmware it opens at run time.
	for _, f := range qemuFiles() {
		if r, ok := recs[relative(f.Source)]; !ok || r.Mode&cpio.S_IFMT != cpio.S_IFREG {
			t.Errorf("archive lacks regular file %s", f.Source)
		}
	}
	// The test guest as the agent boots it: the kernel unpacked for PVH,
	// the guest initramfs just built, the command line.
	guestFile := func(name string) []byte {
		r, ok := recs[relative(path.Join(TestGuestDir, name))]
		if !ok || r.Mode&cpio.S_IFMT != cpio.S_IFREG {
			t.Errorf("archive lacks the test guest's %s", name)
			return nil
		}
		return content(t, r)
	}
	if k := guestFile(GuestKernelFile); k != nil {
		if ef, err := elf.NewFile(bytes.NewReader(k)); err != nil || !hasPVHNote(ef) {
			t.Errorf("test guest kernel is not an ELF kernel with a PVH note: %v", err)
		}
	}
	if want, err := os.ReadFile(filepath.Join(cfg.OutDir, GuestInitramfsName)); err != nil || !bytes.Equal(guestFile(GuestInitrdFile), want) {
		t.Errorf("test guest initrd.img differs from %s (%v)", GuestInitramfsName, err)
	}
	if got := string(guestFile(GuestCmdlineFile)); got != cfg.Guest.Cmdline+"\n" || !strings.HasPrefix(got, "console=ttyS0") {
		t.Errorf("test guest cmdline %q, want %q and a newline", got, cfg.Guest.Cmdline)
	}

	// Host files with their libraries, and the loader link.
	for _, p := range []string{"sbin/mke2fs", "etc/mke2fs.conf", "lib/x86_64-linux-gnu/libc.so.6", "lib/x86_64-linux-gnu/libext2fs.so.2",
		"sbin/lvm", "lib/x86_64-linux-gnu/libdevmapper.so.1.02.1", "etc/lvm/lvm.conf",
		"lib/drbd/drbdadm-84", "lib/drbd/drbdsetup-84", "sbin/drbdmeta"} {
		if r, ok := recs[p]; !ok || r.Mode&cpio.S_IFMT != cpio.S_IFREG {
			t.Errorf("archive lacks regular file %s", p)
		}
	}
	// lvm reads (lvmconfig in the QEMU tier shows it) the image's own
	// configuration: no udev, no dmeventd, no PVs on DRBD devices.
	if r, ok := recs["etc/lvm/lvm.conf"]; ok {
		conf := string(content(t, r))
		for _, want := range []string{"udev_sync = 0", "udev_rules = 0", "monitoring = 0", `global_filter = [ "r|^/dev/drbd|" ]`} {
			if !strings.Contains(conf, want) {
				t.Errorf("lvm.conf lacks %q:\n%s", want, conf)
			}
		}
	}
	// drbd-utils fail without their state directories.
	for _, p := range []string{"var/lock", "var/run/drbd", "var/lib/drbd", "run", "tmp"} {
		if r, ok := recs[p]; !ok || r.Mode&cpio.S_IFMT != cpio.S_IFDIR {
			t.Errorf("archive lacks directory %s", p)
		}
	}
	if r, ok := recs["lib64/ld-linux-x86-64.so.2"]; !ok || r.Mode&cpio.S_IFMT != cpio.S_IFLNK {
		t.Errorf("archive lacks the loader symlink")
	} else if target := path.Join("lib64", string(content(t, r))); recs[target].Mode&cpio.S_IFMT != cpio.S_IFREG {
		t.Errorf("loader symlink points to %s, which is not a file in the archive", target)
	}
	if r, ok := recs["dev/console"]; !ok || r.Mode&cpio.S_IFMT != cpio.S_IFCHR || r.Rmajor != 5 || r.Rminor != 1 {
		t.Errorf("archive lacks /dev/console: %+v", r.Info)
	}
	for _, f := range outer.Files {
		r, ok := recs[relative(f.Path)]
		switch {
		case !ok:
			t.Errorf("manifest lists %s, archive lacks it", f.Path)
		case f.Symlink != "":
			if got := string(content(t, r)); got != f.Symlink {
				t.Errorf("%s links to %q, manifest says %q", f.Path, got, f.Symlink)
			}
		case int64(r.FileSize) != f.Size:
			t.Errorf("%s is %d bytes, manifest says %d", f.Path, r.FileSize, f.Size)
		}
	}

	// modules.dep lists exactly the shipped .ko files, closed under
	// dependencies, and covers every requested loadable module.
	tree := "lib/modules/" + outer.KernelVersion
	dep, err := kmods.ParseDep(bytes.NewReader(content(t, recs[tree+"/modules.dep"])))
	if err != nil {
		t.Fatalf("archive modules.dep: %v", err)
	}
	listed := map[string]bool{}
	var names []string
	for _, e := range dep.Entries() {
		listed[tree+"/"+e.Path] = true
		names = append(names, kmod.Name(e.Path))
		if _, ok := recs[tree+"/"+e.Path]; !ok {
			t.Errorf("modules.dep lists %s, archive lacks it", e.Path)
		}
	}
	for name := range recs {
		if strings.HasSuffix(name, ".ko") && !listed[name] {
			t.Errorf("archive holds %s, modules.dep does not list it", name)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, outer.Modules) {
		t.Errorf("modules.dep names %v, manifest %v", names, outer.Modules)
	}
	for _, m := range cfg.Modules {
		if _, ok := dep.Lookup(m); !ok && !slices.Contains(outer.BuiltinModules, kmod.Name(m)) {
			t.Errorf("requested module %s is neither shipped nor built in", m)
		}
	}
	for _, name := range []string{"modules.builtin", "modules.order"} {
		if _, ok := recs[tree+"/"+name]; !ok {
			t.Errorf("archive lacks %s/%s", tree, name)
		}
	}

	// Same inputs, same bytes.
	again := cfg
	again.OutDir = t.TempDir()
	start = time.Now()
	if _, err := Build(ctx, log, again); err != nil {
		t.Fatal(err)
	}
	t.Logf("second build took %s", time.Since(start))
	for _, name := range []string{ManifestName, InitramfsName, KernelName, GuestInitramfsName} {
		x, err1 := os.ReadFile(filepath.Join(cfg.OutDir, name))
		y, err2 := os.ReadFile(filepath.Join(again.OutDir, name))
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs between two builds of the same inputs (%v, %v)", name, err1, err2)
		}
	}

	// extracted unpacks the archive once, for the subtests that run its
	// tools in a chroot.
	var root string
	extracted := func(st *testing.T) string {
		st.Helper()
		if os.Geteuid() != 0 {
			st.Skip("chroot needs root")
		}
		if root != "" {
			return root
		}
		dir := t.TempDir() // the parent's: it outlives the subtest
		for _, r := range recs {
			if err := cpio.CreateFileInRoot(r, dir, false); err != nil {
				st.Fatalf("extracting %s: %v", r.Name, err)
			}
		}
		root = dir
		return root
	}

	t.Run("mke2fs runs from the image", func(t *testing.T) {
		root := extracted(t)
		if err := os.WriteFile(filepath.Join(root, "tmp", "disk.img"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(filepath.Join(root, "tmp", "disk.img"), 8<<20); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("/sbin/mke2fs", "-F", "-q", "-t", "ext4", "-L", "dyad-data", "/tmp/disk.img")
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
		cmd.Env = []string{}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mke2fs in the extracted image: %v\n%s", err, out)
		}
		sb := make([]byte, 2)
		f, err := os.Open(filepath.Join(root, "tmp", "disk.img"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// The ext2/3/4 superblock magic 0xEF53 sits at byte 1024+56.
		if _, err := f.ReadAt(sb, 1024+56); err != nil || sb[0] != 0x53 || sb[1] != 0xEF {
			t.Errorf("no ext4 superblock written: % x, %v", sb, err)
		}
	})

	// The storage tools load from the image with their libraries and
	// configuration. Without device-mapper or DRBD on the build host only
	// what needs no kernel driver can run: versions, configuration, and
	// drbdadm's dry run, which shows it finds drbdsetup-84 and drbdmeta.
	t.Run("storage tools run from the image", func(t *testing.T) {
		root := extracted(t)
		conf := "resource r1 {\n  protocol C;\n  device /dev/drbd1 minor 1;\n  disk /dev/dyad_sg1/vol1;\n  meta-disk internal;\n" +
			"  floating ipv4 127.0.0.1:7801;\n  floating ipv4 169.254.42.2:7801;\n}\n"
		if err := os.WriteFile(filepath.Join(root, "tmp", "r1.res"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			argv []string
			exit int
			want []string
		}{
			{[]string{"/sbin/lvm", "version"}, 0, []string{"LVM version:", "Library version:"}},
			{[]string{"/lib/drbd/drbdadm-84", "--version"}, 0, []string{"DRBDADM_API_VERSION=1"}},
			{[]string{"/lib/drbd/drbdadm-84", "-d", "-c", "/tmp/r1.res", "create-md", "--force", "r1"}, 0,
				[]string{"drbdmeta 1 v08 /dev/dyad_sg1/vol1 internal create-md --force"}},
			{[]string{"/lib/drbd/drbdadm-84", "-d", "-c", "/tmp/r1.res", "up", "r1"}, 0, []string{
				"/lib/drbd/drbdsetup-84 new-resource r1",
				"/lib/drbd/drbdsetup-84 attach 1 /dev/dyad_sg1/vol1 /dev/dyad_sg1/vol1 internal",
				"/lib/drbd/drbdsetup-84 connect r1 ipv4:127.0.0.1:7801 ipv4:169.254.42.2:7801 --protocol=C"}},
			// Without arguments both print their usage and exit with 20.
			{[]string{"/lib/drbd/drbdsetup-84"}, 20, []string{"USAGE: drbdsetup-84 command device arguments options"}},
			{[]string{"/sbin/drbdmeta"}, 20, []string{"USAGE: drbdmeta [--force] DEVICE FORMAT"}},
		} {
			cmd := exec.Command(tc.argv[0], tc.argv[1:]...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
			cmd.Dir = "/"
			// The test binary's descriptors make lvm complain, not fail.
			cmd.Env = []string{"PATH=/bin:/sbin", "LVM_SUPPRESS_FD_WARNINGS=1"}
			out, err := cmd.CombinedOutput()
			if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != tc.exit {
				t.Errorf("%q in the extracted image: %v, want exit status %d\n%s", tc.argv, err, tc.exit, out)
				continue
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("%q in the extracted image printed no %q:\n%s", tc.argv, w, out)
				}
			}
		}
	})
}

func TestBuildReportsMissingCommands(t *testing.T) {
	needHost(t)
	cfg := Defaults()
	cfg.SourceDir = scratchModule(t)
	cfg.OutDir = t.TempDir()
	cfg.Commands = append(cfg.Commands,
		Command{Package: "./services/cmd/dyad-nothere", Path: "/bin/dyad-nothere"},
		Command{Package: "./services/cmd", Path: "/bin/cmd"})
	if err := os.WriteFile(filepath.Join(cfg.SourceDir, "services/cmd/lib.go"), []byte("package cmd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Build(context.Background(), slog.New(slog.NewTextHandler(&testWriter{t}, nil)), cfg)
	if err == nil {
		t.Fatal("Build succeeded with a missing command package")
	}
	for _, want := range []string{"./services/cmd/dyad-nothere (for /bin/dyad-nothere)", `./services/cmd (for /bin/cmd) is package "cmd", not a main package`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if entries, _ := os.ReadDir(cfg.OutDir); len(entries) != 0 {
		t.Errorf("failed build left %d files in the output directory", len(entries))
	}
}

func TestBuildRejectsUnknownModule(t *testing.T) {
	needHost(t)
	cfg := Defaults()
	cfg.SourceDir = scratchModule(t)
	cfg.OutDir = t.TempDir()
	cfg.Modules = append(cfg.Modules, "dyad_no_such_module")
	_, err := Build(context.Background(), slog.New(slog.NewTextHandler(&testWriter{t}, nil)), cfg)
	if err == nil || !strings.Contains(err.Error(), "dyad_no_such_module are neither in modules.dep nor in modules.builtin") {
		t.Fatalf("Build error = %v, want the unknown module named", err)
	}
}

func readManifest(t *testing.T, p string) manifest.Manifest {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m manifest.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return m
}

// testWriter sends slog output to the test log.
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
