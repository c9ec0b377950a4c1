package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/myxi/myxi/broker"
)

// The reader's budgets (docs/history.md, "The reader" and "Failure").
const (
	readerPrefetch = 1000            // F3: a stream consumer needs a prefetch
	readerAckEvery = 500             // acks only return credit (F3)
	stallAfter     = 5 * time.Second // F8: a read can stall with no error
	readerRetryMin = 250 * time.Millisecond
	readerRetryMax = 5 * time.Second
)

var (
	// errCancelled: RabbitMQ cancelled the reader's consumer, which it
	// does when the stream is deleted (F10).
	errCancelled = errors.New("the reader's consumer was cancelled (the stream was deleted?)")
	// errStalled: the reader delivered nothing while the tail moved (F8).
	errStalled = errors.New("the reader stalled: nothing delivered while the tail moved")
)

// reader feeds one exchange's history to its feed: one goroutine, with
// channels of its own on the broker's connection, on which it alone makes
// RPCs (see "One owner per channel" in rabbitmq.go). Its fields other than
// hist are the reader goroutine's only.
type reader struct {
	b      *Broker
	hist   *history
	args   amqp.Table
	maxAge time.Duration
	feed   broker.HistoryFeed
	log    *slog.Logger
	// stallAfter is stallAfter but for tests.
	stallAfter time.Duration

	epoch string // of the last feed.Reset; "" before the first
	last  int64  // L: every record up to L since the last Reset was fed; -1 none
	live  bool   // feed.Live reported since the last Reset or Down
	down  bool   // feed.Down reported and not yet resumed
}

// run reads until ctx ends (the broker closes), through every lost
// connection, cancelled consumer and stall.
func (r *reader) run(ctx context.Context) {
	delay := readerRetryMin
	for {
		s, err := r.b.waitSession(ctx)
		if err != nil {
			return
		}
		began := time.Now()
		err = r.serve(ctx, s)
		if ctx.Err() != nil {
			return
		}
		r.hist.setEpoch("") // appends wait for the next resolution
		if r.epoch != "" && !r.down {
			r.feed.Down()
			r.down, r.live = true, false
		}
		if time.Since(began) > readerRetryMax || errors.Is(err, errCancelled) {
			// A cancel means the stream is gone: create it again soon.
			delay = readerRetryMin
		}
		r.log.Warn("history reader stopped; retrying", "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(delay)):
		}
		delay = min(delay*2, readerRetryMax)
	}
}

// serve creates the stream when it is absent, resolves the epoch, attaches
// and reads, until something fails on session s.
func (r *reader) serve(ctx context.Context, s *session) error {
	created, err := ensureStream(s.conn, r.hist.stream, r.args, r.log)
	if err != nil {
		return err
	}
	epoch, err := r.resolve(ctx, s, created)
	if err != nil {
		return err
	}
	r.hist.setEpoch(epoch)
	for {
		a, err := r.attach(ctx, s, epoch)
		if err != nil {
			return err
		}
		err = r.read(ctx, s, a)
		_ = a.ch.Close()
		if !errors.Is(err, errStalled) {
			return err
		}
		// Re-attach at L+1 with the resume rule, without reporting Down:
		// nothing was lost unless the probe of the head says so.
		r.log.Warn("history reader stalled; attaching again", "last", r.last)
	}
}

// resolve resolves the stream's epoch, appending a genesis record when it
// has none (at most three rounds). A stream this reader just created is
// empty, unless another node raced it, so it proposes at once; the lowest
// genesis wins either way.
func (r *reader) resolve(ctx context.Context, s *session, created bool) (string, error) {
	for round := 0; ; round++ {
		if !created || round > 0 {
			ep, err := resolveEpoch(ctx, s.conn, r.hist.stream)
			if !errors.Is(err, errNoEpoch) {
				return ep, err
			}
			if round == 3 {
				return "", fmt.Errorf("resolve the epoch of %s: still no genesis record after %d appended", r.hist.stream, round)
			}
		}
		proposal := newEpoch()
		if err := r.b.appendGenesis(ctx, s, r.hist.stream, proposal); err != nil {
			return "", fmt.Errorf("append a genesis record to %s: %w", r.hist.stream, err)
		}
		r.log.Info("history stream has no epoch yet; proposed one", "proposal", proposal)
	}
}

// attachment is the reader's consumer on its channel, and the tail it must
// reach before the feed is live.
type attachment struct {
	ch         *amqp.Channel
	deliveries <-chan amqp.Delivery
	target     int64
}

