// Package debpkg asks the host's dpkg database which Debian package owns a
// file and which version of a package is installed, so an image can record
// exactly what it was assembled from.
package debpkg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// Owners maps each path to the name of the package that ships it (without
// an architecture qualifier). Debian's merged /usr means a file may be
// registered as /lib/x or /usr/lib/x; both spellings are tried. A path no
// package owns is an error: the image must be traceable to packages.
func Owners(ctx context.Context, paths []string) (map[string]string, error) {
	owners := map[string]string{}
	if len(paths) == 0 {
		return owners, nil
	}
	found, err := search(ctx, paths)
	if err != nil {
		return nil, err
	}
	var retry []string
	alias := map[string]string{}
	for _, p := range paths {
		if pkg, ok := found[p]; ok {
			owners[p] = pkg
			continue
		}
		if a, ok := usrMergeAlias(p); ok {
			alias[a] = p
			retry = append(retry, a)
		}
	}
	if len(retry) > 0 {
		found, err := search(ctx, retry)
		if err != nil {
			return nil, err
		}
		for a, p := range alias {
			if pkg, ok := found[a]; ok {
				owners[p] = pkg
			}
		}
	}
	var orphans []string
	for _, p := range paths {
		if _, ok := owners[p]; !ok {
			orphans = append(orphans, p)
		}
	}
	if len(orphans) > 0 {
		slices.Sort(orphans)
		return nil, fmt.Errorf("no Debian package owns %s", strings.Join(orphans, ", "))
	}
	return owners, nil
}

// usrMergeAlias returns the other spelling of a path under merged /usr.
func usrMergeAlias(p string) (string, bool) {
	for _, top := range []string{"/bin/", "/sbin/", "/lib/", "/lib64/", "/lib32/", "/libx32/"} {
		if strings.HasPrefix(p, top) {
			return "/usr" + p, true
		}
		if strings.HasPrefix(p, "/usr"+top) {
			return strings.TrimPrefix(p, "/usr"), true
		}
	}
	return "", false
}

// search runs one dpkg-query -S for all paths. dpkg-query exits 1 when some
// path is not found; the paths it did find are still printed, so that exit
// status is not an error here.
func search(ctx context.Context, paths []string) (map[string]string, error) {
	cmd := exec.CommandContext(ctx, "dpkg-query", append([]string{"-S", "--"}, paths...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exitErr *exec.ExitError
	if err != nil && !(errors.As(err, &exitErr) && exitErr.ExitCode() == 1) {
		return nil, fmt.Errorf("dpkg-query -S: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	want := map[string]bool{}
	for _, p := range paths {
		want[p] = true
	}
	return parseSearch(out, want)
}

// parseSearch reads "pkg[:arch][, pkg...]: path" lines, ignoring lines for
// paths not asked about (dpkg-query -S matches patterns, and reports
// diversions on lines of their own).
func parseSearch(out []byte, want map[string]bool) (map[string]string, error) {
	found := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "diversion by ") || strings.HasPrefix(line, "local diversion ") {
			continue
		}
		pkgs, path, ok := strings.Cut(line, ": ")
		if !ok || !want[path] {
			continue
		}
		names := strings.Split(pkgs, ", ")
		for i, n := range names {
			names[i], _, _ = strings.Cut(n, ":")
		}
		slices.Sort(names)
		names = slices.Compact(names)
		if len(names) != 1 {
			return nil, fmt.Errorf("%s is shipped by several packages (%s); cannot attribute it", path, pkgs)
		}
		found[path] = names[0]
	}
	return found, sc.Err()
}

// Versions maps each package name to its installed version.
func Versions(ctx context.Context, pkgs []string) (map[string]string, error) {
	versions := map[string]string{}
	if len(pkgs) == 0 {
		return versions, nil
	}
	args := append([]string{"-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n", "--"}, pkgs...)
	cmd := exec.CommandContext(ctx, "dpkg-query", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("dpkg-query -W %s: %w: %s", strings.Join(pkgs, " "), err, strings.TrimSpace(stderr.String()))
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 3 || !strings.HasPrefix(f[2], "ii") {
			continue
		}
		if prev, ok := versions[f[0]]; ok && prev != f[1] {
			return nil, fmt.Errorf("package %s is installed in two versions (%s, %s), one per architecture", f[0], prev, f[1])
		}
		versions[f[0]] = f[1]
	}
	var missing []string
	for _, p := range pkgs {
		if _, ok := versions[p]; !ok {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("Debian packages not installed: %s", strings.Join(missing, ", "))
	}
	return versions, nil
}
