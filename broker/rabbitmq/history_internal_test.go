package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/internal/testutil"
)

func TestStreamName(t *testing.T) {
	if got := StreamName("widgets"); got != "myxi.history.widgets" {
		t.Errorf("StreamName(widgets) = %q", got)
	}
	long := strings.Repeat("x", 255)
	got := StreamName(long)
	if !regexp.MustCompile(`^myxi\.history\.sha256\.[0-9a-f]{40}$`).MatchString(got) || got == StreamName(long[1:]+"y") {
		t.Errorf("StreamName(255 bytes) = %q", got)
	}
	if edge := strings.Repeat("x", 255-len("myxi.history.")); StreamName(edge) != "myxi.history."+edge {
		t.Errorf("a name of exactly 255 bytes was hashed")
	}
}

func TestStreamArgs(t *testing.T) {
	for _, c := range []struct {
		h        broker.History
		age      string
		bytes    int64
		segments int64
	}{
		{broker.History{MaxAge: 10 * time.Minute}, "600s", 64 << 20, 8 << 20},
		{broker.History{MaxAge: 1500 * time.Millisecond, MaxBytes: 100_000}, "2s", 100_000, 1 << 20},
		{broker.History{MaxAge: time.Hour, MaxBytes: 10 << 30}, "3600s", 10 << 30, 500_000_000},
	} {
		args := streamArgs(c.h)
		if args["x-queue-type"] != "stream" || args["x-max-age"] != c.age ||
			args["x-max-length-bytes"] != c.bytes || args["x-stream-max-segment-size-bytes"] != c.segments {
			t.Errorf("streamArgs(%+v) = %v", c.h, args)
		}
	}
}

func TestNewEpoch(t *testing.T) {
	a, b := newEpoch(), newEpoch()
	if !regexp.MustCompile(`^[0-9a-z]{8,}-[0-9a-f]{16}$`).MatchString(a) || a == b || len(a) > 64 {
		t.Fatalf("newEpoch() = %q, %q", a, b)
	}
}

func TestOffsetOf(t *testing.T) {
	for v, want := range map[any]int64{int64(7): 7, int32(3): 3, uint8(2): 2} {
		if got, ok := offsetOf(v); !ok || got != want {
			t.Errorf("offsetOf(%T %v) = %d, %v", v, v, got, ok)
		}
	}
	for _, v := range []any{nil, "7", int64(-1), 1.5} {
		if _, ok := offsetOf(v); ok {
			t.Errorf("offsetOf(%T %v) accepted", v, v)
		}
	}
}

// Concurrent mandatory publishes, half of them to a queue that does not
// exist: each learns its own fate (returns are matched by message id,
// and a return is seen before its ack).
func TestPublishConfirmedMatchesReturns(t *testing.T) {
	url := testutil.RabbitMQURL(t)
	b, err := New(Config{URLs: []string{url}, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := b.waitSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := s.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	missing := testutil.UniqueName("myxi-test-missing")
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			to := q.Name
			if i%2 == 1 {
				to = missing
			}
			err := b.publishConfirmed(ctx, s, "", to, true, amqp.Publishing{Body: []byte("x")})
			switch {
			case to == q.Name && err != nil:
				errs <- fmt.Errorf("publish %d to an existing queue: %w", i, err)
			case to == missing && (!errors.Is(err, errReturned) || !errors.Is(err, broker.ErrUnavailable)):
				errs <- fmt.Errorf("publish %d to a missing queue: %v, want a return", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// With the broker unreachable, StartHistory returns at once, and Append
// is unavailable until the epoch is resolved.
func TestHistoryWhileUnreachable(t *testing.T) {
	b, err := New(Config{URLs: []string{testutil.DeadURL}, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.StartHistory(context.Background(), "x", broker.History{MaxAge: time.Minute}, nopFeed{}); err == nil {
		t.Fatal("StartHistory before Start was accepted")
	}
	if err := b.Start(context.Background(), nil, func(broker.Message) {}); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.StartHistory(context.Background(), "myxi-test-unreachable", broker.History{MaxAge: time.Minute}, nopFeed{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Append(context.Background(), "myxi-test-unreachable", "k", []byte(`{}`)); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Append while unreachable: %v", err)
	}
	if err := b.StartHistory(context.Background(), "x", broker.History{}, nopFeed{}); err == nil {
		t.Fatal("StartHistory without MaxAge was accepted")
	}
}

type nopFeed struct{}

func (nopFeed) Reset(string)         {}
func (nopFeed) Record(broker.Record) {}
func (nopFeed) Live()                {}
func (nopFeed) Down()                {}

// A reader that stops receiving (here: it does not ack, so RabbitMQ stops
// at the prefetch) while records are appended re-attaches at L+1 and
// feeds every record, with no Reset and no Down.
func TestHistoryReaderStallWatchdog(t *testing.T) {
	url := testutil.RabbitMQURL(t)
	ex := testutil.UniqueName("myxi-test-histstall")
	cleanupStream(t, url, ex)
	b, err := New(Config{URLs: []string{url}, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background(), []string{ex}, func(broker.Message) {}); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.testStallAfter = 500 * time.Millisecond
	feed := &countFeed{}
	if err := b.StartHistory(context.Background(), ex, broker.History{MaxAge: time.Minute}, feed); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "live", func() bool { return feed.get().live })
	b.testNoAck.Store(true)
	const n = 2*readerPrefetch + 100
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n / 8 {
				if err := b.Append(ctx, ex, "k", []byte(`{}`)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	testutil.Eventually(t, 30*time.Second, "every record", func() bool { return feed.get().records == n/8*8 })
	if c := feed.get(); c.resets != 1 || c.downs != 0 || c.lives != 1 {
		t.Fatalf("feed calls %+v, want 1 reset, 1 live, no down", c)
	}
}

type feedCounts struct {
	resets, downs, lives, records int
	live                          bool
}

type countFeed struct {
	mu sync.Mutex
	c  feedCounts
}

func (f *countFeed) Reset(string) { f.mu.Lock(); f.c.resets++; f.c.live = false; f.mu.Unlock() }
func (f *countFeed) Live()        { f.mu.Lock(); f.c.lives++; f.c.live = true; f.mu.Unlock() }
func (f *countFeed) Down()        { f.mu.Lock(); f.c.downs++; f.c.live = false; f.mu.Unlock() }
func (f *countFeed) Record(r broker.Record) {
	f.mu.Lock()
	if r.Body != nil {
		f.c.records++
	}
	f.mu.Unlock()
}
func (f *countFeed) get() feedCounts { f.mu.Lock(); defer f.mu.Unlock(); return f.c }

// cleanupStream deletes exchange's stream and exchange when the test ends
// (register it before starting brokers: cleanups run last first).
func cleanupStream(tb testing.TB, url, exchange string) {
	testutil.DeleteExchangesOnCleanup(tb, url, exchange)
	tb.Cleanup(func() { testutil.DeleteQueue(tb, url, StreamName(exchange)) })
}
