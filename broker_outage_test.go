package myxi_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/myxi/myxi/internal/testutil"
)

// TestBrokerOutage stops the whole RabbitMQ application and starts it
// again. It disturbs every other user of the broker, so it runs only when
// asked (MYXI_BROKER_STOP_TEST=1, as `make test-broker-outage` does, after
// every other test), and it always starts the broker again.
func TestBrokerOutage(t *testing.T) {
	if os.Getenv("MYXI_BROKER_STOP_TEST") != "1" {
		t.Skip("stops the shared RabbitMQ: run alone with MYXI_BROKER_STOP_TEST=1 (make test-broker-outage)")
	}
	ts := startServer(t, "rabbitmq")
	c := testutil.Dial(t, ts.WS)
	c.Subscribe(ts.Exchange, "before")

	// A history exchange: its stream is durable, so what it recorded
	// before the outage is still there after it.
	hist := historyNodes(t, 1)[0]
	watcher := testutil.Dial(t, hist.WS)
	start := subscribedPosition(t, subscribeSince(t, watcher, hist.Exchange, "h", nil))
	hist.pushN(t, "h", 1, 3)
	for n := 1; n <= 3; n++ {
		expectRecorded(t, watcher, "h", n)
	}

	rabbitmqctl := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput(); err != nil {
			t.Fatalf("rabbitmqctl %v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() { // never leave the broker stopped, whatever happened
		_ = exec.Command("rabbitmqctl", "start_app").Run()
		_ = exec.Command("rabbitmqctl", "await_startup", "--timeout", "60").Run()
	})
	rabbitmqctl("stop_app")
	testutil.Eventually(t, 30*time.Second, "/readyz to turn unready", func() bool {
		return readyz(t, ts.HTTP) == http.StatusServiceUnavailable
	})

	// During the outage: the session lives on, a Subscribe gets a clear,
	// retryable error, and a push fails loudly.
	c.Send("Ping", "alive", nil)
	c.Expect("Pong")
	c.Send("Subscribe", "during", map[string]any{"exchange": ts.Exchange, "routing_key": "during"})
	if ev := c.ExpectError("BrokerUnavailable"); string(ev.Tag) != `"during"` {
		t.Fatalf("Subscribe during the outage: %s", ev.Raw)
	}
	if err := ts.Srv.Push(context.Background(), ts.Exchange, "before", "Lost", nil); err == nil {
		t.Fatal("Push succeeded with the broker stopped")
	}

	rabbitmqctl("start_app") // returns once the broker runs and accepts connections
	back := time.Now()
	rabbitmqctl("await_startup", "--timeout", "60")
	testutil.Eventually(t, 30*time.Second, "the node to reconnect", ts.Broker.Ready)
	ts.push(t, "before", "AfterOutage", nil)
	c.Expect("AfterOutage")
	took := time.Since(back)
	t.Logf("pushes to existing subscriptions flowed again %v after RabbitMQ accepted connections", took.Round(time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("recovery took %v; the target is 3s", took)
	}
	// The client retries its Subscribe, as the JS client does on BrokerUnavailable.
	c.Subscribe(ts.Exchange, "during")
	ts.push(t, "during", "Retried", nil)
	c.Expect("Retried")
	if code := readyz(t, ts.HTTP); code != http.StatusOK {
		t.Fatalf("/readyz = %d after recovery", code)
	}

	// The history: the client that stayed connected gets the next record
	// with no gap, and one that comes from the position before the
	// outage gets everything.
	testutil.Eventually(t, 30*time.Second, "the history node to reconnect", hist.Broker.Ready)
	testutil.Eventually(t, 30*time.Second, "a push to the history exchange", func() bool {
		return hist.Srv.Push(context.Background(), hist.Exchange, "h", "Numbered", map[string]int{"n": 4}) == nil
	})
	expectRecorded(t, watcher, "h", 4)
	back2 := testutil.Dial(t, hist.WS)
	if ev := subscribeSince(t, back2, hist.Exchange, "h", &start); recovered(ev) != "true" {
		t.Fatalf("Subscribed after the outage = %s, want recovered (the stream is durable)", ev.Raw)
	}
	for n := 1; n <= 4; n++ {
		expectRecorded(t, back2, "h", n)
	}
}
