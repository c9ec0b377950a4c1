package myxi

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/myxi/myxi/broker/rabbitmq"
	"github.com/myxi/myxi/internal/protocol"
)

// Pusher is what Server and Publisher have in common: a way to push an
// application event to the subscribers of an exchange and routing key.
type Pusher interface {
	Push(ctx context.Context, exchange, routingKey, event string, payload any) error
}

// Publisher pushes events from a process that is not a socket server (a
// web application pushing from its models), through RabbitMQ, exactly as
// myxi 1.x's Myxi.push_event did: to the direct exchange named after the
// Myxi exchange, with the routing key and the body {"event", "payload"}.
type Publisher struct {
	broker *rabbitmq.Broker
}

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// URLs of RabbitMQ (tried in order); rabbitmq.ParseURLs splits
	// RABBITMQ_URL. Ignored when Connection is set in Broker.
	URLs []string
	// Name of the AMQP connection. Default "myxi publisher <random id>".
	Name string
	// Logger for connection events. Default slog.Default().
	Logger *slog.Logger
}

// NewPublisher connects to RabbitMQ (reconnecting in the background when
// the connection drops).
func NewPublisher(ctx context.Context, cfg PublisherConfig) (*Publisher, error) {
	if cfg.Name == "" {
		cfg.Name = "myxi publisher " + newID()
	}
	b, err := rabbitmq.New(rabbitmq.Config{URLs: cfg.URLs, ConnectionName: cfg.Name, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("myxi publisher: %w", err)
	}
	if err := b.Start(ctx, nil, nil); err != nil {
		return nil, fmt.Errorf("myxi publisher: %w", err)
	}
	if err := b.WaitReady(ctx); err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("myxi publisher: %w", err)
	}
	return &Publisher{broker: b}, nil
}

// Push publishes event with payload to exchange and routingKey and returns
// once RabbitMQ confirmed it, or an error.
func (p *Publisher) Push(ctx context.Context, exchange, routingKey, event string, payload any) error {
	if !protocol.ValidExchangeName(exchange) {
		return fmt.Errorf("myxi publisher: %q is not a valid exchange name", exchange)
	}
	if len(routingKey) > protocol.MaxRoutingKeyBytes {
		return fmt.Errorf("myxi publisher: routing key longer than %d bytes", protocol.MaxRoutingKeyBytes)
	}
	body, err := protocol.PushBody(event, payload)
	if err != nil {
		return fmt.Errorf("myxi publisher: %w", err)
	}
	if err := p.broker.Publish(ctx, exchange, routingKey, body); err != nil {
		return fmt.Errorf("myxi publisher: %w", err)
	}
	return nil
}

// Close disconnects from RabbitMQ.
func (p *Publisher) Close() error { return p.broker.Close() }

var (
	_ Pusher = (*Server)(nil)
	_ Pusher = (*Publisher)(nil)
)
