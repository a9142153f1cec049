package vcs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

func run(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func TestDescribe(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skipf("git not installed: %v", err)
	}
	ctx := context.Background()
	dir := t.TempDir()

	info, err := Describe(ctx, dir)
	if err != nil || info != (Info{Version: DevVersion}) {
		t.Fatalf("outside git: Describe = %+v, %v; want dev version", info, err)
	}

	run(t, dir, nil, "git", "init", "-q")
	info, err = Describe(ctx, dir)
	if err != nil || info != (Info{Version: DevVersion}) {
		t.Fatalf("no commit: Describe = %+v, %v; want dev version", info, err)
	}

	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com",
		"GIT_AUTHOR_DATE=2026-01-02T03:04:05Z", "GIT_COMMITTER_DATE=2026-01-02T03:04:05Z",
	}
	run(t, dir, env, "git", "add", "f")
	run(t, dir, env, "git", "commit", "-q", "-m", "one")
	info, err = Describe(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{7,}$`).MatchString(info.Version) {
		t.Errorf("Version = %q, want an abbreviated hash", info.Version)
	}
	if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(info.Revision) {
		t.Errorf("Revision = %q, want a full hash", info.Revision)
	}
	if want := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC); !info.CommitTime.Equal(want) {
		t.Errorf("CommitTime = %v, want %v", info.CommitTime, want)
	}

	run(t, dir, env, "git", "tag", "-a", "-m", "release", "v1.2.3")
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	info, err = Describe(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != "v1.2.3-dirty" {
		t.Errorf("Version = %q, want v1.2.3-dirty", info.Version)
	}
}
