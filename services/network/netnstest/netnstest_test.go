package netnstest

import (
	"errors"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}

func TestNewIsolatedNamespace(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	host := nsInode(t, "/proc/thread-self/ns/net")

	ns := New(t)
	var st unix.Stat_t
	if err := unix.Fstat(ns.FD(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Ino == host {
		t.Fatal("New returned the test process's own network namespace")
	}
	var inside unix.Stat_t
	if err := ns.Do(func() error { return unix.Stat("/proc/thread-self/ns/net", &inside) }); err != nil {
		t.Fatal(err)
	}
	if inside.Ino != st.Ino {
		t.Errorf("Do ran in namespace %d, want %d", inside.Ino, st.Ino)
	}
	if now := nsInode(t, "/proc/thread-self/ns/net"); now != host {
		t.Errorf("the test's thread moved to namespace %d, want %d", now, host)
	}
	links, err := ns.Conn().Link.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 1 || links[0].Attributes.Name != "lo" {
		t.Errorf("a new namespace has %d links, want only lo", len(links))
	}

	want := errors.New("from fn")
	if err := ns.Do(func() error { return want }); !errors.Is(err, want) {
		t.Errorf("Do = %v, want fn's error", err)
	}
}

func TestLinks(t *testing.T) {
	ns := New(t)
	ns.AddVeth(t, "a0", "b0")
	ns.AddBridge(t, "br0")
	ns.SetUp(t, "a0")

	tests := []struct {
		name, kind string
		up         bool
	}{
		{"a0", "veth", true},
		{"b0", "veth", false},
		{"br0", "bridge", false},
	}
	for _, tt := range tests {
		l := ns.Link(t, tt.name)
		if l.Attributes.Info == nil || l.Attributes.Info.Kind != tt.kind {
			t.Errorf("%s: info %+v, want kind %s", tt.name, l.Attributes.Info, tt.kind)
		}
		if up := l.Flags&unix.IFF_UP != 0; up != tt.up {
			t.Errorf("%s: up %v, want %v", tt.name, up, tt.up)
		}
	}
}
