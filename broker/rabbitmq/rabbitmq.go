// Package rabbitmq is Myxi's RabbitMQ broker (github.com/rabbitmq/amqp091-go).
//
// # Topology
//
// Each Myxi exchange is an AMQP direct exchange of the same name, declared
// as myxi 1.x declared it (non-durable, not auto-deleted) so that old
// applications and new ones share it. Each server node owns one exclusive,
// server-named queue; a binding (exchange, routing key) to it exists while
// at least one session on the node subscribes to that key. That is one
// queue per node, not one per client.
//
// # Failures
//
// The node names its AMQP connection ("myxi <node id>") so operators can
// find it. When the connection or a channel fails, the broker reports
// unready, reconnects with capped exponential backoff (trying each URL in
// turn), declares a new queue and binds again every key still wanted.
// Publishes wait for the broker's confirm, so a push either reaches
// RabbitMQ or returns an error.
package rabbitmq

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/myxi/myxi/broker"
)

// Config configures a Broker. Zero values are the documented defaults.
type Config struct {
	// URLs are the AMQP URLs of the broker or of the nodes of a cluster,
	// tried in order on every (re)connection. ParseURLs splits the
	// comma-separated form of RABBITMQ_URL.
	URLs []string
	// Connection, if set, is used instead of dialing URLs: for an
	// application that already holds one. The broker does not close it,
	// and cannot reconnect when it fails (unless URLs are also given).
	Connection *amqp.Connection
	// ConnectionName is shown in the RabbitMQ management UI and by
	// `rabbitmqctl list_connections name`. Default "myxi <random id>".
	ConnectionName string
	// ReconnectMin and ReconnectMax bound the backoff between reconnection
	// attempts (each delay jittered by ±20% so that nodes do not retry in
	// step). Defaults 100ms and 2s: a node is back within about 2s of the
	// broker accepting connections again.
	ReconnectMin, ReconnectMax time.Duration
	// DialTimeout bounds one connection attempt. Default 5s.
	DialTimeout time.Duration
	// Logger receives connection events. Default slog.Default().
	Logger *slog.Logger
}

// ParseURLs splits a comma-separated list of AMQP URLs, dropping blanks.
func ParseURLs(list string) []string {
	var urls []string
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls
}

// Broker is a broker.Broker on RabbitMQ.
type Broker struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	exchanges map[string]bool      // declared on the current session
	bindings  map[binding]struct{} // wanted: restored after reconnection
	sess      *session             // nil while disconnected
	changed   chan struct{}        // closed and replaced whenever sess changes
	deliver   broker.DeliverFunc

	ready     atomic.Bool
	connects  atomic.Uint64
	started   bool
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

type binding struct{ exchange, routingKey string }

