package main

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/myxi/myxi"
)

// The Myxi side of the demo, as the myxi 1.x README sets it up: the
// widgets exchange, the Authenticate and SayHello actions, and the
// WidgetQtyChanged push after a widget's quantity is saved.

const widgetsExchange = "widgets"

// exchanges: a user may subscribe to widgets/<id> only for a widget that
// user may see. An anonymous session sees none.
func exchanges(store *Store) map[string]myxi.AuthorizeFunc {
	return map[string]myxi.AuthorizeFunc{
		widgetsExchange: myxi.ModelAuthorizer(
			func(ctx context.Context, routingKey string) (Widget, bool, error) {
				id, err := strconv.ParseInt(routingKey, 10, 64)
				if err != nil {
					return Widget{}, false, nil // not a widget id: nothing to see
				}
				return store.Widget(ctx, id)
			},
			func(ctx context.Context, s *myxi.Session, w Widget) (bool, error) {
				u, ok := s.User().(User)
				return ok && w.VisibleTo(u), nil
			},
		),
	}
}

func actions(store *Store) map[string]myxi.ActionHandler {
	return map[string]myxi.ActionHandler{
		"Authenticate": authenticate(store),
		// As the README wraps it: anonymous sessions get AuthRequired.
		"SayHello": myxi.AuthRequired(sayHello),
	}
}

// authenticate looks the session token up and, when it is valid, makes the
// session that user: every later subscription is checked as that user.
func authenticate(store *Store) myxi.ActionHandler {
	return func(ctx context.Context, s *myxi.Session, payload json.RawMessage) error {
		var p struct {
			SessionToken string `json:"session_token"`
		}
		if err := json.Unmarshal(payload, &p); err != nil || p.SessionToken == "" {
			return &myxi.ClientError{Name: "InvalidSessionToken"}
		}
		u, found, err := store.UserByToken(ctx, p.SessionToken)
		if err != nil {
			return err // logged; the client gets InternalError
		}
		if !found {
			return &myxi.ClientError{Name: "InvalidSessionToken"}
		}
		s.SetUser(u)
		return s.Send("Authenticated", map[string]string{"username": u.Username})
	}
}

func sayHello(ctx context.Context, s *myxi.Session, payload json.RawMessage) error {
	return s.Send("HelloThere", map[string]string{"time": time.Now().UTC().Format(time.RFC3339Nano)})
}

// pushQuantity is the after-save hook: it tells every subscriber of
// widgets/<id>, on every node sharing the broker, the new quantity.
func pushQuantity(p myxi.Pusher) AfterSaveFunc {
	return func(ctx context.Context, before, after Widget) error {
		key := strconv.FormatInt(after.ID, 10)
		return p.Push(ctx, widgetsExchange, key, "WidgetQtyChanged", map[string]int{"quantity": after.Quantity})
	}
}
