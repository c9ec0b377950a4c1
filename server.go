package myxi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/broker/memory"
	"github.com/myxi/myxi/internal/hub"
	"github.com/myxi/myxi/internal/protocol"
)

// Server is a Myxi node: it accepts WebSocket sessions, runs their
// actions, and fans out application events from the broker to the
// sessions subscribed to them. Create it with New; it is safe for
// concurrent use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	broker   broker.Broker
	hub      *hub.Hub[*conn]
	metrics  *metrics
	upgrader websocket.Upgrader
	realIP   echo.IPExtractor

	startOnce sync.Once
	startErr  error
	started   atomic.Bool
	draining  atomic.Bool

	ctx    context.Context // parent of every session; ended by Shutdown
	cancel context.CancelFunc

	mu    sync.Mutex
	conns map[*conn]struct{}
	count atomic.Int64
	idle  chan struct{} // closed when conns becomes empty during shutdown
	wg    sync.WaitGroup

	addr atomic.Pointer[net.Addr]
}

// New checks cfg and returns a server. Nothing is connected until Start
// (or ListenAndServe, or Serve).
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("myxi: invalid config: %w", err)
	}
	if cfg.Broker == nil {
		cfg.Broker = memory.New()
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With("node", cfg.NodeID),
		broker:  cfg.Broker,
		metrics: newMetrics(),
		conns:   make(map[*conn]struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.hub = hub.New[*conn](bindCounter{s.broker, s.metrics})
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.Limits.HandshakeTimeout,
		// Reads are small actions; writes bypass gorilla's buffers (see
		// wire.go), which are only used for the handshake.
		ReadBufferSize:  512,
		WriteBufferSize: 512,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     newOriginChecker(cfg.AllowedOrigins),
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			http.Error(w, http.StatusText(status)+": "+reason.Error(), status)
		},
	}
	s.realIP = newIPExtractor(cfg.TrustedProxies)
	s.metrics.register(s)
	return s, nil
}

// Start connects the broker and starts background work. It is called by
// ListenAndServe and Serve; call it yourself when you Mount the server into
// your own echo.Echo. Calling it again returns the first call's result.
func (s *Server) Start(ctx context.Context) error {
	s.startOnce.Do(func() {
		names := make([]string, 0, len(s.cfg.Exchanges))
		for name := range s.cfg.Exchanges {
			names = append(names, name)
		}
		slices.Sort(names)
		if err := s.broker.Start(ctx, names, s.deliver); err != nil {
			s.startErr = fmt.Errorf("myxi: start broker: %w", err)
			return
		}
		s.wg.Add(1)
		go s.watchdog()
		if s.cfg.ReauthorizeInterval > 0 {
			s.wg.Add(1)
			go s.reauthorizeLoop()
		}
		s.started.Store(true)
	})
	return s.startErr
}

// deliver fans one broker message out to the local subscribers: checked
// and encoded once (PROTOCOL.md's body rules and Limits.MaxEventBytes),
// queued to each without waiting on any.
func (s *Server) deliver(m broker.Message) {
	data, err := protocol.BrokerEvent(m.Exchange, m.RoutingKey, m.Body, int(s.cfg.Limits.MaxEventBytes))
	if err != nil {
		reason := protocol.DropNotObject
		var bad *protocol.BadBodyError
		if errors.As(err, &bad) {
			reason = bad.Reason
		}
		s.metrics.badMessages.WithLabelValues(reason).Inc()
		// A publisher gone wrong can send thousands a second: the log gets
		// one line a second, the metric counts them all.
		s.metrics.badMessageLog.Do(func() {
			s.log.Warn("dropping broker message (further drops within a second are only counted in myxi_broker_bad_messages_total)",
				"exchange", m.Exchange, "routing_key", m.RoutingKey, "reason", reason, "err", err, "bytes", len(m.Body))
		})
		return
	}
	f := newFrame(data)
	f.shared, f.received = true, time.Now()
	n := s.hub.Each(m.Exchange, m.RoutingKey, func(c *conn) { _ = c.enqueue(f) })
	s.metrics.eventsIn.Inc()
	s.metrics.fanout.Add(float64(n))
}

// ErrUnknownExchange is returned by Push for an exchange the server does
// not define.
var ErrUnknownExchange = errors.New("no such exchange on this server")

