package myxi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/broker/rabbitmq"
	"github.com/myxi/myxi/internal/servertest"
	"github.com/myxi/myxi/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// brokerKinds runs the same protocol suite on each broker.
var brokerKinds = []string{"memory", "rabbitmq"}

// testServer is a running server on a loopback port.
type testServer struct {
	Srv       *myxi.Server
	WS        string // ws://127.0.0.1:port/
	HTTP      string // http://127.0.0.1:port
	Exchange  string
	RabbitURL string
	Broker    *rabbitmq.Broker // the node's RabbitMQ broker, for kind "rabbitmq"
	// ConnectionName is the node's AMQP connection name, for kind "rabbitmq".
	ConnectionName string
	revoked        *atomic.Bool
	noWait         bool // do not wait for /readyz (a broker that cannot connect)
}

type serverOption func(*myxi.Config)

// startServer runs a server with one exchange (unique per test) whose
// authorizer refuses the key "denied", lets only alice subscribe to
// "secret", and refuses "revocable" once revoked is set; and actions
// Authenticate, Whoami (auth required), Panic, Fail and Refuse.
func startServer(t *testing.T, kind string, opts ...serverOption) *testServer {
	t.Helper()
	ts := &testServer{Exchange: testutil.UniqueName("myxi-test"), revoked: &atomic.Bool{}}
	cfg := myxi.Config{
		Exchanges: map[string]myxi.AuthorizeFunc{
			ts.Exchange: func(ctx context.Context, s *myxi.Session, key string) (bool, error) {
				switch key {
				case "denied":
					return false, nil
				case "secret":
					return s.User() == "alice", nil
				case "revocable":
					return !ts.revoked.Load(), nil
				case "broken":
					return false, errors.New("authorizer database at /var/secret/db is down")
				}
				return true, nil
			},
		},
		Actions: map[string]myxi.ActionHandler{
			"Authenticate": func(ctx context.Context, s *myxi.Session, payload json.RawMessage) error {
				var p struct {
					SessionToken string `json:"session_token"`
				}
				if err := json.Unmarshal(payload, &p); err != nil || p.SessionToken != "alice-token" {
					return &myxi.ClientError{Name: "InvalidSessionToken"}
				}
				s.SetUser("alice")
				return s.Send("Authenticated", map[string]string{"username": "alice"})
			},
			"Whoami": myxi.AuthRequired(func(ctx context.Context, s *myxi.Session, _ json.RawMessage) error {
				return s.Send("You", map[string]any{"user": s.User(), "id": s.ID(), "ip": s.RemoteIP()})
			}),
			"Panic": func(context.Context, *myxi.Session, json.RawMessage) error {
				panic("boom at /home/secret/file.go")
			},
			"Fail": func(context.Context, *myxi.Session, json.RawMessage) error {
				return errors.New("pq: password authentication failed for user secret")
			},
			"Refuse": func(context.Context, *myxi.Session, json.RawMessage) error {
				return &myxi.ClientError{Name: "NotToday", Details: map[string]any{"retry_in": 5}}
			},
		},
		ReauthorizeInterval: -1,
		DrainPeriod:         100 * time.Millisecond,
		Logger:              testutil.Logger(t),
	}
	if kind == "rabbitmq" {
		ts.RabbitURL = testutil.RabbitMQURL(t)
		ts.ConnectionName = testutil.UniqueName("myxi test " + t.Name())
		b, err := rabbitmq.New(rabbitmq.Config{
			URLs:           []string{ts.RabbitURL},
			ConnectionName: ts.ConnectionName,
			Logger:         cfg.Logger,
		})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Broker = b
		ts.Broker = b
		testutil.DeleteExchangesOnCleanup(t, ts.RabbitURL, ts.Exchange)
	}
	for _, o := range opts {
		o(&cfg)
	}
	for name := range cfg.Exchanges {
		ts.Exchange = name // an option may have renamed it
	}
	if kind == "rabbitmq" {
		// Streams are durable: each history is deleted once the node has
		// stopped (registered before the node starts, cleanups run last
		// in, first out; deleting a missing one is fine, for nodes that
		// share it).
		for name := range cfg.History {
			url := ts.RabbitURL
			t.Cleanup(func() { testutil.DeleteQueue(t, url, rabbitmq.StreamName(name)) })
		}
	}
	if cfg.Broker != ts.Broker && cfg.Broker != nil && kind == "rabbitmq" {
		ts.Broker, _ = cfg.Broker.(*rabbitmq.Broker)
		ts.noWait = true
	}
	s := servertest.Run(t, cfg)
	ts.Srv, ts.HTTP, ts.WS = s.Srv, s.HTTP, s.WS
	if !ts.noWait {
		servertest.WaitReady(t, ts.HTTP)
	}
	return ts
}

