package rabbitmq

// History on RabbitMQ streams (docs/history.md, issue 14): each history
// exchange E has one stream, myxi.history.E, that Myxi's publishers append
// to (Append, Publisher.Push) and that every node reads (StartHistory, one
// reader per exchange: reader.go). The epoch that names one life of a
// stream is written into it (epoch.go).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/myxi/myxi/broker"
)

// Defaults and bounds of a history stream's arguments.
const (
	// DefaultHistoryMaxBytes is the size bound of a stream when
	// broker.History.MaxBytes is 0.
	DefaultHistoryMaxBytes = 64 << 20
	minSegmentBytes        = 1 << 20     // F17: smaller segments can wedge a lagging replica
	maxSegmentBytes        = 500_000_000 // RabbitMQ's own upper bound
	// appendTimeout bounds an append whose context has no deadline: F17
	// shows confirms that never come; a publish is never waited for
	// forever.
	appendTimeout = 10 * time.Second
)

// StreamName is the name of the stream holding exchange's history:
// "myxi.history.<exchange>", or, when that is longer than AMQP's 255
// bytes, "myxi.history.sha256.<first 40 hex of sha256(exchange)>".
func StreamName(exchange string) string {
	name := "myxi.history." + exchange
	if len(name) <= 255 {
		return name
	}
	sum := sha256.Sum256([]byte(exchange))
	return "myxi.history.sha256." + hex.EncodeToString(sum[:])[:40]
}

// streamArgs are the arguments a stream is created with (docs/history.md,
// "Appending"): segments an eighth of the size bound, within [1 MiB,
// 500 MB], so that retention deletes a small part at a time.
func streamArgs(h broker.History) amqp.Table {
	maxBytes := h.MaxBytes
	if maxBytes == 0 {
		maxBytes = DefaultHistoryMaxBytes
	}
	secs := int64((h.MaxAge + time.Second - 1) / time.Second) // rounded up: retention is a minimum
	return amqp.Table{
		"x-queue-type":                    "stream",
		"x-max-age":                       strconv.FormatInt(max(secs, 1), 10) + "s",
		"x-max-length-bytes":              maxBytes,
		"x-stream-max-segment-size-bytes": min(max(maxBytes/8, minSegmentBytes), maxSegmentBytes),
	}
}

// ensureStream makes sure stream exists (docs/history.md, "Creating a
// history"): a passive declare first, so that a stream created with other
// arguments is never redeclared (F2), and an active one only when it is
// absent. A 406 then means another node created it meanwhile with other
// arguments: it is used as it is. Each declare gets a scratch channel,
// since a refusal closes it. created is true when this call created it.
func ensureStream(conn *amqp.Connection, stream string, args amqp.Table, log *slog.Logger) (created bool, err error) {
	declare := func(passive bool) error {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("open a channel to declare %s: %w", stream, err)
		}
		defer ch.Close()
		if passive {
			_, err = ch.QueueDeclarePassive(stream, true, false, false, false, nil)
		} else {
			_, err = ch.QueueDeclare(stream, true, false, false, false, args)
		}
		return err
	}
	err = declare(true)
	if err == nil {
		return false, nil
	}
	if !isAMQPCode(err, amqp.NotFound) {
		return false, fmt.Errorf("declare %s passively: %w", stream, err)
	}
	err = declare(false)
	if err == nil {
		return true, nil
	}
	if !isAMQPCode(err, amqp.PreconditionFailed) {
		return false, fmt.Errorf("declare %s: %w", stream, err)
	}
	if err2 := declare(true); err2 != nil {
		return false, fmt.Errorf("declare %s (%w), then passively: %w", stream, err, err2)
	}
	log.Warn("history stream exists with other arguments; using it as it is (change them with a policy)",
		"stream", stream, "not_applied", args, "err", err)
	return false, nil
}

// history is the state the Broker keeps per history exchange.
type history struct {
	exchange, stream string
	mu               sync.Mutex
	epoch            string // resolved by the reader, "" while unknown
}

func (h *history) setEpoch(ep string) {
	h.mu.Lock()
	h.epoch = ep
	h.mu.Unlock()
}

func (h *history) currentEpoch() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.epoch
}

// readsHistory reports whether StartHistory was called for exchange: the
// node queue then drops the live copies of its records.
func (b *Broker) readsHistory(exchange string) bool {
	b.histMu.RLock()
	defer b.histMu.RUnlock()
	return b.histories[exchange] != nil
}

