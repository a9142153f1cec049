package main

import (
	"reflect"
	"testing"
)

func TestMedianPercentile(t *testing.T) {
	tests := []struct {
		vs          []float64
		median, p95 float64
	}{
		{[]float64{7}, 7, 7},
		{[]float64{4, 1, 3, 2}, 2.5, 4},
		{[]float64{5, 1, 3}, 3, 5},
		{[]float64{10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, 10.5, 19},
	}
	for _, tt := range tests {
		if got := median(tt.vs); got != tt.median {
			t.Errorf("median(%v) = %v, want %v", tt.vs, got, tt.median)
		}
		if got := percentile(tt.vs, 95); got != tt.p95 {
			t.Errorf("percentile(%v, 95) = %v, want %v", tt.vs, got, tt.p95)
		}
	}
}

func TestSummarize(t *testing.T) {
	one := [][]sample{{{"a", 1, "s"}}}
	if got := summarize(one); !reflect.DeepEqual(got, one[0]) {
		t.Errorf("one run: %v", got)
	}
	three := [][]sample{{{"a", 3, "s"}}, {{"a", 1, "s"}}, {{"a", 8, "s"}}}
	want := []sample{{"a", 3, "s"}, {"a_min", 1, "s"}, {"a_max", 8, "s"}}
	if got := summarize(three); !reflect.DeepEqual(got, want) {
		t.Errorf("three runs: %v, want %v", got, want)
	}
}

func TestSampleString(t *testing.T) {
	tests := []struct {
		s    sample
		want string
	}{
		{sample{"initramfs_bytes", 18573563, "bytes"}, "BENCH initramfs_bytes 18573563 bytes"},
		{sample{"api_latency_ms", 1.2345, "ms"}, "BENCH api_latency_ms 1.23 ms"},
		{sample{"unit_formed_seconds", 12.34567, "s"}, "BENCH unit_formed_seconds 12.346 s"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.s, got, tt.want)
		}
	}
}
