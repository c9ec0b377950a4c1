package myxi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
	"github.com/myxi/myxi/internal/randid"
	"github.com/myxi/myxi/internal/runpool"
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

	failOnce sync.Once
	failed   chan struct{} // closed when the server cannot serve (failErr says why)
	failErr  error

	ctx    context.Context // parent of every session; ended by Shutdown
	cancel context.CancelFunc

	histories map[string]*historyIndex // one per history exchange (history.go); fixed by New

	fanoutJobs    chan fanoutJob // to the fan-out workers (fanout.go)
	actions       *runpool.Pool  // runs the sessions' actions (conn.handleMessage)
	lastFanoutEnd atomic.Int64   // unix nanos when the last fan-out ended
	backToBack    atomic.Int32   // deliveries in a row that followed the last fan-out at once (fanout.go)

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
		failed:  make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.actions = runpool.New(s.ctx, actionWorkerIdle)
	s.hub = hub.New[*conn](bindCounter{s.broker, s.metrics})
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.Limits.HandshakeTimeout,
		// Gorilla's connection is dropped after the handshake (the
		// transport reads and writes the socket itself): with no buffer
		// sizes and no pool, it reuses net/http's hijacked buffers
		// instead of allocating its own for one handshake.
		CheckOrigin: s.checkOrigin(newOriginChecker(cfg.AllowedOrigins)),
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			if status == http.StatusForbidden {
				http.Error(w, fmt.Sprintf("Forbidden: origin %q is not allowed; %s", r.Header.Get("Origin"), allowOriginHint), status)
				return
			}
			http.Error(w, http.StatusText(status)+": "+reason.Error(), status)
		},
	}
	s.realIP = newIPExtractor(cfg.TrustedProxies)
	if len(cfg.History) > 0 {
		if _, ok := cfg.Broker.(broker.Historian); !ok {
			return nil, fmt.Errorf("myxi: invalid config: History: the broker (%T) keeps no history", cfg.Broker)
		}
		s.histories = make(map[string]*historyIndex, len(cfg.History))
		for name, bounds := range cfg.History {
			s.histories[name] = s.newHistory(name, bounds)
		}
	}
	s.metrics.register(s)
	return s, nil
}

// allowOriginHint names the setting that allows another origin.
const allowOriginHint = "allow it with Config.AllowedOrigins (MYXI_ALLOWED_ORIGINS, or allowed_origins in the standalone server's configuration)"

// checkOrigin logs the refusals of check, at most one a second, with the
// origin and the setting that would allow it: a browser only shows the
// page's author a failed connection.
func (s *Server) checkOrigin(check func(*http.Request) bool) func(*http.Request) bool {
	var sometimes rate.Sometimes
	sometimes.Interval = time.Second
	return func(r *http.Request) bool {
		if check(r) {
			return true
		}
		s.metrics.refusedOrigins.Inc()
		sometimes.Do(func() {
			s.log.Warn("refused a WebSocket from another origin; "+allowOriginHint, "origin", r.Header.Get("Origin"), "host", r.Host, "remote", r.RemoteAddr)
		})
		return false
	}
}

// Start connects the broker, declares the exchanges and starts background
// work. It returns once the exchanges are declared, or at once (not
// ready, see Ready and WaitReady) when the broker is unreachable: it then
// keeps trying in the background. It returns an error only for what
// retrying cannot fix, such as a refused declaration. ListenAndServe and
// Serve call it; call it yourself when you Mount the server into your own
// echo.Echo. Calling it again returns the first call's result.
func (s *Server) Start(ctx context.Context) error {
	s.startOnce.Do(func() {
		names := make([]string, 0, len(s.cfg.Exchanges))
		for name := range s.cfg.Exchanges {
			names = append(names, name)
		}
		slices.Sort(names)
		s.startFanout() // before the first delivery
		if err := s.broker.Start(ctx, names, s.deliver); err != nil {
			s.startErr = fmt.Errorf("myxi: start broker: %w", err)
			s.fail(s.startErr)
			s.cancel() // the fan-out workers
			s.wg.Wait()
			return
		}
		if err := s.startHistories(ctx); err != nil {
			s.startErr = fmt.Errorf("myxi: %w", err)
			s.fail(s.startErr)
			s.cancel()
			s.wg.Wait()
			return
		}
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
		s.badMessage(m.Exchange, m.RoutingKey, len(m.Body), err)
		return
	}
	f := newFrame(data)
	f.shared, f.received = true, time.Now()
	if s.hub.All(m.Exchange, m.RoutingKey, func(conns []*conn) { s.broadcast(f, conns) }) == 0 {
		s.metrics.eventsIn.Inc()
	}
}

// broadcast writes or queues f, one event, to each of conns, without
// waiting on any.
func (s *Server) broadcast(f *frame, conns []*conn) {
	written := s.fanout(f, conns)
	s.metrics.eventsIn.Inc()
	s.metrics.fanout.Add(float64(len(conns)))
	if written > 0 {
		// Counted once per event: per-write updates from the fan-out
		// would cost as much as the writes' bookkeeping.
		s.metrics.delivered.Add(float64(written))
		s.metrics.latency.Observe(time.Since(f.received).Seconds())
	}
}

// badMessage counts and logs a broker message that breaks the body rules.
func (s *Server) badMessage(exchange, routingKey string, size int, err error) {
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
			"exchange", exchange, "routing_key", routingKey, "reason", reason, "err", err, "bytes", size)
	})
}

