package runpool

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunWaitsAndReusesAWorker(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p := New(ctx, time.Minute)
	var order []int
	for i := range 100 {
		p.Run(func() { order = append(order, i) }) // no race: Run returns after fn
	}
	if len(order) != 100 || order[99] != 99 {
		t.Fatalf("ran %v", order)
	}
	// Sequential calls leave one worker waiting; a second concurrent
	// Run while the first is busy gets a worker of its own.
	release := make(chan struct{})
	started := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.Run(func() { close(started); <-release })
	}()
	<-started
	done := make(chan struct{})
	go func() { p.Run(func() {}); close(done) }()
	select {
	case <-done: // ran beside the blocked one
	case <-time.After(10 * time.Second):
		t.Fatal("a Run waited for another Run's function")
	}
	close(release)
	wg.Wait()
	cancel()
	p.Wait()
}

func TestPanicIsRaisedByRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := New(ctx, time.Minute)
	got := func() (v any) {
		defer func() { v = recover() }()
		p.Run(func() { panic("boom") })
		return nil
	}()
	if got != "boom" {
		t.Fatalf("recovered %v, want boom", got)
	}
	// The worker survived and runs the next function.
	ran := false
	p.Run(func() { ran = true })
	if !ran {
		t.Fatal("the pool did not run a function after a panic")
	}
	cancel()
	p.Wait()
}

func TestWorkersEndWhenIdle(t *testing.T) {
	p := New(context.Background(), 10*time.Millisecond)
	p.Run(func() {})
	p.Wait() // returns only once the idle worker has ended
}

func TestRunAfterContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := New(ctx, time.Minute)
	var n atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); p.Run(func() { n.Add(1) }) }()
	}
	wg.Wait()
	p.Wait()
	if n.Load() != 8 {
		t.Fatalf("ran %d of 8", n.Load())
	}
}

// BenchmarkRun is the cost of a hand-off to a waiting worker and back.
func BenchmarkRun(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := New(ctx, time.Minute)
	for b.Loop() {
		p.Run(func() {})
	}
	cancel()
	p.Wait()
}
