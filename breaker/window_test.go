package breaker

import (
	"math"
	"testing"
	"time"
)

func TestWindow(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	sec := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	d := math.Exp(-1.0 / 100) // 1s buckets, 100s horizon
	type step struct {
		at        float64 // seconds since t0
		rec       counts  // recorded at at (zero: only advance)
		calls     uint64  // window totals after the step
		gets      uint64
		baseHits  float64 // baseline sums after the step
		baseGets  float64
		advanceTo bool
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"fills and ages out", []step{
			{at: 0, rec: counts{calls: 4, hits: 3, misses: 1}, calls: 4, gets: 4},
			{at: 9.99, rec: counts{calls: 2, failures: 2}, calls: 6, gets: 4},
			// bucket 0 leaves: folded with one decay step
			{at: 10, advanceTo: true, calls: 2, gets: 0, baseHits: 3, baseGets: 4},
			// bucket 9 leaves at 19: the 9 empty buckets before it decay the baseline
			{at: 19, advanceTo: true, calls: 0, gets: 0, baseHits: 3 * math.Pow(d, 9), baseGets: 4 * math.Pow(d, 9)},
		}},
		{"a long gap", []step{
			{at: 0, rec: counts{calls: 10, hits: 10}, calls: 10, gets: 10},
			// 30 buckets pass: bucket 0 folds at 10, then 20 more decay steps
			{at: 30, advanceTo: true, baseHits: 10 * math.Pow(d, 20), baseGets: 10 * math.Pow(d, 20)},
		}},
		{"clock going back", []step{
			{at: 5, rec: counts{calls: 1, hits: 1}, calls: 1, gets: 1},
			{at: 1, rec: counts{calls: 1, misses: 1}, calls: 2, gets: 2},
			{at: 14.5, advanceTo: true, calls: 2, gets: 2}, // both in bucket 5, still in the window
			{at: 15, advanceTo: true, baseHits: 1, baseGets: 2},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWindow(10*time.Second, 10, 100*time.Second, t0)
			for i, s := range c.steps {
				if s.advanceTo {
					w.advance(sec(s.at))
				} else {
					w.record(sec(s.at), s.rec)
				}
				if w.total.calls != s.calls || w.total.gets() != s.gets {
					t.Errorf("step %d: totals %+v, want %d calls %d gets", i, w.total, s.calls, s.gets)
				}
				if math.Abs(w.baseHits-s.baseHits) > 1e-9 || math.Abs(w.baseGets-s.baseGets) > 1e-9 {
					t.Errorf("step %d: baseline %v/%v, want %v/%v", i, w.baseHits, w.baseGets, s.baseHits, s.baseGets)
				}
			}
		})
	}
}