func forEachBroker(t *testing.T, test func(t *testing.T, kind string)) {
	for _, kind := range brokerKinds {
		t.Run(kind, func(t *testing.T) { test(t, kind) })
	}
}

func (ts *testServer) push(t *testing.T, key, event string, payload any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.Srv.Push(ctx, ts.Exchange, key, event, payload); err != nil {
		t.Fatalf("push: %v", err)
	}
}

func TestWelcome(t *testing.T) {
	forEachBroker(t, func(t *testing.T, kind string) {
		ts := startServer(t, kind)
		for _, path := range []string{"", "ws"} {
			c := testutil.Dial(t, ts.WS+path)
			id := c.Welcome.Str("id")
			if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
				t.Fatalf("Welcome id %q is not 16 hex chars", id)
			}
			if string(c.Welcome.Tag) != "null" {
				t.Fatalf("Welcome tag = %s, want null", c.Welcome.Tag)
			}
		}
	})
}

func TestSubscribeAndPush(t *testing.T) {
	forEachBroker(t, func(t *testing.T, kind string) {
		ts := startServer(t, kind)
		c := testutil.Dial(t, ts.WS)
		c.Send("Subscribe", "t1", map[string]any{"exchange": ts.Exchange, "routing_key": "42"})
		ev := c.Expect("Subscribed")
		if string(ev.Tag) != `"t1"` || ev.Str("exchange") != ts.Exchange || string(ev.Payload["routing_key"]) != `"42"` {
			t.Fatalf("Subscribed = %s", ev.Raw)
		}
		ts.push(t, "42", "WidgetQtyChanged", map[string]int{"quantity": 5})
		got := c.Expect("WidgetQtyChanged")
		if got.MQ == nil || got.MQ.E != ts.Exchange || got.MQ.RK != "42" {
			t.Fatalf("mq = %+v in %s", got.MQ, got.Raw)
		}
		if string(got.Payload["quantity"]) != "5" || string(got.Tag) != "null" {
			t.Fatalf("event = %s", got.Raw)
		}
		if strings.Contains(string(got.Raw), "\n") {
			t.Fatalf("event has a raw newline: %q", got.Raw)
		}
	})
}

func TestRoutingKeyForms(t *testing.T) {
	forEachBroker(t, func(t *testing.T, kind string) {
		ts := startServer(t, kind)
		c := testutil.Dial(t, ts.WS)

		// A number is taken in its JSON text form and echoed as a number.
		c.Send("Subscribe", 7, map[string]any{"exchange": ts.Exchange, "routing_key": 42})
		ev := c.Expect("Subscribed")
		if string(ev.Payload["routing_key"]) != "42" || string(ev.Tag) != "7" {
			t.Fatalf("numeric key: %s", ev.Raw)
		}
		c.Send("Subscribe", "dup", map[string]any{"exchange": ts.Exchange, "routing_key": "42"})
		if ev := c.ExpectError("AlreadySubscribed"); string(ev.Tag) != `"dup"` {
			t.Fatalf("AlreadySubscribed tag: %s", ev.Raw)
		}

		// A missing key is the whole exchange: "" on the broker, null echoed.
		c.Send("Subscribe", nil, map[string]any{"exchange": ts.Exchange})
		if ev := c.Expect("Subscribed"); string(ev.Payload["routing_key"]) != "null" {
			t.Fatalf("missing key: %s", ev.Raw)
		}
		ts.push(t, "", "Everything", nil)
		if ev := c.Expect("Everything"); ev.MQ == nil || ev.MQ.RK != "" || string(ev.Raw) == "" {
			t.Fatalf("exchange-wide event: %s", ev.Raw)
		}

		// routing_keys: one reply per key.
		c.Send("Subscribe", "many", map[string]any{"exchange": ts.Exchange, "routing_keys": []any{"a", 2, "denied"}})
		c.Expect("Subscribed")
		c.Expect("Subscribed")
		if ev := c.ExpectError("SubscriptionDenied"); string(ev.Tag) != `"many"` || ev.Str("routing_key") != "denied" {
			t.Fatalf("denied: %s", ev.Raw)
		}

		c.Send("ListSubscriptions", "ls", nil)
		ev = c.Expect("YourSubscriptions")
		var subs map[string][]string
		if err := json.Unmarshal(ev.Payload["subscriptions"], &subs); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(subs[ts.Exchange], ","); got != ",2,42,a" || string(ev.Tag) != `"ls"` {
			t.Fatalf("subscriptions = %q (%s)", got, ev.Raw)
		}
	})
}

