// Package memory is Myxi's embedded broker: everything happens inside the
// server process, so a single node runs with nothing else installed.
// Publishing delivers synchronously to the node's own subscribers; there
// is no other node to reach.
//
// It keeps history (broker.Historian) in the node's own index: Append
// numbers records from 1 (0 is the history's first position, a marker)
// and feeds them at once, and the epoch is drawn at random when the
// history starts, so it changes whenever the process restarts.
package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/myxi/myxi/broker"
)

// Broker is the in-process broker. The zero value is not usable; call New.
type Broker struct {
	mu        sync.RWMutex
	exchanges map[string]bool
	bindings  map[binding]bool
	histories map[string]*history
	deliver   broker.DeliverFunc
	closed    bool
}

// history is one exchange's: its lock keeps records in offset order.
type history struct {
	mu   sync.Mutex
	next uint64
	feed broker.HistoryFeed
}

type binding struct{ exchange, routingKey string }

var errClosed = errors.New("memory broker closed")

// New returns an embedded broker.
func New() *Broker {
	return &Broker{exchanges: map[string]bool{}, bindings: map[binding]bool{}, histories: map[string]*history{}}
}

// Start records the exchanges and where to deliver.
func (b *Broker) Start(_ context.Context, exchanges []string, deliver broker.DeliverFunc) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range exchanges {
		b.exchanges[e] = true
	}
	b.deliver = deliver
	return nil
}

// Bind routes (exchange, routingKey) to this node.
func (b *Broker) Bind(_ context.Context, exchange, routingKey string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("bind %s/%s: %w", exchange, routingKey, errors.Join(broker.ErrUnavailable, errClosed))
	}
	b.bindings[binding{exchange, routingKey}] = true
	return nil
}

// Unbind stops routing (exchange, routingKey) to this node.
func (b *Broker) Unbind(_ context.Context, exchange, routingKey string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.bindings, binding{exchange, routingKey})
	return nil
}

// Publish delivers body to this node when the key is bound, like a direct
// exchange with one queue. Publishing to an exchange that was not declared
// is an error, as it is on RabbitMQ.
func (b *Broker) Publish(_ context.Context, exchange, routingKey string, body []byte) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return fmt.Errorf("publish to %s: %w", exchange, errors.Join(broker.ErrUnavailable, errClosed))
	}
	if !b.exchanges[exchange] {
		return fmt.Errorf("publish to %s: no such exchange", exchange)
	}
	if b.deliver != nil && b.bindings[binding{exchange, routingKey}] {
		b.deliver(broker.Message{Exchange: exchange, RoutingKey: routingKey, Body: body})
	}
	return nil
}

// Ready reports whether the broker is open.
func (b *Broker) Ready() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return !b.closed
}

// Close stops delivery.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.deliver = nil
	return nil
}

// StartHistory begins exchange's history, in feed: a new epoch, a marker
// at offset 0, and live at once. The bounds are the feed's to apply.
func (b *Broker) StartHistory(_ context.Context, exchange string, _ broker.History, feed broker.HistoryFeed) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.exchanges[exchange] {
		return fmt.Errorf("start the history of %s: no such exchange", exchange)
	}
	if b.histories[exchange] != nil {
		return fmt.Errorf("start the history of %s: already started", exchange)
	}
	feed.Reset(broker.NewEpoch())
	feed.Record(broker.Record{Offset: 0})
	feed.Live()
	b.histories[exchange] = &history{next: 1, feed: feed}
	return nil
}

// Append records body in exchange's history, which delivers it to the
// subscribers; in memory, recorded is appended.
func (b *Broker) Append(_ context.Context, exchange, routingKey string, body []byte) error {
	b.mu.RLock()
	h, closed := b.histories[exchange], b.closed
	b.mu.RUnlock()
	if closed {
		return fmt.Errorf("append to %s: %w", exchange, errors.Join(broker.ErrUnavailable, errClosed))
	}
	if h == nil {
		return fmt.Errorf("append to %s: no history for this exchange", exchange)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.feed.Record(broker.Record{RoutingKey: routingKey, Offset: h.next, Body: body})
	h.next++
	return nil
}

var (
	_ broker.Broker    = (*Broker)(nil)
	_ broker.Historian = (*Broker)(nil)
)
