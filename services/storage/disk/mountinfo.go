package disk

import (
	"strconv"
	"strings"
)

// mount is one line of a mountinfo file (proc(5)).
type mount struct {
	dev    string // major:minor of the mounted file system
	point  string // where it is mounted
	source string // mount source, e.g. /dev/vda1, or "none"
}

// parseMountinfo reads the lines it understands and skips the others: a
// line the kernel may add fields to in future must not hide the rest.
func parseMountinfo(data string) []mount {
	var ms []mount
	for line := range strings.Lines(data) {
		f := strings.Fields(line)
		// id parent major:minor root point options [optional...] - type source super-options
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+3 || !strings.Contains(f[2], ":") {
			continue
		}
		ms = append(ms, mount{dev: f[2], point: unescapeOctal(f[4]), source: unescapeOctal(f[sep+2])})
	}
	return ms
}

// unescapeOctal undoes the kernel's \ooo escapes of space, tab, newline and
// backslash in mountinfo fields.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
