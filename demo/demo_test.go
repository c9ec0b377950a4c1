package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/labstack/echo/v4"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/broker/memory"
)

// startDemo wires the demo as main does, on the embedded broker, behind an
// httptest server.
func startDemo(t *testing.T) (*httptest.Server, *Store) {
	t.Helper()
	store := openTestStore(t, filepath.Join(t.TempDir(), "w.db"))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := myxi.New(myxi.Config{Exchanges: exchanges(store), Actions: actions(store), History: history(nil), Logger: log, DrainPeriod: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	store.AfterSave(pushQuantity(srv))
	e := echo.New()
	srv.Mount(e)
	routes(e, store, nodeInfo{NodeID: "test", Broker: "embedded"}, log)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(e)
	t.Cleanup(func() {
		ts.Close()
		_ = srv.Shutdown(context.Background())
	})
	return ts, store
}

type client struct {
	t  *testing.T
	ws *websocket.Conn
}

func dial(t *testing.T, ts *httptest.Server) *client {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	c := &client{t, ws}
	c.expect("Welcome", "")
	return c
}

func (c *client) send(action string, payload any) {
	c.t.Helper()
	if err := c.ws.WriteJSON(map[string]any{"action": action, "tag": action, "payload": payload}); err != nil {
		c.t.Fatal(err)
	}
}

// event is one event from the server; Mq is set on an exchange's events.
type event struct {
	Event   string          `json:"event"`
	Payload json.RawMessage `json:"payload"`
	Mq      *struct {
		E  string `json:"e"`
		Rk string `json:"rk"`
		O  *int64 `json:"o"`
		Ep string `json:"ep"`
	} `json:"mq"`
}

// expect reads the next event and checks its name and, unless empty, its
// payload.
func (c *client) expect(name, payload string) json.RawMessage {
	c.t.Helper()
	return c.expectEvent(name, payload).Payload
}

func (c *client) expectEvent(name, payload string) event {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got event
	if err := c.ws.ReadJSON(&got); err != nil {
		c.t.Fatalf("waiting for %s: %v", name, err)
	}
	if got.Event != name || (payload != "" && string(got.Payload) != payload) {
		c.t.Fatalf("got %s %s, want %s %s", got.Event, got.Payload, name, payload)
	}
	return got
}

// The seed README's flow: Authenticate, SayHello, a denied and an allowed
// subscription, and the push after a change saved through the HTTP API.
func TestReadmeFlow(t *testing.T) {
	ts, _ := startDemo(t)
	c := dial(t, ts)

	c.send("SayHello", map[string]string{"name": "Adam"})
	c.expect("Error", `{"error":"AuthRequired"}`) // the README wraps it in AuthRequired
	c.send("Authenticate", map[string]string{"session_token": "wrong"})
	c.expect("Error", `{"error":"InvalidSessionToken"}`)
	c.send("Subscribe", map[string]string{"exchange": "widgets", "routing_key": "1"})
	c.expect("Error", `{"error":"SubscriptionDenied","exchange":"widgets","message":"the exchange's authorizer refused this key to this session","routing_key":"1"}`) // anonymous
	c.send("Authenticate", map[string]string{"session_token": "alice-token"})
	c.expect("Authenticated", `{"username":"alice"}`)

	c.send("SayHello", map[string]string{"name": "Adam"})
	var hello struct{ Time time.Time }
	if err := json.Unmarshal(c.expect("HelloThere", ""), &hello); err != nil || time.Since(hello.Time).Abs() > time.Minute {
		t.Errorf("HelloThere time %v (%v)", hello.Time, err)
	}

	c.send("Subscribe", map[string]string{"exchange": "widgets", "routing_key": "4"})
	c.expect("Error", `{"error":"SubscriptionDenied","exchange":"widgets","message":"the exchange's authorizer refused this key to this session","routing_key":"4"}`)
	c.send("Subscribe", map[string]string{"exchange": "widgets", "routing_key": "1"})
	var subscribed struct {
		Exchange   string `json:"exchange"`
		RoutingKey string `json:"routing_key"`
		Epoch      string `json:"epoch"`
	}
	if err := json.Unmarshal(c.expect("Subscribed", ""), &subscribed); err != nil || subscribed.Exchange != "widgets" || subscribed.RoutingKey != "1" || subscribed.Epoch == "" {
		t.Fatalf("Subscribed %+v (%v), want widgets/1 with an epoch (the exchange keeps a history)", subscribed, err)
	}

	if code, body := post(t, ts, "/api/widgets/1", "bob-token", `{"delta": 3}`); code != http.StatusOK {
		t.Fatalf("POST: %d %s", code, body)
	}
	c.expect("WidgetQtyChanged", `{"quantity":15}`)
}

func TestAPI(t *testing.T) {
	ts, _ := startDemo(t)
	cases := []struct {
		path, token, body string
		code              int
	}{
		{"/api/widgets/1", "", `{"delta": 1}`, http.StatusUnauthorized},
		{"/api/widgets/1", "alice-token", `{}`, http.StatusBadRequest},
		{"/api/widgets/1", "alice-token", `{"delta": 1, "quantity": 2}`, http.StatusBadRequest},
		{"/api/widgets/4", "alice-token", `{"delta": 1}`, http.StatusNotFound}, // bob's private widget
		{"/api/widgets/x", "alice-token", `{"delta": 1}`, http.StatusNotFound},
		{"/api/widgets/1", "alice-token", `{"quantity": -1}`, http.StatusUnprocessableEntity},
		{"/api/widgets/1", "alice-token", `{"quantity": 2}`, http.StatusOK},
	}
	for _, tc := range cases {
		if code, body := post(t, ts, tc.path, tc.token, tc.body); code != tc.code {
			t.Errorf("POST %s %s as %q: %d %s, want %d", tc.path, tc.body, tc.token, code, body, tc.code)
		}
	}

	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/", nil)
	req.Host = "widgets.example:8080"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`<meta name="myxi-host" content="ws://widgets.example:8080/">`, `<script src="/myxi.js">`, `alice-token`} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("page lacks %s", want)
		}
	}
}

