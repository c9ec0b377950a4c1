package myxi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/internal/testutil"
)

// historyKinds are the brokers that keep history.
var historyKinds = []string{"memory", "rabbitmq"}

func forEachHistoryBroker(t *testing.T, test func(t *testing.T, kind string)) {
	for _, kind := range historyKinds {
		t.Run(kind, func(t *testing.T) { test(t, kind) })
	}
}

// withHistory gives the test's exchange a history.
func withHistory(h myxi.History) serverOption {
	return func(cfg *myxi.Config) {
		for name := range cfg.Exchanges {
			cfg.History = map[string]myxi.History{name: h}
		}
	}
}

func withLimits(edit func(*myxi.Limits)) serverOption {
	return func(cfg *myxi.Config) { edit(&cfg.Limits) }
}

// position is what a client keeps of a subscription.
type position struct {
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
}

// subscribeSince subscribes to key (with since when not nil) and returns
// the Subscribed event.
func subscribeSince(t *testing.T, c *testutil.Client, exchange, key string, since *position) testutil.Event {
	t.Helper()
	p := map[string]any{"exchange": exchange, "routing_key": key}
	if since != nil {
		p["since"] = since
	}
	c.Send("Subscribe", "s", p)
	return c.Expect("Subscribed")
}

func subscribedPosition(t *testing.T, ev testutil.Event) position {
	t.Helper()
	var p position
	if err := json.Unmarshal(ev.Payload["offset"], &p.Offset); err != nil {
		t.Fatalf("Subscribed without an offset: %s", ev.Raw)
	}
	p.Epoch = ev.Str("epoch")
	if p.Epoch == "" {
		t.Fatalf("Subscribed without an epoch: %s", ev.Raw)
	}
	return p
}

func recovered(ev testutil.Event) string { return string(ev.Payload["recovered"]) }

// expectRecorded reads the next event and checks that it is event n of
// key (payload {"n": n}), recorded, and returns its offset.
func expectRecorded(t *testing.T, c *testutil.Client, key string, n int) uint64 {
	t.Helper()
	ev := c.Expect("Numbered")
	if string(ev.Payload["n"]) != fmt.Sprint(n) || ev.MQ == nil || ev.MQ.RK != key {
		t.Fatalf("got %s, want event %d of key %q", ev.Raw, n, key)
	}
	if ev.MQ.O == nil || ev.MQ.EP == "" {
		t.Fatalf("recorded event without its position: %s", ev.Raw)
	}
	return *ev.MQ.O
}

func (ts *testServer) pushN(t *testing.T, key string, from, to int) {
	t.Helper()
	for n := from; n <= to; n++ {
		ts.push(t, key, "Numbered", map[string]int{"n": n})
	}
}

func TestHistoryRecovery(t *testing.T) {
	forEachHistoryBroker(t, func(t *testing.T, kind string) {
		ts := startServer(t, kind, withHistory(myxi.History{MaxAge: time.Hour}))
		c := testutil.Dial(t, ts.WS)
		sub := subscribedPosition(t, subscribeSince(t, c, ts.Exchange, "k", nil))
		ts.pushN(t, "k", 1, 5)
		var last uint64
		for n := 1; n <= 5; n++ {
			o := expectRecorded(t, c, "k", n)
			if o <= sub.Offset || o <= last {
				t.Fatalf("event %d at offset %d: not after %d (Subscribed) and %d (previous)", n, o, sub.Offset, last)
			}
			last = o
		}
		_ = c.Conn.Close()

		// The node reads its own pushes back from the broker a moment
		// later: a watcher of the last push shows when it has read them
		// all, so that they are replayed rather than delivered live.
		watcher := testutil.Dial(t, ts.WS)
		subscribeSince(t, watcher, ts.Exchange, "other", nil)
		ts.pushN(t, "k", 6, 10)
		ts.pushN(t, "other", 1, 3)
		for n := 1; n <= 3; n++ {
			expectRecorded(t, watcher, "other", n)
		}

		c2 := testutil.Dial(t, ts.WS)
		ev := subscribeSince(t, c2, ts.Exchange, "k", &position{Offset: last, Epoch: sub.Epoch})
		p := subscribedPosition(t, ev)
		if recovered(ev) != "true" || p.Epoch != sub.Epoch {
			t.Fatalf("Subscribed = %s, want recovered in epoch %s", ev.Raw, sub.Epoch)
		}
		for n := 6; n <= 10; n++ {
			if o := expectRecorded(t, c2, "k", n); o > p.Offset {
				t.Fatalf("replayed event %d at %d, after Subscribed's offset %d: it would look live", n, o, p.Offset)
			}
		}
		ts.pushN(t, "k", 11, 11)
		if o := expectRecorded(t, c2, "k", 11); o <= p.Offset {
			t.Fatalf("live event at %d, not after Subscribed's offset %d", o, p.Offset)
		}

		// Subscribed, nothing seen: its position recovers everything
		// after it.
		c3 := testutil.Dial(t, ts.WS)
		p3 := subscribedPosition(t, subscribeSince(t, c3, ts.Exchange, "quiet", nil))
		_ = c3.Conn.Close()
		ts.pushN(t, "quiet", 1, 2)
		c4 := testutil.Dial(t, ts.WS)
		if ev := subscribeSince(t, c4, ts.Exchange, "quiet", &p3); recovered(ev) != "true" {
			t.Fatalf("Subscribed = %s, want recovered", ev.Raw)
		}
		expectRecorded(t, c4, "quiet", 1)
		expectRecorded(t, c4, "quiet", 2)
	})
}

