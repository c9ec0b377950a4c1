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
// # Bounded buffering
//
// The node consumes its queue with manual acknowledgements and a prefetch
// (Config.Prefetch), so at most that many messages sit between RabbitMQ
// and the fan-out; acknowledgements go out in batches (multiple=true), not
// one per message. The queue itself is bounded (x-max-length and
// x-max-length-bytes with x-overflow drop-head): a node that falls behind
// loses its oldest events instead of growing the queue until RabbitMQ's
// memory alarm blocks every publisher. Dropped messages are dead-lettered
// into a second exclusive queue of the node that nothing consumes; the node
// purges it every Config.StatsInterval and counts what the purge removed
// (Stats.Dropped), so counting a drop costs RabbitMQ one re-route and the
// node nothing per message.
//
// # One owner per channel
//
// amqp091 does not pair an RPC's request with its reply: two RPCs in flight
// on one channel can take each other's replies (seen as "unexpected command
// received" and lost bindings). So one goroutine, the owner, makes every
// RPC on every channel of the broker (declarations, binds, unbinds, qos,
// consume, purge), and so must any channel added later. Other goroutines
// only publish (basic.publish and basic.ack are not RPCs and may run
// concurrently) and ask the owner for the rest. The one exception is a
// channel that a goroutine opens for itself and alone uses: each history
// reader owns its channels, and so do the probes and declarations made on
// scratch channels (history.go).
//
// # History
//
// An exchange with history (StartHistory) also has a RabbitMQ stream,
// myxi.history.<exchange>, that Append and Publisher.Push append to and
// that a reader per exchange feeds to the node: see history.go, reader.go,
// epoch.go and docs/history.md.
//
// Bind and Unbind record what the caller wants and wait, bounded by their
// context, until the owner has made it so. The owner keeps the set of
// bindings wanted and the set it made on the current queue and reconciles
// them, so a caller that gave up (an RPC cannot be cancelled) leaves no
// binding behind and misses none.
//
// # Failures
//
// The node names its AMQP connection ("myxi <node id>") so operators can
// find it. When the connection or a channel fails, the broker reports
// unready, reconnects with capped exponential backoff (trying each URL in
// turn), declares a new queue and binds again every key still wanted.
// Publishes wait for the broker's confirm, so a push either reaches
// RabbitMQ or returns an error. The last connection error is kept and
// reported by WaitReady and by the errors of operations that found the
// broker unavailable.
package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/internal/commalist"
	"github.com/myxi/myxi/internal/randid"
)

// Defaults of Config.
const (
	DefaultPrefetch         = 1024
	DefaultMaxQueueMessages = 100_000
	DefaultMaxQueueBytes    = 64 << 20
	DefaultStatsInterval    = time.Second
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

	// Prefetch is how many messages RabbitMQ may send the node before the
	// node acknowledges them (basic.qos): the bound on what waits inside
	// the node between RabbitMQ and the fan-out. Default 1024; at most
	// 65535.
	Prefetch int
	// MaxQueueMessages and MaxQueueBytes bound the node's queue on
	// RabbitMQ (x-max-length, and x-max-length-bytes counting message
	// bodies). When the node falls that far behind, RabbitMQ drops the
	// oldest messages (x-overflow: drop-head), counted in Stats.Dropped.
	// Defaults 100000 messages and 64 MiB.
	MaxQueueMessages int
	MaxQueueBytes    int64
	// StatsInterval is how often the node collects the count of messages
	// its queue dropped (one queue.purge of its dead-letter queue, which
	// holds at most max(MaxQueueMessages, 100000) messages and
	// MaxQueueBytes: Stats.Dropped is a lower bound when more are dropped
	// within one interval). Default 1s.
	StatsInterval time.Duration

	// NoLiveCopy turns off the live copy of Append: by default each
	// record is also published to the 1.x direct exchange (header
	// myxi-recorded), for the nodes that do not read the history (older
	// Myxi, or history off there). Set it once every node reads the
	// history, to save the second publish (history_live_copy = false).
	NoLiveCopy bool
}

// ParseURLs splits a comma-separated list of AMQP URLs, dropping blanks.
func ParseURLs(list string) []string { return commalist.Split(list) }