func TestSubscribeErrors(t *testing.T) {
	forEachBroker(t, func(t *testing.T, kind string) {
		ts := startServer(t, kind, func(c *myxi.Config) { c.Limits.MaxSubscriptions = 2 })
		c := testutil.Dial(t, ts.WS)
		cases := []struct {
			payload any
			err     string
		}{
			{map[string]any{"exchange": "nope", "routing_key": "1"}, "InvalidExchange"},
			{map[string]any{"exchange": 5, "routing_key": "1"}, "InvalidExchange"},
			{map[string]any{"routing_key": "1"}, "InvalidExchange"},
			{map[string]any{"exchange": ts.Exchange, "routing_keys": "1"}, "InvalidPayload"},
			{map[string]any{"exchange": ts.Exchange, "routing_key": map[string]int{"a": 1}}, "InvalidPayload"},
			{map[string]any{"exchange": ts.Exchange, "routing_key": strings.Repeat("k", 256)}, "InvalidRoutingKey"},
			{map[string]any{"exchange": ts.Exchange, "routing_key": "denied"}, "SubscriptionDenied"},
			{map[string]any{"exchange": ts.Exchange, "routing_key": "secret"}, "SubscriptionDenied"},
			{[]int{1}, "InvalidPayload"},
		}
		for i, tc := range cases {
			c.Send("Subscribe", i, tc.payload)
			ev := c.ExpectError(tc.err)
			if string(ev.Tag) != strconv.Itoa(i) {
				t.Fatalf("case %d: tag %s, want %d", i, ev.Tag, i)
			}
		}
		c.Subscribe(ts.Exchange, "1")
		c.Subscribe(ts.Exchange, "2")
		c.Send("Subscribe", "third", map[string]any{"exchange": ts.Exchange, "routing_key": "3"})
		if ev := c.ExpectError("TooManySubscriptions"); string(ev.Payload["routing_keys"]) != `["3"]` || string(ev.Payload["limit"]) != "2" {
			t.Fatalf("TooManySubscriptions: %s", ev.Raw)
		}
		// An authorizer error is an InternalError that shows nothing.
		c.Send("Unsubscribe", nil, map[string]any{"exchange": ts.Exchange, "routing_key": "1"})
		c.Expect("Unsubscribed")
		c.Send("Subscribe", "b", map[string]any{"exchange": ts.Exchange, "routing_key": "broken"})
		ev := c.Expect("InternalError")
		if string(ev.Tag) != `"b"` || strings.Contains(string(ev.Raw), "secret") || ev.Str("error") != "InternalError" {
			t.Fatalf("authorizer failure: %s", ev.Raw)
		}
	})
}