// StartHistory begins reading exchange's history into feed, creating the
// stream when it does not exist, and returns. It fails only when called
// before Start, twice for one exchange, or with bounds that make no sense;
// everything else (an unreachable broker, a refused declaration) is
// retried in the background and logged.
//
// Each exchange gets a reader goroutine with channels of its own, on the
// broker's connection. At start it feeds Reset, then the records kept
// from MaxAge ago (it attaches at that timestamp), then Live once it has
// read up to the tail it saw when it attached. The reader lives until
// Close, not until ctx ends.
func (b *Broker) StartHistory(ctx context.Context, exchange string, h broker.History, feed broker.HistoryFeed) error {
	if exchange == "" {
		return errors.New("rabbitmq: StartHistory: empty exchange name")
	}
	if h.MaxAge <= 0 {
		return fmt.Errorf("rabbitmq: StartHistory %s: MaxAge %v must be positive", exchange, h.MaxAge)
	}
	if h.MaxBytes < 0 {
		return fmt.Errorf("rabbitmq: StartHistory %s: MaxBytes %d cannot be negative", exchange, h.MaxBytes)
	}
	if feed == nil {
		return fmt.Errorf("rabbitmq: StartHistory %s: nil feed", exchange)
	}
	b.mu.Lock()
	started, runCtx := b.started, b.runCtx
	b.mu.Unlock()
	if !started || runCtx == nil {
		return fmt.Errorf("rabbitmq: StartHistory %s: call Start first", exchange)
	}
	if runCtx.Err() != nil {
		return fmt.Errorf("rabbitmq: StartHistory %s: the broker is closed", exchange)
	}
	hs := &history{exchange: exchange, stream: StreamName(exchange)}
	r := &reader{
		b: b, hist: hs, args: streamArgs(h), maxAge: h.MaxAge, feed: feed, last: -1,
		log:        b.log.With("exchange", exchange, "stream", hs.stream),
		stallAfter: stallAfter,
	}
	if b.testStallAfter > 0 {
		r.stallAfter = b.testStallAfter
	}
	b.histMu.Lock()
	defer b.histMu.Unlock()
	if b.histories[exchange] != nil {
		return fmt.Errorf("rabbitmq: StartHistory %s: already started", exchange)
	}
	if !b.goLocked(func() { r.run(runCtx) }) {
		return fmt.Errorf("rabbitmq: StartHistory %s: the broker is closed", exchange)
	}
	b.histories[exchange] = hs
	return nil
}

// Append records body under routingKey in exchange's history, stamped
// with the epoch the reader resolved, and returns once RabbitMQ confirmed
// it without returning it (F11: a deleted stream returns, then acks).
// Unless Config.NoLiveCopy, it then publishes the live copy (the body on
// the 1.x direct exchange, header myxi-recorded) for the nodes that do not
// read the history, confirmed too. Errors wrap broker.ErrUnavailable,
// except calling it for an exchange without StartHistory. A context
// without a deadline gets one of 10 s.
func (b *Broker) Append(ctx context.Context, exchange, routingKey string, body []byte) error {
	b.histMu.RLock()
	hs := b.histories[exchange]
	b.histMu.RUnlock()
	if hs == nil {
		return fmt.Errorf("rabbitmq: append to %s: StartHistory was not called for it", exchange)
	}
	epoch := hs.currentEpoch()
	if epoch == "" {
		return fmt.Errorf("append to %s/%s: the history's epoch is not resolved yet: %w", exchange, routingKey, broker.ErrUnavailable)
	}
	b.mu.Lock()
	s := b.sess
	b.mu.Unlock()
	if s == nil {
		return b.unavailable(fmt.Sprintf("append to %s/%s", exchange, routingKey))
	}
	return b.appendTo(ctx, s, hs.stream, epoch, exchange, routingKey, body, !b.cfg.NoLiveCopy)
}

// appendTo appends one record to stream and, with liveCopy, publishes its
// live copy; Append and Publisher.Push share it.
func (b *Broker) appendTo(ctx context.Context, s *session, stream, epoch, exchange, routingKey string, body []byte, liveCopy bool) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, appendTimeout)
		defer cancel()
	}
	err := b.publishConfirmed(ctx, s, "", stream, true, amqp.Publishing{
		ContentType: "application/json",
		Headers:     amqp.Table{headerKey: routingKey, headerEpoch: epoch},
		Timestamp:   time.Now(),
		Body:        body,
	})
	if err != nil {
		return fmt.Errorf("append to %s/%s: %w", exchange, routingKey, err)
	}
	if !liveCopy {
		return nil
	}
	// After the record is confirmed, not alongside: a record that failed
	// must not have reached the nodes without history live.
	b.mu.Lock()
	declared := b.declared[exchange]
	b.mu.Unlock()
	if !declared {
		if err := b.declare(ctx, s, exchange); err != nil {
			return fmt.Errorf("append to %s/%s: recorded, but the live copy failed: %w", exchange, routingKey, errors.Join(broker.ErrUnavailable, err))
		}
	}
	err = b.publishConfirmed(ctx, s, exchange, routingKey, false, amqp.Publishing{
		ContentType: "application/json",
		Headers:     amqp.Table{headerRecorded: epoch},
		Body:        body,
	})
	if err != nil {
		return fmt.Errorf("append to %s/%s: recorded, but the live copy failed: %w", exchange, routingKey, err)
	}
	return nil
}

