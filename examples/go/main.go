// Command go is the README's "Use it from Go" example as a complete
// program: a Myxi server with the widgets exchange of the myxi 1.x README
// (who may subscribe is decided per widget), the Authenticate and SayHello
// actions, and a push after each (simulated) save of widget 42.
//
//	go run ./examples/go                 # ws://localhost:5005/, embedded broker
//	MYXI_PORT=5006 go run ./examples/go  # another port; RABBITMQ_URL for RabbitMQ
//
// Sign in with the session token "alice-token", subscribe to widgets/42,
// and a WidgetQtyChanged event arrives every -every (2s).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/myxi/myxi"
)

// User and Widget stand for your application's models.
type User struct{ Name string }

type Widget struct {
	ID      string
	Owner   string
	Private bool
}

// VisibleTo is the application's rule: public widgets for everyone
// signed in, private ones for their owner.
func (w *Widget) VisibleTo(u any) bool {
	user, ok := u.(*User)
	return ok && (!w.Private || w.Owner == user.Name)
}

var (
	users   = map[string]*User{"alice-token": {Name: "alice"}, "bob-token": {Name: "bob"}}
	widgets = map[string]*Widget{"42": {ID: "42", Owner: "alice"}, "43": {ID: "43", Owner: "alice", Private: true}}
)

func loadWidget(ctx context.Context, routingKey string) (*Widget, bool, error) {
	w, ok := widgets[routingKey]
	return w, ok, nil
}

func lookUp(payload json.RawMessage) (*User, bool) {
	var p struct {
		SessionToken string `json:"session_token"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, false
	}
	u, ok := users[p.SessionToken]
	return u, ok
}

func sayHello(ctx context.Context, s *myxi.Session, payload json.RawMessage) error {
	return s.Send("Hello", map[string]any{"username": s.User().(*User).Name, "time": time.Now().Unix()})
}

func main() {
	every := flag.Duration("every", 2*time.Second, "how often widget 42 is \"saved\" (and pushed)")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger, *every); err != nil && !errors.Is(err, context.Canceled) {
		logger.Error("stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *slog.Logger, every time.Duration) error {
	cfg, err := myxi.ConfigFromEnv(logger) // MYXI_PORT, RABBITMQ_URL...
	if err != nil {
		return err
	}
	cfg.Exchanges = map[string]myxi.AuthorizeFunc{
		// Who may subscribe to which widget: the loader turns the routing
		// key into your object, the authorizer decides for that object.
		"widgets": myxi.ModelAuthorizer(loadWidget,
			func(ctx context.Context, s *myxi.Session, w *Widget) (bool, error) {
				return w.VisibleTo(s.User()), nil
			}),
	}
	// Events pushed to widgets are kept for 10 minutes: a client that
	// reconnects gets the ones it missed, in order (the JavaScript client
	// resubscribes from its last position by itself).
	cfg.History = map[string]myxi.History{"widgets": {MaxAge: 10 * time.Minute}}
	cfg.Actions = map[string]myxi.ActionHandler{
		"Authenticate": func(ctx context.Context, s *myxi.Session, payload json.RawMessage) error {
			user, ok := lookUp(payload)
			if !ok {
				return &myxi.ClientError{Name: "InvalidSessionToken"} // Error {"error": "InvalidSessionToken"}
			}
			s.SetUser(user)
			return s.Send("Authenticated", map[string]string{"username": user.Name})
		},
		"SayHello": myxi.AuthRequired(sayHello), // AuthRequired unless authenticated
	}
	srv, err := myxi.New(cfg)
	if err != nil {
		return err
	}

	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe(ctx) }() // :5005; drains on ctx end
	// Ready: listening, exchanges declared. A listen error (port in use)
	// comes back here, and so does ctx's end (SIGTERM) before that.
	if err := srv.WaitReady(ctx); err != nil {
		return err
	}
	logger.Info("ready: sign in with session_token alice-token, subscribe to widgets/42")

	// After a widget is saved, anywhere in your application:
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for quantity := 1; ; quantity++ {
		select {
		case <-ticker.C:
		case err := <-served:
			return err
		}
		err = srv.Push(ctx, "widgets", "42", "WidgetQtyChanged", map[string]int{"quantity": quantity})
		if err != nil && ctx.Err() == nil {
			logger.Warn("push failed", "err", err)
		}
	}
}
