package main

import (
	"math"
	"math/rand"
	"slices"
	"testing"
)

func TestBucketRangeHoldsValue(t *testing.T) {
	check := func(v uint64) {
		t.Helper()
		b := bucketOf(v)
		if b < 0 || b >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d, out of [0,%d)", v, b, histBuckets)
		}
		lo, hi := bucketRange(b)
		if v < lo || v > hi {
			t.Fatalf("value %d in bucket %d = [%d,%d]", v, b, lo, hi)
		}
		if v >= histExact && float64(hi-lo+1)/float64(lo) > 1.0/128+1e-12 {
			t.Fatalf("bucket %d = [%d,%d] is wider than 1/128 of its values", b, lo, hi)
		}
	}
	for v := uint64(0); v < 70000; v++ {
		check(v)
	}
	rng := rand.New(rand.NewSource(1))
	for range 100000 {
		check(rng.Uint64() >> uint(rng.Intn(64)))
	}
	check(math.MaxUint64)
	check(1 << 63)
}

func TestBucketsAreOrderedAndContiguous(t *testing.T) {
	_, prevHi := bucketRange(0)
	for b := 1; b < histBuckets; b++ {
		lo, hi := bucketRange(b)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", b, lo, prevHi)
		}
		if bucketOf(lo) != b || bucketOf(hi) != b {
			t.Fatalf("bucket %d = [%d,%d] but bucketOf gives %d, %d", b, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		prevHi = hi
	}
	if prevHi != math.MaxUint64 {
		t.Fatalf("last bucket ends at %d, want MaxUint64", prevHi)
	}
}

func TestRankFor(t *testing.T) {
	cases := []struct {
		p    float64
		n    uint64
		want uint64
	}{
		{50, 0, 0}, {50, 1, 1}, {50, 2, 1}, {50, 3, 2}, {99, 100, 99}, {99.9, 1000, 999},
		{100, 7, 7}, {0, 7, 1}, {90, 10, 9}, {90, 11, 10},
	}
	for _, c := range cases {
		if got := rankFor(c.p, c.n); got != c.want {
			t.Errorf("rankFor(%v, %d) = %d, want %d", c.p, c.n, got, c.want)
		}
	}
}

func TestPercentilesExactBelow256(t *testing.T) {
	h := &histogram{}
	for v := uint64(1); v <= 100; v++ {
		h.record(int(v), v)
	}
	s := h.summary()
	if s.N != 100 || s.P50 != 50 || s.P90 != 90 || s.P99 != 99 || s.Max != 100 || s.Mean != 50.5 {
		t.Fatalf("summary of 1..100 = %+v", s)
	}
}

func TestPercentilesMatchSortedSample(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	h := &histogram{}
	var vals []uint64
	for i := range 200000 {
		// log-normal latencies around 2 ms with a long tail
		v := uint64(math.Exp(rng.NormFloat64()*1.2 + math.Log(2e6)))
		vals = append(vals, v)
		h.record(i, v)
	}
	slices.Sort(vals)
	counts, n, _, maxV := h.merged()
	if n != uint64(len(vals)) || maxV != vals[len(vals)-1] {
		t.Fatalf("n=%d max=%d, want %d and %d", n, maxV, len(vals), vals[len(vals)-1])
	}
	for _, p := range []float64{1, 50, 90, 99, 99.9, 99.99, 100} {
		exact := float64(percentileSorted(vals, p))
		got := float64(percentileOfCounts(counts, n, maxV, p))
		if math.Abs(got-exact)/exact > 1.0/256+1e-9 {
			t.Errorf("p%v = %.0f, exact %.0f (off by %.3f%%)", p, got, exact, 100*math.Abs(got-exact)/exact)
		}
	}
}

func TestEmptyHistogram(t *testing.T) {
	h := &histogram{}
	if s := h.summary(); s != (latencySummary{}) {
		t.Fatalf("empty summary = %+v", s)
	}
	if percentileSorted(nil, 50) != 0 {
		t.Fatal("percentile of nothing is not 0")
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	h := &histogram{}
	if a := testing.AllocsPerRun(1000, func() { h.record(3, 123456789) }); a != 0 {
		t.Fatalf("record allocates %v times", a)
	}
}