// Broker is a broker.Broker on RabbitMQ.
type Broker struct {
	cfg Config
	log *slog.Logger

	// kick wakes the owner to reconcile the bindings; declares carries
	// Publish's exchange declarations to it.
	kick     chan struct{}
	declares chan declareReq

	mu         sync.Mutex
	configured []string             // the exchanges given to Start
	declared   map[string]bool      // exchanges declared on the current session
	wanted     map[binding]struct{} // what Bind and Unbind asked for
	made       map[binding]struct{} // bound on the current session's queue
	inflight   map[binding]bool     // the owner's RPCs under way: true bind, false unbind
	sess       *session             // nil while disconnected
	changed    chan struct{}        // closed and replaced whenever sess, made or inflight change
	lastErr    error                // why the last connection attempt or session failed
	deliver    broker.DeliverFunc

	// testHookBatch, when a test sets it (under mu), runs in the owner
	// before each batch of binding changes is sent.
	testHookBatch func()

	ready     atomic.Bool
	connects  atomic.Uint64
	received  atomic.Uint64
	dropped   atomic.Uint64
	started   bool
	runCtx    context.Context // the owner's and the readers' lifetime; set by Start
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once

	// histories are the exchanges StartHistory was called for; readers
	// counts their reader goroutines, which Close waits for.
	histMu    sync.RWMutex
	histories map[string]*history
	readers   sync.WaitGroup
	closing   bool // under histMu: no reader may start

	// testStallAfter, when a test sets it before StartHistory, replaces
	// the readers' stall delay; testNoAck makes them stop acking, which
	// stalls them once the prefetch is used up.
	testStallAfter time.Duration
	testNoAck      atomic.Bool
}

type binding struct{ exchange, routingKey string }

type declareReq struct {
	sess     *session
	exchange string
	reply    chan error
}

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
	var errs []error
	if cfg.Prefetch < 0 || cfg.Prefetch > 65535 {
		errs = append(errs, fmt.Errorf("rabbitmq: Prefetch %d: must be between 0 (default) and 65535", cfg.Prefetch))
	}
	if cfg.MaxQueueMessages < 0 {
		errs = append(errs, fmt.Errorf("rabbitmq: MaxQueueMessages %d: cannot be negative", cfg.MaxQueueMessages))
	}
	if cfg.MaxQueueBytes < 0 {
		errs = append(errs, fmt.Errorf("rabbitmq: MaxQueueBytes %d: cannot be negative", cfg.MaxQueueBytes))
	}
	if cfg.StatsInterval < 0 {
		errs = append(errs, fmt.Errorf("rabbitmq: StatsInterval %v: cannot be negative", cfg.StatsInterval))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.ConnectionName == "" {
		cfg.ConnectionName = "myxi " + randid.New()
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
	if cfg.Prefetch == 0 {
		cfg.Prefetch = DefaultPrefetch
	}
	if cfg.MaxQueueMessages == 0 {
		cfg.MaxQueueMessages = DefaultMaxQueueMessages
	}
	if cfg.MaxQueueBytes == 0 {
		cfg.MaxQueueBytes = DefaultMaxQueueBytes
	}
	if cfg.StatsInterval == 0 {
		cfg.StatsInterval = DefaultStatsInterval
	}
	return &Broker{
		cfg:      cfg,
		log:      cfg.Logger.With("broker", "rabbitmq", "connection", cfg.ConnectionName),
		kick:     make(chan struct{}, 1),
		declares: make(chan declareReq),
		declared: map[string]bool{},
		wanted:   map[binding]struct{}{},
		made:     map[binding]struct{}{},
		inflight: map[binding]bool{},
		changed:  make(chan struct{}),
		done:     make(chan struct{}),

		histories: map[string]*history{},
	}, nil
}

// ConnectionName is the name this node's AMQP connection carries.
func (b *Broker) ConnectionName() string { return b.cfg.ConnectionName }

// Start connects, declares the exchanges and, when deliver is not nil, a
// queue for this node. A first connection that fails is retried in the
// background; a declaration that RabbitMQ refuses, or credentials it
// refuses, are returned.
func (b *Broker) Start(ctx context.Context, exchanges []string, deliver broker.DeliverFunc) error {
	b.mu.Lock()
	if b.started {
		b.mu.Unlock()
		return errors.New("rabbitmq: already started")
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.started = true
	b.deliver = deliver
	b.configured = append([]string(nil), exchanges...)
	b.runCtx, b.cancel = runCtx, cancel
	b.mu.Unlock()
	first := make(chan error, 1)
	go b.own(runCtx, first)
	return <-first
}

// own is the owner goroutine: it connects, makes every RPC of every
// channel while connected, and replaces the session when it fails, until
// Close. The first connection's outcome goes to first: nil (connected, or
// retrying in the background) or an error that retrying will not fix,
// which ends the owner.
func (b *Broker) own(ctx context.Context, first chan<- error) {
	defer close(b.done)
	delay := b.cfg.ReconnectMin
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(jitter(delay)):
			}
		}
		sess, err := b.connect()
		if err != nil {
			b.setLastErr(err)
			if first != nil {
				var amqpErr *amqp.Error
				if errors.As(err, &amqpErr) && amqpErr.Code != amqp.ConnectionForced {
					b.cancel()
					first <- err
					return
				}
				b.log.Warn("rabbitmq not reachable yet, retrying in the background", "err", err)
				first <- nil
				first = nil
			} else {
				b.log.Warn("rabbitmq reconnect failed", "err", err, "retry_in", delay)
			}
			delay = min(delay*2, b.cfg.ReconnectMax)
			if b.cfg.Connection != nil && len(b.cfg.URLs) == 0 {
				b.log.Error("rabbitmq: the application's connection failed and no URL is configured to reconnect")
				return
			}
			continue
		}
		b.setSession(sess)
		if first != nil {
			first <- nil // ready before Start returns
			first = nil
		}
		b.log.Info("rabbitmq connected", "url", redact(sess.url), "queue", sess.queue)
		connectedAt := time.Now()
		reason := b.serve(ctx, sess)
		b.setSession(nil)
		close(sess.ended) // the history readers let go of it
		sess.close(b.cfg.Connection != nil)
		if ctx.Err() != nil {
			return
		}
		b.setLastErr(reason)
		b.log.Warn("rabbitmq connection lost", "reason", reason)
		if b.cfg.Connection != nil && len(b.cfg.URLs) == 0 {
			b.log.Error("rabbitmq: the application's connection failed and no URL is configured to reconnect")
			return
		}
		if time.Since(connectedAt) > b.cfg.ReconnectMax {
			delay = b.cfg.ReconnectMin
		}
	}
}