// attach attaches the reader. With the epoch it last fed, it resumes at
// L+1 (F6) and then probes the head: a first kept offset ≤ L+1 proves the
// segment holding L+1 existed after the attach, so nothing after L is
// lost whatever holes the offsets show (F4); a higher one means records
// were truncated meanwhile (F8). A truncation or another epoch resets the
// feed, which then reads from the start point: the first chunk written at
// most MaxAge ago, or only what comes after the tail when every record is
// older.
func (r *reader) attach(ctx context.Context, s *session, epoch string) (*attachment, error) {
	stream := r.hist.stream
	if r.epoch == epoch {
		a, err := r.consume(ctx, s, r.last+1)
		if err != nil {
			return nil, err
		}
		first, _, ok, err := probe(ctx, s.conn, stream, "first")
		if err != nil {
			_ = a.ch.Close()
			return nil, err
		}
		if ok && first <= r.last+1 {
			_, tail, ok, err := probe(ctx, s.conn, stream, "last")
			if err != nil {
				_ = a.ch.Close()
				return nil, err
			}
			a.target = r.last
			if ok {
				a.target = max(tail, r.last)
			}
			r.down = false
			r.log.Info("history reader resumed", "epoch", epoch, "from", r.last+1, "tail", a.target)
			return a, nil
		}
		_ = a.ch.Close()
		r.log.Warn("history records may have been lost: the stream was truncated past the last one read",
			"epoch", epoch, "last", r.last, "first_kept", first, "probed", ok)
	} else if r.epoch != "" {
		r.log.Warn("history has a new epoch (the stream was deleted and created again)", "old", r.epoch, "new", epoch)
	}

	_, tail, ok, err := probe(ctx, s.conn, stream, "last")
	if err != nil {
		return nil, err
	}
	if !ok {
		// The stream holds at least the genesis record the epoch came
		// from: the probe stalled (F8). Try again.
		return nil, errors.New("the probe of the tail read nothing")
	}
	from := tail + 1
	// A timestamp attach starts at the first chunk written since then
	// (F5); nothing within a second means every record is older.
	first, _, ok, err := probe(ctx, s.conn, stream, time.Now().Add(-r.maxAge))
	if err != nil {
		return nil, err
	}
	if ok && first <= tail {
		from = first
	}
	r.feed.Reset(epoch)
	r.epoch, r.last, r.live, r.down = epoch, from-1, false, false
	a, err := r.consume(ctx, s, from)
	if err != nil {
		return nil, err
	}
	a.target = max(tail, from-1)
	r.log.Info("history reader attached", "epoch", epoch, "from", from, "tail", a.target)
	return a, nil
}

// consume attaches the reader's consumer at offset from.
func (r *reader) consume(ctx context.Context, s *session, from int64) (*attachment, error) {
	ch, d, err := consumeStream(ctx, s.conn, r.hist.stream, from, readerPrefetch)
	if err != nil {
		return nil, err
	}
	return &attachment{ch: ch, deliveries: d}, nil
}

// read feeds every delivery in offset order and reports Live once the
// reader reaches the attachment's target. It acks in batches
// (multiple=true) every readerAckEvery deliveries and once deliveries
// pause (ackBatcher). While nothing is delivered, every stallAfter it probes the
// tail: a tail past L means the read stalled (F8).
func (r *reader) read(ctx context.Context, s *session, a *attachment) error {
	r.maybeLive(a)
	acks := newAckBatcher(readerAckEvery, func(last uint64, _ int) {
		if !r.b.testNoAck.Load() {
			_ = a.ch.Ack(last, true) // an error means the channel is gone: the next receive says so
		}
	})
	defer acks.flush()
	watchdog := time.NewTicker(r.stallAfter)
	defer watchdog.Stop()
	delivered := false
	for {
		var d amqp.Delivery
		var ok bool
		select {
		case d, ok = <-a.deliveries:
		default:
			select {
			case d, ok = <-a.deliveries:
			case <-acks.idle():
				acks.flush()
				continue
			case <-ctx.Done():
				return ctx.Err()
			case <-s.ended:
				return errors.New("the connection was lost")
			case <-watchdog.C:
				if delivered {
					delivered = false
					continue
				}
				_, tail, moved, err := probe(ctx, s.conn, r.hist.stream, "last")
				if err != nil {
					return fmt.Errorf("probe the tail: %w", err)
				}
				if moved && tail > r.last {
					r.log.Warn("history reader delivered nothing while the tail moved", "last", r.last, "tail", tail)
					return errStalled
				}
				continue
			}
		}
		if !ok {
			if a.ch.IsClosed() {
				return errors.New("the reader's channel closed")
			}
			return errCancelled
		}
		delivered = true
		rec, err := decodeRecord(d)
		if err != nil {
			return err
		}
		r.apply(rec)
		r.maybeLive(a)
		acks.add(d.DeliveryTag)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

func (r *reader) maybeLive(a *attachment) {
	if !r.live && r.last >= a.target {
		r.live = true
		r.feed.Live()
	}
}

// apply feeds one record. Offsets only grow along a stream; one at or
// below L was already fed (a chunk delivered again) and is skipped.
// Genesis records, and records without a Myxi routing key (not appended by
// Myxi), are markers that only advance the position.
func (r *reader) apply(rec streamRecord) {
	if rec.offset <= r.last {
		return
	}
	r.last = rec.offset
	switch {
	case rec.isGenesis():
		r.feed.Record(broker.Record{Offset: uint64(rec.offset)})
	case !rec.hasKey:
		r.log.Debug("history record without a routing key, skipped", "offset", rec.offset)
		r.feed.Record(broker.Record{Offset: uint64(rec.offset)})
	default:
		body := rec.body
		if body == nil {
			body = []byte{} // nil is a marker's
		}
		r.feed.Record(broker.Record{RoutingKey: rec.key, Offset: uint64(rec.offset), Body: body})
	}
}
