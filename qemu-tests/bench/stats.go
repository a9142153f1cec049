package main

import (
	"math"
	"slices"
)

// summarize reduces the samples of several runs to one line per name: the
// only value of a single run, else the median followed by _min and _max.
func summarize(runs [][]sample) []sample {
	if len(runs) == 1 {
		return runs[0]
	}
	var out []sample
	for i, first := range runs[0] {
		vs := make([]float64, len(runs))
		for r, run := range runs {
			vs[r] = run[i].value
		}
		out = append(out,
			sample{first.name, median(vs), first.unit},
			sample{first.name + "_min", slices.Min(vs), first.unit},
			sample{first.name + "_max", slices.Max(vs), first.unit})
	}
	return out
}

func median(vs []float64) float64 {
	s := slices.Sorted(slices.Values(vs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentile is the nearest-rank p-th percentile of vs.
func percentile(vs []float64, p float64) float64 {
	s := slices.Sorted(slices.Values(vs))
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[max(rank, 1)-1]
}