// serve is the owner's loop while sess is connected: it reconciles the
// bindings, declares exchanges for Publish and collects the drop count,
// one RPC at a time, until the session fails (its reason is returned) or
// ctx ends.
func (b *Broker) serve(ctx context.Context, s *session) error {
	var tick <-chan time.Time
	if s.drops != "" {
		t := time.NewTicker(b.cfg.StatsInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		if err := b.reconcile(s); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.New("closing")
		case err := <-s.connClosed:
			return closeReason("connection", err)
		case err := <-s.chClosed:
			return closeReason("channel", err)
		case err := <-s.pubClosed:
			return closeReason("publish channel", err)
		case <-b.kick:
		case req := <-b.declares:
			if err := b.declareOnDemand(s, req); err != nil {
				return err
			}
		case <-tick:
			n, err := s.ch.QueuePurge(s.drops, false)
			if err != nil {
				return fmt.Errorf("count dropped messages: %w", err)
			}
			if n > 0 {
				b.dropped.Add(uint64(n))
				b.log.Warn("node queue full: rabbitmq dropped the oldest messages; the node falls behind",
					"dropped", n, "max_queue_messages", b.cfg.MaxQueueMessages, "max_queue_bytes", b.cfg.MaxQueueBytes)
			}
		}
	}
}

func closeReason(what string, err *amqp.Error) error {
	if err == nil {
		return fmt.Errorf("%s closed", what)
	}
	return fmt.Errorf("%s closed: %w", what, err)
}

// maxBatch bounds the binding changes the owner sends before it reports
// progress to the waiting callers and serves Publish's declarations.
const maxBatch = 1024

