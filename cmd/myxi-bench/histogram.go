package main

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// A log-linear histogram of durations in nanoseconds, in the manner of HDR
// histograms: values below 256 ns are counted exactly, and every power of two
// above is cut into 128 equal buckets, so a reported value is within 1/256
// (0.4 %) of the true one. Recording is a few atomic adds, so all client
// goroutines share one histogram (spread over shards to keep cache lines
// apart); it never allocates.

const (
	histExactBits = 8                  // values < 256 get a bucket each
	histExact     = 1 << histExactBits // 256
	histHalf      = histExact / 2      // sub-buckets per power of two above
	histBuckets   = histExact + (64-histExactBits)*histHalf
	histShards    = 16
)

// bucketOf returns the bucket of value v.
func bucketOf(v uint64) int {
	if v < histExact {
		return int(v)
	}
	n := bits.Len64(v)              // v is in [2^(n-1), 2^n), n >= 9
	shift := n - histExactBits      // v>>shift is in [128, 256)
	sub := int(v>>shift) - histHalf // 0..127
	return histExact + (n-histExactBits-1)*histHalf + sub
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < histExact {
		return uint64(i), uint64(i)
	}
	j := i - histExact
	octave := j / histHalf
	shift := uint(octave + 1)
	lo = uint64(j%histHalf+histHalf) << shift
	return lo, lo + (1 << shift) - 1
}

type histShard struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Uint64
	_      [64]byte
}

type histogram struct {
	shards [histShards]histShard
}

// record adds value v (ns); shard spreads writers (a client's index).
func (h *histogram) record(shard int, v uint64) {
	s := &h.shards[shard%histShards]
	s.counts[bucketOf(v)].Add(1)
	s.n.Add(1)
	s.sum.Add(v)
	for {
		m := s.max.Load()
		if v <= m || s.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// count is the number of values recorded so far.
func (h *histogram) count() uint64 {
	var n uint64
	for i := range h.shards {
		n += h.shards[i].n.Load()
	}
	return n
}

// latencySummary is what the report shows of a histogram.
type latencySummary struct {
	N                              uint64
	Mean, P50, P90, P99, P999, Max float64 // ns
}

// merged returns the counts of all shards added together.
func (h *histogram) merged() (counts []uint64, n, sum, max uint64) {
	counts = make([]uint64, histBuckets)
	for i := range h.shards {
		s := &h.shards[i]
		for b := range counts {
			counts[b] += s.counts[b].Load()
		}
		n += s.n.Load()
		sum += s.sum.Load()
		if m := s.max.Load(); m > max {
			max = m
		}
	}
	return counts, n, sum, max
}

func (h *histogram) summary() latencySummary {
	counts, n, sum, max := h.merged()
	if n == 0 {
		return latencySummary{}
	}
	q := func(p float64) float64 { return float64(percentileOfCounts(counts, n, max, p)) }
	return latencySummary{
		N:    n,
		Mean: float64(sum) / float64(n),
		P50:  q(50), P90: q(90), P99: q(99), P999: q(99.9),
		Max: float64(max),
	}
}

// rankFor is the nearest-rank position (1-based) of percentile p among n
// values: the smallest rank r with r >= p/100*n.
func rankFor(p float64, n uint64) uint64 {
	if n == 0 {
		return 0
	}
	// (the epsilon keeps 99.9 % of 1000 at 999, not 999.0000000000001 -> 1000)
	r := uint64(math.Ceil(p/100*float64(n) - 1e-9))
	return min(max(r, 1), n)
}

// percentileOfCounts returns percentile p (0..100) of the values counted in
// counts (n of them, the largest being max): the middle of the bucket that
// holds the value of nearest rank, never above max.
func percentileOfCounts(counts []uint64, n, max uint64, p float64) uint64 {
	rank := rankFor(p, n)
	if rank == 0 {
		return 0
	}
	var cum uint64
	for i, c := range counts {
		cum += c
		if cum >= rank {
			lo, hi := bucketRange(i)
			return min(lo+(hi-lo)/2, max)
		}
	}
	return max
}

// percentileSorted is the exact nearest-rank percentile of sorted values;
// the tests hold the histogram to it.
func percentileSorted(sorted []uint64, p float64) uint64 {
	r := rankFor(p, uint64(len(sorted)))
	if r == 0 {
		return 0
	}
	return sorted[r-1]
}
