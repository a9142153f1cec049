package debpkg

import (
	"context"
	"maps"
	"os/exec"
	"strings"
	"testing"
)

func TestParseSearch(t *testing.T) {
	out := "libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6\n" +
		"e2fsprogs: /sbin/mke2fs\n" +
		"diversion by foo from: /bin/x\n" +
		"diversion by foo to: /bin/x.real\n" +
		"libc6:amd64, libc6:i386: /usr/share/doc/libc6\n" +
		"e2fsprogs: /sbin/mke2fs.unasked\n"
	want := map[string]bool{"/lib/x86_64-linux-gnu/libc.so.6": true, "/sbin/mke2fs": true, "/usr/share/doc/libc6": true, "/bin/x": true}
	got, err := parseSearch([]byte(out), want)
	if err != nil {
		t.Fatal(err)
	}
	wantMap := map[string]string{
		"/lib/x86_64-linux-gnu/libc.so.6": "libc6",
		"/sbin/mke2fs":                    "e2fsprogs",
		"/usr/share/doc/libc6":            "libc6",
	}
	if !maps.Equal(got, wantMap) {
		t.Errorf("parseSearch = %v, want %v", got, wantMap)
	}
	if _, err := parseSearch([]byte("a, b: /x\n"), map[string]bool{"/x": true}); err == nil || !strings.Contains(err.Error(), "several packages") {
		t.Errorf("two owners: error = %v, want 'several packages'", err)
	}
}

func TestUsrMergeAlias(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/lib/x86_64-linux-gnu/libblkid.so.1", "/usr/lib/x86_64-linux-gnu/libblkid.so.1"},
		{"/usr/sbin/mke2fs", "/sbin/mke2fs"},
		{"/etc/mke2fs.conf", ""},
		{"/boot/vmlinuz", ""},
	} {
		got, _ := usrMergeAlias(tc.in)
		if got != tc.want {
			t.Errorf("usrMergeAlias(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func needDpkg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		t.Skipf("host has no dpkg database (dpkg-query not found): %v", err)
	}
	if err := exec.Command("dpkg-query", "-W", "e2fsprogs", "libc6").Run(); err != nil {
		t.Skipf("host lacks Debian packages e2fsprogs/libc6: %v", err)
	}
}

func TestOwnersHost(t *testing.T) {
	needDpkg(t)
	ctx := context.Background()
	// libblkid is registered under /usr/lib, mke2fs under /sbin: both
	// spellings of merged /usr must resolve.
	got, err := Owners(ctx, []string{"/sbin/mke2fs", "/usr/sbin/mke2fs", "/lib/x86_64-linux-gnu/libblkid.so.1", "/etc/mke2fs.conf"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/sbin/mke2fs":                        "e2fsprogs",
		"/usr/sbin/mke2fs":                    "e2fsprogs",
		"/lib/x86_64-linux-gnu/libblkid.so.1": "libblkid1",
		"/etc/mke2fs.conf":                    "e2fsprogs",
	}
	if !maps.Equal(got, want) {
		t.Errorf("Owners = %v, want %v", got, want)
	}
	_, err = Owners(ctx, []string{"/sbin/mke2fs", "/nonexistent/dyad-test"})
	if err == nil || !strings.Contains(err.Error(), "no Debian package owns /nonexistent/dyad-test") {
		t.Errorf("unowned path: error = %v", err)
	}
}

func TestVersionsHost(t *testing.T) {
	needDpkg(t)
	ctx := context.Background()
	got, err := Versions(ctx, []string{"libc6", "e2fsprogs"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"libc6", "e2fsprogs"} {
		if got[p] == "" {
			t.Errorf("no version for %s in %v", p, got)
		}
	}
	if _, err := Versions(ctx, []string{"libc6", "dyad-no-such-package"}); err == nil || !strings.Contains(err.Error(), "dyad-no-such-package") {
		t.Errorf("missing package: error = %v", err)
	}
}