// appendGenesis appends a genesis record proposing epoch.
func (b *Broker) appendGenesis(ctx context.Context, s *session, stream, epoch string) error {
	ctx, cancel := context.WithTimeout(ctx, appendTimeout)
	defer cancel()
	return b.publishConfirmed(ctx, s, "", stream, true, amqp.Publishing{
		Headers:   amqp.Table{headerGenesis: epoch},
		Timestamp: time.Now(),
	})
}

// publishConfirmed publishes msg on the session's publish channel and
// waits for its confirm. A mandatory publish that RabbitMQ returned
// (basic.return comes before the basic.ack, F11) is an error. Every error
// wraps broker.ErrUnavailable.
func (b *Broker) publishConfirmed(ctx context.Context, s *session, exchange, key string, mandatory bool, msg amqp.Publishing) error {
	var id string
	if mandatory {
		id = "myxi-" + strconv.FormatUint(s.publishSeq.Add(1), 36)
		msg.MessageId = id
	}
	dc, err := publishWithin(ctx, s.pubCh, exchange, key, mandatory, msg)
	if err != nil {
		return fmt.Errorf("publish: %w", errors.Join(broker.ErrUnavailable, err))
	}
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("waiting for the confirm: %w", errors.Join(broker.ErrUnavailable, err))
	}
	if !acked {
		return fmt.Errorf("not confirmed by rabbitmq (nack, or the channel closed): %w", broker.ErrUnavailable)
	}
	if mandatory {
		if ret, ok := s.takeReturn(id); ok {
			return fmt.Errorf("%w: %d %s (the stream was deleted?): %w", errReturned, ret.ReplyCode, ret.ReplyText, broker.ErrUnavailable)
		}
	}
	return nil
}

// errReturned: RabbitMQ returned a mandatory publish (basic.return).
var errReturned = errors.New("returned by rabbitmq")

// returns collects the basic.returns of a session's publish channel. The
// connection's reader goroutine puts a return into the buffered channel
// before it handles the ack that follows it, so a publisher that drains
// the channel after its ack is sure to see its own return. A ticker
// drains it too, so that returns nobody waits for cannot fill it.
type returns struct {
	ch   chan amqp.Return
	mu   sync.Mutex
	got  map[string]amqp.Return // by MessageId
	seq  []string               // got's keys, oldest first, to bound it
	stop chan struct{}
}

const maxReturnsKept = 1024

func newReturns() *returns {
	return &returns{ch: make(chan amqp.Return, 4096), got: map[string]amqp.Return{}, stop: make(chan struct{})}
}

// drainLocked moves what the channel holds into got; r.mu is held.
func (r *returns) drainLocked() {
	for {
		select {
		case ret := <-r.ch:
			if ret.MessageId == "" {
				continue // not a publish of ours that waits for it
			}
			r.got[ret.MessageId] = ret
			r.seq = append(r.seq, ret.MessageId)
			// Returns of publishers that gave up are never taken: keep
			// only the newest.
			for len(r.seq) > maxReturnsKept {
				delete(r.got, r.seq[0])
				r.seq = r.seq[1:]
			}
		default:
			return
		}
	}
}

func (r *returns) take(id string) (amqp.Return, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drainLocked()
	ret, ok := r.got[id]
	delete(r.got, id)
	return ret, ok
}

// drainEvery drains the channel every second until stop is closed.
func (r *returns) drainEvery(d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.mu.Lock()
			r.drainLocked()
			r.mu.Unlock()
		}
	}
}

func (s *session) takeReturn(id string) (amqp.Return, bool) { return s.returns.take(id) }

// goLocked runs f in a goroutine that Close waits for, unless Close has
// begun; b.histMu is held.
func (b *Broker) goLocked(f func()) bool {
	if b.closing {
		return false
	}
	b.readers.Add(1)
	go func() {
		defer b.readers.Done()
		f()
	}()
	return true
}

// waitSession returns the current session, waiting for one until ctx ends.
func (b *Broker) waitSession(ctx context.Context) (*session, error) {
	for {
		b.mu.Lock()
		s, changed := b.sess, b.changed
		b.mu.Unlock()
		if s != nil {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		case <-b.done:
			return nil, errors.New("the broker is closed")
		}
	}
}

var _ broker.Historian = (*Broker)(nil)
