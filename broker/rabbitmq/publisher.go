package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/myxi/myxi/internal/protocol"
	"github.com/myxi/myxi/internal/randid"
)

// Publisher pushes events from a process that is not a socket server (a
// web application pushing from its models), through RabbitMQ, exactly as
// myxi 1.x's Myxi.push_event did: to the direct exchange named after the
// Myxi exchange, with the routing key and the body {"event", "payload"}.
//
// To an exchange with history (its stream myxi.history.E exists), Push
// appends the event to the history instead, as Broker.Append does: see
// publisher_history.go. It is safe for concurrent use.
type Publisher struct {
	broker        *Broker
	maxEventBytes int
	liveCopy      bool

	mu      sync.Mutex
	streams map[string]*pubStream // what Push learnt of each exchange's history
}

// PublisherConfig configures a Publisher. Zero values are the documented
// defaults.
type PublisherConfig struct {
	// URLs of RabbitMQ, tried in order on every (re)connection; ParseURLs
	// splits the comma-separated form of RABBITMQ_URL. At least one.
	URLs []string
	// Name of the AMQP connection, shown by `rabbitmqctl list_connections
	// name`. Default "myxi publisher <random id>".
	Name string
	// Logger receives connection events. Default slog.Default().
	Logger *slog.Logger
	// MaxEventBytes is the server nodes' maximum event size
	// (myxi.Limits.MaxEventBytes): Push refuses an event the nodes would
	// drop for its size. Default the nodes' default, 256 KiB.
	MaxEventBytes int
	// NoLiveCopy: a Push to an exchange with history is only recorded,
	// without its live copy on the 1.x exchange (Config.NoLiveCopy).
	NoLiveCopy bool
}

// NewPublisher connects to RabbitMQ and returns once connected (it
// reconnects in the background when the connection drops later). When ctx
// ends first, the error carries the last connection error.
func NewPublisher(ctx context.Context, cfg PublisherConfig) (*Publisher, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("rabbitmq publisher: no URL given")
	}
	if cfg.MaxEventBytes < 0 {
		return nil, fmt.Errorf("rabbitmq publisher: MaxEventBytes %d: cannot be negative", cfg.MaxEventBytes)
	}
	if cfg.MaxEventBytes == 0 {
		cfg.MaxEventBytes = protocol.DefaultMaxEventBytes
	}
	if cfg.Name == "" {
		cfg.Name = "myxi publisher " + randid.New()
	}
	b, err := New(Config{URLs: cfg.URLs, ConnectionName: cfg.Name, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	if err := b.Start(ctx, nil, nil); err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	if err := b.WaitReady(ctx); err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("publisher: %w", err)
	}
	return &Publisher{broker: b, maxEventBytes: cfg.MaxEventBytes, liveCopy: !cfg.NoLiveCopy, streams: map[string]*pubStream{}}, nil
}

// Push publishes event with payload (nil, or anything that encodes to a
// JSON object) to exchange and routingKey and returns once RabbitMQ
// confirmed it, or an error. It refuses what every node would drop: an
// invalid exchange name, a routing key over 255 bytes, an empty event
// name, a payload that is not an object or not valid UTF-8, and an event
// over MaxEventBytes. When exchange has history, the event is appended to
// it (and Push fails, wrapping broker.ErrUnavailable, when it cannot be);
// otherwise it is published live-only, as myxi 1.x did.
func (p *Publisher) Push(ctx context.Context, exchange, routingKey, event string, payload any) error {
	if !protocol.ValidExchangeName(exchange) {
		return fmt.Errorf("rabbitmq publisher: %q is not a valid exchange name", exchange)
	}
	if len(routingKey) > protocol.MaxRoutingKeyBytes {
		return fmt.Errorf("rabbitmq publisher: routing key longer than %d bytes", protocol.MaxRoutingKeyBytes)
	}
	body, err := protocol.PushBody(event, payload)
	if err != nil {
		return fmt.Errorf("rabbitmq publisher: %w", err)
	}
	if err := protocol.CheckEventSize(exchange, routingKey, body, p.maxEventBytes); err != nil {
		return fmt.Errorf("rabbitmq publisher: %s: %w", event, err)
	}
	if err := p.push(ctx, exchange, routingKey, body); err != nil {
		return fmt.Errorf("rabbitmq publisher: %w", err)
	}
	return nil
}

// Close disconnects from RabbitMQ.
func (p *Publisher) Close() error { return p.broker.Close() }

// MaxEventBytes is the largest event Push accepts (PublisherConfig's,
// after its default), for publishers such as the HTTP API that check
// events before they publish them.
func (p *Publisher) MaxEventBytes() int64 { return int64(p.maxEventBytes) }
