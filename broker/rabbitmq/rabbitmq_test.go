package rabbitmq_test

import (
	"context"
	"errors"
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
