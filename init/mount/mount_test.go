package mount

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

type fakeKernel struct {
	mounted map[string]bool
	calls   []string
	fail    string
}

func (k *fakeKernel) Mounted(target string) (bool, error) { return k.mounted[target], nil }

func (k *fakeKernel) Mount(p Point) error {
	if p.Target == k.fail {
		return errors.New("boom")
	}
	k.calls = append(k.calls, p.Target)
	k.mounted[p.Target] = true
	return nil
}

func TestAllSkipsMountedAndIsRepeatable(t *testing.T) {
	dir := t.TempDir()
	points := []Point{
		{"proc", filepath.Join(dir, "proc"), "proc", 0, ""},
		{"sysfs", filepath.Join(dir, "sys"), "sysfs", 0, ""},
		{"cgroup2", filepath.Join(dir, "sys/fs/cgroup"), "cgroup2", 0, ""},
	}
	k := &fakeKernel{mounted: map[string]bool{points[1].Target: true}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := All(context.Background(), log, k, points); err != nil {
		t.Fatal(err)
	}
	want := []string{points[0].Target, points[2].Target}
	if !slices.Equal(k.calls, want) {
		t.Errorf("mounted %v, want %v", k.calls, want)
	}
	for _, p := range points {
		if st, err := os.Stat(p.Target); err != nil || !st.IsDir() {
			t.Errorf("mount point %s not created: %v", p.Target, err)
		}
	}
	k.calls = nil
	if err := All(context.Background(), log, k, points); err != nil {
		t.Fatal(err)
	}
	if len(k.calls) != 0 {
		t.Errorf("second run mounted %v again", k.calls)
	}
}

func TestAllStopsAtFailure(t *testing.T) {
	dir := t.TempDir()
	points := []Point{
		{"proc", filepath.Join(dir, "a"), "proc", 0, ""},
		{"sysfs", filepath.Join(dir, "b"), "sysfs", 0, ""},
	}
	k := &fakeKernel{mounted: map[string]bool{}, fail: points[0].Target}
	err := All(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), k, points)
	if err == nil || len(k.calls) != 0 {
		t.Errorf("err = %v, calls %v: want failure before the second mount", err, k.calls)
	}
}

func TestBaseOrder(t *testing.T) {
	idx := map[string]int{}
	for i, p := range Base() {
		idx[p.Target] = i
	}
	for child, parent := range map[string]string{"/dev/pts": "/dev", "/sys/fs/cgroup": "/sys"} {
		if idx[child] <= idx[parent] {
			t.Errorf("%s mounted before its parent %s", child, parent)
		}
	}
}

// The real adapter against this host's real mounts.
func TestLinuxMounted(t *testing.T) {
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"/", true},
		{"/proc", true},
		{"/proc/self", false},
		{t.TempDir(), false},
		{"/nonexistent-dyad-test", false},
	} {
		got, err := Linux{}.Mounted(tc.path)
		if err != nil || got != tc.want {
			t.Errorf("Mounted(%s) = %v, %v; want %v", tc.path, got, err, tc.want)
		}
	}
}
