package rabbitmq_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/broker/rabbitmq"
	"github.com/myxi/myxi/internal/testutil"
)

func startBroker(tb testing.TB, exchange string, deliver broker.DeliverFunc) *rabbitmq.Broker {
	tb.Helper()
	url := testutil.RabbitMQURL(tb)
	b, err := rabbitmq.New(rabbitmq.Config{URLs: []string{url}, ConnectionName: testutil.UniqueName("myxi broker test"), Logger: testutil.Logger(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	testutil.DeleteExchangesOnCleanup(tb, url, exchange)
	if err := b.Start(context.Background(), []string{exchange}, deliver); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	return b
}

func TestBindDeliverUnbind(t *testing.T) {
	ex := testutil.UniqueName("myxi-test-broker")
	got := make(chan broker.Message, 10)
	b := startBroker(t, ex, func(m broker.Message) { got <- m })
	ctx := context.Background()
	if err := b.Bind(ctx, ex, "k"); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, ex, "k", []byte(`{"event":"E"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Exchange != ex || m.RoutingKey != "k" || string(m.Body) != `{"event":"E"}` {
			t.Fatalf("got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery")
	}
	if err := b.Unbind(ctx, ex, "k"); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, ex, "k", []byte(`{"event":"Late"}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.Bind(ctx, ex, "other"); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, ex, "other", []byte(`{"event":"Other"}`)); err != nil {
		t.Fatal(err)
	}
	// The queue is FIFO: "Other" arriving first proves "Late" never came.
	if m := <-got; m.RoutingKey != "other" {
		t.Fatalf("after Unbind got %s", m.Body)
	}
}

func TestPublisherOnlyDeclaresOnDemand(t *testing.T) {
	url := testutil.RabbitMQURL(t)
	ex := testutil.UniqueName("myxi-test-pub")
	testutil.DeleteExchangesOnCleanup(t, url, ex)
	b, err := rabbitmq.New(rabbitmq.Config{URLs: []string{url}, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Start(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), ex, "k", []byte(`{}`)); err != nil {
		t.Fatalf("publish to an exchange not declared yet: %v", err)
	}
}

func TestNewRejectsBadURL(t *testing.T) {
	if _, err := rabbitmq.New(rabbitmq.Config{URLs: []string{"http://nope"}}); err == nil {
		t.Fatal("want an error for a non-AMQP URL")
	}
	if _, err := rabbitmq.New(rabbitmq.Config{}); err == nil {
		t.Fatal("want an error without URL or connection")
	}
	if got := rabbitmq.ParseURLs(" amqp://a/ ,, amqp://b/"); len(got) != 2 || got[1] != "amqp://b/" {
		t.Fatalf("ParseURLs = %q", got)
	}
}

func TestPublishCanceled(t *testing.T) {
	ex := testutil.UniqueName("myxi-test-cancel")
	b := startBroker(t, ex, func(broker.Message) {})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Publish(ctx, ex, "k", []byte(`{}`)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a canceled context = %v", err)
	}
}

// BenchmarkPublish states the cost of publisher confirms: "confirmed" is
// Myxi's Publish (one push waits for RabbitMQ's confirm), "parallel"
// the same from 16 goroutines (confirms overlap), and "unconfirmed" a raw
// fire-and-forget publish, which can lose events silently.
func BenchmarkPublish(b *testing.B) {
	ex := testutil.UniqueName("myxi-bench-publish")
	br := startBroker(b, ex, func(broker.Message) {})
	body := []byte(`{"event":"WidgetQtyChanged","payload":{"quantity":5}}`)
	ctx := context.Background()
	b.Run("confirmed", func(b *testing.B) {
		for b.Loop() {
			if err := br.Publish(ctx, ex, "k", body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("confirmed-parallel-16", func(b *testing.B) {
		var wg sync.WaitGroup
		n := b.N
		var mu sync.Mutex
		b.ResetTimer()
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mu.Lock()
					if n == 0 {
						mu.Unlock()
						return
					}
					n--
					mu.Unlock()
					if err := br.Publish(ctx, ex, "k", body); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	})
	b.Run("unconfirmed", func(b *testing.B) {
		conn, err := amqp.Dial(testutil.RabbitMQURL(b))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := ch.PublishWithContext(ctx, ex, "k", false, false, amqp.Publishing{Body: body}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// 40 callers bind and unbind distinct keys at once on one node (the
// server's sessions do that from their own goroutines): no error, and
// RabbitMQ ends with exactly the bindings still wanted. Concurrent RPCs on
// one channel got each other's replies here.
func TestConcurrentBindUnbind(t *testing.T) {
	ex := testutil.UniqueName("myxi-test-concurrent")
	b := startBroker(t, ex, func(broker.Message) {})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 40*4)
	var want []string
	for i := range 40 {
		key := fmt.Sprintf("k%02d", i)
		if i%2 == 0 {
			want = append(want, key)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 8 {
				if err := b.Bind(ctx, ex, key); err != nil {
					errs <- err
					return
				}
				if round == 7 && i%2 == 0 {
					return // keep it
				}
				if err := b.Unbind(ctx, ex, key); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if b.Connects() != 1 || !b.Ready() {
		t.Fatalf("the node reconnected (%d connects, ready %v): errors were hidden", b.Connects(), b.Ready())
	}
	if got := testutil.Bindings(t, ex); !slices.Equal(got, want) {
		t.Fatalf("bindings of %s:\n got %q\nwant %q", ex, got, want)
	}
}

// Publishes from many goroutines to exchanges not declared yet: each
// declaration goes through the owner, none fails.
func TestConcurrentPublishDeclares(t *testing.T) {
	url := testutil.RabbitMQURL(t)
	var exchanges []string
	for range 5 {
		exchanges = append(exchanges, testutil.UniqueName("myxi-test-declare"))
	}
	testutil.DeleteExchangesOnCleanup(t, url, exchanges...)
	b, err := rabbitmq.New(rabbitmq.Config{URLs: []string{url}, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Start(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Publish(ctx, exchanges[i%len(exchanges)], "k", []byte(`{"event":"E"}`)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if b.Connects() != 1 {
		t.Fatalf("the publisher reconnected (%d connects)", b.Connects())
	}
}

// A publish whose on-demand declaration RabbitMQ refuses fails with the
// reason, and costs the node neither its connection nor later publishes.
func TestRefusedDeclarationKeepsSession(t *testing.T) {
	url := testutil.RabbitMQURL(t)
	ex := testutil.UniqueName("myxi-test-fanout")
	good := testutil.UniqueName("myxi-test-good")
	testutil.DeleteExchangesOnCleanup(t, url, ex, good)
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(ex, "fanout", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	b, err := rabbitmq.New(rabbitmq.Config{URLs: []string{url}, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Start(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Publish(ctx, ex, "k", []byte(`{}`)); err == nil || !strings.Contains(err.Error(), "PRECONDITION_FAILED") {
		t.Fatalf("publish to a fanout exchange of that name = %v", err)
	}
	if err := b.Publish(ctx, good, "k", []byte(`{}`)); err != nil {
		t.Fatalf("the next publish: %v", err)
	}
	if b.Connects() != 1 {
		t.Fatalf("a refused declaration cost the connection (%d connects)", b.Connects())
	}
}

// A publisher that cannot connect says why, not only that its context
// ended.
func TestPublisherReportsDialError(t *testing.T) {
	for url, want := range map[string]string{
		testutil.DeadURL: "connection refused",
		"amqp://guest:guest@myxi-no-such-host.invalid:5672/": "no such host",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := rabbitmq.NewPublisher(ctx, rabbitmq.PublisherConfig{URLs: []string{url}, Logger: testutil.Logger(t)})
		cancel()
		if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want the deadline and %q", url, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "guest:guest") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}

// Push refuses what every node would drop, before publishing.
func TestPublisherRefusesWhatNodesDrop(t *testing.T) {
	url := testutil.RabbitMQURL(t)
	ex := testutil.UniqueName("myxi-test-pubrules")
	testutil.DeleteExchangesOnCleanup(t, url, ex)
	ctx := context.Background()
	pub, err := rabbitmq.NewPublisher(ctx, rabbitmq.PublisherConfig{URLs: []string{url}, Logger: testutil.Logger(t), MaxEventBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for name, payload := range map[string]any{
		"array":         []int{1},
		"scalar":        5,
		"invalid UTF-8": json.RawMessage("{\"s\":\"\xfe\"}"),
		"too large":     map[string]string{"pad": strings.Repeat("x", 1000)},
	} {
		if err := pub.Push(ctx, ex, "k", "E", payload); err == nil {
			t.Errorf("%s payload accepted", name)
		}
	}
	if err := pub.Push(ctx, ex, "k", "", nil); err == nil {
		t.Error("empty event accepted")
	}
	if err := pub.Push(ctx, ex, "k", "E", nil); err != nil {
		t.Fatalf("a valid push: %v", err)
	}
	if pub.MaxEventBytes() != 1000 {
		t.Fatalf("MaxEventBytes() = %d", pub.MaxEventBytes())
	}
}

// The connection is closed under binds and unbinds in flight: every
// failure is ErrUnavailable, and once the node is back RabbitMQ holds
// exactly the keys whose last Bind succeeded (the owner reconciles what
// the new connection bound with what is still wanted).
func TestBindUnbindAcrossConnectionLoss(t *testing.T) {
	ex := testutil.UniqueName("myxi-test-loss")
	b := startBroker(t, ex, func(broker.Message) {})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	bound := map[string]bool{}
	errs := make(chan error, 20)
	for i := range 20 {
		key := fmt.Sprintf("k%02d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 10000; n++ {
				err := b.Bind(ctx, ex, key)
				if err != nil && !errors.Is(err, broker.ErrUnavailable) {
					errs <- err
					return
				}
				select {
				case <-stop:
					mu.Lock()
					bound[key] = err == nil
					mu.Unlock()
					return
				default:
				}
				if err := b.Unbind(ctx, ex, key); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	testutil.CloseConnection(t, b.ConnectionName())
	testutil.Eventually(t, 20*time.Second, "the broker to reconnect", func() bool { return b.Connects() >= 2 && b.Ready() })
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var want []string
	for k, ok := range bound {
		if ok {
			want = append(want, k)
		}
	}
	slices.Sort(want)
	var got []string
	testutil.Eventually(t, 20*time.Second, "the bindings to settle", func() bool {
		got = testutil.Bindings(t, ex)
		return slices.Equal(got, want)
	})
}
