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

// Close codes (PROTOCOL.md).
const (
	closeNormal    = websocket.CloseNormalClosure     // 1000
	closeGoingAway = websocket.CloseGoingAway         // 1001: draining
	closePolicy    = websocket.ClosePolicyViolation   // 1008: too slow
	closeInternal  = websocket.CloseInternalServerErr // 1011
	closeTryLater  = websocket.CloseTryAgainLater     // 1013
)

// closeGrace is how long a closing connection waits for the client's
// close frame before dropping the TCP connection.
const closeGrace = time.Second

// maxBatchBytes caps one batched frame, so one slow drain does not build a
// huge frame.
const maxBatchBytes = 64 << 10

// frame is one encoded event waiting to be written. A broadcast frame is
// shared by every subscriber's queue: it is encoded once and, for clients
// that get one event per frame, framed once (a PreparedMessage).
type frame struct {
	data     []byte
	shared   bool
	received time.Time // when a broadcast arrived from the broker
	once   sync.Once
	pm     *websocket.PreparedMessage
}

func (f *frame) prepared() (*websocket.PreparedMessage, error) {
	var err error
	f.once.Do(func() { f.pm, err = websocket.NewPreparedMessage(websocket.TextMessage, f.data) })
	if f.pm == nil && err == nil {
		err = errors.New("prepared message unavailable")
	}
	return f.pm, err
}

// sendQueue is a connection's bounded outgoing queue. It grows only as
// far as the client lags, so an idle connection holds almost nothing.
type sendQueue struct {
	mu       sync.Mutex
	items    []*frame
	bytes    int64
	notify   chan struct{} // capacity 1: "items is not empty"
	maxItems int
	maxBytes int64
}

// push queues f, or reports false when the queue is over its limits.
func (q *sendQueue) push(f *frame) bool {
	q.mu.Lock()
	if len(q.items) >= q.maxItems || q.bytes+int64(len(f.data)) > q.maxBytes {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, f)
	q.bytes += int64(len(f.data))
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
	return true
}

// takeAll moves every queued frame into spare (emptied) and returns it;
// the queue keeps the old backing array for new pushes.
func (q *sendQueue) takeAll(spare []*frame) []*frame {
	q.mu.Lock()
	defer q.mu.Unlock()
	taken := q.items
	q.items = spare[:0]
	q.bytes = 0
	return taken
}

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
		c.cancel()
	})
}

// enqueue queues f for the writer. A client whose queue is full is too
// slow: it is disconnected with 1008 rather than slowing anyone else.
func (c *conn) enqueue(f *frame) error {
	if c.ctx.Err() != nil {
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
	return nil
}

func (c *conn) sendEvent(event string, tag json.RawMessage, payload any) error {
	data, err := protocol.EncodeEvent(event, tag, payload)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", event, err)
	}
	return c.enqueue(&frame{data: data})
}

func (c *conn) sendError(tag json.RawMessage, name string, details map[string]any) {
	_ = c.sendEvent(protocol.EventError, tag, protocol.ErrorPayload(name, details))
}

func (c *conn) sendInternalError(tag json.RawMessage) {
	_ = c.sendEvent(protocol.EventInternalError, tag, map[string]string{"error": protocol.ErrInternalError})
}

// run serves the connection until it ends: it starts the writer, reads in
// this goroutine, then cleans up. It returns once both are done.
func (c *conn) run() {
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop()
	}()
	err := c.readLoop()
	c.closeWith(closeNormal, "") // no-op when a close is already under way
	<-writerDone
	_ = c.ws.Close()
	c.cleanup()
	c.log.Debug("session ended", "err", err, "close_code", c.closeCode)
}

func (c *conn) readLoop() error {
	l := c.srv.cfg.Limits
	c.ws.SetReadLimit(l.MaxFrameBytes)
	idle := 2 * l.PingInterval
	_ = c.ws.SetReadDeadline(time.Now().Add(idle))
	c.ws.SetPongHandler(func(string) error { return c.ws.SetReadDeadline(time.Now().Add(idle)) })
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return err
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(idle))
		c.handleFrame(data)
	}
}

// writeLoop is the only writer of the socket: queued events, pings, and
// finally the close frame.
func (c *conn) writeLoop() {
	l := c.srv.cfg.Limits
	ping := time.NewTicker(l.PingInterval)
	defer ping.Stop()
	var spare []*frame
	for {
		select {
		case <-c.queue.notify:
			frames := c.queue.takeAll(spare)
			err := c.writeFrames(frames)
			clear(frames)
			spare = frames
			if err != nil {
				c.log.Debug("write failed", "err", err)
				c.abort()
				return
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(l.WriteTimeout)); err != nil {
				c.log.Debug("ping failed", "err", err)
				c.abort()
				return
			}
		case <-c.ctx.Done():
			c.finish()
			return
		}
	}
}

// abort drops a connection whose socket failed: no close frame can be
// written, and closing the socket ends the reader's blocked read.
func (c *conn) abort() {
	c.closeWith(websocket.CloseAbnormalClosure, "")
	_ = c.ws.UnderlyingConn().Close()
}

// finish flushes what is queued (unless the client is the slow one) and
// sends the close frame, then gives the client a moment to answer.
func (c *conn) finish() {
	if !c.slow.Load() {
		_ = c.writeFrames(c.queue.takeAll(nil))
	}
	msg := websocket.FormatCloseMessage(c.closeCode, c.closeReason)
	if err := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace)); err != nil {
		_ = c.ws.SetReadDeadline(time.Now()) // nothing to wait for
		return
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(closeGrace))
}

func (c *conn) writeFrames(frames []*frame) error {
	if len(frames) == 0 {
		return nil
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.srv.cfg.Limits.WriteTimeout))
	if c.batch {
		return c.writeBatched(frames)
	}
	for _, f := range frames {
		var err error
		if f.shared {
			var pm *websocket.PreparedMessage
			if pm, err = f.prepared(); err == nil {
				err = c.ws.WritePreparedMessage(pm)
			}
		} else {
			err = c.ws.WriteMessage(websocket.TextMessage, f.data)
		}
		if err != nil {
			return err
		}
		c.srv.metrics.delivered.Inc()
	}
	return nil
}

// writeBatched writes the frames as few text frames of newline-separated
// events (the batched-frames extension of PROTOCOL.md).
func (c *conn) writeBatched(frames []*frame) error {
	for len(frames) > 0 {
		w, err := c.ws.NextWriter(websocket.TextMessage)
		if err != nil {
			return err
		}
		size := 0
		n := 0
		for n < len(frames) && (n == 0 || size+len(frames[n].data) <= maxBatchBytes) {
			if n > 0 {
				if _, err := w.Write(newline); err != nil {
					return err
				}
			}
			if _, err := w.Write(frames[n].data); err != nil {
				return err
			}
			size += len(frames[n].data) + 1
			n++
		}
		if err := w.Close(); err != nil {
			return err
		}
		for _, f := range frames[:n] {
			c.observe(f)
		}
		frames = frames[n:]
	}
	return nil
}

var newline = []byte{'\n'}

// observe counts a written frame and, for a broadcast, its latency.
func (c *conn) observe(f *frame) {
	c.srv.metrics.delivered.Inc()
	if f.shared {
		c.srv.metrics.latency.Observe(time.Since(f.received).Seconds())
	}
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