// Pusher is what Server and rabbitmq.Publisher have in common: a way to
// push an application event to the subscribers of an exchange and routing
// key.
type Pusher interface {
	Push(ctx context.Context, exchange, routingKey, event string, payload any) error
}

var _ Pusher = (*Server)(nil)

// Push publishes an application event to every session subscribed to
// exchange and routingKey, on every node sharing the broker. It returns
// once the broker has taken the event, or an error. It refuses what the
// nodes would drop: an empty event name, a payload that does not encode to
// a JSON object (nil becomes {}) or is not valid UTF-8, and an event over
// Limits.MaxEventBytes (an error matching protocol's too_large
// *BadBodyError).
func (s *Server) Push(ctx context.Context, exchange, routingKey, event string, payload any) error {
	if _, ok := s.cfg.Exchanges[exchange]; !ok {
		return fmt.Errorf("myxi: push to %q: %w", exchange, ErrUnknownExchange)
	}
	if len(routingKey) > protocol.MaxRoutingKeyBytes {
		return fmt.Errorf("myxi: push to %q: routing key longer than %d bytes", exchange, protocol.MaxRoutingKeyBytes)
	}
	body, err := protocol.PushBody(event, payload)
	if err != nil {
		return fmt.Errorf("myxi: %w", err)
	}
	if err := protocol.CheckEventSize(exchange, routingKey, body, int(s.cfg.Limits.MaxEventBytes)); err != nil {
		return fmt.Errorf("myxi: push %s to %q: %w", event, exchange, err)
	}
	if err := s.broker.Publish(ctx, exchange, routingKey, body); err != nil {
		s.metrics.pushErrors.Inc()
		return fmt.Errorf("myxi: %w", err)
	}
	s.metrics.pushed.Inc()
	return nil
}

// Ready reports whether the server is started, not draining, and its
// broker connected.
func (s *Server) Ready() bool {
	return s.started.Load() && !s.draining.Load() && s.broker.Ready()
}

// Sessions returns the number of live sessions on this node.
func (s *Server) Sessions() int { return int(s.count.Load()) }

// Addr returns the address the server listens on once ListenAndServe or
// Serve has started listening, else nil. With port 0 it is the port the
// system chose.
func (s *Server) Addr() net.Addr {
	if a := s.addr.Load(); a != nil {
		return *a
	}
	return nil
}

// handleUpgrade accepts one WebSocket session.
func (s *Server) handleUpgrade(c echo.Context) error {
	w, r := c.Response(), c.Request()
	if !s.started.Load() || s.draining.Load() {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "myxi: not accepting connections")
	}
	if max := s.cfg.Limits.MaxConnections; max > 0 && s.count.Load() >= int64(max) {
		s.metrics.refused.Inc()
		return echo.NewHTTPError(http.StatusServiceUnavailable, "myxi: connection limit reached")
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.log.Debug("upgrade failed", "err", err, "remote", r.RemoteAddr)
		return nil // the upgrader has answered
	}
	cn := s.newConn(ws, r)
	if !s.track(cn) {
		cn.closeWith(closeGoingAway, "server shutting down")
	}
	if err := cn.sendEvent(protocol.EventWelcome, nil, map[string]string{"id": cn.id}); err != nil {
		cn.log.Debug("welcome not sent", "err", err)
	}
	// The session gets goroutines of its own so that the HTTP handler
	// returns and net/http releases what it held for the handshake (its
	// buffers and a deep stack): most of an idle connection's memory.
	go cn.run()
	return nil
}

func (s *Server) newConn(ws *websocket.Conn, r *http.Request) *conn {
	id := newID()
	ctx, cancel := context.WithCancel(s.ctx)
	cn := &conn{
		srv:    s,
		ws:     ws,
		id:     id,
		batch:  r.URL.Query().Get("batch") == "1",
		log:    s.log.With("session", id),
		ctx:    ctx,
		cancel: cancel,
		state: &sessionState{
			remoteIP: s.realIP(r),
			header:   r.Header.Clone(),
		},
	}
	cn.finished = make(chan struct{})
	cn.queue = sendQueue{
		maxItems: s.cfg.Limits.SendQueueMessages,
		maxBytes: s.cfg.Limits.SendQueueBytes,
	}
	// A session ends through closeWith, also when the whole server stops.
	context.AfterFunc(ctx, func() { cn.closeWith(closeGoingAway, "server shutting down") })
	if l := s.cfg.Limits; l.ActionsPerSecond > 0 {
		cn.limiter = rate.NewLimiter(rate.Limit(l.ActionsPerSecond), l.ActionBurst)
	}
	return cn
}

