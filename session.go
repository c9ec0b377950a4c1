package myxi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"

	"github.com/myxi/myxi/internal/protocol"
)

// AuthorizeFunc decides whether session s may subscribe to routingKey of
// an exchange. An error (other than a *ClientError) is logged and the
// client gets InternalError; false means SubscriptionDenied.
type AuthorizeFunc func(ctx context.Context, s *Session, routingKey string) (bool, error)

// AllowAll is the authorizer of a public exchange.
func AllowAll(context.Context, *Session, string) (bool, error) { return true, nil }

// AuthenticatedOnly lets every authenticated session subscribe to any key.
func AuthenticatedOnly(_ context.Context, s *Session, _ string) (bool, error) {
	return s.Authenticated(), nil
}

// ModelAuthorizer builds an authorizer that works on the application's
// objects rather than strings, like myxi 1.x's model exchanges: load turns
// the routing key into the object (found=false denies the subscription),
// and allow decides for that object.
func ModelAuthorizer[T any](
	load func(ctx context.Context, routingKey string) (model T, found bool, err error),
	allow func(ctx context.Context, s *Session, model T) (bool, error),
) AuthorizeFunc {
	return func(ctx context.Context, s *Session, routingKey string) (bool, error) {
		model, found, err := load(ctx, routingKey)
		if err != nil || !found {
			return false, err
		}
		return allow(ctx, s, model)
	}
}

// ActionHandler runs one client action. payload is the action's raw JSON
// object ("{}" when the client sent none). Replies go through s.Send,
// which tags them with the action's tag. Returning a *ClientError sends
// it as an Error event; any other error, or a panic, is logged and the
// client gets InternalError without details.
//
// Handlers of one session run one at a time, in the order the client sent
// the actions; ctx ends when the session closes or the ActionTimeout
// passes.
type ActionHandler func(ctx context.Context, s *Session, payload json.RawMessage) error

// AuthRequired wraps h so that it answers AuthRequired unless the session
// is authenticated.
func AuthRequired(h ActionHandler) ActionHandler {
	return func(ctx context.Context, s *Session, payload json.RawMessage) error {
		if !s.Authenticated() {
			return ErrAuthRequired
		}
		return h(ctx, s, payload)
	}
}

// ClientError is an error the client may see: it is sent as
// Error {"error": Name, ...Details} with the action's tag.
type ClientError struct {
	Name    string
	Message string // optional: a sentence naming the field and the reason, for people reading logs
	Details map[string]any
}

func (e *ClientError) Error() string { return "myxi client error: " + e.Name }

// ErrAuthRequired is returned by actions that need an authenticated
// session; the client gets Error {"error": "AuthRequired"}.
var ErrAuthRequired = &ClientError{Name: protocol.ErrAuthRequired}

// ErrSessionClosed is returned by Send once the session has ended.
var ErrSessionClosed = errors.New("myxi: session closed")

// ErrSlowClient is returned by Send when the client's send queue is full;
// the session is then being closed (code 1008).
var ErrSlowClient = errors.New("myxi: client too slow, send queue full")

// Session is one client connection, as seen by authorizers and actions.
// All its methods are safe for concurrent use. Inside an action handler,
// Send replies with that action's tag; elsewhere events are untagged.
type Session struct {
	c   *conn
	tag json.RawMessage
}

// sessionState is the part of a session the application reads and writes.
type sessionState struct {
	mu       sync.RWMutex
	user     any
	authed   bool
	values   map[string]any
	onClose  []func()
	closed   bool
	remoteIP string
	header   http.Header // only Config.KeepHeaders, copied at the upgrade
}

// Context ends when the session ends: for work an action starts that
// should not outlive the session (timers, watches).
func (s *Session) Context() context.Context { return s.c.ctx }

// ID is the session id sent to the client in Welcome (16 hex chars).
func (s *Session) ID() string { return s.c.id }

// RemoteIP is the client's address: the TCP peer, or the address a
// trusted proxy put in X-Forwarded-For.
func (s *Session) RemoteIP() string { return s.c.state.remoteIP }

