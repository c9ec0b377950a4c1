package hub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// recordingBinder records the broker calls and checks they alternate
// per key (never two Binds or two Unbinds in a row).
type recordingBinder struct {
	mu    sync.Mutex
	bound map[string]bool
	calls []string
	fail  map[string]bool
	bad   []string
}

func newBinder() *recordingBinder {
	return &recordingBinder{bound: map[string]bool{}, fail: map[string]bool{}}
}

func (b *recordingBinder) Bind(_ context.Context, e, k string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail[k] {
		return errors.New("broker down")
	}
	if b.bound[e+"/"+k] {
		b.bad = append(b.bad, "double bind "+e+"/"+k)
	}
	b.bound[e+"/"+k] = true
	b.calls = append(b.calls, "bind "+k)
	return nil
}

func (b *recordingBinder) Unbind(_ context.Context, e, k string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.bound[e+"/"+k] {
		b.bad = append(b.bad, "unbind of unbound "+e+"/"+k)
	}
	delete(b.bound, e+"/"+k)
	b.calls = append(b.calls, "unbind "+k)
	return nil
}

type sub struct{ id int }

func collect(h *Hub[*sub], e, k string) map[int]bool {
	got := map[int]bool{}
	h.Each(e, k, func(s *sub) { got[s.id] = true })
	return got
}

func TestBindOnFirstUnbindAfterLast(t *testing.T) {
	b := newBinder()
	h := New[*sub](b)
	ctx := context.Background()
	s1, s2 := &sub{1}, &sub{2}
	if err := h.Subscribe(ctx, "w", "k", s1); err != nil {
		t.Fatal(err)
	}
	if err := h.Subscribe(ctx, "w", "k", s2); err != nil {
		t.Fatal(err)
	}
	if got := collect(h, "w", "k"); !got[1] || !got[2] || len(got) != 2 {
		t.Fatalf("subscribers %v", got)
	}
	if removed, _ := h.Unsubscribe(ctx, "w", "k", s1); !removed {
		t.Fatal("s1 not removed")
	}
	if removed, _ := h.Unsubscribe(ctx, "w", "k", s1); removed {
		t.Fatal("s1 removed twice")
	}
	if len(b.calls) != 1 {
		t.Fatalf("calls %v: want a single bind while s2 remains", b.calls)
	}
	h.Unsubscribe(ctx, "w", "k", s2)
	if fmt.Sprint(b.calls) != "[bind k unbind k]" || h.Topics() != 0 {
		t.Fatalf("calls %v, topics %d", b.calls, h.Topics())
	}
	if n := h.Each("w", "k", func(*sub) { t.Fatal("no subscriber expected") }); n != 0 {
		t.Fatalf("Each = %d", n)
	}
}

func TestFailedBindLeavesNothing(t *testing.T) {
	b := newBinder()
	b.fail["k"] = true
	h := New[*sub](b)
	if err := h.Subscribe(context.Background(), "w", "k", &sub{1}); err == nil {
		t.Fatal("want the broker's error")
	}
	if h.Topics() != 0 || h.Each("w", "k", func(*sub) {}) != 0 {
		t.Fatal("a failed subscribe left state behind")
	}
}

// Many sessions subscribing and unsubscribing the same few keys at once
// never leave a key bound without subscribers or unbound with some.
func TestConcurrentChurn(t *testing.T) {
	b := newBinder()
	h := New[*sub](b)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &sub{g}
			for i := range 300 {
				k := fmt.Sprint(i % 3)
				if err := h.Subscribe(ctx, "w", k, s); err != nil {
					t.Error(err)
					return
				}
				h.Unsubscribe(ctx, "w", k, s)
			}
		}()
	}
	wg.Wait()
	if len(b.bad) > 0 {
		t.Fatalf("broker calls out of order: %v", b.bad[:min(5, len(b.bad))])
	}
	if len(b.bound) != 0 || h.Topics() != 0 {
		t.Fatalf("left bound %v, topics %d", b.bound, h.Topics())
	}
}

func BenchmarkEach10000(b *testing.B) {
	h := New[*sub](newBinder())
	for i := range 10000 {
		_ = h.Subscribe(context.Background(), "w", "k", &sub{i})
	}
	n := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		h.Each("w", "k", func(*sub) { n++ })
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/delivery")
}

// Subscribe/unsubscribe of a key while 1,000 others are live and another
// goroutine fans out: the hub's cost on a busy node.
func BenchmarkSubscribeUnsubscribeBusy(b *testing.B) {
	h := New[*sub](newBinder())
	ctx := context.Background()
	for i := range 1000 {
		_ = h.Subscribe(ctx, "w", fmt.Sprint(i), &sub{i})
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				h.Each("w", fmt.Sprint(i%1000), func(*sub) {})
			}
		}
	}()
	s := &sub{-1}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		k := fmt.Sprint(i % 1000)
		_ = h.Subscribe(ctx, "w", k, s)
		h.Unsubscribe(ctx, "w", k, s)
		i++
	}
	b.StopTimer()
	close(stop)
	<-done
}
