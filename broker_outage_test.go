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
	recovered := time.Since(back)
	t.Logf("pushes to existing subscriptions flowed again %v after RabbitMQ accepted connections", recovered.Round(time.Millisecond))
	if recovered > 3*time.Second {
		t.Errorf("recovery took %v; the target is 3s", recovered)
	}
	// The client retries its Subscribe, as the JS client does on BrokerUnavailable.
	c.Subscribe(ts.Exchange, "during")
	ts.push(t, "during", "Retried", nil)
	c.Expect("Retried")
	if code := readyz(t, ts.HTTP); code != http.StatusOK {
		t.Fatalf("/readyz = %d after recovery", code)
	}
}
