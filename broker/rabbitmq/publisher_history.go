package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/internal/protocol"
)

// How a Publisher learns which exchanges have history (docs/history.md,
// "How publishers learn which exchanges have history"): the stream's
// existence is the one fact every process can see.
const (
	// rediscoverEvery is how long an exchange without a stream stays
	// live-only before the next Push looks again.
	rediscoverEvery = 30 * time.Second
	// recreateWait is how long Push waits for a node to create a deleted
	// stream again, or to give a new stream its epoch.
	recreateWait = 2 * time.Second
)

// pubStream is what a Publisher knows of one exchange's history.
type pubStream struct {
	// mu serializes the discoveries of the exchange and guards the rest.
	mu      sync.Mutex
	sess    *session  // the session the rest was learnt on; nil: nothing known
	epoch   string    // the resolved epoch; "" with sess set: live-only
	checked time.Time // when it was found live-only
	// lost: the history vanished under a watch or an append; the next
	// discovery waits for a node to create it again.
	lost  bool
	watch *watch // nil without
}

// watch is a watch consumer. Its goroutine alone makes RPCs on its
// channel (closing it included); others ask it to stop.
type watch struct {
	ch   *amqp.Channel
	stop chan struct{}
}

func (p *Publisher) stream(exchange string) *pubStream {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.streams[exchange]
	if st == nil {
		st = &pubStream{}
		p.streams[exchange] = st
	}
	return st
}

// push appends to exchange's history when it has one, and publishes
// live-only otherwise. An append that RabbitMQ returns (the stream was
// deleted and the watch's cancel has not arrived yet, F11) was not
// recorded: Push discovers again, waiting up to 2 s for a node to create
// the stream again, and tries once more.
func (p *Publisher) push(ctx context.Context, exchange, routingKey string, body []byte) error {
	st := p.stream(exchange)
	for attempt := 0; ; attempt++ {
		epoch, s, err := p.epochFor(ctx, st, exchange)
		if err != nil {
			return err
		}
		if epoch == "" {
			return p.broker.Publish(ctx, exchange, routingKey, body)
		}
		if err := protocol.CheckRecordSize(exchange, routingKey, body, p.maxEventBytes); err != nil {
			return err // Push's own check counted no position
		}
		err = p.broker.appendTo(ctx, s, StreamName(exchange), epoch, exchange, routingKey, body, p.liveCopy)
		if attempt > 0 || !errors.Is(err, errReturned) {
			return err
		}
		p.forget(st, nil, true)
	}
}

// epochFor returns the epoch to stamp on exchange's records and the
// session to append on, or "" when exchange has no history (now: it is
// looked at again after rediscoverEvery). A history's epoch is kept while
// its watch lives; a discovery declares the stream passively, resolves the
// epoch and starts the watch.
func (p *Publisher) epochFor(ctx context.Context, st *pubStream, exchange string) (string, *session, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	b := p.broker
	b.mu.Lock()
	s := b.sess
	b.mu.Unlock()
	if s == nil {
		return "", nil, b.unavailable("push to " + exchange)
	}
	if st.sess == s && (st.epoch != "" || !st.lost && time.Since(st.checked) < rediscoverEvery) {
		return st.epoch, s, nil
	}
	if st.watch != nil {
		close(st.watch.stop)
		st.watch = nil
	}
	stream := StreamName(exchange)
	deadline := time.Now().Add(recreateWait)
	for {
		exists, err := streamExists(s.conn, stream)
		if err != nil {
			return "", nil, fmt.Errorf("push to %s: look for its history: %w", exchange, errors.Join(broker.ErrUnavailable, err))
		}
		var noEpoch bool
		if exists {
			ep, err := resolveEpoch(ctx, s.conn, stream)
			if err == nil {
				st.sess, st.epoch, st.lost = s, ep, false
				p.startWatch(st, s, stream)
				return ep, s, nil
			}
			if !errors.Is(err, errNoEpoch) {
				return "", nil, fmt.Errorf("push to %s: %w", exchange, errors.Join(broker.ErrUnavailable, err))
			}
			noEpoch = true
		}
		if !(st.lost || noEpoch) {
			break
		}
		if time.Now().After(deadline) {
			if noEpoch {
				return "", nil, fmt.Errorf("push to %s: its history exists but has no epoch yet: %w", exchange, broker.ErrUnavailable)
			}
			break // deleted for good: the exchange is live-only now
		}
		select {
		case <-ctx.Done():
			return "", nil, fmt.Errorf("push to %s: waiting for its history: %w", exchange, errors.Join(broker.ErrUnavailable, ctx.Err()))
		case <-time.After(replicaRetry):
		}
	}
	st.sess, st.epoch, st.checked, st.lost = s, "", time.Now(), false
	return "", s, nil
}

// streamExists declares stream passively on a scratch channel (a 404
// closes it).
func streamExists(conn *amqp.Connection, stream string) (bool, error) {
	ch, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open a channel: %w", err)
	}
	defer ch.Close()
	_, err = ch.QueueDeclarePassive(stream, true, false, false, false, nil)
	if err == nil {
		return true, nil
	}
	if isAMQPCode(err, amqp.NotFound) {
		return false, nil
	}
	return false, fmt.Errorf("declare %s passively: %w", stream, err)
}

// startWatch keeps a consumer on stream that costs one chunk (F12:
// prefetch 1, never acked, at "last"), for its basic.cancel: the stream
// was deleted (F10), so the cached epoch is dropped. Without a watch (it
// could not start), a deleted stream still shows as a returned append.
// st.mu is held.
func (p *Publisher) startWatch(st *pubStream, s *session, stream string) {
	b := p.broker
	b.mu.Lock()
	ctx := b.runCtx
	b.mu.Unlock()
	ch, deliveries, err := consumeStream(ctx, s.conn, stream, "last", 1)
	if err != nil {
		b.log.Warn("cannot watch a history stream for its deletion", "stream", stream, "err", err)
		return
	}
	w := &watch{ch: ch, stop: make(chan struct{})}
	b.histMu.Lock()
	started := b.goLocked(func() {
		defer ch.Close()
		for {
			select {
			case _, ok := <-deliveries:
				if !ok {
					p.forget(st, w, !ch.IsClosed())
					return
				}
			case <-s.ended:
				p.forget(st, w, false)
				return
			case <-w.stop:
				return
			case <-ctx.Done():
				return
			}
		}
	})
	b.histMu.Unlock()
	if !started {
		_ = ch.Close()
		return
	}
	st.watch = w
}

// forget drops what is known of a history: when watch is nil, or is still
// the current watch. lost makes the next discovery wait for the stream to
// be created again.
func (p *Publisher) forget(st *pubStream, w *watch, lost bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if w != nil && st.watch != w {
		return
	}
	if st.watch != nil && w == nil {
		close(st.watch.stop)
	}
	st.watch, st.sess, st.epoch, st.lost = nil, nil, "", lost
}
