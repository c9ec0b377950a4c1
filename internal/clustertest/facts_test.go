package clustertest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestStreamFacts pins the RabbitMQ stream behaviour that docs/history.md
// relies on (its table "Facts", F-numbers below), so that a RabbitMQ
// upgrade that changes one fails here rather than in recovery.
func TestStreamFacts(t *testing.T) {
	c := FromEnv(t)
	conn, err := dial(c.URL(1))
	if err != nil {
		t.Fatal(err)
	}
	// Closing the connection closes its channels; a bounded wait, because
	// a stuck stream can keep a channel from ever closing.
	defer func() { _ = conn.CloseDeadline(time.Now().Add(5 * time.Second)) }()
	admin := mustChannel(t, conn)
	stream := func(t *testing.T, args amqp.Table) string {
		t.Helper()
		q := "myxi.clustertest.facts." + randomHex()
		all := amqp.Table{"x-queue-type": "stream"}
		for k, v := range args {
			all[k] = v
		}
		if _, err := admin.QueueDeclare(q, true, false, false, false, all); err != nil {
			t.Fatalf("declare %s: %v", q, err)
		}
		t.Cleanup(func() {
			if _, err := admin.QueueDelete(q, false, false, false); err != nil {
				t.Errorf("delete %s: %v", q, err)
			}
		})
		return q
	}

	t.Run("F2 other retention arguments are refused", func(t *testing.T) {
		q := stream(t, amqp.Table{"x-max-age": "600s"})
		ch := mustChannel(t, conn)
		_, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "stream", "x-max-age": "1200s"})
		wantAMQPError(t, err, amqp.PreconditionFailed, "inequivalent arg 'x-max-age'")
	})

	t.Run("F3 a consumer needs a prefetch", func(t *testing.T) {
		q := stream(t, nil)
		ch := mustChannel(t, conn)
		closed := ch.NotifyClose(make(chan *amqp.Error, 1))
		_, err := ch.Consume(q, "", false, false, false, false, amqp.Table{"x-stream-offset": "first"})
		if err == nil { // the refusal may come as a channel close
			select {
			case e := <-closed:
				err = e
			case <-time.After(5 * time.Second):
			}
		}
		wantAMQPError(t, err, amqp.PreconditionFailed, "prefetch count is not set")
	})

	t.Run("F4 F5 F6 offsets and attach points", func(t *testing.T) {
		q := stream(t, nil)
		publish(t, conn, q, 0, 10) // one burst: 0..9
		all := read(t, conn, q, "first", 10)
		for i, r := range all {
			if r.offset != int64(i) || r.seq != int64(i) {
				t.Fatalf("record %d from first: %+v, want offset and seq %d", i, r, i)
			}
		}
		if got := read(t, conn, q, int64(7), 3); got[0].offset != 7 {
			t.Fatalf("attach at 7 started at %d", got[0].offset)
		}
		if got := read(t, conn, q, "last", 1); got[0].offset > 9 {
			t.Fatalf(`attach at "last" started at %d, after the tail 9`, got[0].offset)
		}
		// An offset beyond the tail waits for it, and starts exactly there.
		ahead := consumer(t, conn, q, int64(12))
		publish(t, conn, q, 10, 5) // 10..14
		if got := take(t, ahead, 3); got[0].offset != 12 || got[2].offset != 14 {
			t.Fatalf("attach at 12 before it existed: %+v", got)
		}
	})

	const total = 4000
	t.Run("F8 a truncated position starts at the first kept record", func(t *testing.T) {
		// Segments of 1 MiB: with 20 KB segments, truncation outran a
		// replica in this cluster, whose restart then failed in a loop
		// (docs/history.md, F17).
		q := stream(t, amqp.Table{"x-max-length-bytes": int64(2 << 20), "x-stream-max-segment-size-bytes": int64(1 << 20)})
		for first := 0; first < total; first += 1000 {
			publish(t, conn, q, first, 1000) // 4,000 × ~450 B: a few segments deleted
		}
		// Right after truncation a new consumer has, twice in some twenty
		// runs, delivered nothing for 10s without an error: Myxi's reader
		// re-attaches when that happens (docs/history.md, F8), and so does
		// this test, at most 3 times.
		var first record
		for try := 1; ; try++ {
			r, ok := tryTake(t, consumer(t, conn, q, "first"), 5*time.Second)
			if ok {
				first = r
				break
			}
			t.Logf(`attach at "first" %d: nothing within 5s`, try)
			if try == 3 {
				t.Fatal(`3 consumers attached at "first" of a non-empty stream got nothing`)
			}
		}
		if first.offset == 0 || first.seq == 0 {
			t.Fatalf("record %+v still readable after truncation", first)
		}
		// Attached at a truncated offset, a consumer starts at the first
		// kept record, never further on (or, as above, stalls).
		if r, ok := tryTake(t, consumer(t, conn, q, int64(0)), 5*time.Second); !ok {
			t.Logf("attach at truncated offset 0: nothing within 5s")
		} else if r != first {
			t.Errorf("attach at truncated offset 0 started at %+v, first kept is %+v", r, first)
		}
		// The tail survives truncation. Offsets are not contiguous: each
		// segment roll writes an entry of its own that takes an offset, so
		// the 600th record sits above offset 599.
		last := consumer(t, conn, q, "last")
		tail := take(t, last, 1)[0]
		for i := 0; tail.seq != total-1 && i < total; i++ {
			tail = take(t, last, 1)[0]
		}
		if tail.offset <= total-1 {
			t.Errorf("%d records in several segments end at offset %d: offsets are contiguous after all", total, tail.offset)
		}
		t.Logf("%d records, segments of 1 MiB, bound 2 MiB: first kept %+v, last %+v", total, first, tail)
	})

	t.Run("F10 F11 deleting a stream cancels its consumers and returns publishes", func(t *testing.T) {
		q := "myxi.clustertest.facts." + randomHex()
		if _, err := admin.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "stream"}); err != nil {
			t.Fatal(err)
		}
		ch := mustChannel(t, conn)
		cancels := ch.NotifyCancel(make(chan string, 1))
		if err := ch.Qos(1, 0, false); err != nil {
			t.Fatal(err)
		}
		if _, err := ch.Consume(q, "watch", false, false, false, false, amqp.Table{"x-stream-offset": "last"}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.QueueDelete(q, false, false, false); err != nil {
			t.Fatal(err)
		}
		select {
		case tag := <-cancels:
			if tag != "watch" {
				t.Fatalf("basic.cancel for %q", tag)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no basic.cancel after the stream was deleted")
		}
		if ch.IsClosed() {
			t.Fatal("the channel closed with the cancel")
		}
		pub := mustChannel(t, conn)
		returns := pub.NotifyReturn(make(chan amqp.Return, 1))
		if err := pub.Confirm(false); err != nil {
			t.Fatal(err)
		}
		dc, err := pub.PublishWithDeferredConfirm("", q, true, false, amqp.Publishing{Body: []byte("{}")})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-returns:
			if r.ReplyCode != amqp.NoRoute {
				t.Fatalf("return %d %s", r.ReplyCode, r.ReplyText)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no basic.return for a publish to a deleted stream")
		}
		if !dc.Wait() {
			t.Fatal("the returned publish was nacked; expected ack after the return")
		}
	})
}

