package supervise

import (
	"strings"
	"testing"
)

func TestRing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		max   int
		lines []string
		want  string
		tail2 string
	}{
		{"fits", 100, []string{"a\n", "b\n", "c\n"}, "a\nb\nc\n", "b\nc\n"},
		{"drops oldest whole lines", 7, []string{"aaa\n", "bb\n", "cc\n"}, "bb\ncc\n", "bb\ncc\n"},
		{"drops exactly one line", 8, []string{"aaa\n", "bbb\n", "ccc\n"}, "bbb\nccc\n", "bbb\nccc\n"},
		{"overlong line keeps its end", 4, []string{"a\n", "123456\n"}, "456\n", "456\n"},
		{"empty", 10, nil, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(tc.max)
			for _, l := range tc.lines {
				r.add([]byte(l))
			}
			if got := string(r.bytes()); got != tc.want {
				t.Errorf("bytes = %q, want %q", got, tc.want)
			}
			if got := string(r.tail(2)); got != tc.tail2 {
				t.Errorf("tail(2) = %q, want %q", got, tc.tail2)
			}
			if len(r.bytes()) > tc.max {
				t.Errorf("ring exceeds max")
			}
			if b := r.bytes(); len(b) > 0 && !strings.HasSuffix(string(b), "\n") {
				t.Errorf("ring does not end with a newline")
			}
		})
	}
}
