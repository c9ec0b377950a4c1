package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/gorilla/websocket"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/auth/webhook"
)

// An application (here a Go handler; any language will do) authenticates
// sessions, decides who may subscribe to "orders", and answers the custom
// action SayHello, all over HTTP.
func Example() {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, "not Myxi", http.StatusForbidden)
			return
		}
		var req struct {
			User    any `json:"user"`
			Payload struct {
				Password string `json:"password"`
				Name     string `json:"name"`
			} `json:"payload"`
			RoutingKey string `json:"routing_key"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/authenticate":
			if req.Payload.Password == "open sesame" {
				fmt.Fprint(w, `{"user": "alice"}`)
				return
			}
			fmt.Fprint(w, `{"error": "WrongPassword"}`)
		case "/subscribe":
			fmt.Fprintf(w, `{"allow": %t}`, req.User == "alice" && req.RoutingKey == "7")
		case "/say-hello":
			fmt.Fprintf(w, `{"events": [{"event": "Hello", "payload": {"text": "Hello, %s, from %s"}}]}`, req.Payload.Name, req.User)
		}
	}))
	defer app.Close()

	hooks := webhook.New(webhook.Config{Secret: "s3cret", Timeout: 2 * time.Second})
	defer hooks.Close()
	authenticate, err1 := hooks.AuthAction("Authenticate", webhook.Endpoint{URL: app.URL + "/authenticate"})
	orders, err2 := hooks.Authorizer("orders", webhook.Policy{URL: app.URL + "/subscribe", CacheTTL: 30 * time.Second})
	sayHello, err3 := hooks.Action("SayHello", webhook.Endpoint{URL: app.URL + "/say-hello"})
	if err1 != nil || err2 != nil || err3 != nil {
		fmt.Println(err1, err2, err3)
		return
	}
	srv, err := myxi.New(myxi.Config{
		Exchanges: map[string]myxi.AuthorizeFunc{"orders": orders},
		Actions:   map[string]myxi.ActionHandler{"Authenticate": authenticate, "SayHello": sayHello},
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { stop(); <-done }()

	ws, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ws.Close()
	exchange := func(action string, tag int, payload any) {
		_ = ws.WriteJSON(map[string]any{"action": action, "tag": tag, "payload": payload})
		var ev struct {
			Event   string          `json:"event"`
			Tag     int             `json:"tag"`
			Payload json.RawMessage `json:"payload"`
		}
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := ws.ReadJSON(&ev); err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(ev.Tag, ev.Event, string(ev.Payload))
	}
	_, _, _ = ws.ReadMessage() // Welcome
	exchange("Authenticate", 1, map[string]string{"password": "guess"})
	exchange("Authenticate", 2, map[string]string{"password": "open sesame"})
	exchange("Subscribe", 3, map[string]string{"exchange": "orders", "routing_key": "7"})
	exchange("Subscribe", 4, map[string]string{"exchange": "orders", "routing_key": "8"})
	exchange("SayHello", 5, map[string]string{"name": "Bob"})
	// Output:
	// 1 Error {"error":"WrongPassword"}
	// 2 Authenticated {"username":"alice"}
	// 3 Subscribed {"exchange":"orders","routing_key":"7"}
	// 4 Error {"error":"SubscriptionDenied","exchange":"orders","message":"the exchange's authorizer refused this key to this session","routing_key":"8"}
	// 5 Hello {"text":"Hello, Bob, from alice"}
}