func TestHistoryNotRecovered(t *testing.T) {
	forEachHistoryBroker(t, func(t *testing.T, kind string) {
		ts := startServer(t, kind, withHistory(myxi.History{MaxAge: time.Hour}),
			withLimits(func(l *myxi.Limits) { l.ReplayLimit = 3 }))
		c := testutil.Dial(t, ts.WS)
		sub := subscribedPosition(t, subscribeSince(t, c, ts.Exchange, "k", nil))
		ts.pushN(t, "k", 1, 5)
		for n := 1; n <= 5; n++ { // read back by the node
			expectRecorded(t, c, "k", n)
		}
		cases := []struct {
			name  string
			since position
		}{
			{"another epoch", position{Offset: sub.Offset, Epoch: "not-" + sub.Epoch}},
			{"over the replay limit", sub},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c := testutil.Dial(t, ts.WS)
				ev := subscribeSince(t, c, ts.Exchange, "k", &tc.since)
				p := subscribedPosition(t, ev)
				if recovered(ev) != "false" || p.Epoch != sub.Epoch {
					t.Fatalf("Subscribed = %s, want not recovered, epoch %s", ev.Raw, sub.Epoch)
				}
				// Nothing is replayed: the next event is the next live one.
				c.Send("Ping", "p", nil)
				c.Expect("Pong")
			})
		}
	})
}

func TestHistoryTruncated(t *testing.T) {
	// A history of a few hundred bytes: the node keeps only the last
	// records (RabbitMQ keeps more, a whole segment, but a node answers
	// from what it keeps).
	forEachHistoryBroker(t, func(t *testing.T, kind string) {
		ts := startServer(t, kind, withHistory(myxi.History{MaxAge: time.Hour, MaxBytes: 600}))
		c := testutil.Dial(t, ts.WS)
		sub := subscribedPosition(t, subscribeSince(t, c, ts.Exchange, "k", nil))
		ts.pushN(t, "k", 1, 20)
		for n := 1; n <= 20; n++ { // read back by the node
			expectRecorded(t, c, "k", n)
		}
		c2 := testutil.Dial(t, ts.WS)
		ev := subscribeSince(t, c2, ts.Exchange, "k", &sub)
		if recovered(ev) != "false" {
			t.Fatalf("Subscribed = %s, want not recovered (truncated)", ev.Raw)
		}
		c2.Send("Ping", "p", nil)
		c2.Expect("Pong")
	})
}

func TestSinceValidation(t *testing.T) {
	ts := startServer(t, "memory", withHistory(myxi.History{MaxAge: time.Hour}))
	c := testutil.Dial(t, ts.WS)
	for _, since := range []string{
		`"x"`, `[]`, `{}`, `{"offset": -1, "epoch": "e"}`, `{"offset": 1.5, "epoch": "e"}`,
		`{"offset": 9007199254740992, "epoch": "e"}`, `{"offset": "1", "epoch": "e"}`,
		`{"offset": 1, "epoch": ""}`, `{"offset": 1, "epoch": 5}`,
		`{"offset": 1, "epoch": "` + strings.Repeat("e", 65) + `"}`,
	} {
		c.SendRaw(`{"action":"Subscribe","tag":1,"payload":{"exchange":"` + ts.Exchange + `","routing_key":"k","since":` + since + `}}`)
		ev := c.ExpectError("InvalidPayload")
		if !strings.Contains(ev.Str("message"), "since") {
			t.Fatalf("since %s: message %q does not name since", since, ev.Str("message"))
		}
	}
	c.SendRaw(`{"action":"Subscribe","tag":1,"payload":{"exchange":"` + ts.Exchange + `","routing_keys":["a","b"],"since":{"offset":1,"epoch":"e"}}}`)
	c.ExpectError("InvalidPayload")

	// A valid since on an exchange without history is ignored.
	plain := startServer(t, "memory")
	c2 := testutil.Dial(t, plain.WS)
	ev := subscribeSince(t, c2, plain.Exchange, "k", &position{Offset: 3, Epoch: "e"})
	if _, ok := ev.Payload["recovered"]; ok {
		t.Fatalf("Subscribed on an exchange without history = %s", ev.Raw)
	}
	c2.SendRaw(`{"action":"Subscribe","tag":1,"payload":{"exchange":"` + plain.Exchange + `","routing_key":"j","since":{"offset":-1}}}`)
	c2.ExpectError("InvalidPayload")
}

