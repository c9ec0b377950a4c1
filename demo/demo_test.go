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
)

// startDemo wires the demo as main does, on the embedded broker, behind an
// httptest server.
func startDemo(t *testing.T) (*httptest.Server, *Store) {
	t.Helper()
	store := openTestStore(t, filepath.Join(t.TempDir(), "w.db"))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := myxi.New(myxi.Config{Exchanges: exchanges(store), Actions: actions(store), Logger: log, DrainPeriod: time.Millisecond})
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

// expect reads the next event and checks its name and, unless empty, its
// payload.
func (c *client) expect(event, payload string) json.RawMessage {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got struct {
		Event   string          `json:"event"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := c.ws.ReadJSON(&got); err != nil {
		c.t.Fatalf("waiting for %s: %v", event, err)
	}
	if got.Event != event || (payload != "" && string(got.Payload) != payload) {
		c.t.Fatalf("got %s %s, want %s %s", got.Event, got.Payload, event, payload)
	}
	return got.Payload
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
	c.expect("Subscribed", `{"exchange":"widgets","routing_key":"1"}`)

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
