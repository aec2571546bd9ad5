package main

import (
	"math"
	"sort"
	"time"
)

// summary describes a sample of durations, in milliseconds.
type summary struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// countSummary describes a sample of counts.
type countSummary struct {
	Min  int     `json:"min"`
	Max  int     `json:"max"`
	Mean float64 `json:"mean"`
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of sorted, which must be in
// ascending order: the smallest value such that at least p% of the sample is <= it. It returns 0
// for an empty sample.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarize sorts ds in place and summarizes it. An empty sample gives all zeros.
func summarize(ds []time.Duration) summary {
	if len(ds) == 0 {
		return summary{}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	var total time.Duration
	for _, d := range ds {
		total += d
	}
	return summary{
		N:    len(ds),
		P50:  ms(percentile(ds, 50)),
		P90:  ms(percentile(ds, 90)),
		P99:  ms(percentile(ds, 99)),
		Max:  ms(ds[len(ds)-1]),
		Mean: ms(total) / float64(len(ds)),
	}
}

// summarizeCounts summarizes a sample of counts. An empty sample gives all zeros.
func summarizeCounts(xs []int) countSummary {
	if len(xs) == 0 {
		return countSummary{}
	}
	c := countSummary{Min: xs[0], Max: xs[0]}
	total := 0
	for _, x := range xs {
		c.Min = min(c.Min, x)
		c.Max = max(c.Max, x)
		total += x
	}
	c.Mean = float64(total) / float64(len(xs))
	return c
}