func TestUnsubscribeForms(t *testing.T) {
	forEachBroker(t, func(t *testing.T, kind string) {
		ts := startServer(t, kind)
		other := testutil.UniqueName("x")
		c := testutil.Dial(t, ts.WS)
		for _, k := range []string{"1", "2", "3", "4"} {
			c.Subscribe(ts.Exchange, k)
		}

		c.Send("Unsubscribe", "u1", map[string]any{"exchange": ts.Exchange, "routing_key": "1"})
		ev := c.Expect("Unsubscribed")
		if string(ev.Tag) != `"u1"` || ev.Str("exchange") != ts.Exchange || ev.Str("exchange_name") != ts.Exchange ||
			ev.Str("routing_key") != "1" || string(ev.Payload["auto"]) != "false" {
			t.Fatalf("Unsubscribed = %s", ev.Raw)
		}
		// Idempotent: not subscribed any more, still answered.
		c.Send("Unsubscribe", "u1b", map[string]any{"exchange": ts.Exchange, "routing_key": "1"})
		if ev := c.Expect("Unsubscribed"); ev.Str("routing_key") != "1" {
			t.Fatalf("idempotent Unsubscribed = %s", ev.Raw)
		}

		c.Send("Unsubscribe", "u2", map[string]any{"exchange": ts.Exchange, "routing_keys": []string{"2"}})
		if ev := c.Expect("Unsubscribed"); ev.Str("routing_key") != "2" || string(ev.Tag) != `"u2"` {
			t.Fatalf("routing_keys form: %s", ev.Raw)
		}

		// The pushes for removed keys no longer arrive; those for kept keys do.
		ts.push(t, "1", "Gone", nil)
		ts.push(t, "3", "Kept", nil)
		if ev := c.Expect("Kept"); ev.MQ.RK != "3" {
			t.Fatalf("got %s", ev.Raw)
		}

		c.Send("Unsubscribe", "u3", map[string]any{"exchange": ts.Exchange})
		keys := map[string]bool{}
		for range 2 {
			ev := c.Expect("Unsubscribed")
			keys[ev.Str("routing_key")] = true
		}
		if !keys["3"] || !keys["4"] {
			t.Fatalf("exchange form removed %v", keys)
		}
		c.Send("Unsubscribe", "u4", map[string]any{"exchange": other})
		if ev := c.Expect("Unsubscribed"); ev.Str("exchange") != other || string(ev.Payload["routing_key"]) != "null" {
			t.Fatalf("nothing removed: %s", ev.Raw)
		}

		c.Subscribe(ts.Exchange, "5")
		c.Send("Unsubscribe", "all", nil)
		if ev := c.Expect("Unsubscribed"); ev.Str("routing_key") != "5" || string(ev.Tag) != `"all"` {
			t.Fatalf("{} form: %s", ev.Raw)
		}
		c.Send("Unsubscribe", "none", map[string]any{})
		if ev := c.Expect("Unsubscribed"); string(ev.Payload["exchange"]) != "null" || string(ev.Payload["exchange_name"]) != "null" {
			t.Fatalf("{} with nothing: %s", ev.Raw)
		}
		c.Send("ListSubscriptions", nil, nil)
		if ev := c.Expect("YourSubscriptions"); string(ev.Payload["subscriptions"]) != "{}" {
			t.Fatalf("left: %s", ev.Raw)
		}
	})
}

func TestBadFrames(t *testing.T) {
	forEachBroker(t, func(t *testing.T, kind string) {
		ts := startServer(t, kind)
		c := testutil.Dial(t, ts.WS)
		for _, frame := range []string{"not json", "[1,2]", "42", `"str"`, "{", ""} {
			c.SendRaw(frame)
			if ev := c.ExpectError("InvalidJSON"); string(ev.Tag) != "null" {
				t.Fatalf("%q: %s", frame, ev.Raw)
			}
		}
		c.SendRaw(`{"action":"NoSuchThing","tag":{"n":1}}`)
		if ev := c.ExpectError("InvalidAction"); string(ev.Tag) != `{"n":1}` {
			t.Fatalf("unknown action: %s", ev.Raw)
		}
		c.SendRaw(`{"tag":"t"}`)
		if ev := c.ExpectError("InvalidAction"); string(ev.Tag) != `"t"` {
			t.Fatalf("missing action: %s", ev.Raw)
		}
		c.SendRaw(`{"action":"Ping","tag":"p","payload":[1]}`)
		if ev := c.ExpectError("InvalidPayload"); string(ev.Tag) != `"p"` {
			t.Fatalf("array payload: %s", ev.Raw)
		}
		// Binary frames are read as text, as 1.x did.
		if err := c.Conn.WriteMessage(websocket.BinaryMessage, []byte(`{"action":"Ping","tag":"bin"}`)); err != nil {
			t.Fatal(err)
		}
		if ev := c.Expect("Pong"); string(ev.Tag) != `"bin"` {
			t.Fatalf("binary Ping: %s", ev.Raw)
		}
		// The session is still fine.
		c.Send("Ping", "p2", nil)
		ev := c.Expect("Pong")
		var at int64
		if err := json.Unmarshal(ev.Payload["time"], &at); err != nil || time.Since(time.Unix(at, 0)).Abs() > time.Minute {
			t.Fatalf("Pong time: %s", ev.Raw)
		}
	})
}

