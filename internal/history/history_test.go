package history

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/myxi/myxi/broker"
)

// sink is a subscriber that records what it is sent, in order.
type sink struct {
	mu     sync.Mutex
	got    []uint64
	closed bool
}

func (s *sink) add(offs ...uint64) {
	s.mu.Lock()
	s.got = append(s.got, offs...)
	s.mu.Unlock()
}

func (s *sink) offsets() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

type testIndex struct {
	*Index[*sink, uint64]
	now time.Time
}

func newTestIndex(t *testing.T, bounds broker.History, limit int) *testIndex {
	t.Helper()
	ti := &testIndex{now: time.Unix(1000, 0)}
	ti.Index = New(Config[*sink, uint64]{
		Bounds:      bounds,
		ReplayLimit: limit,
		Now:         func() time.Time { return ti.now },
		Hooks: Hooks[*sink, uint64]{
			Encode: func(r broker.Record, epoch string) (uint64, int, bool) {
				return r.Offset, len(r.Body), string(r.Body) != "bad"
			},
			Deliver: func(off uint64, subs []*sink) {
				for _, s := range subs {
					s.add(off)
				}
			},
			Lost: func(subs []*sink) {
				for _, s := range subs {
					s.mu.Lock()
					s.closed = true
					s.mu.Unlock()
				}
			},
		},
	})
	ti.Reset("ep1")
	ti.Record(broker.Record{Offset: 0}) // genesis marker
	ti.Live()
	return ti
}

func (ti *testIndex) push(key string, offs ...uint64) {
	for _, o := range offs {
		ti.Record(broker.Record{RoutingKey: key, Offset: o, Body: []byte("{}")})
	}
}

// subscribe subscribes s and replays whatever the decision holds, then
// drains until live, as a session does.
func (ti *testIndex) subscribe(t *testing.T, key string, s *sink, since *Position) Decision[uint64] {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := ti.Subscribe(ctx, key, s, since, func(Decision[uint64]) {})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if len(d.Replay) > 0 {
		s.add(d.Replay...)
		for {
			pending, live := ti.Drain(key, s)
			s.add(pending...)
			if live {
				break
			}
		}
	}
	return d
}

func TestLiveAndRecovered(t *testing.T) {
	ti := newTestIndex(t, broker.History{MaxAge: time.Hour}, 100)
	a := &sink{}
	d := ti.subscribe(t, "k", a, nil)
	if d.Epoch != "ep1" || d.Offset != 0 || d.Recovered {
		t.Fatalf("decision = %+v, want epoch ep1, offset 0, not recovered", d)
	}
	ti.push("k", 1, 2)
	ti.push("other", 3)
	ti.push("k", 5)
	if got := a.offsets(); !slices.Equal(got, []uint64{1, 2, 5}) {
		t.Fatalf("live subscriber got %v, want [1 2 5]", got)
	}

	b := &sink{}
	d = ti.subscribe(t, "k", b, &Position{Offset: 1, Epoch: "ep1"})
	if !d.Recovered || d.Offset != 5 {
		t.Fatalf("decision = %+v, want recovered at offset 5", d)
	}
	ti.push("k", 6)
	if got := b.offsets(); !slices.Equal(got, []uint64{2, 5, 6}) {
		t.Fatalf("recovering subscriber got %v, want [2 5 6]", got)
	}
}

