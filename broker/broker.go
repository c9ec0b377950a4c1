// Package broker is the seam between "who is subscribed on this node" (the
// hub inside the myxi server) and "how application events reach this node"
// (a Broker implementation).
//
// Two implementations ship with Myxi: broker/memory, an in-process broker
// for a single node (the default), and broker/rabbitmq, which connects
// every node to one RabbitMQ so that a push from any process reaches every
// subscribed client on every node.
//
// # Contract
//
// The server calls Start once, then Bind and Unbind as routing keys gain
// their first and lose their last local subscriber (at most one Bind or
// Unbind in flight per exchange and routing key), Publish from any
// goroutine, and Close once at the end. A Broker calls the Deliver
// function from its own goroutines; Deliver must not block.
package broker

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/myxi/myxi/internal/randid"
)

// ErrUnavailable means the broker cannot be reached right now; the
// operation may succeed later. Clients see it as BrokerUnavailable.
var ErrUnavailable = errors.New("broker unavailable")

// Message is one application event as it arrives from the broker.
type Message struct {
	Exchange   string
	RoutingKey string
	Body       []byte
}

// DeliverFunc receives every message routed to this node. It must not
// block and must not keep Body after it returns.
type DeliverFunc func(Message)

// Broker carries application events between publishers and server nodes.
type Broker interface {
	// Start declares the exchanges (so applications can publish before any
	// client subscribes) and begins delivering messages for bound keys to
	// deliver. It returns an error for a problem that retrying will not
	// fix (a refused declaration); an unreachable broker is retried in the
	// background and reported by Ready.
	Start(ctx context.Context, exchanges []string, deliver DeliverFunc) error
	// Bind makes messages published to (exchange, routingKey) reach this
	// node. It returns only once that is true, or ErrUnavailable (wrapped).
	Bind(ctx context.Context, exchange, routingKey string) error
	// Unbind stops the messages of (exchange, routingKey) reaching this
	// node. The binding is forgotten even when the broker cannot be told
	// right now (it is then not restored on reconnection).
	Unbind(ctx context.Context, exchange, routingKey string) error
	// Publish sends body to exchange with routingKey and returns once the
	// broker has taken it (publisher confirms), or an error.
	Publish(ctx context.Context, exchange, routingKey string, body []byte) error
	// Ready reports whether the broker is connected and delivering.
	Ready() bool
	// Close stops delivery and releases every resource; it is safe to call
	// more than once.
	Close() error
}

// Stats are a broker's counters for the node's metrics. A Broker that
// keeps them implements StatsReporter.
type Stats struct {
	// Received counts the messages this node took from the broker.
	Received uint64
	// Dropped counts the messages the broker discarded before they reached
	// this node, because the node fell too far behind (its queue was full).
	Dropped uint64
}

// StatsReporter is implemented by brokers that keep Stats.
type StatsReporter interface {
	Stats() Stats
}

// History bounds an exchange's history: what is kept for replay after a
// client reconnects. Retention is a minimum by age; by size it is an upper
// bound, and RabbitMQ may keep less (it deletes whole segments).
type History struct {
	// MaxAge is how long records are kept at least.
	MaxAge time.Duration
	// MaxBytes bounds the size of the history.
	MaxBytes int64
}

// Record is one event of an exchange's history, as a node reads it back.
type Record struct {
	RoutingKey string
	// Offset is the record's position: strictly increasing along the
	// history, not necessarily contiguous, below 2^53.
	Offset uint64
	// Body is the event as published. It is nil for the broker's own
	// markers, which only advance the position.
	Body []byte
}

// HistoryFeed receives one exchange's history. Its methods are called
// from one goroutine at a time, records in offset order, and must not
// block for long.
type HistoryFeed interface {
	// Reset begins a new life of the history (epoch names it) or reports
	// that records may have been lost. Everything fed before is void; the
	// next Record's offset minus one is the oldest position kept.
	Reset(epoch string)
	// Record applies one record.
	Record(r Record)
	// Live reports that the reader has caught up with the history: every
	// record appended from now on is fed promptly.
	Live()
	// Down reports that the reader lost the broker. When it resumes, it
	// feeds the records it missed (then Live), or calls Reset when it
	// cannot prove that none was lost.
	Down()
}

// Historian is implemented by brokers that keep history.
type Historian interface {
	// StartHistory begins feeding exchange's history to feed, creating
	// the history when it does not exist, and returns. Call it after
	// Start, at most once per exchange. It returns an error only for what
	// retrying will not fix; an unreachable broker is retried in the
	// background (feed.Down, then feed.Reset or feed.Live).
	StartHistory(ctx context.Context, exchange string, h History, feed HistoryFeed) error
	// Append records body under routingKey in exchange's history and
	// returns once it is recorded (confirmed), or an error wrapping
	// ErrUnavailable. Every node reading the history then delivers it;
	// nodes that do not read it get it live (without a position).
	Append(ctx context.Context, exchange, routingKey string, body []byte) error
}

// NewEpoch returns a fresh epoch name: the time (unix milliseconds, base
// 36, to help people reading logs) and 16 random hex digits, such as
// "mfxk2a1c-9c2e4b7d1a0f3e55".
func NewEpoch() string {
	return strconv.FormatInt(time.Now().UnixMilli(), 36) + "-" + randid.New()
}
