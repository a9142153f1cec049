// Package vcs reads the identity of the source tree an image is built from
// out of git.
package vcs

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// DevVersion is the version of a tree that git cannot describe (no git, or
// no commit yet).
const DevVersion = "0.0.0-dev"

// Info identifies a source tree.
type Info struct {
	// Version is `git describe --always --dirty`, or DevVersion.
	Version string
	// Revision is the full commit hash; empty without a commit.
	Revision string
	// CommitTime is the committer time of HEAD; zero without a commit.
	CommitTime time.Time
}

// Describe reads Info for the git work tree containing dir. A tree without
// git or without commits is not an error: it is a development build.
func Describe(ctx context.Context, dir string) (Info, error) {
	if _, err := git(ctx, dir, "rev-parse", "--verify", "-q", "HEAD"); err != nil {
		return Info{Version: DevVersion}, nil
	}
	out, err := git(ctx, dir, "log", "-1", "--format=%H %ct")
	if err != nil {
		return Info{}, err
	}
	rev, ts, ok := strings.Cut(out, " ")
	if !ok {
		return Info{}, fmt.Errorf("git log in %s: unexpected output %q", dir, out)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return Info{}, fmt.Errorf("git log in %s: commit time %q: %w", dir, ts, err)
	}
	version, err := git(ctx, dir, "describe", "--always", "--dirty")
	if err != nil {
		return Info{}, err
	}
	return Info{Version: version, Revision: rev, CommitTime: time.Unix(sec, 0).UTC()}, nil
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s in %s: %w: %s", strings.Join(args, " "), dir, err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}
