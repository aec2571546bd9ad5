package main

import (
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	// 1..100 ms: the nearest-rank p-th percentile is exactly p ms.
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{
		{50, 50 * time.Millisecond},
		{90, 90 * time.Millisecond},
		{99, 99 * time.Millisecond},
		{100, 100 * time.Millisecond},
		{0.5, 1 * time.Millisecond},
		{0, 1 * time.Millisecond},
	} {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("percentile(1..100ms, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	// Small sample: ranks round up. [10 20 30 40 50]: p50 -> rank 3, p90 -> rank 5, p99 -> rank 5.
	small := []time.Duration{10, 20, 30, 40, 50}
	if got := percentile(small, 50); got != 30 {
		t.Errorf("p50 of 5 = %v, want 30", got)
	}
	if got := percentile(small, 90); got != 50 {
		t.Errorf("p90 of 5 = %v, want 50", got)
	}
	if got := percentile(small, 20); got != 10 {
		t.Errorf("p20 of 5 = %v, want 10", got)
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of empty = %v, want 0", got)
	}
}

func TestSummarize(t *testing.T) {
	// Unsorted input; summarize sorts it.
	ds := []time.Duration{
		4 * time.Millisecond, 1 * time.Millisecond, 3 * time.Millisecond,
		2500 * time.Microsecond, 10 * time.Millisecond,
	}
	got := summarize(ds)
	want := summary{N: 5, P50: 3, P90: 10, P99: 10, Max: 10, Mean: 4.1}
	if got.N != want.N || got.P50 != want.P50 || got.P90 != want.P90 || got.P99 != want.P99 || got.Max != want.Max {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
	if d := got.Mean - want.Mean; d > 1e-9 || d < -1e-9 {
		t.Errorf("mean = %v, want %v", got.Mean, want.Mean)
	}
	if ds[0] != time.Millisecond || ds[4] != 10*time.Millisecond {
		t.Errorf("summarize did not sort in place: %v", ds)
	}
	if z := summarize(nil); z != (summary{}) {
		t.Errorf("summarize(nil) = %+v, want zeros", z)
	}
	// Sub-millisecond precision is kept.
	if s := summarize([]time.Duration{1500 * time.Microsecond}); s.P50 != 1.5 {
		t.Errorf("p50 of 1.5ms = %v, want 1.5", s.P50)
	}
}

func TestSummarizeCounts(t *testing.T) {
	got := summarizeCounts([]int{8, 3, 10, 7})
	if got.Min != 3 || got.Max != 10 || got.Mean != 7 {
		t.Errorf("summarizeCounts = %+v, want min 3 max 10 mean 7", got)
	}
	if z := summarizeCounts(nil); z != (countSummary{}) {
		t.Errorf("summarizeCounts(nil) = %+v, want zeros", z)
	}
}
