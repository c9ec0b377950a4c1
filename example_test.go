package myxi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/labstack/echo/v4"

	"github.com/myxi/myxi"
)

type widget struct {
	ID    string
	Owner string
}

var widgets = map[string]widget{"1": {"1", "alice"}, "2": {"2", "bob"}}

// A server with a "widgets" exchange whose authorizer works on widgets
// rather than strings, and the Authenticate action of the myxi 1.x README.
func Example() {
	srv, err := myxi.New(myxi.Config{
		Exchanges: map[string]myxi.AuthorizeFunc{
			"widgets": myxi.ModelAuthorizer(
				func(ctx context.Context, key string) (widget, bool, error) {
					w, ok := widgets[key]
					return w, ok, nil
				},
				func(ctx context.Context, s *myxi.Session, w widget) (bool, error) {
					return s.User() == w.Owner, nil
				},
			),
		},
		Actions: map[string]myxi.ActionHandler{
			"Authenticate": func(ctx context.Context, s *myxi.Session, payload json.RawMessage) error {
				var p struct {
					SessionToken string `json:"session_token"`
				}
				if err := json.Unmarshal(payload, &p); err != nil || p.SessionToken != "secret-alice" {
					return &myxi.ClientError{Name: "InvalidSessionToken"}
				}
				s.SetUser("alice")
				return s.Send("Authenticated", map[string]string{"username": "alice"})
			},
		},
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
	read := func() string {
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		var ev struct {
			Event   string          `json:"event"`
			Payload json.RawMessage `json:"payload"`
		}
		if err := ws.ReadJSON(&ev); err != nil {
			return err.Error()
		}
		if ev.Event == "Welcome" {
			return "Welcome"
		}
		return ev.Event + " " + string(ev.Payload)
	}
	fmt.Println(read())
	_ = ws.WriteJSON(map[string]any{"action": "Authenticate", "payload": map[string]string{"session_token": "secret-alice"}})
	fmt.Println(read())
	_ = ws.WriteJSON(map[string]any{"action": "Subscribe", "payload": map[string]string{"exchange": "widgets", "routing_key": "2"}})
	fmt.Println(read())
	_ = ws.WriteJSON(map[string]any{"action": "Subscribe", "payload": map[string]string{"exchange": "widgets", "routing_key": "1"}})
	fmt.Println(read())

	_ = srv.Push(ctx, "widgets", "1", "WidgetQtyChanged", map[string]int{"quantity": 5})
	fmt.Println(read())
	// Output:
	// Welcome
	// Authenticated {"username":"alice"}
	// Error {"error":"SubscriptionDenied","exchange":"widgets","message":"the exchange's authorizer refused this key to this session","routing_key":"2"}
	// Subscribed {"exchange":"widgets","routing_key":"1"}
	// WidgetQtyChanged {"quantity":5}
}

// Mounting Myxi into an application's own echo server: the page at "/"
// is the application's; WebSocket upgrades at "/" and "/ws" are Myxi's.
func ExampleServer_Mount() {
	srv, err := myxi.New(myxi.Config{
		Exchanges: map[string]myxi.AuthorizeFunc{"news": myxi.AllowAll},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	e := echo.New()
	e.GET("/", func(c echo.Context) error { return c.HTML(200, "<h1>My app</h1>") })
	srv.Mount(e)
	if err := srv.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Shutdown(context.Background())

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go e.Server.Serve(ln)
	defer e.Close()

	ws, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ws.Close()
	_, welcome, _ := ws.ReadMessage()
	fmt.Println(strings.Contains(string(welcome), `"event":"Welcome"`))
	// Output: true
}