// ErrUnknownExchange is returned by Push for an exchange the server does
// not define.
var ErrUnknownExchange = errors.New("no such exchange on this server")

// ErrNotStarted is returned by Push before Start (or ListenAndServe, or
// Serve) has started the server.
var ErrNotStarted = errors.New("server not started: call Start, ListenAndServe or Serve first")

// fail records why the server cannot serve; WaitReady returns it.
func (s *Server) fail(err error) {
	s.failOnce.Do(func() {
		s.failErr = err
		close(s.failed)
	})
}

// WaitReady blocks until the server is ready (started, broker connected,
// not draining), and returns nil; or returns the error that stopped it
// from serving (a port already in use, a refused exchange declaration),
// or ctx's error. Use it after starting ListenAndServe in a goroutine,
// before the first Push.
func (s *Server) WaitReady(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.Ready() {
			return nil
		}
		select {
		case <-s.failed:
			return s.failErr
		case <-ctx.Done():
			return fmt.Errorf("myxi: wait until ready (%s): %w", s.readiness(), ctx.Err())
		case <-tick.C:
		}
	}
}

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
// *BadBodyError; on a history exchange the frame is counted with the
// largest position it could carry). On a history exchange the event is
// recorded, and Push returns once the broker has confirmed the record.
func (s *Server) Push(ctx context.Context, exchange, routingKey, event string, payload any) error {
	if _, ok := s.cfg.Exchanges[exchange]; !ok {
		return fmt.Errorf("myxi: push to %q: %w", exchange, ErrUnknownExchange)
	}
	if !s.started.Load() {
		return fmt.Errorf("myxi: push to %q: %w", exchange, ErrNotStarted)
	}
	if len(routingKey) > protocol.MaxRoutingKeyBytes {
		return fmt.Errorf("myxi: push to %q: routing key longer than %d bytes", exchange, protocol.MaxRoutingKeyBytes)
	}
	body, err := protocol.PushBody(event, payload)
	if err != nil {
		return fmt.Errorf("myxi: %w", err)
	}
	check, publish := protocol.CheckEventSize, s.broker.Publish
	if s.histories[exchange] != nil {
		// Recorded, so that clients that were away get it on recovery;
		// it returns once the broker has confirmed the record.
		check, publish = protocol.CheckRecordSize, s.broker.(broker.Historian).Append
	}
	if err := check(exchange, routingKey, body, int(s.cfg.Limits.MaxEventBytes)); err != nil {
		return fmt.Errorf("myxi: push %s to %q: %w", event, exchange, err)
	}
	if err := publish(ctx, exchange, routingKey, body); err != nil {
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
	if headerBytes(r) > s.cfg.Limits.MaxHeaderBytes {
		s.metrics.refused.Inc()
		return echo.NewHTTPError(http.StatusRequestHeaderFieldsTooLarge,
			fmt.Sprintf("myxi: request headers over %d bytes", s.cfg.Limits.MaxHeaderBytes))
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.log.Debug("upgrade failed", "err", err, "remote", r.RemoteAddr)
		return nil // the upgrader has answered
	}
	// From here on the transport owns the socket: gorilla's Conn did the
	// handshake and is dropped without writing anything more.
	nc := ws.NetConn()
	if max := s.cfg.Limits.MaxConnections; max > 0 && s.count.Load() >= int64(max) {
		s.metrics.refused.Inc()
		go refuseOverloaded(nc)
		return nil
	}
	cn := s.newConn(nc, r)
	if !s.track(cn) {
		cn.closeWith(closeGoingAway, "server shutting down")
	}
	if err := cn.sendEvent(protocol.EventWelcome, nil, map[string]string{"id": cn.id}); err != nil {
		cn.logger().Debug("welcome not sent", "err", err)
	}
	// The session gets goroutines of its own so that the HTTP handler
	// returns and net/http releases what it held for the handshake (its
	// buffers and a deep stack): most of an idle connection's memory.
	go cn.run()
	return nil
}

// headerBytes is the size of a request's header block as sent, near
// enough: names, values and the separators.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4
	for name, values := range r.Header {
		for _, v := range values {
			n += len(name) + len(v) + 4
		}
	}
	return n
}

// refuseOverloaded closes a connection over the node's limit with 1013,
// the one Close frame it gets, and gives the client closeGrace to answer.
// It costs no session.
func refuseOverloaded(nc net.Conn) {
	defer nc.Close()
	reason := "server overloaded"
	msg := appendHeader(nil, finClose, 2+len(reason))
	msg = append(binary.BigEndian.AppendUint16(msg, closeTryLater), reason...)
	_ = nc.SetDeadline(time.Now().Add(closeGrace))
	if _, err := nc.Write(msg); err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(nc, 4<<10))
}

