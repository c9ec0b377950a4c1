// Package testutil holds what Myxi's tests share: the real RabbitMQ they
// use (never a mock), unique names so tests sharing one broker never
// collide, and a small WebSocket client that speaks the protocol.
package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultRabbitMQURL is used when RABBITMQ_URL is unset.
const DefaultRabbitMQURL = "amqp://guest:guest@127.0.0.1:5672/"

var (
	probeOnce sync.Once
	probeErr  error
)

// RabbitMQURL returns the URL of the test RabbitMQ. When it cannot be
// reached the test is skipped with a loud message, except under CI=true,
// where it fails.
func RabbitMQURL(tb testing.TB) string {
	tb.Helper()
	url := os.Getenv("RABBITMQ_URL")
	if url == "" {
		url = DefaultRabbitMQURL
	}
	probeOnce.Do(func() {
		conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
		if err != nil {
			probeErr = err
			return
		}
		_ = conn.Close()
	})
	if probeErr != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("RabbitMQ at %s is required under CI=true: %v", url, probeErr)
		}
		tb.Skipf("SKIPPING: RabbitMQ at %s is unreachable (%v); start it (rabbitmq-server -detached) to run this test", url, probeErr)
	}
	return url
}

// UniqueName returns prefix plus a random suffix, for exchanges and other
// broker objects that must not collide with other tests or CI runs.
func UniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// DeleteExchangesOnCleanup removes the named exchanges from RabbitMQ when
// the test ends, so the shared broker is left as it was found.
func DeleteExchangesOnCleanup(tb testing.TB, url string, names ...string) {
	tb.Helper()
	tb.Cleanup(func() {
		conn, err := amqp.Dial(url)
		if err != nil {
			tb.Logf("cleanup: cannot reach RabbitMQ to delete exchanges %v: %v", names, err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			tb.Logf("cleanup: channel: %v", err)
			return
		}
		defer ch.Close()
		for _, name := range names {
			if err := ch.ExchangeDelete(name, false, false); err != nil {
				tb.Logf("cleanup: delete exchange %s: %v", name, err)
				return
			}
		}
	})
}

// DeleteQueue deletes queue (a history stream, say) from RabbitMQ,
// reporting a failure as a test error.
func DeleteQueue(tb testing.TB, url, queue string) {
	tb.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		tb.Errorf("delete queue %s: %v", queue, err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err == nil {
		_, err = ch.QueueDelete(queue, false, false, false)
	}
	if err != nil {
		tb.Errorf("delete queue %s: %v", queue, err)
	}
}

// Channel opens an AMQP channel on a connection of its own, both closed
// when the test ends: for a test's own declarations and deletions.
func Channel(tb testing.TB, url string) *amqp.Channel {
	tb.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		tb.Fatalf("connect to RabbitMQ: %v", err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		tb.Fatalf("open a channel: %v", err)
	}
	return ch
}