// track registers a session; it reports false once shutdown has begun.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c] = struct{}{}
	s.count.Add(1)
	s.metrics.connections.Inc()
	return !s.draining.Load()
}

// forget unregisters an ended session.
func (s *Server) forget(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	s.count.Add(-1)
	s.metrics.connections.Dec()
	if len(s.conns) == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

func (s *Server) snapshot() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		list = append(list, c)
	}
	return list
}

func (s *Server) unsubscribeHub(ctx context.Context, c *conn, exchange, key string) {
	removed, err := s.hub.Unsubscribe(ctx, exchange, key, c)
	if removed {
		s.metrics.subscriptions.Dec()
	}
	if err != nil {
		s.log.Warn("unbind failed", "exchange", exchange, "routing_key", key, "err", err)
	}
}

// reauthorizeLoop checks every session's subscriptions every
// ReauthorizeInterval, one session at a time so the application's
// authorizers see a steady trickle rather than a burst.
func (s *Server) reauthorizeLoop() {
	defer s.wg.Done()
	ticker := time.NewTicker(s.cfg.ReauthorizeInterval)
	defer ticker.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-ticker.C:
		}
		for _, c := range s.snapshot() {
			if s.ctx.Err() != nil {
				return
			}
			ctx, cancel := context.WithTimeout(c.ctx, s.cfg.Limits.ActionTimeout)
			c.reauthorize(ctx)
			cancel()
		}
	}
}

// watchdog drops connections whose socket write has been stuck for
// longer than the WriteTimeout (a client that stopped reading with a full
// TCP window). One sweep a second replaces a timer reset per write.
func (s *Server) watchdog() {
	defer s.wg.Done()
	timeout := s.cfg.Limits.WriteTimeout
	ticker := time.NewTicker(min(time.Second, timeout/2))
	defer ticker.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-ticker.C:
			for _, c := range s.snapshot() {
				if since := c.writeStarted.Load(); since != 0 && now.Sub(time.Unix(0, since)) > timeout {
					c.log.Warn("write stuck, dropping the connection", "write_timeout", timeout)
					c.abort()
				}
			}
		}
	}
}

// Shutdown stops accepting sessions, closes the live ones with code 1001
// spread over the DrainPeriod (so their clients do not all come back at
// once), waits for them to end, then closes the broker. When ctx ends
// first, the remaining sessions are dropped at once and ctx's error is
// returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	conns := s.snapshot()
	s.mu.Lock()
	idle := make(chan struct{})
	if len(s.conns) == 0 {
		close(idle)
	} else {
		s.idle = idle
	}
	s.mu.Unlock()

	var err error
	if len(conns) > 0 {
		s.log.Info("draining sessions", "sessions", len(conns), "drain_period", s.cfg.DrainPeriod)
		step := s.cfg.DrainPeriod / time.Duration(len(conns))
		timer := time.NewTimer(0)
		<-timer.C
	drain:
		for i, c := range conns {
			c.closeWith(closeGoingAway, "server shutting down")
			if step <= 0 || i == len(conns)-1 {
				continue
			}
			timer.Reset(step)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break drain
			}
		}
		timer.Stop()
		select {
		case <-idle:
		case <-ctx.Done():
			err = fmt.Errorf("myxi: shutdown: %w", ctx.Err())
		}
	}
	s.cancel() // ends every remaining session and the background loops
	s.wg.Wait()
	if cerr := s.broker.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("myxi: close broker: %w", cerr)
	}
	s.log.Info("shut down")
	return err
}

// Draining reports whether Shutdown has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

func newID() string {
	var id [8]byte
	_, _ = rand.Read(id[:])
	return hex.EncodeToString(id[:])
}

// bindCounter counts broker bindings for metrics.
type bindCounter struct {
	broker.Broker
	m *metrics
}

func (b bindCounter) Bind(ctx context.Context, exchange, key string) error {
	err := b.Broker.Bind(ctx, exchange, key)
	if err == nil {
		b.m.bindings.Inc()
	}
	return err
}

func (b bindCounter) Unbind(ctx context.Context, exchange, key string) error {
	b.m.bindings.Dec()
	return b.Broker.Unbind(ctx, exchange, key)
}