// reconcile makes the node queue's bindings what the callers want, in
// batches: binds go out without waiting for their replies, and a batch
// ends with a synchronous method. A channel handles methods in order, so
// that method's reply means every earlier one is done, and a failed bind
// closes the channel, which fails it.
func (b *Broker) reconcile(s *session) error {
	if s.queue == "" {
		return nil // a publisher only
	}
	for {
		b.mu.Lock()
		var binds, unbinds []binding
		for k := range b.wanted {
			if _, ok := b.made[k]; !ok && len(binds) < maxBatch {
				binds = append(binds, k)
			}
		}
		for k := range b.made {
			if _, ok := b.wanted[k]; !ok && len(binds)+len(unbinds) < maxBatch {
				unbinds = append(unbinds, k)
			}
		}
		for _, k := range binds {
			b.inflight[k] = true
		}
		for _, k := range unbinds {
			b.inflight[k] = false
		}
		hook := b.testHookBatch
		b.mu.Unlock()
		if len(binds)+len(unbinds) == 0 {
			return nil
		}
		if hook != nil {
			hook()
		}
		err := applyBindings(s, binds, unbinds)
		b.mu.Lock()
		clear(b.inflight)
		if err == nil {
			for _, k := range binds {
				b.made[k] = struct{}{}
			}
			for _, k := range unbinds {
				delete(b.made, k)
			}
		}
		b.notifyLocked()
		b.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// applyBindings unbinds (queue.unbind has no no-wait form: each is
// synchronous) and binds, the last bind waiting for its reply.
func applyBindings(s *session, binds, unbinds []binding) error {
	for _, k := range unbinds {
		if err := s.ch.QueueUnbind(s.queue, k.routingKey, k.exchange, nil); err != nil {
			return fmt.Errorf("unbind %s/%s: %w", k.exchange, k.routingKey, err)
		}
	}
	for i, k := range binds {
		noWait := i < len(binds)-1
		if err := s.ch.QueueBind(s.queue, k.routingKey, k.exchange, noWait, nil); err != nil {
			return fmt.Errorf("bind %d keys (%s/%s...): %w", len(binds), binds[0].exchange, binds[0].routingKey, err)
		}
	}
	return nil
}

// declareOnDemand serves a declaration for Publish on the session's
// declaration channel. A refused declaration closes that channel only (it
// is opened again for the next one), not the node's session; its error
// goes to the caller. The returned error ends the session.
func (b *Broker) declareOnDemand(s *session, req declareReq) error {
	if req.sess != s {
		req.reply <- fmt.Errorf("declare exchange %q: the connection was replaced: %w", req.exchange, broker.ErrUnavailable)
		return nil
	}
	b.mu.Lock()
	done := b.declared[req.exchange]
	b.mu.Unlock()
	if done {
		req.reply <- nil
		return nil
	}
	if s.declCh == nil || s.declCh.IsClosed() {
		ch, err := s.conn.Channel()
		if err != nil {
			req.reply <- fmt.Errorf("declare exchange %q: open channel: %w", req.exchange, errors.Join(broker.ErrUnavailable, err))
			return fmt.Errorf("open declaration channel: %w", err)
		}
		s.declCh = ch
	}
	err := declareExchange(s.declCh, req.exchange)
	if err == nil {
		b.mu.Lock()
		b.declared[req.exchange] = true
		b.mu.Unlock()
	}
	req.reply <- err
	return nil
}

func (b *Broker) setSession(s *session) {
	if s != nil {
		b.connects.Add(1)
	}
	b.mu.Lock()
	b.sess = s
	if s != nil {
		b.made, b.declared, b.lastErr = s.bound, s.declared, nil
	} else {
		b.made, b.declared = map[binding]struct{}{}, map[string]bool{}
	}
	b.notifyLocked()
	b.mu.Unlock()
	b.ready.Store(s != nil)
}

func (b *Broker) setLastErr(err error) {
	b.mu.Lock()
	b.lastErr = err
	b.mu.Unlock()
}

// notifyLocked wakes every caller waiting on a change; b.mu is held.
func (b *Broker) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *Broker) wake() {
	select {
	case b.kick <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// unavailable is the error for an operation that found the broker
// unreachable, with the last connection error when there is one.
func (b *Broker) unavailable(op string) error {
	b.mu.Lock()
	last := b.lastErr
	b.mu.Unlock()
	if last != nil {
		return fmt.Errorf("%s: %w (last error: %w)", op, broker.ErrUnavailable, last)
	}
	return fmt.Errorf("%s: %w", op, broker.ErrUnavailable)
}

// session is one AMQP connection with its channels and queues. Only the
// owner makes RPCs on its channels.
type session struct {
	url    string
	conn   *amqp.Connection
	ch     *amqp.Channel // consume, ack, bind, unbind, declare, purge
	pubCh  *amqp.Channel // publish with confirms (no RPC after setup)
	declCh *amqp.Channel // Publish's declarations, opened on demand
	queue  string        // the node's queue
	drops  string        // where the node's queue dead-letters what it drops
	// bound and declared are what connect made; they become the broker's
	// made and declared sets.
	bound    map[binding]struct{}
	declared map[string]bool
	// amqp091 closes each notification channel it was given, so each of
	// the connection and the two channels gets its own.
	connClosed, chClosed, pubClosed chan *amqp.Error
	wg                              sync.WaitGroup // the consumer goroutine and the returns' drain
	// returns are pubCh's basic.returns, which Append's mandatory
	// publishes look up by publishSeq; ended is closed when the owner
	// gives the session up.
	returns    *returns
	publishSeq atomic.Uint64
	ended      chan struct{}
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
	if len(errs) == 0 {
		return nil, "", errors.New("dial rabbitmq: the application's connection is closed and no URL is configured")
	}
	return nil, "", fmt.Errorf("dial rabbitmq: %w", errors.Join(errs...))
}

// connect dials, declares every exchange and the node's queues, binds
// every wanted key again and starts consuming. Only the owner calls it.
func (b *Broker) connect() (*session, error) {
	conn, url, err := b.dial()
	if err != nil {
		return nil, err
	}
	s := &session{url: url, conn: conn, bound: map[binding]struct{}{}, declared: map[string]bool{},
		connClosed: make(chan *amqp.Error, 1), chClosed: make(chan *amqp.Error, 1), pubClosed: make(chan *amqp.Error, 1),
		returns: newReturns(), ended: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.returns.drainEvery(time.Second)
	}()
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
	s.pubCh.NotifyReturn(s.returns.ch)

	b.mu.Lock()
	exchanges := append([]string(nil), b.configured...)
	wanted := make([]binding, 0, len(b.wanted))
	for k := range b.wanted {
		wanted = append(wanted, k)
	}
	deliver := b.deliver
	b.mu.Unlock()

	for _, e := range exchanges {
		if err := declareExchange(s.ch, e); err != nil {
			return fail(err)
		}
		s.declared[e] = true
	}
	if deliver == nil {
		return s, nil // a publisher only
	}

	bound := int64(b.cfg.MaxQueueMessages)
	bytes := b.cfg.MaxQueueBytes
	// The dead-letter queue holds what was dropped within one
	// StatsInterval; a bound of at least DefaultMaxQueueMessages keeps the
	// count exact under a small MaxQueueMessages, and MaxQueueBytes keeps
	// its memory bounded like the node queue's.
	dq, err := s.ch.QueueDeclare("", false, true, true, false, amqp.Table{
		"x-max-length": max(bound, DefaultMaxQueueMessages), "x-max-length-bytes": bytes, "x-overflow": "drop-head",
	})
	if err != nil {
		return fail(fmt.Errorf("declare the node's dead-letter queue: %w", err))
	}
	s.drops = dq.Name
	q, err := s.ch.QueueDeclare("", false, true, true, false, amqp.Table{
		"x-max-length":              bound,
		"x-max-length-bytes":        bytes,
		"x-overflow":                "drop-head",
		"x-dead-letter-exchange":    "", // the default exchange routes by queue name
		"x-dead-letter-routing-key": s.drops,
	})
	if err != nil {
		return fail(fmt.Errorf("declare node queue: %w", err))
	}
	s.queue = q.Name
	for start := 0; start < len(wanted); start += maxBatch {
		batch := wanted[start:min(start+maxBatch, len(wanted))]
		if err := applyBindings(s, batch, nil); err != nil {
			return fail(fmt.Errorf("bind again: %w", err))
		}
		for _, k := range batch {
			s.bound[k] = struct{}{}
		}
	}
	if err := s.ch.Qos(b.cfg.Prefetch, 0, false); err != nil {
		return fail(fmt.Errorf("set prefetch: %w", err))
	}
	deliveries, err := s.ch.Consume(s.queue, "", false, true, false, false, nil)
	if err != nil {
		return fail(fmt.Errorf("consume node queue: %w", err))
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		b.consume(s.ch, deliveries, deliver)
	}()
	return s, nil
}

// consume hands every delivery to deliver and acknowledges them in
// batches (ackBatcher): once a quarter of the prefetch is delivered, or
// once deliveries pause. An ack is a one-way frame, not an RPC, so it
// does not go through the owner.
func (b *Broker) consume(ch *amqp.Channel, deliveries <-chan amqp.Delivery, deliver broker.DeliverFunc) {
	acks := newAckBatcher(b.cfg.Prefetch/4, func(last uint64, n int) {
		b.received.Add(uint64(n))
		// An error means the channel is gone, and with it every unacked
		// delivery; the owner sees the channel close.
		_ = ch.Ack(last, true)
	})
	defer acks.flush()
	for {
		var d amqp.Delivery
		var ok bool
		select {
		case d, ok = <-deliveries:
		case <-acks.idle():
			acks.flush()
			continue
		}
		if !ok {
			return
		}
		// The live copy of a record of a history this node reads is
		// dropped: the reader delivers that record, with its position.
		if _, copied := d.Headers[headerRecorded]; !copied || !b.readsHistory(d.Exchange) {
			deliver(broker.Message{Exchange: d.Exchange, RoutingKey: d.RoutingKey, Body: d.Body})
		}
		acks.add(d.DeliveryTag)
	}
}

func declareExchange(ch *amqp.Channel, name string) error {
	if err := ch.ExchangeDeclare(name, amqp.ExchangeDirect, false, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q as myxi 1.x does (direct, non-durable, not auto-deleted); "+
			"an exchange of that name already exists with other settings? %w", name, err)
	}
	return nil
}

// close ends the session. With the application's connection (kept open),
// the dead-letter queue, which has no consumer to auto-delete it, is
// deleted on a channel of its own.
func (s *session) close(keepConn bool) {
	close(s.returns.stop)
	for _, ch := range []*amqp.Channel{s.ch, s.pubCh, s.declCh} {
		if ch != nil {
			_ = ch.Close()
		}
	}
	if keepConn && s.drops != "" && !s.conn.IsClosed() {
		if ch, err := s.conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(s.drops, false, false, false)
			_ = ch.Close()
		}
	}
	if !keepConn && s.conn != nil {
		_ = s.conn.Close()
	}
	s.wg.Wait()
}

// Bind binds (exchange, routingKey) to the node's queue and remembers it,
// so that it is bound again after a reconnection. It returns once the
// binding exists, or an error wrapping broker.ErrUnavailable: at once when
// the broker is disconnected, when the connection fails meanwhile, or
// when ctx ends first (the key is then not wanted: the owner removes the
// binding if it was made after all).
func (b *Broker) Bind(ctx context.Context, exchange, routingKey string) error {
	k := binding{exchange, routingKey}
	b.mu.Lock()
	s := b.sess
	if b.deliver == nil && b.started {
		b.mu.Unlock()
		return fmt.Errorf("bind %s/%s: the broker was started without a deliver function (a publisher only)", exchange, routingKey)
	}
	if s == nil {
		b.mu.Unlock()
		return b.unavailable(fmt.Sprintf("bind %s/%s", exchange, routingKey))
	}
	b.wanted[k] = struct{}{}
	b.mu.Unlock()
	b.wake()
	for {
		b.mu.Lock()
		_, made := b.made[k]
		bind, busy := b.inflight[k]
		cur, changed := b.sess, b.changed
		if cur != nil && made && !(busy && !bind) {
			b.mu.Unlock()
			return nil
		}
		if cur != s {
			delete(b.wanted, k)
			b.mu.Unlock()
			b.wake()
			return b.unavailable(fmt.Sprintf("bind %s/%s: the connection failed meanwhile", exchange, routingKey))
		}
		b.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			b.mu.Lock()
			delete(b.wanted, k)
			b.mu.Unlock()
			b.wake()
			return fmt.Errorf("bind %s/%s: %w", exchange, routingKey, errors.Join(broker.ErrUnavailable, ctx.Err()))
		}
	}
}

