package myxi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/myxi/myxi/internal/protocol"
)

// floodCloseAfter is how long a socket may stay over its action rate
// limit before it is closed (1008).
const floodCloseAfter = 5 * time.Second

// conn is one client session: its protocol state (subscriptions, user,
// rate limits) on top of the transport that owns its socket. The reader
// goroutine (transport.serve) runs its actions one at a time, in order.
type conn struct {
	transport
	srv   *Server
	state *sessionState

	ctx    context.Context // ends when the session starts closing
	cancel context.CancelFunc

	// Rate limits, touched by one goroutine at a time (the reader, or
	// the action goroutine it waits for): one token per frame, and one
	// per routing key that a Subscribe or Unsubscribe names (see newConn
	// for the sizes).
	frames      *rate.Limiter
	keys        *rate.Limiter
	credit      int       // frames a new session may send beyond the frame bucket: see newConn
	firstReject time.Time // start of the current run of refused frames
	lastReject  time.Time
	lastReply   time.Time // of the last RateLimited sent

	// subMu serializes this session's subscription changes. It is held
	// across the broker round trip of a Subscribe (the hub's Bind), so a
	// session's Subscribe and Unsubscribe of one key never overtake each
	// other; it blocks only this session and the periodic re-check.
	subMu      sync.Mutex
	subs       map[string]map[string]json.RawMessage
	nsubs      int
	subsClosed bool
}

func (c *conn) session(tag json.RawMessage) *Session { return &Session{c: c, tag: tag} }

// run serves the session on the calling goroutine until it ends, then
// removes its subscriptions and runs its close callbacks.
func (c *conn) run() {
	err := c.serve(c.handleMessage)
	c.cleanup()
	c.logger().Debug("session ended", "err", err, "close_code", c.closeCode, "close_reason", c.closeReason)
}

func (c *conn) sendEvent(event string, tag json.RawMessage, payload any) error {
	data, err := protocol.EncodeEvent(event, tag, payload)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", event, err)
	}
	return c.send(newFrame(data))
}

// sendError sends Error {"error": name, "message": message, ...details}.
func (c *conn) sendError(tag json.RawMessage, name, message string, details map[string]any) {
	if message != "" {
		if details == nil {
			details = map[string]any{}
		}
		details["message"] = message
	}
	_ = c.sendEvent(protocol.EventError, tag, protocol.ErrorPayload(name, details))
}

func (c *conn) sendInternalError(tag json.RawMessage) {
	_ = c.sendEvent(protocol.EventInternalError, tag, map[string]string{"error": protocol.ErrInternalError})
}

// handleMessage takes one client message on the reader goroutine. Every
// message, valid or not, costs a token first; over the limit, messages
// are dropped undecoded. An admitted one runs on the server's action
// pool, while the reader waits: the reader's stack stays shallow (see
// package runpool), and the session's actions still run one at a time,
// in order.
func (c *conn) handleMessage(data []byte) {
	if now := time.Now(); !c.admit(now) {
		c.refuse(now, data)
		return
	}
	c.srv.actions.Run(func() { c.handleAction(data) })
}

// handleAction decodes and runs one admitted client message.
func (c *conn) handleAction(data []byte) {
	action, err := protocol.DecodeAction(data)
	if err != nil {
		var de *protocol.DecodeError
		if errors.As(err, &de) {
			c.srv.metrics.actions.WithLabelValues("(invalid)", de.Name).Inc()
			c.sendError(de.Tag, de.Name, de.Message, nil)
		}
		return
	}
	outcome := c.dispatch(action)
	c.srv.metrics.actions.WithLabelValues(c.srv.actionLabel(action.Name), outcome).Inc()
}

// admit takes a token for one frame from the frame bucket, or from the
// welcome credit; it reports false when the socket is over its limit.
func (c *conn) admit(now time.Time) bool {
	if c.frames == nil {
		return true
	}
	if !c.frames.AllowN(now, 1) {
		if c.credit <= 0 {
			return false
		}
		c.credit--
	}
	if now.Sub(c.lastReject) > time.Second {
		c.firstReject = time.Time{}
	}
	return true
}

// allowPing rate-limits the client's WebSocket pings like its actions:
// a ping over the limit gets no pong and counts towards the flood close.
func (c *conn) allowPing() bool {
	if now := time.Now(); !c.admit(now) {
		c.refuse(now, nil)
		return false
	}
	return true
}

