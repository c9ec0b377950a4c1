package main

import (
	"testing"
	"time"
)

func TestTotalEvents(t *testing.T) {
	cases := []struct {
		rate float64
		d    time.Duration
		want int64
	}{
		{10, 20 * time.Second, 200}, {1000, 20 * time.Second, 20000}, {0.5, 3 * time.Second, 2},
		{0, time.Hour, 0}, {100, 0, 0}, {3, 1500 * time.Millisecond, 5}, // 4.5 rounds to 5
	}
	for _, c := range cases {
		if got := totalEvents(c.rate, c.d); got != c.want {
			t.Errorf("totalEvents(%v, %v) = %d, want %d", c.rate, c.d, got, c.want)
		}
	}
}

func TestDueCount(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		elapsed time.Duration
		rate    float64
		total   int64
		want    int64
	}{
		{0, 10, 200, 1}, {99 * ms, 10, 200, 1}, {100 * ms, 10, 200, 2}, {101 * ms, 10, 200, 2},
		{19900 * ms, 10, 200, 200}, {time.Hour, 10, 200, 200}, {-ms, 10, 200, 0},
		{time.Second, 3, 100, 4}, {999 * ms, 3, 100, 3}, {0, 10, 0, 0}, {time.Second, 0, 5, 0},
	}
	for _, c := range cases {
		if got := dueCount(c.elapsed, c.rate, c.total); got != c.want {
			t.Errorf("dueCount(%v, %v, %d) = %d, want %d", c.elapsed, c.rate, c.total, got, c.want)
		}
	}
}

// dueCount agrees with counting the events whose dueAt has passed.
func TestDueCountMatchesDueAt(t *testing.T) {
	for _, rate := range []float64{1, 3, 7, 10, 333.3, 1000, 100000} {
		total := int64(500)
		for step := time.Duration(0); step < dueAt(total+5, rate); step += dueAt(1, rate)/3 + 1 {
			var want int64
			for i := int64(0); i < total; i++ {
				if dueAt(i, rate) <= step {
					want++
				}
			}
			if got := dueCount(step, rate, total); got != want {
				t.Fatalf("rate %v at %v: dueCount %d, want %d", rate, step, got, want)
			}
		}
	}
}

// A publisher that sends what is due and then sleeps until the next event is
// due (as runPublish does) sends every event on time in at most 2n+1 passes.
func TestPacingLoopSimulated(t *testing.T) {
	rate, total := 10.0, int64(200)
	now := time.Duration(0)
	var sent, passes int64
	for sent < total {
		passes++
		if passes > 2*total+1 {
			t.Fatalf("more than %d passes", 2*total+1)
		}
		due := dueCount(now, rate, total)
		for ; sent < due; sent++ {
			if lag := now - dueAt(sent, rate); lag < 0 || lag > time.Millisecond {
				t.Fatalf("event %d sent at %v, due %v", sent, now, dueAt(sent, rate))
			}
		}
		if sent < total {
			now = dueAt(sent, rate) // the timer fires exactly then
		}
	}
	if now != dueAt(total-1, rate) {
		t.Fatalf("last event at %v, want %v", now, dueAt(total-1, rate))
	}
}

func TestAchievedRate(t *testing.T) {
	// 200 events at 10/s: the last goes out at 19.9 s
	if got := achievedRate(200, 19900*time.Millisecond, 10); got < 9.9999 || got > 10.0001 {
		t.Fatalf("on-time run: %v/s, want 10", got)
	}
	// the same 200 events spread over 39.9 s: half the rate
	if got := achievedRate(200, 39900*time.Millisecond, 10); got < 4.99 || got > 5.01 {
		t.Fatalf("slow run: %v/s, want 5", got)
	}
	if achievedRate(0, time.Second, 10) != 0 {
		t.Fatal("no events, non-zero rate")
	}
}

func TestMaxPerKey(t *testing.T) {
	if maxPerKey(200, 1) != 200 || maxPerKey(20000, 1000) != 20 || maxPerKey(10, 3) != 4 || maxPerKey(0, 5) != 0 {
		t.Fatal("maxPerKey")
	}
}