// New returns a broker; nothing is dialed until Start.
func New(cfg Config) (*Broker, error) {
	if len(cfg.URLs) == 0 && cfg.Connection == nil {
		return nil, errors.New("rabbitmq: no URL and no connection given")
	}
	for _, u := range cfg.URLs {
		if _, err := amqp.ParseURI(u); err != nil {
			return nil, fmt.Errorf("rabbitmq: URL %q: %w", redact(u), err)
		}
	}
	if cfg.ConnectionName == "" {
		cfg.ConnectionName = "myxi " + randomID()
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = 100 * time.Millisecond
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = 2 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Broker{
		cfg:       cfg,
		log:       cfg.Logger.With("broker", "rabbitmq", "connection", cfg.ConnectionName),
		exchanges: map[string]bool{},
		bindings:  map[binding]struct{}{},
		changed:   make(chan struct{}),
		done:      make(chan struct{}),
	}, nil
}

// ConnectionName is the name this node's AMQP connection carries.
func (b *Broker) ConnectionName() string { return b.cfg.ConnectionName }

// Start connects, declares the exchanges and, when deliver is not nil, a
// queue for this node. A first connection that fails is retried in the
// background; a declaration that RabbitMQ refuses is returned.
func (b *Broker) Start(ctx context.Context, exchanges []string, deliver broker.DeliverFunc) error {
	b.mu.Lock()
	if b.started {
		b.mu.Unlock()
		return errors.New("rabbitmq: already started")
	}
	b.started = true
	b.deliver = deliver
	for _, e := range exchanges {
		b.exchanges[e] = false
	}
	b.mu.Unlock()

	sess, err := b.connect()
	if err != nil {
		var amqpErr *amqp.Error
		if errors.As(err, &amqpErr) && amqpErr.Code != amqp.ConnectionForced {
			return err
		}
		b.log.Warn("rabbitmq not reachable yet, retrying in the background", "err", err)
	} else {
		b.setSession(sess) // ready before Start returns
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	go b.supervise(runCtx, sess)
	return nil
}

// supervise owns the session lifecycle: it watches the current session and
// replaces it when it fails, until Close.
func (b *Broker) supervise(ctx context.Context, sess *session) {
	defer close(b.done)
	delay := b.cfg.ReconnectMin
	for {
		if sess == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(jitter(delay)):
			}
			delay = min(delay*2, b.cfg.ReconnectMax)
			var err error
			if sess, err = b.connect(); err != nil {
				b.log.Warn("rabbitmq reconnect failed", "err", err, "retry_in", delay)
				continue
			}
		}
		if b.current() != sess {
			b.setSession(sess)
		}
		b.log.Info("rabbitmq connected", "url", redact(sess.url), "queue", sess.queue)
		connectedAt := time.Now()
		reason := sess.wait(ctx)
		b.setSession(nil)
		sess.close(b.cfg.Connection != nil)
		if ctx.Err() != nil {
			return
		}
		b.log.Warn("rabbitmq connection lost", "reason", reason)
		if b.cfg.Connection != nil && len(b.cfg.URLs) == 0 {
			b.log.Error("rabbitmq: the application's connection failed and no URL is configured to reconnect")
			return
		}
		if time.Since(connectedAt) > b.cfg.ReconnectMax {
			delay = b.cfg.ReconnectMin
		}
		sess = nil
	}
}

func (b *Broker) setSession(s *session) {
	if s != nil {
		b.connects.Add(1)
	}
	b.mu.Lock()
	b.sess = s
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
	b.ready.Store(s != nil)
}

// session is one AMQP connection with its channels and queue.
type session struct {
	url   string
	conn  *amqp.Connection
	ch    *amqp.Channel // consume, bind, unbind, declare
	pubCh *amqp.Channel // publish with confirms
	queue string
	// amqp091 closes each notification channel it was given, so each of
	// the connection and the two channels gets its own.
	connClosed, chClosed, pubClosed chan *amqp.Error
	wg                              sync.WaitGroup // the consumer goroutine
}