func TestApplicationActions(t *testing.T) {
	forEachBroker(t, func(t *testing.T, kind string) {
		ts := startServer(t, kind)
		c := testutil.Dial(t, ts.WS)
		bystander := testutil.Dial(t, ts.WS)
		bystander.Subscribe(ts.Exchange, "b")

		c.Send("Whoami", "w", nil)
		if ev := c.ExpectError("AuthRequired"); string(ev.Tag) != `"w"` {
			t.Fatalf("AuthRequired tag: %s", ev.Raw)
		}
		c.Send("Authenticate", "a", map[string]string{"session_token": "wrong"})
		if ev := c.ExpectError("InvalidSessionToken"); string(ev.Tag) != `"a"` {
			t.Fatalf("bad token: %s", ev.Raw)
		}
		c.Send("Subscribe", "s", map[string]any{"exchange": ts.Exchange, "routing_key": "secret"})
		c.ExpectError("SubscriptionDenied")

		c.Send("Authenticate", "a2", map[string]string{"session_token": "alice-token"})
		if ev := c.Expect("Authenticated"); ev.Str("username") != "alice" || string(ev.Tag) != `"a2"` {
			t.Fatalf("Authenticated: %s", ev.Raw)
		}
		c.Send("Whoami", "w2", nil)
		ev := c.Expect("You")
		if ev.Str("user") != "alice" || ev.Str("id") != c.Welcome.Str("id") || ev.Str("ip") != "127.0.0.1" {
			t.Fatalf("You: %s", ev.Raw)
		}
		c.Subscribe(ts.Exchange, "secret")

		c.Send("Refuse", "r", nil)
		ev = c.ExpectError("NotToday")
		if string(ev.Payload["retry_in"]) != "5" || string(ev.Tag) != `"r"` {
			t.Fatalf("ClientError details: %s", ev.Raw)
		}
		for _, action := range []string{"Panic", "Fail"} {
			c.Send(action, action, nil)
			ev := c.Expect("InternalError")
			if string(ev.Tag) != `"`+action+`"` || ev.Str("error") != "InternalError" || strings.Contains(string(ev.Raw), "secret") {
				t.Fatalf("%s: %s", action, ev.Raw)
			}
		}
		// Neither this session nor the other was harmed.
		ts.push(t, "b", "StillHere", nil)
		bystander.Expect("StillHere")
		ts.push(t, "secret", "AlsoHere", nil)
		c.Expect("AlsoHere")
	})
}

func TestReauthorization(t *testing.T) {
	forEachBroker(t, func(t *testing.T, kind string) {
		ts := startServer(t, kind, func(c *myxi.Config) { c.ReauthorizeInterval = 50 * time.Millisecond })
		c := testutil.Dial(t, ts.WS)
		c.Subscribe(ts.Exchange, "revocable")
		c.Subscribe(ts.Exchange, "open")
		ts.revoked.Store(true)
		ev := c.Expect("Unsubscribed")
		if ev.Str("routing_key") != "revocable" || string(ev.Payload["auto"]) != "true" || string(ev.Tag) != "null" {
			t.Fatalf("auto Unsubscribed: %s", ev.Raw)
		}
		ts.push(t, "revocable", "Revoked", nil)
		ts.push(t, "open", "Open", nil)
		c.Expect("Open")
	})
}

