package image

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// builtBinary is a compiled command waiting to go into the archive.
type builtBinary struct {
	path   string // in the image
	source string // on the host
}

// buildCommands compiles each command into binDir as a static, stripped,
// reproducible Linux binary with the image version in main.version.
//
// mkuimage's own binary builder (uimage.WithBinaryCommands) is not used: it
// always passes `go build -a`, which bypasses the build cache and rebuilds
// the standard library for every binary (about 17 s of CPU for a hello
// world, minutes for the agent), and it disables inlining for all packages.
func buildCommands(ctx context.Context, log *slog.Logger, srcDir, binDir, version string, cmds []Command) (string, []builtBinary, error) {
	goVersion, err := goOutput(ctx, srcDir, "env", "GOVERSION")
	if err != nil {
		return "", nil, err
	}
	if err := checkMainPackages(ctx, srcDir, cmds); err != nil {
		return "", nil, err
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", nil, err
	}
	var out []builtBinary
	for i, c := range cmds {
		if !path.IsAbs(c.Path) || path.Clean(c.Path) != c.Path || c.Path == "/" {
			return "", nil, fmt.Errorf("command %s: image path %q must be absolute and clean", c.Package, c.Path)
		}
		start := time.Now()
		bin := filepath.Join(binDir, fmt.Sprintf("%d-%s", i, path.Base(c.Path)))
		_, err := goOutput(ctx, srcDir, "build",
			"-trimpath",
			"-buildvcs=false",
			"-ldflags", "-s -w -buildid= -X main.version="+version,
			"-o", bin,
			c.Package)
		if err != nil {
			return "", nil, fmt.Errorf("building %s for %s: %w", c.Package, c.Path, err)
		}
		log.Info("command built", "package", c.Package, "path", c.Path, "duration", time.Since(start).Round(time.Millisecond))
		out = append(out, builtBinary{path: c.Path, source: bin})
	}
	return goVersion, out, nil
}

// checkMainPackages fails early, naming every command package that is
// missing or not a main package, before any compiling.
func checkMainPackages(ctx context.Context, srcDir string, cmds []Command) error {
	args := []string{"list", "-e", "-f", "{{.Name}}\t{{if .Error}}{{.Error}}{{end}}"}
	for _, c := range cmds {
		args = append(args, c.Package)
	}
	listed, err := goOutput(ctx, srcDir, args...)
	if err != nil {
		return err
	}
	lines := strings.Split(listed, "\n")
	if len(lines) != len(cmds) {
		return fmt.Errorf("go list returned %d packages for %d commands:\n%s", len(lines), len(cmds), listed)
	}
	var problems []string
	for i, line := range lines {
		name, listErr, _ := strings.Cut(line, "\t")
		switch {
		case listErr != "":
			problems = append(problems, fmt.Sprintf("%s (for %s): %s", cmds[i].Package, cmds[i].Path, strings.ReplaceAll(listErr, "\n", " ")))
		case name != "main":
			problems = append(problems, fmt.Sprintf("%s (for %s) is package %q, not a main package", cmds[i].Package, cmds[i].Path, name))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("cannot build the image's Go commands in %s:\n  %s", srcDir, strings.Join(problems, "\n  "))
	}
	return nil
}

// goOutput runs the go command for the image's target: Linux on amd64
// without cgo, whatever the host's defaults.
func goOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimRight(stdout.String(), "\n"), nil
}
