package myxi_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/broker/rabbitmq"
	"github.com/myxi/myxi/internal/servertest"
	"github.com/myxi/myxi/internal/testutil"
)

func readyz(t *testing.T, base string) int {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The node's AMQP connection is closed from the broker's side: sessions
// stay open, the node reconnects, binds every subscription again, and
// pushes flow again within 3s.
func TestBrokerConnectionLoss(t *testing.T) {
	ts := startServer(t, "rabbitmq", func(c *myxi.Config) {})
	c := testutil.Dial(t, ts.WS)
	for _, k := range []string{"a", "b", "c"} {
		c.Subscribe(ts.Exchange, k)
	}
	pub, err := rabbitmq.NewPublisher(context.Background(), rabbitmq.PublisherConfig{URLs: []string{ts.RabbitURL}})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	// Timed from rabbitmqctl's return: starting its Erlang VM takes a
	// second or more on a busy machine, and is not the node's recovery.
	testutil.CloseConnection(t, ts.Broker.ConnectionName())
	closedAt := time.Now()
	testutil.Eventually(t, 10*time.Second, "the node to reconnect", func() bool {
		return ts.Broker.Connects() >= 2 && ts.Broker.Ready()
	})
	// A node is ready only once every key is bound again, so a push
	// confirmed now must arrive, on the same WebSocket.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, k := range []string{"a", "b", "c"} {
		if err := pub.Push(ctx, ts.Exchange, k, "AfterRecovery", map[string]string{"k": k}); err != nil {
			t.Fatal(err)
		}
		if ev := c.Expect("AfterRecovery"); ev.MQ == nil || ev.MQ.RK != k {
			t.Fatalf("got %s, want the event for %s", ev.Raw, k)
		}
	}
	recovered := time.Since(closedAt)
	t.Logf("pushes flowed again %v after the connection was closed", recovered.Round(time.Millisecond))
	if recovered > 3*time.Second {
		t.Fatalf("recovery took %v, target 3s", recovered)
	}
	c.Send("Ping", "same-socket", nil)
	c.Expect("Pong")
}

// A node whose first broker address is dead connects to the next one.
func TestBrokerURLListFailover(t *testing.T) {
	url := testutil.RabbitMQURL(t)
	b, err := rabbitmq.New(rabbitmq.Config{
		URLs:           rabbitmq.ParseURLs(testutil.DeadURL + " , " + url),
		ConnectionName: testutil.UniqueName("myxi test failover"),
		Logger:         testutil.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, "rabbitmq", func(c *myxi.Config) { c.Broker = b })
	testutil.Eventually(t, 10*time.Second, "the broker to be ready", b.Ready)
	servertest.WaitReady(t, ts.HTTP)
	c := testutil.Dial(t, ts.WS)
	c.Subscribe(ts.Exchange, "k")
	ts.push(t, "k", "ViaSecondURL", nil)
	c.Expect("ViaSecondURL")
}

// With the broker unreachable the node serves sessions, /readyz says
// unready, Subscribe answers a retryable BrokerUnavailable and Push
// returns an error: nothing is lost silently.
func TestBrokerUnreachable(t *testing.T) {
	b, err := rabbitmq.New(rabbitmq.Config{
		URLs:           []string{testutil.DeadURL},
		ConnectionName: testutil.UniqueName("myxi test unreachable"),
		Logger:         testutil.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, "rabbitmq", func(c *myxi.Config) { c.Broker = b })
	if code := readyz(t, ts.HTTP); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d with the broker down", code)
	}
	c := testutil.Dial(t, ts.WS)
	c.Send("Subscribe", "s", map[string]any{"exchange": ts.Exchange, "routing_key": "k"})
	ev := c.ExpectError("BrokerUnavailable")
	if string(ev.Tag) != `"s"` || ev.Str("exchange") != ts.Exchange || ev.Str("routing_key") != "k" {
		t.Fatalf("BrokerUnavailable: %s", ev.Raw)
	}
	err = ts.Srv.Push(context.Background(), ts.Exchange, "k", "Lost", nil)
	if !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Push with the broker down = %v, want ErrUnavailable", err)
	}
}

// An exchange that already exists with other settings is reported at
// start, naming the exchange and the mismatch.
func TestExchangeDeclarationMismatch(t *testing.T) {
	url := testutil.RabbitMQURL(t)
	name := testutil.UniqueName("myxi-test-mismatch")
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(name, "fanout", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	testutil.DeleteExchangesOnCleanup(t, url, name)
	b, err := rabbitmq.New(rabbitmq.Config{URLs: []string{url}, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := myxi.New(myxi.Config{Exchanges: map[string]myxi.AuthorizeFunc{name: myxi.AllowAll}, Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Start(context.Background())
	if err == nil {
		_ = srv.Shutdown(context.Background())
		t.Fatal("Start accepted an exchange declared with other settings")
	}
	for _, want := range []string{name, "direct", "PRECONDITION_FAILED"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not name %q", err, want)
		}
	}
	_ = b.Close()
}

// A channel error (the exchange deleted under the node, then a bind to
// it) does not wedge the node: it reconnects, declares again, and
// subscriptions work.
func TestChannelErrorDoesNotWedge(t *testing.T) {
	ts := startServer(t, "rabbitmq")
	c := testutil.Dial(t, ts.WS)
	c.Subscribe(ts.Exchange, "before")
	conn, err := amqp.Dial(ts.RabbitURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDelete(ts.Exchange, false, false); err != nil {
		t.Fatal(err)
	}
	c.Send("Subscribe", "x", map[string]any{"exchange": ts.Exchange, "routing_key": "during"})
	if ev := c.Next(); ev.Event != "Subscribed" && ev.Str("error") != "BrokerUnavailable" {
		t.Fatalf("subscribe to a deleted exchange: %s", ev.Raw)
	}
	testutil.Eventually(t, 10*time.Second, "the node to recover", func() bool {
		return ts.Broker.Connects() >= 2 && ts.Broker.Ready()
	})
	c.Send("Unsubscribe", nil, map[string]any{"exchange": ts.Exchange, "routing_key": "during"})
	c.Expect("Unsubscribed")
	c.Subscribe(ts.Exchange, "after")
	ts.push(t, "before", "Before", nil)
	c.Expect("Before")
	ts.push(t, "after", "After", nil)
	c.Expect("After")
}