func (b *Broker) dial() (*amqp.Connection, string, error) {
	if b.cfg.Connection != nil && !b.cfg.Connection.IsClosed() {
		return b.cfg.Connection, "(application connection)", nil
	}
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(b.cfg.ConnectionName)
	var errs []error
	for _, u := range b.cfg.URLs {
		conn, err := amqp.DialConfig(u, amqp.Config{
			Properties: props,
			Heartbeat:  10 * time.Second,
			Dial:       amqp.DefaultDial(b.cfg.DialTimeout),
		})
		if err == nil {
			return conn, u, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", redact(u), err))
	}
	return nil, "", fmt.Errorf("dial rabbitmq: %w", errors.Join(errs...))
}

// connect dials, declares every exchange and the node's queue, binds every
// wanted key again and starts consuming.
func (b *Broker) connect() (*session, error) {
	conn, url, err := b.dial()
	if err != nil {
		return nil, err
	}
	s := &session{url: url, conn: conn,
		connClosed: make(chan *amqp.Error, 1), chClosed: make(chan *amqp.Error, 1), pubClosed: make(chan *amqp.Error, 1)}
	fail := func(err error) (*session, error) {
		s.close(b.cfg.Connection != nil)
		return nil, err
	}
	if s.ch, err = conn.Channel(); err != nil {
		return fail(fmt.Errorf("open channel: %w", err))
	}
	if s.pubCh, err = conn.Channel(); err != nil {
		return fail(fmt.Errorf("open publish channel: %w", err))
	}
	if err := s.pubCh.Confirm(false); err != nil {
		return fail(fmt.Errorf("enable publisher confirms: %w", err))
	}
	conn.NotifyClose(s.connClosed)
	s.ch.NotifyClose(s.chClosed)
	s.pubCh.NotifyClose(s.pubClosed)

	b.mu.Lock()
	exchanges := make([]string, 0, len(b.exchanges))
	for e := range b.exchanges {
		exchanges = append(exchanges, e)
		b.exchanges[e] = false
	}
	wanted := make([]binding, 0, len(b.bindings))
	for k := range b.bindings {
		wanted = append(wanted, k)
	}
	deliver := b.deliver
	b.mu.Unlock()

	for _, e := range exchanges {
		if err := declareExchange(s.ch, e); err != nil {
			return fail(err)
		}
	}
	b.mu.Lock()
	for _, e := range exchanges {
		b.exchanges[e] = true
	}
	b.mu.Unlock()
	if deliver == nil {
		return s, nil // a publisher only
	}

	q, err := s.ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return fail(fmt.Errorf("declare node queue: %w", err))
	}
	s.queue = q.Name
	// Bind without waiting for each reply, then one synchronous call: the
	// channel handles methods in order, so its reply means every bind is
	// done (or the channel failed).
	for _, k := range wanted {
		if err := s.ch.QueueBind(s.queue, k.routingKey, k.exchange, true, nil); err != nil {
			return fail(fmt.Errorf("bind %s/%s again: %w", k.exchange, k.routingKey, err))
		}
	}
	if _, err := s.ch.QueueDeclarePassive(s.queue, false, true, true, false, nil); err != nil {
		return fail(fmt.Errorf("bind %d keys again: %w", len(wanted), err))
	}
	// Auto-ack: delivery is at most once by contract, and the consumer
	// never blocks (fan-out only enqueues), so RabbitMQ may push freely.
	deliveries, err := s.ch.Consume(s.queue, "", true, true, false, false, nil)
	if err != nil {
		return fail(fmt.Errorf("consume node queue: %w", err))
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for d := range deliveries {
			deliver(broker.Message{Exchange: d.Exchange, RoutingKey: d.RoutingKey, Body: d.Body})
		}
	}()
	return s, nil
}

func declareExchange(ch *amqp.Channel, name string) error {
	if err := ch.ExchangeDeclare(name, amqp.ExchangeDirect, false, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q as myxi 1.x does (direct, non-durable, not auto-deleted); "+
			"an exchange of that name already exists with other settings? %w", name, err)
	}
	return nil
}

// wait blocks until the session fails or ctx ends, and says why.
func (s *session) wait(ctx context.Context) string {
	var err *amqp.Error
	select {
	case <-ctx.Done():
		return "closing"
	case err = <-s.connClosed:
	case err = <-s.chClosed:
	case err = <-s.pubClosed:
	}
	if err == nil {
		return "closed"
	}
	return err.Error()
}

func (s *session) close(keepConn bool) {
	if s.ch != nil {
		_ = s.ch.Close()
	}
	if s.pubCh != nil {
		_ = s.pubCh.Close()
	}
	if !keepConn && s.conn != nil {
		_ = s.conn.Close()
	}
	s.wg.Wait()
}

func (b *Broker) current() *session {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sess
}