func mustChannel(t *testing.T, conn *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func wantAMQPError(t *testing.T, err error, code int, reason string) {
	t.Helper()
	var amqpErr *amqp.Error
	if !errors.As(err, &amqpErr) || amqpErr.Code != code || !strings.Contains(amqpErr.Reason, reason) {
		t.Fatalf("got %v, want AMQP error %d containing %q", err, code, reason)
	}
}

// publish appends seq first..first+n-1 in one confirmed burst.
func publish(t *testing.T, conn *amqp.Connection, queue string, first, n int) {
	t.Helper()
	ch := mustChannel(t, conn)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	var pending []*amqp.DeferredConfirmation
	for i := first; i < first+n; i++ {
		dc, err := ch.PublishWithDeferredConfirm("", queue, true, false, amqp.Publishing{
			Headers: amqp.Table{"seq": int64(i)},
			Body:    []byte(fmt.Sprintf(`{"event":"Seq","payload":{"seq":%d,"pad":"%0400d"}}`, i, 0)),
		})
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, dc)
	}
	for _, dc := range pending {
		select {
		case <-dc.Done():
			if !dc.Acked() {
				t.Fatal("publish nacked")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no confirm within 10s")
		}
	}
}

func consumer(t *testing.T, conn *amqp.Connection, queue string, offset any) <-chan amqp.Delivery {
	t.Helper()
	ch := mustChannel(t, conn)
	if err := ch.Qos(100, 0, false); err != nil {
		t.Fatal(err)
	}
	d, err := ch.Consume(queue, "", false, false, false, false, amqp.Table{"x-stream-offset": offset})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func take(t *testing.T, d <-chan amqp.Delivery, n int) []record {
	t.Helper()
	var out []record
	for len(out) < n {
		select {
		case m, ok := <-d:
			if !ok {
				t.Fatalf("consumer ended after %d records", len(out))
			}
			off, okOff := m.Headers["x-stream-offset"].(int64)
			seq, okSeq := m.Headers["seq"].(int64)
			if !okOff || !okSeq {
				t.Fatalf("x-stream-offset and seq must be int64: %#v", m.Headers)
			}
			out = append(out, record{offset: off, seq: seq})
			if err := m.Ack(false); err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d records within 10s", len(out), n)
		}
	}
	return out
}

// tryTake waits at most wait for one record.
func tryTake(t *testing.T, d <-chan amqp.Delivery, wait time.Duration) (record, bool) {
	t.Helper()
	select {
	case m, ok := <-d:
		if !ok {
			t.Fatal("consumer ended")
		}
		off, _ := m.Headers["x-stream-offset"].(int64)
		seq, _ := m.Headers["seq"].(int64)
		if err := m.Ack(false); err != nil {
			t.Fatal(err)
		}
		return record{offset: off, seq: seq}, true
	case <-time.After(wait):
		return record{}, false
	}
}

func read(t *testing.T, conn *amqp.Connection, queue string, offset any, n int) []record {
	t.Helper()
	return take(t, consumer(t, conn, queue, offset), n)
}