// Unbind forgets (exchange, routingKey) and waits, bounded by ctx, until
// the owner has unbound it. When ctx ends first, or the broker cannot be
// reached, the binding is still forgotten: the owner removes it later, or
// it went with the connection.
func (b *Broker) Unbind(ctx context.Context, exchange, routingKey string) error {
	k := binding{exchange, routingKey}
	b.mu.Lock()
	delete(b.wanted, k)
	s := b.sess
	b.mu.Unlock()
	if s == nil {
		return nil // the queue went with the connection; nothing to undo
	}
	b.wake()
	for {
		b.mu.Lock()
		_, made := b.made[k]
		bind, busy := b.inflight[k]
		cur, changed := b.sess, b.changed
		b.mu.Unlock()
		if cur != s || !made && !(busy && bind) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("unbind %s/%s (it is removed in the background): %w", exchange, routingKey, ctx.Err())
		}
	}
}

// Publish publishes body and waits for RabbitMQ's confirm. An exchange
// this broker has not declared yet is declared first (as myxi 1.x's
// push_event did), compatibly with the server nodes, by the owner.
func (b *Broker) Publish(ctx context.Context, exchange, routingKey string, body []byte) error {
	b.mu.Lock()
	s := b.sess
	declared := b.declared[exchange]
	b.mu.Unlock()
	if s == nil {
		return b.unavailable(fmt.Sprintf("publish to %s/%s", exchange, routingKey))
	}
	if !declared {
		if err := b.declare(ctx, s, exchange); err != nil {
			return fmt.Errorf("publish to %s/%s: %w", exchange, routingKey, err)
		}
	}
	dc, err := publishWithin(ctx, s.pubCh, exchange, routingKey, false, amqp.Publishing{
		ContentType: "application/json",
		Body:        body,
	})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("publish to %s/%s: %w", exchange, routingKey, err)
		}
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

