// Package cmdline parses the Linux kernel command line. It is the first input
// from outside a PM sees, so it never panics and reports what it did not
// understand instead of guessing.
package cmdline

import (
	"fmt"
	"os"
	"strings"
)

// Params is a parsed command line: the last value of each key wins, as in the
// kernel. A key without "=" has the value "".
type Params map[string]string

// Read parses /proc/cmdline.
func Read() (Params, error) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return nil, fmt.Errorf("read kernel command line: %w", err)
	}
	return Parse(string(b))
}

// Parse splits s into parameters the way the kernel does: words separated by
// spaces, double quotes group spaces into a value (`dyad.unit="a b"`).
func Parse(s string) (Params, error) {
	p := Params{}
	var word strings.Builder
	inQuote := false
	flush := func() {
		w := word.String()
		word.Reset()
		if w == "" {
			return
		}
		k, v, _ := strings.Cut(w, "=")
		p[k] = v
	}
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			flush()
		case r == 0:
			return nil, fmt.Errorf("kernel command line contains a NUL byte")
		default:
			word.WriteRune(r)
		}
	}
	if inQuote {
		return nil, fmt.Errorf("kernel command line has an unterminated quote")
	}
	flush()
	return p, nil
}

// Bool reports whether key is set to a true value ("1", "y", "yes", "true",
// "on" or present without a value).
func (p Params) Bool(key string) bool {
	v, ok := p[key]
	if !ok {
		return false
	}
	switch strings.ToLower(v) {
	case "", "1", "y", "yes", "true", "on":
		return true
	}
	return false
}

// WithPrefix returns the parameters whose key starts with prefix, prefix removed.
func (p Params) WithPrefix(prefix string) Params {
	out := Params{}
	for k, v := range p {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			out[rest] = v
		}
	}
	return out
}
