package myxi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/internal/protocol"
	"github.com/myxi/myxi/internal/testutil"
)

// metricLine returns the line of the node's /metrics that starts with
// prefix ("" when none does).
func metricLine(t *testing.T, ts *testServer, prefix string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	ts.Srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	return ""
}

// 40 sessions subscribe and unsubscribe distinct keys (and one shared
// key) at once on one node connected to RabbitMQ: every action succeeds,
// the node stays connected, and RabbitMQ holds exactly the bindings still
// subscribed. Concurrent RPCs on one AMQP channel failed this with
// BrokerUnavailable replies and stray bindings.
func TestBrokerConcurrentSubscribeUnsubscribe(t *testing.T) {
	ts := startServer(t, "rabbitmq")
	const sessions = 40
	clients := make([]*testutil.Client, sessions)
	for i := range clients {
		clients[i] = testutil.Dial(t, ts.WS)
	}
	errs := make(chan error, sessions)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each step is an action and the reply it must get: rounds of
			// subscribing and unsubscribing, then keys kept.
			type step struct{ action, key, reply string }
			var steps []step
			for round := range 8 {
				k := fmt.Sprintf("s%02d-r%d", i, round)
				steps = append(steps, step{"Subscribe", k, "Subscribed"}, step{"Subscribe", "shared", "Subscribed"},
					step{"Unsubscribe", k, "Unsubscribed"}, step{"Unsubscribe", "shared", "Unsubscribed"})
			}
			steps = append(steps, step{"Subscribe", fmt.Sprintf("s%02d-b", i), "Subscribed"}, step{"Subscribe", "shared", "Subscribed"})
			if i%2 == 1 {
				steps = append(steps, step{"Unsubscribe", "shared", "Unsubscribed"})
			}
			for _, s := range steps {
				frame := map[string]any{"action": s.action, "payload": map[string]any{"exchange": ts.Exchange, "routing_key": s.key}}
				if err := c.Conn.WriteJSON(frame); err != nil {
					errs <- err
					return
				}
				ev, err := c.NextWithin(15 * time.Second)
				if err != nil {
					errs <- fmt.Errorf("session %d, %s %s: %w", i, s.action, s.key, err)
					return
				}
				if ev.Event != s.reply {
					errs <- fmt.Errorf("session %d, %s %s: got %s", i, s.action, s.key, ev.Raw)
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
	if ts.Broker.Connects() != 1 || !ts.Broker.Ready() {
		t.Fatalf("the node reconnected (%d connects): errors may be hidden", ts.Broker.Connects())
	}
	want := []string{"shared"}
	for i := range sessions {
		want = append(want, fmt.Sprintf("s%02d-b", i))
	}
	slices.Sort(want)
	if got := testutil.Bindings(t, ts.Exchange); !slices.Equal(got, want) {
		t.Fatalf("bindings of %s:\n got %q\nwant %q", ts.Exchange, got, want)
	}
}

// Bodies published straight over AMQP that break PROTOCOL.md's body rules
// never reach a socket; they are counted by reason. A null or absent
// payload becomes {}.
func TestBrokerEdgeBodyRules(t *testing.T) {
	ts := startServer(t, "rabbitmq", func(c *myxi.Config) { c.Limits.MaxEventBytes = 4096 })
	c := testutil.Dial(t, ts.WS)
	c.Subscribe(ts.Exchange, "k")
	pub := newRawPublisher(t, ts.RabbitURL)
	for _, body := range []string{
		"{\"event\":\"E\",\"payload\":{\"s\":\"\xfe\"}}",                      // invalid_utf8
		"{\"event\":\"E\xc3\",\"payload\":{}}",                                // invalid_utf8
		`{"event":"","payload":{}}`,                                           // bad_event
		`{"payload":{}}`,                                                      // bad_event
		`{"event":"E","payload":[1,2]}`,                                       // bad_payload
		`{"event":"E","payload":"s"}`,                                         // bad_payload
		`{"event":"E","payload":{"pad":"` + strings.Repeat("x", 5000) + `"}}`, // too_large
		`[]`, // not_object
		`{"event":"NullPayload","payload":null}`,
		`{"event":"NoPayload"}`,
		`{"event":"After","payload":{"ok":true}}`,
	} {
		pub.publish(t, ts.Exchange, "k", body)
	}
	for _, want := range []string{"NullPayload", "NoPayload", "After"} {
		ev := c.Next()
		if ev.Event != want || !utf8.Valid(ev.Raw) {
			t.Fatalf("got %q, want %s: a body that breaks the rules was forwarded", ev.Raw, want)
		}
		if want != "After" && !strings.Contains(string(ev.Raw), `"payload":{}`) {
			t.Fatalf("%s: payload not {}: %s", want, ev.Raw)
		}
	}
	for reason, n := range map[string]int{"invalid_utf8": 2, "bad_event": 2, "bad_payload": 2, "too_large": 1, "not_object": 1} {
		prefix := fmt.Sprintf(`myxi_broker_bad_messages_total{reason=%q} `, reason)
		if line := metricLine(t, ts, prefix); line != fmt.Sprintf("%s%d", prefix, n) {
			t.Errorf("metric %q, want %d", line, n)
		}
	}
}

// One event far over the maximum event size (2 MiB, twice the default
// send queue) is dropped at the edge: the subscribers, reading promptly,
// stay connected and get the next event.
func TestBrokerOversizeEventKeepsSubscribers(t *testing.T) {
	ts := startServer(t, "rabbitmq")
	clients := []*testutil.Client{testutil.Dial(t, ts.WS), testutil.Dial(t, ts.WS), testutil.Dial(t, ts.WS)}
	for _, c := range clients {
		c.Subscribe(ts.Exchange, "k")
	}
	pub := newRawPublisher(t, ts.RabbitURL)
	pub.publish(t, ts.Exchange, "k", `{"event":"Huge","payload":{"pad":"`+strings.Repeat("x", 2<<20)+`"}}`)
	pub.publish(t, ts.Exchange, "k", `{"event":"After"}`)
	for _, c := range clients {
		c.Expect("After")
		c.Send("Ping", "p", nil)
		c.Expect("Pong")
	}
	if line := metricLine(t, ts, `myxi_broker_bad_messages_total{reason="too_large"} `); !strings.HasSuffix(line, " 1") {
		t.Fatalf("metric %q", line)
	}
}

func TestConfigMaxEventBytes(t *testing.T) {
	ex := map[string]myxi.AuthorizeFunc{"widgets": myxi.AllowAll}
	for _, limits := range []myxi.Limits{
		{MaxEventBytes: 1 << 20},                    // the default send queue
		{MaxEventBytes: 4096, SendQueueBytes: 4096}, // equal
		{MaxEventBytes: 8192, SendQueueBytes: 4096}, // above
		{MaxEventBytes: -1},                         // negative
	} {
		_, err := myxi.New(myxi.Config{Exchanges: ex, Limits: limits})
		if err == nil || !strings.Contains(err.Error(), "MaxEventBytes") {
			t.Errorf("%+v: %v, want an error naming MaxEventBytes", limits, err)
		}
		if limits.MaxEventBytes > 0 && !strings.Contains(err.Error(), "SendQueueBytes") {
			t.Errorf("%+v: %v, want an error naming SendQueueBytes", limits, err)
		}
	}
	for limits, want := range map[myxi.Limits]int64{
		{}:                     256 << 10,
		{SendQueueBytes: 4096}: 2048,
		{MaxEventBytes: 1000}:  1000,
	} {
		srv, err := myxi.New(myxi.Config{Exchanges: ex, Limits: limits})
		if err != nil {
			t.Fatalf("%+v: %v", limits, err)
		}
		if got := srv.MaxEventBytes(); got != want {
			t.Errorf("%+v: MaxEventBytes() = %d, want %d", limits, got, want)
		}
	}
}

// Push refuses what the nodes would drop.
func TestPushRefusesWhatNodesDrop(t *testing.T) {
	ts := startServer(t, "memory", func(c *myxi.Config) { c.Limits.MaxEventBytes = 1000 })
	ctx := context.Background()
	for name, payload := range map[string]any{
		"array":         []int{1},
		"scalar":        "s",
		"invalid UTF-8": json.RawMessage("{\"s\":\"\xfe\"}"),
	} {
		if err := ts.Srv.Push(ctx, ts.Exchange, "k", "E", payload); err == nil {
			t.Errorf("%s payload accepted", name)
		}
	}
	err := ts.Srv.Push(ctx, ts.Exchange, "k", "E", map[string]string{"pad": strings.Repeat("x", 1000)})
	var bad *protocol.BadBodyError
	if !errors.As(err, &bad) || bad.Reason != protocol.DropTooLarge || strings.Contains(err.Error(), "myxi: myxi:") {
		t.Fatalf("oversize push: %v", err)
	}
	c := testutil.Dial(t, ts.WS)
	c.Subscribe(ts.Exchange, "k")
	ts.push(t, "k", "Fits", map[string]string{"pad": strings.Repeat("x", 900)})
	c.Expect("Fits")
}

// Session.Send with raw JSON that is not valid UTF-8 returns an error and
// puts nothing on the wire.
func TestSendRefusesInvalidUTF8(t *testing.T) {
	sent := make(chan error, 1)
	ts := startServer(t, "memory", func(c *myxi.Config) {
		c.Actions["Raw"] = func(_ context.Context, s *myxi.Session, _ json.RawMessage) error {
			sent <- s.Send("Raw", json.RawMessage("{\"s\":\"\xfe\"}"))
			return nil
		}
	})
	c := testutil.Dial(t, ts.WS)
	c.Send("Raw", "r", nil)
	if err := <-sent; !errors.Is(err, protocol.ErrInvalidUTF8) {
		t.Fatalf("Send = %v, want ErrInvalidUTF8", err)
	}
	c.Send("Ping", "p", nil)
	if ev := c.Next(); ev.Event != "Pong" {
		t.Fatalf("got %q before the Pong", ev.Raw)
	}
}