// publishWithin makes one publish on ch and returns by the time ctx ends.
// amqp091 looks at ctx only before it writes, and a write blocks for as
// long as RabbitMQ does not read the connection (flow control, a stream
// leader failing over): without this, a Push could outlive its deadline
// by minutes. An abandoned publish ends with the connection's next move
// (its write goes through, or the connection fails); its confirm, if
// any, is not waited for.
func publishWithin(ctx context.Context, ch *amqp.Channel, exchange, key string, mandatory bool, msg amqp.Publishing) (*amqp.DeferredConfirmation, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	type result struct {
		dc  *amqp.DeferredConfirmation
		err error
	}
	done := make(chan result, 1)
	go func() {
		dc, err := ch.PublishWithDeferredConfirm(exchange, key, mandatory, false, msg)
		done <- result{dc, err}
	}()
	select {
	case r := <-done:
		return r.dc, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("the publish could not be written in time (RabbitMQ is not reading this connection): %w", ctx.Err())
	}
}

// declare asks the owner to declare exchange on session s.
func (b *Broker) declare(ctx context.Context, s *session, exchange string) error {
	req := declareReq{sess: s, exchange: exchange, reply: make(chan error, 1)}
	select {
	case b.declares <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-b.done:
		return fmt.Errorf("declare exchange %q: broker closed: %w", exchange, broker.ErrUnavailable)
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Connects counts the successful connections so far: more than one means
// the broker reconnected.
func (b *Broker) Connects() uint64 { return b.connects.Load() }

// Stats returns the node's counters: the messages received from its queue
// (counted as they are acknowledged) and those RabbitMQ dropped from it
// (counted every StatsInterval).
func (b *Broker) Stats() broker.Stats {
	return broker.Stats{Received: b.received.Load(), Dropped: b.dropped.Load()}
}

// Ready reports whether the broker is connected.
func (b *Broker) Ready() bool { return b.ready.Load() }

// WaitReady blocks until the broker is connected or ctx ends; its error
// then carries the last connection error (such as "no such host").
func (b *Broker) WaitReady(ctx context.Context) error {
	for {
		b.mu.Lock()
		ready, changed, last := b.sess != nil, b.changed, b.lastErr
		b.mu.Unlock()
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("not connected to rabbitmq: %w (last error: %w)", ctx.Err(), last)
			}
			return fmt.Errorf("not connected to rabbitmq: %w", ctx.Err())
		case <-changed:
		case <-b.done:
			return errors.New("not connected to rabbitmq: the broker is closed")
		}
	}
}

// Close disconnects and stops reconnecting.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		started := b.started
		b.mu.Unlock()
		b.histMu.Lock()
		b.closing = true
		b.histMu.Unlock()
		if started && b.cancel != nil {
			b.cancel()
			<-b.done
		}
		b.readers.Wait()
	})
	return nil
}

// jitter spreads d by ±20%.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
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

var (
	_ broker.Broker        = (*Broker)(nil)
	_ broker.StatsReporter = (*Broker)(nil)
)
