package myxi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/myxi/myxi/internal/protocol"
)

// conn is the server side of one WebSocket session. Three goroutines'
// worth of work meet here: the reader (reads frames, runs actions in
// order), the writer (the only one writing to the socket), and broker
// deliveries (which only push to the queue).
type conn struct {
	srv   *Server
	ws    *websocket.Conn
	id    string
	batch bool
	log   *slog.Logger
	state *sessionState

	ctx    context.Context
	cancel context.CancelFunc
	queue  sendQueue

	pong         atomic.Pointer[string] // a ping's payload the writer must answer
	pingDue      atomic.Bool            // the keepalive timer asks for a ping
	pingMu       sync.Mutex
	pingTimer    *time.Timer   // guarded by pingMu
	writing      atomic.Bool   // a writer goroutine is running
	w            writer        // the running writer's state
	finished     chan struct{} // closed once the close frame is sent
	writeStarted atomic.Int64  // unix nanos of the write in progress, 0 when none

	closing     atomic.Bool // set by closeWith; cheaper to check than ctx.Err on the hot path
	closeOnce   sync.Once
	closeCode   int // set once, before cancel
	closeReason string
	slow        atomic.Bool

	limiter *rate.Limiter

	subMu      sync.Mutex // serializes subscription changes of this session
	subs       map[string]map[string]json.RawMessage
	nsubs      int
	subsClosed bool
}

func (c *conn) session(tag json.RawMessage) *Session { return &Session{c: c, tag: tag} }

// closeWith asks the writer to close the connection with code; the first
// call wins. It never blocks.
func (c *conn) closeWith(code int, reason string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeReason = code, reason
		c.closing.Store(true)
		c.cancel()
		c.kick() // the writer sends the close frame
	})
}

// enqueue queues f for the writer. A client whose queue is full is too
// slow: it is disconnected with 1008 rather than slowing anyone else.
func (c *conn) enqueue(f *frame) error {
	if c.closing.Load() {
		return ErrSessionClosed
	}
	if !c.queue.push(f) {
		if c.slow.CompareAndSwap(false, true) {
			c.srv.metrics.slowClients.Inc()
			c.log.Warn("client too slow, disconnecting", "queued_bytes_limit", c.queue.maxBytes, "queued_messages_limit", c.queue.maxItems)
			c.closeWith(closePolicy, "too slow to read events")
		}
		c.srv.metrics.dropped.Inc()
		return ErrSlowClient
	}
	c.kick()
	return nil
}

func (c *conn) sendEvent(event string, tag json.RawMessage, payload any) error {
	data, err := protocol.EncodeEvent(event, tag, payload)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", event, err)
	}
	return c.enqueue(newFrame(data))
}

func (c *conn) sendError(tag json.RawMessage, name string, details map[string]any) {
	_ = c.sendEvent(protocol.EventError, tag, protocol.ErrorPayload(name, details))
}

func (c *conn) sendInternalError(tag json.RawMessage) {
	_ = c.sendEvent(protocol.EventInternalError, tag, map[string]string{"error": protocol.ErrInternalError})
}

// handleFrame decodes one client frame and runs its action.
func (c *conn) handleFrame(data []byte) {
	action, err := protocol.DecodeAction(data)
	if err != nil {
		var de *protocol.DecodeError
		if errors.As(err, &de) {
			c.srv.metrics.actions.WithLabelValues("(invalid)", de.Name).Inc()
			c.sendError(de.Tag, de.Name, nil)
		}
		return
	}
	if c.limiter != nil && !c.limiter.Allow() {
		c.srv.metrics.actions.WithLabelValues(c.srv.actionLabel(action.Name), protocol.ErrRateLimited).Inc()
		c.sendError(action.Tag, protocol.ErrRateLimited, nil)
		return
	}
	outcome := c.dispatch(action)
	c.srv.metrics.actions.WithLabelValues(c.srv.actionLabel(action.Name), outcome).Inc()
}

// dispatch runs a built-in or application action and reports its outcome
// for metrics.
func (c *conn) dispatch(a protocol.Action) (outcome string) {
	ctx, cancel := context.WithTimeout(c.ctx, c.srv.cfg.Limits.ActionTimeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("action panicked", "action", a.Name, "panic", r, "stack", string(debug.Stack()))
			c.sendInternalError(a.Tag)
			outcome = protocol.ErrInternalError
		}
	}()
	switch a.Name {
	case protocol.ActionSubscribe:
		c.subscribe(ctx, a)
		return "ok"
	case protocol.ActionUnsubscribe:
		c.unsubscribe(ctx, a)
		return "ok"
	case protocol.ActionListSubscriptions:
		c.listSubscriptions(a)
		return "ok"
	case protocol.ActionPing:
		_ = c.sendEvent(protocol.EventPong, a.Tag, map[string]int64{"time": time.Now().Unix()})
		return "ok"
	}
	handler, ok := c.srv.cfg.Actions[a.Name]
	if !ok {
		c.sendError(a.Tag, protocol.ErrInvalidAction, nil)
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
		c.sendError(tag, ce.Name, ce.Details)
		return ce.Name
	}
	c.log.Error(what+" failed", "err", err)
	c.sendInternalError(tag)
	return protocol.ErrInternalError
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
			c.log.Error("close callback panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	fn()
}
