package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/myxi/myxi/broker"
)

// Headers of the records in a history stream (docs/history.md,
// "Appending").
const (
	// headerKey carries the Myxi routing key of a record.
	headerKey = "myxi-rk"
	// headerEpoch carries the epoch the publisher resolved.
	headerEpoch = "myxi-ep"
	// headerGenesis marks a genesis record and carries the epoch it
	// proposes.
	headerGenesis = "myxi-genesis"
	// headerRecorded marks the live copy of a record on the 1.x direct
	// exchange; its value is the epoch.
	headerRecorded = "myxi-recorded"
	// headerOffset is RabbitMQ's: every delivery from a stream carries it
	// (int64, F4).
	headerOffset = "x-stream-offset"
)

// Reading budgets of the resolution (docs/history.md, "Resolving").
const (
	resolveHeadRecords = 100                    // read at most this many from the head
	resolveWait        = time.Second            // wait this long for a first record
	chunkIdle          = 200 * time.Millisecond // a chunk arrives at once: a gap this long ends it
	resolveBack        = 1000                   // how far before the tail chunk to look for a stamp
	replicaRetry       = 250 * time.Millisecond // F15: a restarted node has no replica for a moment
	replicaRetryFor    = 10 * time.Second
)

// errNoEpoch means the stream holds no genesis record yet: its creator
// appends one, a publisher reports ErrUnavailable.
var errNoEpoch = errors.New("the history has no epoch yet")

// newEpoch proposes an epoch (broker.NewEpoch's format, shared with the
// embedded broker).
func newEpoch() string { return broker.NewEpoch() }

// streamRecord is one delivery of a history stream, decoded.
type streamRecord struct {
	offset  int64
	genesis string // the proposed epoch of a genesis record, else ""
	epoch   string // myxi-ep, "" when absent
	key     string
	hasKey  bool
	body    []byte
}

func (r streamRecord) isGenesis() bool { return r.genesis != "" }

// decodeRecord reads the headers of a stream delivery. A delivery without
// x-stream-offset does not come from a stream (a classic queue of the
// same name, say): an error.
func decodeRecord(d amqp.Delivery) (streamRecord, error) {
	off, ok := offsetOf(d.Headers[headerOffset])
	if !ok {
		return streamRecord{}, fmt.Errorf("delivery without a valid %s header (%v): is %q a stream?", headerOffset, d.Headers[headerOffset], d.RoutingKey)
	}
	r := streamRecord{offset: off, body: d.Body}
	r.genesis, _ = d.Headers[headerGenesis].(string)
	r.epoch, _ = d.Headers[headerEpoch].(string)
	r.key, r.hasKey = d.Headers[headerKey].(string)
	return r, nil
}

// offsetOf accepts the integer types an AMQP table can decode to; RabbitMQ
// sends int64 (F4).
func offsetOf(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, n >= 0
	case int32:
		return int64(n), n >= 0
	case int16:
		return int64(n), n >= 0
	case int8:
		return int64(n), n >= 0
	case uint8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint32:
		return int64(n), true
	case int:
		return int64(n), n >= 0
	}
	return 0, false
}

// isAMQPCode reports whether err is an AMQP error with that reply code.
func isAMQPCode(err error, code int) bool {
	var e *amqp.Error
	return errors.As(err, &e) && e.Code == code
}

// isNoReplica is F15: a node that just restarted refuses stream consumers
// for a moment.
func isNoReplica(err error) bool {
	var e *amqp.Error
	return errors.As(err, &e) && e.Code == amqp.PreconditionFailed && strings.Contains(e.Reason, "does not have a replica")
}

// consumeStream opens a channel on conn and consumes stream from `from`
// (an x-stream-offset value: "first", "last", an int64, a time.Time) with
// the given prefetch and manual acks (F3: autoAck would close the
// connection). The caller owns the channel and makes every later RPC on
// it. F15's refusal is retried every 250 ms for up to 10 s, each time on a
// new channel since the refusal closes it.
func consumeStream(ctx context.Context, conn *amqp.Connection, stream string, from any, prefetch int) (*amqp.Channel, <-chan amqp.Delivery, error) {
	deadline := time.Now().Add(replicaRetryFor)
	for {
		ch, err := conn.Channel()
		if err != nil {
			return nil, nil, fmt.Errorf("open a channel to read %s: %w", stream, err)
		}
		if err := ch.Qos(prefetch, 0, false); err != nil {
			_ = ch.Close()
			return nil, nil, fmt.Errorf("set the prefetch to read %s: %w", stream, err)
		}
		// Not ConsumeWithContext: on ctx's end it would cancel the consumer
		// from a goroutine of its own, an RPC outside the channel's owner.
		// The caller stops reading on ctx's end and closes the channel.
		d, err := ch.Consume(stream, "", false, false, false, false, amqp.Table{headerOffset: from})
		if err == nil {
			return ch, d, nil
		}
		_ = ch.Close()
		if !isNoReplica(err) || time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("read %s from %v: %w", stream, from, err)
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("read %s from %v: %w (after %w)", stream, from, ctx.Err(), err)
		case <-time.After(replicaRetry):
		}
	}
}

// readOpts bounds a readStream.
type readOpts struct {
	prefetch  int
	max       int                     // stop after this many records (0: no bound)
	firstWait time.Duration           // how long to wait for the first record
	idle      time.Duration           // after the first, a gap this long ends the read
	until     time.Duration           // the whole read ends after this long (0: no bound)
	stop      func(streamRecord) bool // stop after a record for which it is true
}

