package main

import (
	"math"
	"time"
)

// Pacing: event i (0-based) of a run at rate r events/s is due i/r seconds
// after the start, so the publisher sends everything due, then sleeps until
// the next event is due. The same math paces connection attempts.

// totalEvents is how many events rate r sends in d: round(r*d).
func totalEvents(rate float64, d time.Duration) int64 {
	if rate <= 0 || d <= 0 {
		return 0
	}
	return int64(math.Round(rate * d.Seconds()))
}

// dueAt is when event i is due, counted from the start.
func dueAt(i int64, rate float64) time.Duration {
	if rate <= 0 {
		return 0
	}
	return time.Duration(math.Round(float64(i) / rate * float64(time.Second)))
}

// dueCount is how many of total events are due after elapsed: every i with
// dueAt(i) <= elapsed, so event 0 is due at once.
func dueCount(elapsed time.Duration, rate float64, total int64) int64 {
	if total <= 0 || rate <= 0 || elapsed < 0 {
		return 0
	}
	n := int64(math.Floor(elapsed.Seconds()*rate)) + 1
	// floating point may put n one off at an exact boundary: settle it with dueAt
	for n > 0 && dueAt(n-1, rate) > elapsed {
		n--
	}
	for n < total && dueAt(n, rate) <= elapsed {
		n++
	}
	return min(n, total)
}

// achievedRate is the rate a paced run of n events reached when the last one
// went out at last (since the start): n events span last + 1/rate, so a run
// exactly on time reports the rate asked for.
func achievedRate(n int64, last time.Duration, rate float64) float64 {
	if n <= 0 {
		return 0
	}
	span := last.Seconds()
	if rate > 0 {
		span += 1 / rate
	}
	if span <= 0 {
		return 0
	}
	return float64(n) / span
}