// Header returns a request header of the WebSocket handshake. Only the
// headers named in Config.KeepHeaders are kept for the session's life
// (by default Cookie, User-Agent and Authorization); any other name
// returns "".
func (s *Session) Header(name string) string { return s.c.state.header.Get(name) }

// Tag is the tag of the action being handled (null outside a handler).
func (s *Session) Tag() json.RawMessage {
	if s.tag == nil {
		return protocol.Null
	}
	return s.tag
}

// SetUser marks the session as authenticated as user (myxi 1.x's
// auth_object). Subscriptions are checked with it from now on.
func (s *Session) SetUser(user any) {
	st := s.c.state
	st.mu.Lock()
	if !st.authed && !st.closed {
		s.c.srv.metrics.authed.Inc()
	}
	st.user, st.authed = user, true
	st.mu.Unlock()
}

// ClearUser makes the session anonymous again.
func (s *Session) ClearUser() {
	st := s.c.state
	st.mu.Lock()
	if st.authed && !st.closed {
		s.c.srv.metrics.authed.Dec()
	}
	st.user, st.authed = nil, false
	st.mu.Unlock()
}

// User returns the authenticated user, or nil.
func (s *Session) User() any {
	st := s.c.state
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.user
}

// Authenticated reports whether SetUser was called (and not cleared).
func (s *Session) Authenticated() bool {
	st := s.c.state
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.authed
}

// Set stores a value in the session's key/value store.
func (s *Session) Set(key string, value any) {
	st := s.c.state
	st.mu.Lock()
	if st.values == nil {
		st.values = make(map[string]any)
	}
	st.values[key] = value
	st.mu.Unlock()
}

// Get reads a value from the session's key/value store.
func (s *Session) Get(key string) (any, bool) {
	st := s.c.state
	st.mu.RLock()
	defer st.mu.RUnlock()
	v, ok := st.values[key]
	return v, ok
}

// Delete removes a value from the session's key/value store.
func (s *Session) Delete(key string) {
	st := s.c.state
	st.mu.Lock()
	delete(st.values, key)
	st.mu.Unlock()
}

// Send sends an event to this client, tagged with the current action's
// tag. payload is encoded as JSON (nil is sent as {}). It never blocks:
// it returns ErrSlowClient when the client's queue is full and
// ErrSessionClosed after the session ended.
func (s *Session) Send(event string, payload any) error {
	return s.c.sendEvent(event, s.tag, payload)
}

// OnClose registers fn to run once the session has ended (in its own
// goroutine's cleanup, after its subscriptions are gone). When the
// session has already ended, fn runs at once.
func (s *Session) OnClose(fn func()) {
	st := s.c.state
	st.mu.Lock()
	if !st.closed {
		st.onClose = append(st.onClose, fn)
		st.mu.Unlock()
		return
	}
	st.mu.Unlock()
	fn()
}

// Close ends the session with close code 4002 and reason: the client is
// expected to come back (the JavaScript client reconnects with jitter),
// for example to authenticate again. The reason is cut to 123 bytes.
func (s *Session) Close(reason string) { s.c.closeWith(closeByApp, reason) }

// Terminate ends the session with close code 4001 and reason: the client
// is told not to come back (the JavaScript client does not reconnect).
// The reason is cut to 123 bytes.
func (s *Session) Terminate(reason string) { s.c.closeWith(closeTerminated, reason) }

// Notify sends an untagged event to this client, whatever action is being
// handled: for events that are not a reply (a token that expired, a
// server-side change).
func (s *Session) Notify(event string, payload any) error {
	return s.c.sendEvent(event, nil, payload)
}

// Reauthorize checks every subscription of this session again now (as the
// periodic check does) and removes the ones its exchange's authorizer
// refuses, telling the client Unsubscribed {auto: true}. Call it after the
// session's user changed.
func (s *Session) Reauthorize(ctx context.Context) { s.c.reauthorize(ctx) }