// Bind binds (exchange, routingKey) to the node's queue and remembers it,
// so that it is bound again after a reconnection.
func (b *Broker) Bind(ctx context.Context, exchange, routingKey string) error {
	k := binding{exchange, routingKey}
	b.mu.Lock()
	b.bindings[k] = struct{}{}
	s := b.sess
	b.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if s == nil {
			break
		}
		err := s.ch.QueueBind(s.queue, routingKey, exchange, false, nil)
		if err == nil {
			return nil
		}
		b.log.Warn("rabbitmq bind failed", "exchange", exchange, "routing_key", routingKey, "err", err)
		if next := b.current(); attempt == 0 && next != nil && next != s {
			s = next // the connection was replaced under us: try the new one
			continue
		}
		break
	}
	b.mu.Lock()
	delete(b.bindings, k)
	b.mu.Unlock()
	return fmt.Errorf("bind %s/%s: %w", exchange, routingKey, broker.ErrUnavailable)
}

// Unbind forgets (exchange, routingKey) and unbinds it if connected.
func (b *Broker) Unbind(ctx context.Context, exchange, routingKey string) error {
	b.mu.Lock()
	delete(b.bindings, binding{exchange, routingKey})
	s := b.sess
	b.mu.Unlock()
	if s == nil {
		return nil // the queue went with the connection; nothing to undo
	}
	if err := s.ch.QueueUnbind(s.queue, routingKey, exchange, nil); err != nil {
		return fmt.Errorf("unbind %s/%s: %w", exchange, routingKey, err)
	}
	return nil
}

// Publish publishes body and waits for RabbitMQ's confirm. An exchange
// this broker has not declared yet is declared first (as myxi 1.x's
// push_event did), compatibly with the server nodes.
func (b *Broker) Publish(ctx context.Context, exchange, routingKey string, body []byte) error {
	b.mu.Lock()
	s := b.sess
	declared := b.exchanges[exchange]
	b.mu.Unlock()
	if s == nil {
		return fmt.Errorf("publish to %s/%s: %w", exchange, routingKey, broker.ErrUnavailable)
	}
	if !declared {
		if err := declareExchange(s.pubCh, exchange); err != nil {
			return fmt.Errorf("publish to %s/%s: %w", exchange, routingKey, err)
		}
		b.mu.Lock()
		if b.sess == s {
			b.exchanges[exchange] = true
		}
		b.mu.Unlock()
	}
	dc, err := s.pubCh.PublishWithDeferredConfirmWithContext(ctx, exchange, routingKey, false, false, amqp.Publishing{
		ContentType: "application/json",
		Body:        body,
	})
	if err != nil {
		return fmt.Errorf("publish to %s/%s: %w", exchange, routingKey, errors.Join(broker.ErrUnavailable, err))
	}
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("publish to %s/%s: waiting for confirm: %w", exchange, routingKey, err)
	}
	if !acked {
		return fmt.Errorf("publish to %s/%s: not confirmed by rabbitmq: %w", exchange, routingKey, broker.ErrUnavailable)
	}
	return nil
}

// Connects counts the successful connections so far: more than one means
// the broker reconnected.
func (b *Broker) Connects() uint64 { return b.connects.Load() }

// Ready reports whether the broker is connected.
func (b *Broker) Ready() bool { return b.ready.Load() }

// WaitReady blocks until the broker is connected or ctx ends.
func (b *Broker) WaitReady(ctx context.Context) error {
	for {
		b.mu.Lock()
		ready, changed := b.sess != nil, b.changed
		b.mu.Unlock()
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for rabbitmq: %w", ctx.Err())
		case <-changed:
		}
	}
}

// Close disconnects and stops reconnecting.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		started := b.started
		b.mu.Unlock()
		if started && b.cancel != nil {
			b.cancel()
			<-b.done
		}
	})
	return nil
}

// jitter spreads d by ±20%.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}

func randomID() string {
	var id [8]byte
	_, _ = crand.Read(id[:])
	return hex.EncodeToString(id[:])
}

// redact hides the password of an AMQP URL for logs.
func redact(u string) string {
	uri, err := amqp.ParseURI(u)
	if err != nil {
		return "(unparsable URL)"
	}
	if uri.Password != "" {
		uri.Password = "xxxxx"
	}
	return uri.String()
}

var _ broker.Broker = (*Broker)(nil)