func TestFrameTooLarge(t *testing.T) {
	forEachBroker(t, func(t *testing.T, kind string) {
		ts := startServer(t, kind, func(c *myxi.Config) { c.Limits.MaxFrameBytes = 1024 })
		c := testutil.Dial(t, ts.WS)
		c.SendRaw(`{"action":"Ping","payload":{"pad":"` + strings.Repeat("x", 2048) + `"}}`)
		_, err := c.NextWithin(5 * time.Second)
		if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
			t.Fatalf("want close 1009, got %v", err)
		}
		// The server lives on.
		testutil.Dial(t, ts.WS).Send("Ping", nil, nil)
	})
}

func TestShutdownDrains(t *testing.T) {
	ts := startServer(t, "memory", func(c *myxi.Config) { c.DrainPeriod = 200 * time.Millisecond })
	var clients []*testutil.Client
	for range 5 {
		clients = append(clients, testutil.Dial(t, ts.WS))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := ts.Srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	took := time.Since(start)
	for _, c := range clients {
		_, err := c.NextWithin(2 * time.Second)
		if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Fatalf("want close 1001, got %v", err)
		}
	}
	if took < 100*time.Millisecond || took > 3*time.Second {
		t.Fatalf("drain took %v for a 200ms drain period", took)
	}
	if n := ts.Srv.Sessions(); n != 0 {
		t.Fatalf("%d sessions left after Shutdown", n)
	}
	resp, err := http.Get(ts.HTTP + "/readyz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("/readyz still OK after Shutdown")
		}
	}
}

func TestOrigins(t *testing.T) {
	ts := startServer(t, "memory", func(c *myxi.Config) { c.AllowedOrigins = []string{"*.example.com"} })
	for origin, want := range map[string]int{
		"http://localhost:3000":       http.StatusSwitchingProtocols,
		"http://127.0.0.1:8080":       http.StatusSwitchingProtocols,
		"https://app.example.com":     http.StatusSwitchingProtocols,
		"https://evil.example.org":    http.StatusForbidden,
		"https://example.com.evil.io": http.StatusForbidden,
	} {
		h := http.Header{"Origin": {origin}}
		conn, resp, err := websocket.DefaultDialer.Dial(ts.WS, h)
		if conn != nil {
			conn.Close()
		}
		if resp == nil {
			t.Fatalf("%s: no response: %v", origin, err)
		}
		if resp.StatusCode != want {
			t.Fatalf("origin %s: HTTP %d, want %d", origin, resp.StatusCode, want)
		}
	}
}

func TestHTTPEndpoints(t *testing.T) {
	ts := startServer(t, "memory")
	for path, want := range map[string]int{
		"/healthz": 200, "/readyz": 200, "/": 200, "/ws": http.StatusUpgradeRequired, "/metrics": 404, "/myxi.js": 200,
	} {
		resp, err := http.Get(ts.HTTP + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
		if path == "/myxi.js" {
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") {
				t.Fatalf("/myxi.js content type %q", ct)
			}
			etag := resp.Header.Get("ETag")
			req, _ := http.NewRequest(http.MethodGet, ts.HTTP+path, nil)
			req.Header.Set("If-None-Match", etag)
			resp2, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp2.Body.Close()
			if etag == "" || resp2.StatusCode != http.StatusNotModified {
				t.Fatalf("ETag %q revalidation: %d", etag, resp2.StatusCode)
			}
		}
	}
}