// readStream reads stream from `from` on a channel of its own, closed at
// the end, and returns the records read. Running out of time is not an
// error: the caller looks at what it got.
func readStream(ctx context.Context, conn *amqp.Connection, stream string, from any, o readOpts) ([]streamRecord, error) {
	ch, deliveries, err := consumeStream(ctx, conn, stream, from, o.prefetch)
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	var recs []streamRecord
	wait := time.NewTimer(o.firstWait)
	defer wait.Stop()
	var end <-chan time.Time
	if o.until > 0 {
		t := time.NewTimer(o.until)
		defer t.Stop()
		end = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return recs, ctx.Err()
		case <-end:
			return recs, nil
		case <-wait.C:
			return recs, nil
		case d, ok := <-deliveries:
			if !ok {
				return recs, fmt.Errorf("read %s: the consumer was cancelled or its channel closed", stream)
			}
			r, err := decodeRecord(d)
			if err != nil {
				return recs, err
			}
			recs = append(recs, r)
			if (o.max > 0 && len(recs) >= o.max) || (o.stop != nil && o.stop(r)) {
				return recs, nil
			}
			wait.Reset(o.idle)
		}
	}
}

// probe reads the first chunk delivered from `from` and returns the
// offsets of its first and last records; ok is false when nothing came
// within resolveWait (an empty stream, or an attach beyond the tail).
func probe(ctx context.Context, conn *amqp.Connection, stream string, from any) (first, last int64, ok bool, err error) {
	// On a busy stream, records keep coming after the chunk: any of them
	// is a tail seen, so the read stops after a prefetch's worth.
	recs, err := readStream(ctx, conn, stream, from, readOpts{
		prefetch: 1000, max: 1000, firstWait: resolveWait, idle: chunkIdle, until: 2 * resolveWait,
	})
	if len(recs) == 0 {
		return 0, 0, false, err
	}
	return recs[0].offset, recs[len(recs)-1].offset, true, nil
}

// resolveEpoch finds the epoch of stream (docs/history.md, "Resolving"):
// the first genesis record when the head is intact (offset 0 is kept),
// else the stamp of the last stamped record near the tail. It returns
// errNoEpoch when the stream is empty or its intact head holds no
// genesis record. Nodes and publishers share it, so they agree.
func resolveEpoch(ctx context.Context, conn *amqp.Connection, stream string) (string, error) {
	head, err := readStream(ctx, conn, stream, "first", readOpts{
		prefetch: resolveHeadRecords, max: resolveHeadRecords, firstWait: resolveWait, idle: resolveWait,
		// With the head intact, the first genesis wins: no need to read on.
		stop: func(r streamRecord) bool { return r.isGenesis() },
	})
	if err != nil {
		return "", fmt.Errorf("resolve the epoch of %s: %w", stream, err)
	}
	if len(head) == 0 {
		// A read can stall with no error (F8): "nothing came" means empty
		// only if the tail has nothing either.
		_, _, ok, err := probe(ctx, conn, stream, "last")
		if err != nil {
			return "", fmt.Errorf("resolve the epoch of %s: %w", stream, err)
		}
		if ok {
			return "", fmt.Errorf("resolve the epoch of %s: reading from the head stalled while the tail has records", stream)
		}
		return "", errNoEpoch
	}
	if head[0].offset == 0 {
		for _, r := range head {
			if r.isGenesis() {
				return r.genesis, nil
			}
		}
		return "", errNoEpoch
	}
	// The head was truncated: the stream is at least one segment old, and
	// the stamps of its tail can be trusted (docs/history.md).
	tail, err := readStream(ctx, conn, stream, "last", readOpts{
		prefetch: 1000, firstWait: resolveWait, idle: chunkIdle, until: 2 * resolveWait,
	})
	if err != nil {
		return "", fmt.Errorf("resolve the epoch of %s from its tail: %w", stream, err)
	}
	if ep := lastStamp(tail); ep != "" {
		return ep, nil
	}
	if len(tail) == 0 {
		return "", fmt.Errorf("resolve the epoch of %s: its head is truncated and its tail read nothing", stream)
	}
	// The tail chunk holds only genesis records (a stalled read made a
	// creator append one): look a little further back.
	chunk := tail[0].offset
	older, err := readStream(ctx, conn, stream, max(0, chunk-resolveBack), readOpts{
		prefetch: 1000, max: 2 * resolveBack, firstWait: resolveWait, idle: resolveWait, until: 2 * resolveWait,
		stop: func(r streamRecord) bool { return r.offset >= chunk-1 },
	})
	if err != nil {
		return "", fmt.Errorf("resolve the epoch of %s before its tail: %w", stream, err)
	}
	if ep := lastStamp(older); ep != "" {
		return ep, nil
	}
	return "", fmt.Errorf("resolve the epoch of %s: its head is truncated and no record near its tail carries an epoch", stream)
}

// lastStamp is the myxi-ep of the last non-genesis record that has one.
func lastStamp(recs []streamRecord) string {
	for i := len(recs) - 1; i >= 0; i-- {
		if !recs[i].isGenesis() && recs[i].epoch != "" {
			return recs[i].epoch
		}
	}
	return ""
}