func TestNotRecovered(t *testing.T) {
	ti := newTestIndex(t, broker.History{MaxAge: time.Hour, MaxBytes: 10 * (entryOverhead + 2)}, 3)
	for o := uint64(1); o <= 20; o++ {
		ti.push("k", o)
	}
	st := ti.Stats()
	if st.Records != 10 || st.Floor != 10 || st.Last != 20 {
		t.Fatalf("stats = %+v, want 10 records after floor 10, last 20", st)
	}
	cases := []struct {
		name  string
		since Position
	}{
		{"another epoch", Position{Offset: 15, Epoch: "ep0"}},
		{"truncated", Position{Offset: 9, Epoch: "ep1"}},
		{"over the replay limit", Position{Offset: 16, Epoch: "ep1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &sink{}
			d := ti.subscribe(t, "k", s, &c.since)
			if d.Recovered || d.Offset != 20 || len(d.Replay) != 0 {
				t.Fatalf("decision = %+v, want not recovered, offset 20, nothing replayed", d)
			}
		})
	}
	s := &sink{}
	d := ti.subscribe(t, "k", s, &Position{Offset: 17, Epoch: "ep1"})
	if !d.Recovered || !slices.Equal(s.offsets(), []uint64{18, 19, 20}) {
		t.Fatalf("at the limit: decision %+v, got %v; want recovered [18 19 20]", d, s.offsets())
	}
}

func TestEvictByAge(t *testing.T) {
	ti := newTestIndex(t, broker.History{MaxAge: time.Minute}, 100)
	ti.push("k", 1, 2)
	ti.now = ti.now.Add(2 * time.Minute)
	if st := ti.Stats(); st.Records != 2 {
		t.Fatalf("a quiet history lost records: %+v", st)
	}
	ti.push("k", 3)
	if st := ti.Stats(); st.Records != 1 || st.Floor != 2 {
		t.Fatalf("after the age bound: %+v, want 1 record after floor 2", st)
	}
}

func TestAheadWaitsForTheReader(t *testing.T) {
	ti := newTestIndex(t, broker.History{MaxAge: time.Hour}, 100)
	ti.push("k", 1)
	s := &sink{}
	done := make(chan Decision[uint64])
	go func() { done <- ti.subscribe(t, "k", s, &Position{Offset: 3, Epoch: "ep1"}) }()
	ti.push("k", 2)
	ti.push("k", 3)
	d := <-done
	if !d.Recovered || len(d.Replay) != 0 || d.Offset != 3 {
		t.Fatalf("decision = %+v, want recovered at 3 with nothing to replay", d)
	}
	ti.push("k", 4)
	if got := s.offsets(); !slices.Equal(got, []uint64{4}) {
		t.Fatalf("got %v, want [4]", got)
	}
}

func TestBogusPositionNeverSendsOlder(t *testing.T) {
	ti := newTestIndex(t, broker.History{MaxAge: time.Hour}, 100)
	s := &sink{}
	start := time.Now()
	d := ti.subscribe(t, "k", s, &Position{Offset: 5, Epoch: "ep1"})
	if waited := time.Since(start); waited < aheadWait {
		t.Fatalf("answered after %v, before giving the reader %v", waited, aheadWait)
	}
	if d.Recovered || d.Offset != 5 {
		t.Fatalf("decision = %+v, want not recovered at offset 5", d)
	}
	ti.push("k", 4, 5, 6)
	if got := s.offsets(); !slices.Equal(got, []uint64{6}) {
		t.Fatalf("got %v, want [6]", got)
	}
}

