package cmdline

import (
	"maps"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Params
		wantErr bool
	}{
		{"", Params{}, false},
		{"console=ttyS0 quiet\n", Params{"console": "ttyS0", "quiet": ""}, false},
		{`dyad.unit="lab unit" dyad.node=2`, Params{"dyad.unit": "lab unit", "dyad.node": "2"}, false},
		{"a=1 a=2", Params{"a": "2"}, false},
		{"x=a=b", Params{"x": "a=b"}, false},
		{`dyad.unit="open`, nil, true},
		{"a\x00b", nil, true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("Parse(%q) err = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && !maps.Equal(got, tt.want) {
			t.Errorf("Parse(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestBoolAndPrefix(t *testing.T) {
	p, err := Parse("dyad.testchannel=1 dyad.off=0 dyad.flag other=1")
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]bool{"dyad.testchannel": true, "dyad.off": false, "dyad.flag": true, "missing": false} {
		if got := p.Bool(k); got != want {
			t.Errorf("Bool(%q) = %v, want %v", k, got, want)
		}
	}
	if d := p.WithPrefix("dyad."); len(d) != 3 || d["testchannel"] != "1" {
		t.Errorf("WithPrefix = %v", d)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`console=ttyS0 dyad.unit="a b" dyad.node=1`)
	f.Add(`"`)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err == nil && p == nil {
			t.Fatal("nil params without error")
		}
	})
}