// TestHistoryManyKeys: a client with 500 subscriptions reconnects and
// recovers them all, one Subscribe per key, without RateLimited or 1008.
func TestHistoryManyKeys(t *testing.T) {
	forEachHistoryBroker(t, func(t *testing.T, kind string) {
		ts := startServer(t, kind, withHistory(myxi.History{MaxAge: time.Hour}))
		const keys = 500
		c := testutil.Dial(t, ts.WS)
		pos := make([]position, keys)
		for i := range pos {
			pos[i] = subscribedPosition(t, subscribeSince(t, c, ts.Exchange, fmt.Sprint("k", i), nil))
		}
		_ = c.Conn.Close()
		for i := 0; i < keys; i++ {
			ts.pushN(t, fmt.Sprint("k", i), 1, 2)
		}
		c2 := testutil.Dial(t, ts.WS)
		for i := range pos { // sent at once, as a reconnecting client does
			c2.Send("Subscribe", i, map[string]any{"exchange": ts.Exchange, "routing_key": fmt.Sprint("k", i), "since": pos[i]})
		}
		seen := 0
		for subscribed := 0; subscribed < keys || seen < 2*keys; {
			ev := c2.Next()
			switch ev.Event {
			case "Subscribed":
				if recovered(ev) != "true" {
					t.Fatalf("Subscribed = %s, want recovered", ev.Raw)
				}
				subscribed++
			case "Numbered":
				seen++
			default:
				t.Fatalf("unexpected %s after %d Subscribed, %d events", ev.Raw, subscribed, seen)
			}
		}
	})
}

// TestHistoryReplayMeetsLive recovers while events keep being pushed:
// the client gets each event after its position exactly once, in order.
func TestHistoryReplayMeetsLive(t *testing.T) {
	forEachHistoryBroker(t, func(t *testing.T, kind string) {
		ts := startServer(t, kind, withHistory(myxi.History{MaxAge: time.Hour}))
		c := testutil.Dial(t, ts.WS)
		start := subscribedPosition(t, subscribeSince(t, c, ts.Exchange, "k", nil))
		_ = c.Conn.Close()

		const total = 400
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		wg.Add(1)
		halfway := make(chan struct{})
		go func() {
			defer wg.Done()
			tick := time.NewTicker(5 * time.Millisecond) // 200 events a second
			defer tick.Stop()
			for n := 1; n <= total; n++ {
				if err := ts.Srv.Push(ctx, ts.Exchange, "k", "Numbered", map[string]int{"n": n}); err != nil {
					t.Errorf("push %d: %v", n, err)
					return
				}
				if n == total/2 {
					close(halfway)
				}
				<-tick.C
			}
		}()
		<-halfway
		c2 := testutil.Dial(t, ts.WS)
		if ev := subscribeSince(t, c2, ts.Exchange, "k", &start); recovered(ev) != "true" {
			t.Fatalf("Subscribed = %s, want recovered", ev.Raw)
		}
		for n := 1; n <= total; n++ {
			expectRecorded(t, c2, "k", n)
		}
		wg.Wait()
	})
}

func TestHistoryConfig(t *testing.T) {
	exchanges := map[string]myxi.AuthorizeFunc{"a": myxi.AllowAll}
	for name, cfg := range map[string]myxi.Config{
		"unknown exchange": {Exchanges: exchanges, History: map[string]myxi.History{"b": {MaxAge: time.Minute}}},
		"no age":           {Exchanges: exchanges, History: map[string]myxi.History{"a": {}}},
		"negative size":    {Exchanges: exchanges, History: map[string]myxi.History{"a": {MaxAge: time.Minute, MaxBytes: -1}}},
		"broker without":   {Exchanges: exchanges, History: map[string]myxi.History{"a": {MaxAge: time.Minute}}, Broker: plainBroker{}},
	} {
		if _, err := myxi.New(cfg); err == nil || !strings.Contains(err.Error(), "History") {
			t.Errorf("%s: New = %v, want an error naming History", name, err)
		}
	}
}

// plainBroker keeps no history.
type plainBroker struct{ broker.Broker }