// refuse handles a frame over the rate limit: at most one RateLimited
// reply a second (tagged, so the one frame answered is decoded), the
// others dropped unread, and the socket closed once it has been over
// its limit for floodCloseAfter in a row (no second without a refusal).
func (c *conn) refuse(now time.Time, data []byte) {
	if c.firstReject.IsZero() || now.Sub(c.lastReject) > time.Second {
		c.firstReject = now
	}
	c.lastReject = now
	c.srv.metrics.actions.WithLabelValues("(any)", protocol.ErrRateLimited).Inc()
	if now.Sub(c.firstReject) >= floodCloseAfter {
		c.logger().Warn("client flooding, disconnecting", "actions_per_second", c.frames.Limit(), "over_limit_for", now.Sub(c.firstReject))
		c.closeWith(closePolicy, "flooding: over the action rate limit")
		return
	}
	if data == nil || now.Sub(c.lastReply) < time.Second {
		return // a ping, or a RateLimited already sent this second
	}
	c.lastReply = now
	tag := protocol.Null
	var details map[string]any
	if a, err := protocol.DecodeAction(data); err == nil {
		tag = a.Tag
		if a.Name == protocol.ActionSubscribe || a.Name == protocol.ActionUnsubscribe {
			details = rateLimitedKeys(a.Payload)
		}
	} else if de := (*protocol.DecodeError)(nil); errors.As(err, &de) {
		tag = de.Tag
	}
	c.sendError(tag, protocol.ErrRateLimited, fmt.Sprintf("over %g actions per second; slow down", float64(c.frames.Limit())), details)
}

// dispatch runs a built-in or application action and reports its outcome
// for metrics.
func (c *conn) dispatch(a protocol.Action) (outcome string) {
	ctx, cancel := context.WithTimeout(c.ctx, c.srv.cfg.Limits.ActionTimeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			c.logger().Error("action panicked", "action", a.Name, "panic", r, "stack", string(debug.Stack()))
			c.sendInternalError(a.Tag)
			outcome = protocol.ErrInternalError
		}
	}()
	switch a.Name {
	case protocol.ActionSubscribe:
		return c.subscribe(ctx, a)
	case protocol.ActionUnsubscribe:
		return c.unsubscribe(ctx, a)
	case protocol.ActionListSubscriptions:
		c.listSubscriptions(a)
		return "ok"
	case protocol.ActionPing:
		_ = c.sendEvent(protocol.EventPong, a.Tag, map[string]int64{"time": time.Now().Unix()})
		return "ok"
	}
	handler, ok := c.srv.cfg.Actions[a.Name]
	if !ok {
		c.sendError(a.Tag, protocol.ErrInvalidAction, fmt.Sprintf("no action named %q on this server", truncateUTF8(a.Name, 64)), nil)
		return protocol.ErrInvalidAction
	}
	return c.reportError(a.Tag, "action "+a.Name, handler(ctx, c.session(a.Tag), a.Payload))
}

// reportError sends err to the client as it should see it: a ClientError
// as an Error event, anything else as InternalError (logged, not shown).
func (c *conn) reportError(tag json.RawMessage, what string, err error) string {
	if err == nil {
		return "ok"
	}
	var ce *ClientError
	if errors.As(err, &ce) {
		c.sendError(tag, ce.Name, ce.Message, cloneDetails(ce.Details))
		return ce.Name
	}
	c.logger().Error(what+" failed", "err", err)
	c.sendInternalError(tag)
	return protocol.ErrInternalError
}

func cloneDetails(d map[string]any) map[string]any {
	if d == nil {
		return nil
	}
	out := make(map[string]any, len(d)+1)
	for k, v := range d {
		out[k] = v
	}
	return out
}

// cleanup removes the session's subscriptions and runs its close
// callbacks.
func (c *conn) cleanup() {
	c.subMu.Lock()
	c.subsClosed = true
	subs := c.subs
	c.subs = nil
	c.nsubs = 0
	c.subMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.cfg.Limits.ActionTimeout)
	defer cancel()
	for exchange, keys := range subs {
		for key := range keys {
			c.srv.unsubscribeHub(ctx, c, exchange, key)
		}
	}
	st := c.state
	st.mu.Lock()
	st.closed = true
	if st.authed {
		c.srv.metrics.authed.Dec()
	}
	callbacks := st.onClose
	st.onClose = nil
	st.mu.Unlock()
	for _, fn := range callbacks {
		c.runCallback(fn)
	}
	c.srv.forget(c)
}

func (c *conn) runCallback(fn func()) {
	defer func() {
		if r := recover(); r != nil {
			c.logger().Error("close callback panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	fn()
}