func TestUnavailableUntilLive(t *testing.T) {
	ti := newTestIndex(t, broker.History{MaxAge: time.Hour}, 100)
	ti.Down()
	// Down: refused at once, however long the caller would wait.
	start := time.Now()
	if _, err := ti.Subscribe(context.Background(), "k", &sink{}, nil, func(Decision[uint64]) {}); err != ErrUnavailable {
		t.Fatalf("Subscribe while down: %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Subscribe while down took %v", took)
	}
	ti.Live()
	if _, err := ti.Subscribe(context.Background(), "k", &sink{}, nil, func(Decision[uint64]) {}); err != nil {
		t.Fatalf("Subscribe once live again: %v", err)
	}

	// Before the first Live (the reader catching up): it waits.
	fresh := New(ti.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := fresh.Subscribe(ctx, "k", &sink{}, nil, func(Decision[uint64]) {}); err != ErrUnavailable {
		t.Fatalf("Subscribe before live, ctx ended: %v, want ErrUnavailable", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := fresh.Subscribe(context.Background(), "k", &sink{}, nil, func(Decision[uint64]) {})
		done <- err
	}()
	fresh.Reset("ep")
	fresh.Live()
	if err := <-done; err != nil {
		t.Fatalf("Subscribe that waited for live: %v", err)
	}
}

func TestResetLosesSubscribers(t *testing.T) {
	ti := newTestIndex(t, broker.History{MaxAge: time.Hour}, 100)
	s := &sink{}
	ti.subscribe(t, "k", s, nil)
	ti.push("k", 1)
	ti.Reset("ep2")
	ti.Record(broker.Record{Offset: 0})
	if !s.closed {
		t.Fatal("a subscriber survived a reset")
	}
	ti.push("k", 1)
	if got := s.offsets(); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("a lost subscriber still got records: %v", got)
	}
	d := ti.subscribe(t, "k", &sink{}, &Position{Offset: 0, Epoch: "ep1"})
	if d.Recovered || d.Epoch != "ep2" {
		t.Fatalf("old epoch: %+v, want not recovered in ep2", d)
	}
}

func TestInvalidBodyAdvancesPosition(t *testing.T) {
	ti := newTestIndex(t, broker.History{MaxAge: time.Hour}, 100)
	s := &sink{}
	ti.subscribe(t, "k", s, nil)
	ti.Record(broker.Record{RoutingKey: "k", Offset: 1, Body: []byte("bad")})
	if st := ti.Stats(); st.Last != 1 || st.Records != 0 {
		t.Fatalf("stats = %+v, want last 1 and no record", st)
	}
	if len(s.offsets()) != 0 {
		t.Fatal("an invalid record was delivered")
	}
}

// TestReplayMeetsLive subscribes with since while records keep arriving:
// each subscriber must see every record after its position exactly once,
// in order.
func TestReplayMeetsLive(t *testing.T) {
	ti := newTestIndex(t, broker.History{MaxAge: time.Hour}, 10000)
	const total = 3000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for o := uint64(1); o <= total; o++ {
			ti.push("k", o)
		}
	}()
	subs := make([]*sink, 20)
	froms := make([]uint64, len(subs))
	for i := range subs {
		subs[i] = &sink{}
		ti.awaitLast(int64(i * total / len(subs)))
		froms[i] = uint64(i * total / (2 * len(subs)))
		ti.subscribe(t, "k", subs[i], &Position{Offset: froms[i], Epoch: "ep1"})
	}
	wg.Wait()
	for i, s := range subs {
		got := s.offsets()
		want := make([]uint64, 0, total)
		for o := froms[i] + 1; o <= total; o++ {
			want = append(want, o)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("subscriber %d from %d: got %d records %s, want %d in order", i, froms[i], len(got), summary(got), len(want))
		}
	}
}

// awaitLast waits until the index has read offset.
func (ti *testIndex) awaitLast(offset int64) {
	for {
		ti.mu.Lock()
		if ti.last >= offset {
			ti.mu.Unlock()
			return
		}
		ch := ti.waitChan()
		ti.mu.Unlock()
		<-ch
	}
}

func summary(offs []uint64) string {
	if len(offs) < 6 {
		return fmt.Sprint(offs)
	}
	return fmt.Sprint(offs[:3], "...", offs[len(offs)-3:])
}

func TestPendingOverflowIsLost(t *testing.T) {
	ti := newTestIndex(t, broker.History{MaxAge: time.Hour}, 2)
	ti.push("k", 1, 2)
	s := &sink{}
	d, err := ti.Subscribe(context.Background(), "k", s, &Position{Offset: 0, Epoch: "ep1"}, func(Decision[uint64]) {})
	if err != nil || !d.Recovered || len(d.Replay) != 2 {
		t.Fatalf("Subscribe = %+v, %v; want 2 to replay", d, err)
	}
	ti.push("k", 3, 4, 5) // while the replay has not been sent
	if !s.closed {
		t.Fatal("a replaying subscriber's pending records grew past the replay limit")
	}
	if _, live := ti.Drain("k", s); !live {
		t.Fatal("Drain of a lost subscriber should report it done")
	}
}