func (s *Server) newConn(nc net.Conn, r *http.Request) *conn {
	id := randid.New()
	// Not derived from s.ctx: a child of a long-lived context costs an
	// entry in its children map and an AfterFunc per session. Shutdown
	// closes every session itself.
	ctx, cancel := context.WithCancel(context.Background())
	l := s.cfg.Limits
	cn := &conn{
		srv:    s,
		ctx:    ctx,
		cancel: cancel,
		state: &sessionState{
			remoteIP: s.realIP(r),
			header:   keepHeaders(r.Header, s.cfg.KeepHeaders),
		},
	}
	cn.transport.init(nc, l)
	cn.id = id
	cn.batch = r.URL.Query().Get("batch") == "1"
	cn.logBase = s.log
	cn.m = s.metrics
	cn.onClose = cancel
	cn.admitPing = cn.allowPing
	if l.ActionsPerSecond > 0 {
		cn.frames = rate.NewLimiter(rate.Limit(l.ActionsPerSecond), l.ActionBurst)
		// Keys refill at the action rate, but a new session starts with
		// enough to subscribe to as many keys as it may hold at once: a
		// reconnecting client resubscribes everything without a refusal.
		cn.keys = rate.NewLimiter(rate.Limit(l.ActionsPerSecond), max(l.ActionBurst, l.MaxSubscriptions))
		// Clients that resubscribe one key per frame (the JavaScript
		// client, myxi 1.x pages) send as many frames as keys at once.
		cn.credit = l.MaxSubscriptions
	}
	return cn
}

// keepHeaders copies the named headers only: the handshake's header map
// (up to MaxHeaderBytes) is released with the request.
func keepHeaders(h http.Header, names []string) http.Header {
	kept := make(http.Header, len(names))
	for _, name := range names {
		if v := h.Values(name); len(v) > 0 {
			kept[http.CanonicalHeaderKey(name)] = slices.Clone(v)
		}
	}
	return kept
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
	if idx := s.histories[exchange]; idx != nil {
		idx.Unsubscribe(key, c)
	}
	removed, err := s.hub.Unsubscribe(ctx, exchange, key, c)
	if removed {
		s.metrics.subscriptions.Dec()
	}
	if err != nil {
		s.log.Warn("unbind failed", "exchange", exchange, "routing_key", key, "err", err)
	}
}

// reauthorizeLoop checks every session's subscriptions every
// ReauthorizeInterval. A sweep spreads the starts of the sessions' checks
// over the first quarter of the interval, with at most
// ReauthorizeConcurrency at once, each bounded by ActionTimeout: one slow
// authorizer delays only its own session, the application's authorizers
// see a steady trickle rather than a burst, and a sweep ends well before
// the next (BenchmarkReauthorizeSweep).
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
		s.reauthorizeSweep(s.ctx, s.snapshot(), s.cfg.ReauthorizeInterval/4)
	}
}

// reauthorizeSweep checks conns, starting them evenly over spread, and
// returns once every check has ended (or ctx ended).
func (s *Server) reauthorizeSweep(ctx context.Context, conns []*conn, spread time.Duration) {
	if len(conns) == 0 {
		return
	}
	sem := make(chan struct{}, s.cfg.ReauthorizeConcurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	step := spread / time.Duration(len(conns))
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i, c := range conns {
		if wait := time.Until(start.Add(time.Duration(i) * step)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		select {
		case <-ctx.Done():
			return
		case sem <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(c.ctx, s.cfg.Limits.ActionTimeout)
			defer cancel()
			c.reauthorize(cctx)
		}()
	}
}

// shutdownGrace bounds how long Shutdown waits for session goroutines
// after it has closed their TCP connections because its ctx ended.
const shutdownGrace = 5 * time.Second

// actionWorkerIdle is how long an action goroutine waits for the next
// action before it ends: a connection storm's worth, so that a burst of
// Subscribes reuses a few grown stacks.
const actionWorkerIdle = 10 * time.Second

// Shutdown stops accepting sessions, closes the live ones with code 1001
// spread over the DrainPeriod (so their clients do not all come back at
// once), waits for them to end, then closes the broker.
//
// When ctx ends first, Shutdown closes every remaining TCP connection,
// waits up to 5s for the session goroutines to return (they do at once
// unless an action handler ignores its context), closes the broker and
// returns ctx's error.
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
	stuck := false // a session goroutine outlived the grace period
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
			left := s.snapshot()
			s.log.Warn("shutdown deadline reached, dropping the remaining connections", "sessions", len(left))
			for _, c := range left {
				c.abort()
			}
			grace := time.NewTimer(shutdownGrace)
			select {
			case <-idle:
			case <-grace.C:
				stuck = true
				s.log.Error("session goroutines still running after their connections were closed (an action handler ignores its context?)", "sessions", s.Sessions())
			}
			grace.Stop()
		}
	}
	s.cancel() // ends the background loops
	s.wg.Wait()
	if !stuck {
		s.actions.Wait() // idle action goroutines end with s.ctx; none is busy once every session has ended
	}
	if cerr := s.broker.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("myxi: close broker: %w", cerr)
	}
	s.log.Info("shut down")
	return err
}

// Draining reports whether Shutdown has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

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
