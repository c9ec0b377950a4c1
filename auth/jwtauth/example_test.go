package jwtauth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/auth/jwtauth"
)

// A server whose "widgets" exchange lets each user subscribe to the keys
// their token lists, with the built-in Authenticate. The application
// (in any language) mints the tokens with the shared secret.
func Example() {
	secret := []byte("a long random secret, 32+ bytes!")
	auth, err := jwtauth.New(jwtauth.Config{Secret: secret})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv, err := myxi.New(myxi.Config{
		Exchanges: map[string]myxi.AuthorizeFunc{"widgets": auth.Authorizer("widgets")},
		Actions:   map[string]myxi.ActionHandler{"Authenticate": auth.Authenticate},
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

	// The application's side: a token for alice, valid for an hour,
	// granting widgets 1 and every key starting with 9.
	token, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub":  "alice",
		"exp":  time.Now().Add(time.Hour).Unix(),
		"myxi": map[string]any{"subscribe": map[string][]string{"widgets": {"1", "9*"}}},
	}).SignedString(secret)

	// The browser's side.
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ws.Close()
	read := func() string {
		var ev struct {
			Event   string          `json:"event"`
			Payload json.RawMessage `json:"payload"`
		}
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := ws.ReadJSON(&ev); err != nil {
			return err.Error()
		}
		return ev.Event + " " + string(ev.Payload)
	}
	read() // Welcome
	_ = ws.WriteJSON(map[string]any{"action": "Authenticate", "payload": map[string]string{"token": token}})
	fmt.Println(read())
	_ = ws.WriteJSON(map[string]any{"action": "Subscribe", "payload": map[string]string{"exchange": "widgets", "routing_key": "92"}})
	fmt.Println(read())
	_ = ws.WriteJSON(map[string]any{"action": "Subscribe", "payload": map[string]string{"exchange": "widgets", "routing_key": "2"}})
	fmt.Println(read())
	// Output:
	// Authenticated {"username":"alice"}
	// Subscribed {"exchange":"widgets","routing_key":"92"}
	// Error {"error":"SubscriptionDenied","exchange":"widgets","message":"the exchange's authorizer refused this key to this session","routing_key":"2"}
}
