package myxi

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// sweepFixture builds sessions (without sockets) holding keys
// subscriptions each, on an exchange whose authorizer takes delay and
// counts its calls and its peak concurrency.
func sweepFixture(tb testing.TB, sessions, keys int, delay time.Duration) (*Server, []*conn, *atomic.Int64, *atomic.Int64) {
	tb.Helper()
	var calls, running, peak atomic.Int64
	srv, err := New(Config{
		Exchanges: map[string]AuthorizeFunc{"e": func(ctx context.Context, _ *Session, _ string) (bool, error) {
			n := running.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			defer running.Add(-1)
			calls.Add(1)
			if delay > 0 {
				t := time.NewTimer(delay)
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
					return false, ctx.Err()
				}
			}
			return true, nil
		}},
		ReauthorizeInterval: -1,
	})
	if err != nil {
		tb.Fatal(err)
	}
	conns := make([]*conn, sessions)
	for i := range conns {
		ctx, cancel := context.WithCancel(context.Background())
		tb.Cleanup(cancel)
		c := &conn{srv: srv, ctx: ctx, cancel: cancel, state: &sessionState{}}
		c.logBase = srv.log
		c.subs = map[string]map[string]json.RawMessage{"e": {}}
		for k := range keys {
			c.subs["e"][fmt.Sprint(k)] = json.RawMessage(fmt.Sprint(k))
		}
		c.nsubs = keys
		conns[i] = c
	}
	return srv, conns, &calls, &peak
}

// A sweep checks every subscription, runs at most ReauthorizeConcurrency
// checks at once, and a slow authorizer does not serialize it.
func TestReauthorizeSweepConcurrent(t *testing.T) {
	srv, conns, calls, peak := sweepFixture(t, 200, 3, 20*time.Millisecond)
	start := time.Now()
	srv.reauthorizeSweep(context.Background(), conns, 0)
	took := time.Since(start)
	if calls.Load() != 600 {
		t.Fatalf("%d authorizer calls, want 600", calls.Load())
	}
	if p := peak.Load(); p > int64(srv.cfg.ReauthorizeConcurrency) || p < 2 {
		t.Fatalf("peak concurrency %d (cap %d)", p, srv.cfg.ReauthorizeConcurrency)
	}
	// One at a time this is 200 × 3 × 20 ms = 12 s.
	if took > 6*time.Second {
		t.Fatalf("sweep took %v", took)
	}
}

// BenchmarkReauthorizeSweep sweeps 10,000 sessions × 10 subscriptions as
// the periodic loop does with the default 60 s interval (starts spread
// over its first quarter) and reports the sweep's length as a fraction
// of the interval: it must stay at or under 0.5.
func BenchmarkReauthorizeSweep(b *testing.B) {
	for _, delay := range []time.Duration{0, 5 * time.Millisecond} {
		b.Run(fmt.Sprintf("authorizer=%v", delay), func(b *testing.B) {
			srv, conns, calls, _ := sweepFixture(b, 10000, 10, delay)
			interval := 60 * time.Second
			var total time.Duration
			for b.Loop() {
				start := time.Now()
				srv.reauthorizeSweep(context.Background(), conns, interval/4)
				total += time.Since(start)
			}
			if want := int64(b.N) * 100000; calls.Load() != want {
				b.Fatalf("%d authorizer calls, want %d", calls.Load(), want)
			}
			sweep := total / time.Duration(b.N)
			b.ReportMetric(sweep.Seconds(), "s/sweep")
			b.ReportMetric(sweep.Seconds()/interval.Seconds(), "interval-fraction")
		})
	}
}