// TestTwoNodes runs two nodes on one RabbitMQ: a push reaches subscribers
// on both, and once a node's last subscriber of a key leaves, its binding
// is gone (an unroutable publish comes back).
func TestTwoNodes(t *testing.T) {
	a := startServer(t, "rabbitmq")
	b := startServer(t, "rabbitmq", func(c *myxi.Config) {
		// Same exchange as node a.
		for name := range c.Exchanges {
			delete(c.Exchanges, name)
		}
		c.Exchanges[a.Exchange] = myxi.AllowAll
	})
	b.Exchange = a.Exchange
	ca := testutil.Dial(t, a.WS)
	cb := testutil.Dial(t, b.WS)
	ca.Subscribe(a.Exchange, "k")
	cb.Subscribe(a.Exchange, "k")
	a.push(t, "k", "FromA", map[string]int{"n": 1})
	ca.Expect("FromA")
	cb.Expect("FromA")

	// 1.x's push_event format, published by a raw AMQP client.
	pub := newRawPublisher(t, a.RabbitURL)
	pub.publish(t, a.Exchange, "k", `{"event":"WidgetQtyChanged","payload":{"quantity":5},"tag":"app","extra":[1, 2]}`)
	for _, c := range []*testutil.Client{ca, cb} {
		ev := c.Expect("WidgetQtyChanged")
		if string(ev.Tag) != `"app"` || string(ev.Payload["quantity"]) != "5" || !strings.Contains(string(ev.Raw), `"extra":[1,2]`) {
			t.Fatalf("1.x body: %s", ev.Raw)
		}
	}
	// A body that is not an event is dropped, never forwarded.
	pub.publish(t, a.Exchange, "k", `not json`)
	pub.publish(t, a.Exchange, "k", `{"payload":{}}`)
	a.push(t, "k", "After", nil)
	ca.Expect("After")
	cb.Expect("After")

	ca.Send("Unsubscribe", nil, map[string]any{"exchange": a.Exchange, "routing_key": "k"})
	ca.Expect("Unsubscribed")
	cb.Send("Unsubscribe", nil, map[string]any{"exchange": a.Exchange, "routing_key": "k"})
	cb.Expect("Unsubscribed")
	if !pub.publish(t, a.Exchange, "k", `{"event":"Nobody"}`) {
		t.Fatal("a push for k still reached a node queue after its last subscribers left")
	}
}

type rawPublisher struct {
	ch      *amqp.Channel
	returns chan amqp.Return
	confirm chan amqp.Confirmation
}

func newRawPublisher(t *testing.T, url string) *rawPublisher {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	return &rawPublisher{
		ch:      ch,
		returns: ch.NotifyReturn(make(chan amqp.Return, 1)),
		confirm: ch.NotifyPublish(make(chan amqp.Confirmation, 1)),
	}
}

// publish publishes body (mandatory, so an unroutable message comes back)
// and reports whether it was returned as unroutable.
func (p *rawPublisher) publish(t *testing.T, exchange, key, body string) (returned bool) {
	t.Helper()
	err := p.ch.Publish(exchange, key, true, false, amqp.Publishing{ContentType: "application/json", Body: []byte(body)})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-p.confirm:
		if !c.Ack {
			t.Fatal("publish nacked")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no confirm from RabbitMQ")
	}
	// RabbitMQ sends basic.return before the confirm of the same message,
	// and the client dispatches them in that order.
	select {
	case <-p.returns:
		returned = true
	default:
	}
	return returned
}

func TestPushErrors(t *testing.T) {
	ts := startServer(t, "memory")
	ctx := context.Background()
	if err := ts.Srv.Push(ctx, "nope", "k", "E", nil); !errors.Is(err, myxi.ErrUnknownExchange) {
		t.Fatalf("unknown exchange: %v", err)
	}
	if err := ts.Srv.Push(ctx, ts.Exchange, strings.Repeat("k", 256), "E", nil); err == nil {
		t.Fatal("a routing key over 255 bytes must be refused")
	}
	if err := ts.Srv.Push(ctx, ts.Exchange, "k", "", nil); err == nil {
		t.Fatal("an empty event name must be refused")
	}
	if err := ts.Srv.Push(ctx, ts.Exchange, "k", "E", func() {}); err == nil {
		t.Fatal("an unencodable payload must be refused")
	}
}

func TestSessionContextEndsWithSession(t *testing.T) {
	ended := make(chan struct{})
	ts := startServer(t, "memory", func(c *myxi.Config) {
		c.Actions["Watch"] = func(ctx context.Context, s *myxi.Session, _ json.RawMessage) error {
			go func() {
				<-s.Context().Done()
				close(ended)
			}()
			return s.Send("Watching", nil)
		}
	})
	c := testutil.Dial(t, ts.WS)
	c.Send("Watch", nil, nil)
	c.Expect("Watching")
	c.Conn.Close()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the session's context did not end with the session")
	}
}