func post(t *testing.T, ts *httptest.Server, path, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ts.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHTTPTimeouts: the demo's server closes idle and slow connections.
func TestHTTPTimeouts(t *testing.T) {
	hs := newHTTPServer(http.NotFoundHandler())
	if hs.ReadHeaderTimeout <= 0 || hs.ReadTimeout <= 0 || hs.WriteTimeout <= 0 || hs.IdleTimeout <= 0 {
		t.Fatalf("timeouts: header %v, read %v, write %v, idle %v", hs.ReadHeaderTimeout, hs.ReadTimeout, hs.WriteTimeout, hs.IdleTimeout)
	}
}

// position is a Subscribe's "since".
type position struct {
	Offset int64  `json:"offset"`
	Epoch  string `json:"epoch"`
}

// subscribeSince authenticates c as alice and subscribes it to widgets/1,
// from since when it is not nil, and returns Subscribed's payload.
func (c *client) subscribeSince(since *position) (recovered *bool, at position) {
	c.t.Helper()
	c.send("Authenticate", map[string]string{"session_token": "alice-token"})
	c.expect("Authenticated", `{"username":"alice"}`)
	subscribe := map[string]any{"exchange": "widgets", "routing_key": "1"}
	if since != nil {
		subscribe["since"] = since
	}
	c.send("Subscribe", subscribe)
	var got struct {
		Recovered *bool `json:"recovered"`
		position
	}
	if err := json.Unmarshal(c.expect("Subscribed", ""), &got); err != nil || got.Epoch == "" {
		c.t.Fatalf("Subscribed: %+v (%v), want an epoch", got, err)
	}
	return got.Recovered, got.position
}

// The widgets exchange keeps a history: a page that comes back from its
// last position gets the changes it missed, in order, then live ones; one
// whose position is of another history is told to reload.
func TestMissedChangesReplayed(t *testing.T) {
	ts, _ := startDemo(t)
	c := dial(t, ts)
	if recovered, _ := c.subscribeSince(nil); recovered != nil {
		t.Fatalf("recovered = %v on a Subscribe without since", *recovered)
	}
	if code, body := post(t, ts, "/api/widgets/1", "bob-token", `{"quantity": 20}`); code != http.StatusOK {
		t.Fatalf("POST: %d %s", code, body)
	}
	live := c.expectEvent("WidgetQtyChanged", `{"quantity":20}`)
	if live.Mq == nil || live.Mq.O == nil || live.Mq.Ep == "" {
		t.Fatalf("live event without a position: %+v", live.Mq)
	}
	last := position{Offset: *live.Mq.O, Epoch: live.Mq.Ep}
	c.ws.Close() // the page goes offline

	for _, q := range []string{`{"quantity": 21}`, `{"quantity": 22}`} {
		if code, body := post(t, ts, "/api/widgets/1", "bob-token", q); code != http.StatusOK {
			t.Fatalf("POST: %d %s", code, body)
		}
	}

	back := dial(t, ts)
	recovered, _ := back.subscribeSince(&last)
	if recovered == nil || !*recovered {
		t.Fatalf("recovered = %v, want true", recovered)
	}
	for _, want := range []string{`{"quantity":21}`, `{"quantity":22}`} {
		ev := back.expectEvent("WidgetQtyChanged", want)
		if ev.Mq == nil || ev.Mq.O == nil || *ev.Mq.O <= last.Offset || ev.Mq.Ep != last.Epoch {
			t.Fatalf("replayed %s at %+v, want after %+v", want, ev.Mq, last)
		}
		last.Offset = *ev.Mq.O
	}
	if code, body := post(t, ts, "/api/widgets/1", "bob-token", `{"quantity": 23}`); code != http.StatusOK {
		t.Fatalf("POST: %d %s", code, body)
	}
	back.expect("WidgetQtyChanged", `{"quantity":23}`)

	// A position of another history (a restarted server has a new epoch):
	// nothing is replayed, the page reloads.
	other := dial(t, ts)
	recovered, at := other.subscribeSince(&position{Offset: 1, Epoch: "an-older-history"})
	if recovered == nil || *recovered || at.Epoch != last.Epoch {
		t.Fatalf("recovered = %v at %+v, want false in epoch %q", recovered, at, last.Epoch)
	}
	if code, body := post(t, ts, "/api/widgets/1", "bob-token", `{"quantity": 24}`); code != http.StatusOK {
		t.Fatalf("POST: %d %s", code, body)
	}
	other.expect("WidgetQtyChanged", `{"quantity":24}`) // the next event is live, none replayed before it
}

// liveOnly is a broker that keeps no history.
type liveOnly struct{ broker.Broker }

func TestHistoryNeedsAHistorian(t *testing.T) {
	if h := history(nil); h[widgetsExchange].MaxAge != historyMaxAge {
		t.Errorf("embedded broker: history %v, want %s for %q", h, historyMaxAge, widgetsExchange)
	}
	if h := history(memory.New()); h[widgetsExchange].MaxAge != historyMaxAge {
		t.Errorf("memory broker: history %v, want %s for %q", h, historyMaxAge, widgetsExchange)
	}
	if h := history(liveOnly{}); h != nil {
		t.Errorf("a broker without history: %v, want none (myxi.New would refuse it)", h)
	}
}
