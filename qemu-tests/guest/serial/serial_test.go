package serial

import (
	"math"
	"testing"
)

func TestParse(t *testing.T) {
	const id = "0f8e2c1d-3b4a-4c5d-8e9f-0a1b2c3d4e5f"
	for _, tc := range []struct {
		in   string
		want Line
		ok   bool
	}{
		{StartLine(id, 0), Line{Start, id, 0}, true},
		{DurableLine(id, 17), Line{Durable, id, 17}, true},
		{DurableLine(id, math.MaxUint64) + "\r\n", Line{Durable, id, math.MaxUint64}, true},
		{"DURABLE boot=" + id + " n=017", Line{}, false},
		{"DURABLE boot=" + id + " n=-1", Line{}, false},
		{"DURABLE boot=" + id + " n=+1", Line{}, false},
		{"DURABLE boot=" + id + " n=1 extra", Line{}, false},
		{"DURABLE boot= n=1", Line{}, false},
		{"DURABLE n=1 boot=" + id, Line{}, false},
		{"[    1.234] DURABLE boot=" + id + " n=1", Line{}, false},
		{FailedPrefix + ": opening /dev/vda", Line{}, false},
		{"", Line{}, false},
	} {
		got, ok := Parse(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzParse: whatever Parse accepts prints back as the same line.
func FuzzParse(f *testing.F) {
	f.Add(DurableLine("b", 3))
	f.Add("GUEST START boot=x n=0\r\n")
	f.Add("DURABLE boot= n=")
	f.Fuzz(func(t *testing.T, s string) {
		l, ok := Parse(s)
		if !ok {
			return
		}
		var back string
		if l.Kind == Start {
			back = StartLine(l.Boot, l.N)
		} else {
			back = DurableLine(l.Boot, l.N)
		}
		if again, ok := Parse(back); !ok || again != l {
			t.Fatalf("Parse(%q) = %+v, but its line %q parses as %+v, %v", s, l, back, again, ok)
		}
	})
}
