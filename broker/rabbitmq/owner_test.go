package rabbitmq

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/internal/testutil"
)

// startInternal starts a broker with cfg on the test RabbitMQ, with one
// exchange of the test's own.
func startInternal(t *testing.T, cfg Config, deliver broker.DeliverFunc) (*Broker, string) {
	t.Helper()
	url := testutil.RabbitMQURL(t)
	ex := testutil.UniqueName("myxi-test-owner")
	cfg.URLs = []string{url}
	cfg.ConnectionName = testutil.UniqueName("myxi owner test")
	cfg.Logger = testutil.Logger(t)
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.DeleteExchangesOnCleanup(t, url, ex)
	if err := b.Start(context.Background(), []string{ex}, deliver); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, ex
}

func (b *Broker) setTestHook(hook func()) {
	b.mu.Lock()
	b.testHookBatch = hook
	b.mu.Unlock()
}

func (b *Broker) queueName() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sess == nil {
		return ""
	}
	return b.sess.queue
}

// A Bind whose context ends while its RPC is under way returns
// BrokerUnavailable in time, and the binding made after all is removed:
// no stray binding is left on RabbitMQ.
func TestBindTimeoutLeavesNoBinding(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	b, ex := startInternal(t, Config{}, func(broker.Message) {})
	b.setTestHook(func() {
		select {
		case entered <- struct{}{}:
			<-release
		default:
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	go func() { <-entered }() // the first batch blocks until released
	start := time.Now()
	err := b.Bind(ctx, ex, "slow")
	if !errors.Is(err, broker.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Bind past its deadline = %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Fatalf("Bind took %v with a 200ms context", waited)
	}
	close(release) // the bind now completes on RabbitMQ
	testutil.Eventually(t, 10*time.Second, "the owner to settle", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		_, made := b.made[binding{ex, "slow"}]
		return !made && len(b.inflight) == 0
	})
	if got := testutil.Bindings(t, ex); len(got) != 0 {
		t.Fatalf("bindings of %s after the abandoned Bind: %q", ex, got)
	}
	if b.Connects() != 1 {
		t.Fatalf("the broker reconnected (%d connects): the test proves nothing", b.Connects())
	}
}

// An Unbind that gives up while its RPC is under way, followed by a Bind
// of the same key: the Bind returns only once the key is bound again, and
// the binding exists.
func TestUnbindTimeoutThenBind(t *testing.T) {
	got := make(chan broker.Message, 4)
	b, ex := startInternal(t, Config{}, func(m broker.Message) { got <- m })
	ctx := context.Background()
	if err := b.Bind(ctx, ex, "k"); err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}, 1), make(chan struct{})
	b.setTestHook(func() {
		select {
		case entered <- struct{}{}:
			<-release
		default:
		}
	})
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := b.Unbind(short, ex, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Unbind past its deadline = %v", err)
	}
	<-entered // the unbind is under way
	bound := make(chan error, 1)
	go func() { bound <- b.Bind(ctx, ex, "k") }()
	select {
	case err := <-bound:
		t.Fatalf("Bind returned (%v) while the unbind of its key was still under way", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-bound; err != nil {
		t.Fatal(err)
	}
	if keys := testutil.Bindings(t, ex); !slices.Equal(keys, []string{"k"}) {
		t.Fatalf("bindings of %s = %q, want [k]", ex, keys)
	}
	if err := b.Publish(ctx, ex, "k", []byte(`{"event":"E"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.RoutingKey != "k" {
			t.Fatalf("got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery after the Bind returned")
	}
}

// The node's queue is bounded, drops its oldest messages when full, and
// dead-letters them where the node counts them.
func TestNodeQueueArguments(t *testing.T) {
	b, _ := startInternal(t, Config{MaxQueueMessages: 7, MaxQueueBytes: 4096}, func(broker.Message) {})
	args, ok := testutil.QueueArguments(t, b.queueName())
	if !ok {
		t.Fatalf("node queue %q not listed", b.queueName())
	}
	for _, want := range []string{`{"x-max-length",7}`, `{"x-max-length-bytes",4096}`, `{"x-overflow","drop-head"}`,
		`{"x-dead-letter-exchange",`, `{"x-dead-letter-routing-key","amq.gen-`} {
		if !strings.Contains(args, want) {
			t.Errorf("node queue arguments %s lack %s", args, want)
		}
	}
	// Defaults.
	d, _ := startInternal(t, Config{}, func(broker.Message) {})
	args, _ = testutil.QueueArguments(t, d.queueName())
	if !strings.Contains(args, `{"x-max-length",100000}`) || !strings.Contains(args, `{"x-max-length-bytes",67108864}`) {
		t.Errorf("default node queue arguments: %s", args)
	}
}

// A node that stops taking deliveries holds at most Prefetch of them
// (RabbitMQ keeps the rest, bounded by MaxQueueMessages, dropping the
// oldest), and what RabbitMQ dropped is counted.
func TestPrefetchAndDropsCounted(t *testing.T) {
	block := make(chan struct{})
	var unblock sync.Once
	b, ex := startInternal(t, Config{Prefetch: 4, MaxQueueMessages: 10, StatsInterval: 50 * time.Millisecond},
		func(broker.Message) { <-block })
	t.Cleanup(func() { unblock.Do(func() { close(block) }) }) // before the broker's Close
	ctx := context.Background()
	if err := b.Bind(ctx, ex, "k"); err != nil {
		t.Fatal(err)
	}
	const published = 40
	for range published {
		if err := b.Publish(ctx, ex, "k", []byte(`{"event":"E"}`)); err != nil {
			t.Fatal(err)
		}
	}
	// deliver is blocked on the first delivery: RabbitMQ sent Prefetch,
	// keeps MaxQueueMessages ready, and dropped the rest.
	deadline := time.Now().Add(10 * time.Second)
	for b.Stats().Dropped != published-4-10 {
		if time.Now().After(deadline) {
			ready, unacked := testutil.QueueCounts(t, b.queueName())
			t.Fatalf("stats %+v, node queue %s ready %s unacked", b.Stats(), ready, unacked)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ready, unacked := testutil.QueueCounts(t, b.queueName()); ready != "10" || unacked != "4" {
		t.Fatalf("node queue: %s ready, %s unacknowledged; want 10 and 4", ready, unacked)
	}
	unblock.Do(func() { close(block) })
	testutil.Eventually(t, 10*time.Second, "every kept message to be received", func() bool {
		return b.Stats().Received == 4+10
	})
	if s := b.Stats(); s.Dropped != published-4-10 {
		t.Fatalf("stats %+v", s)
	}
	// Every delivery was acknowledged: nothing is left unacked.
	testutil.Eventually(t, 10*time.Second, "the acks", func() bool {
		ready, unacked := testutil.QueueCounts(t, b.queueName())
		return ready == "0" && unacked == "0"
	})
}
