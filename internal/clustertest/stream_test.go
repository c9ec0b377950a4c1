package clustertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// record is one stream message as a consumer saw it.
type record struct {
	offset int64 // the x-stream-offset header
	seq    int64 // the publisher's "seq" header
}

// TestStreamSurvivesLeaderStop is what Myxi's history needs from a
// cluster: a stream replicated on all three nodes keeps taking confirmed
// appends while its leader is stopped, the stopped node catches up when it
// comes back, and every replica serves the same records at the same
// offsets, from any offset.
func TestStreamSurvivesLeaderStop(t *testing.T) {
	c := FromEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const total, stopAfter = 300, 100

	queue := "myxi.clustertest." + randomHex()
	// Declared through node 3: with the default leader locator
	// (client-local) the leader starts there.
	if err := declareStream(ctx, c.URL(3), queue); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteQueue(t, c, queue) })

	reps, err := c.AwaitReplicas(ctx, queue, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	leader := nodeIndex(c, reps.Leader)
	if leader == 0 {
		t.Fatalf("leader %q is not a node of the cluster", reps.Leader)
	}
	pubNode, otherNode := others(leader)
	t.Logf("stream %s: leader %s, replicas on %v", queue, reps.Leader, reps.Online)

	// The publisher runs on a node that stays up; the leader is stopped
	// once stopAfter appends are confirmed.
	stopNow := make(chan struct{})
	var once sync.Once
	pubDone := make(chan error, 1)
	var republished map[int64]bool
	var slowest time.Duration
	go func() {
		var err error
		republished, slowest, err = publishSeqs(ctx, c.URL(pubNode), queue, total, func(seq int64) {
			if seq == stopAfter-1 {
				once.Do(func() { close(stopNow) })
			}
		})
		pubDone <- err
	}()

	select {
	case <-stopNow:
	case err := <-pubDone:
		t.Fatalf("publisher ended before %d confirms: %v", stopAfter, err)
	case <-ctx.Done():
		t.Fatal("timed out waiting for the first confirms")
	}
	stopStart := time.Now()
	if err := c.StopNode(ctx, leader); err != nil {
		t.Fatal(err)
	}
	t.Logf("leader node %d stopped in %v", leader, time.Since(stopStart).Round(time.Millisecond))
	if err := <-pubDone; err != nil {
		t.Fatalf("publishing while node %d was stopped: %v", leader, err)
	}
	t.Logf("%d appends confirmed, %d republished after a failed confirm, slowest confirm %v", total, len(republished), slowest.Round(time.Millisecond))

	startAt := time.Now()
	if err := c.StartNode(ctx, leader); err != nil {
		t.Fatal(err)
	}
	t.Logf("node %d started again in %v", leader, time.Since(startAt).Round(time.Millisecond))

	// The node that missed the second part serves all of it, from the
	// first offset, as soon as it is back. Its replica may refuse
	// consumers for a few seconds after the restart (406 ... does not
	// have a replica on the local node): consumeFrom retries.
	all, retries, err := consumeFrom(ctx, c.URL(leader), queue, "first", func(rs []record) bool {
		return len(rs) >= total && distinct(rs) == total
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted node %d: read %d records after %d refused attempts", leader, len(all), retries)
	checkComplete(t, all, total, republished)
	if _, err := c.AwaitReplicas(ctx, queue, 60*time.Second); err != nil {
		t.Fatal(err)
	}

	// Another replica, from the offset of the middle record: the same
	// records at the same offsets.
	mid := all[len(all)/2]
	want := all[len(all)/2:]
	tail, _, err := consumeFrom(ctx, c.URL(otherNode), queue, mid.offset, func(rs []record) bool { return len(rs) == len(want) })
	if err != nil {
		t.Fatal(err)
	}
	if len(tail) != len(want) {
		t.Fatalf("node %d from offset %d: %d records, want %d", otherNode, mid.offset, len(tail), len(want))
	}
	for i := range want {
		if tail[i] != want[i] {
			t.Fatalf("node %d from offset %d: record %d is %+v, node %d has %+v", otherNode, mid.offset, i, tail[i], leader, want[i])
		}
	}
}

// checkComplete asserts that records holds every seq below total in
// strictly increasing offsets, with duplicates only for republished seqs.
func checkComplete(t *testing.T, records []record, total int, republished map[int64]bool) {
	t.Helper()
	seen := make(map[int64]int, total)
	for i, r := range records {
		if i > 0 && r.offset <= records[i-1].offset {
			t.Fatalf("offsets not increasing: %d then %d", records[i-1].offset, r.offset)
		}
		seen[r.seq]++
	}
	for seq := int64(0); seq < int64(total); seq++ {
		switch n := seen[seq]; {
		case n == 0:
			t.Errorf("seq %d missing", seq)
		case n > 1 && !republished[seq]:
			t.Errorf("seq %d appears %d times but was published once", seq, n)
		}
	}
	if len(seen) != total {
		t.Errorf("%d distinct seqs, want %d", len(seen), total)
	}
}

func declareStream(ctx context.Context, url, queue string) error {
	conn, err := dial(url)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("channel: %w", err)
	}
	_, err = ch.QueueDeclare(queue, true, false, false, false, amqp.Table{
		"x-queue-type":                    "stream",
		"x-max-age":                       "10m",
		"x-stream-max-segment-size-bytes": int64(1 << 20),
	})
	if err != nil {
		return fmt.Errorf("declare stream %s: %w", queue, err)
	}
	return ctx.Err()
}

// deleteQueue removes the stream through whichever node answers.
func deleteQueue(t *testing.T, c *Cluster, queue string) {
	var errs []error
	for n := 1; n <= 3; n++ {
		conn, err := dial(c.URL(n))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ch, err := conn.Channel()
		if err == nil {
			_, err = ch.QueueDelete(queue, false, false, false)
		}
		closeConn(conn)
		if err == nil {
			return
		}
		errs = append(errs, err)
	}
	t.Errorf("deleting %s: %v", queue, errors.Join(errs...))
}

// closeConn closes conn, waiting at most 5s for the broker's answer (a
// node that has just stopped never answers).
func closeConn(conn *amqp.Connection) {
	_ = conn.CloseDeadline(time.Now().Add(5 * time.Second))
}

func dial(url string) (*amqp.Connection, error) {
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	return conn, nil
}

// publishSeqs appends seq 0..total-1 in order, each confirmed before the
// next. A publish whose confirm fails or does not come within 10s is sent
// again on a new connection (so it may be appended twice, which is why
// the seqs sent again are returned); at most 30 tries per seq. It also
// returns the longest time a seq took from its first try to its confirm.
func publishSeqs(ctx context.Context, url, queue string, total int, confirmed func(seq int64)) (republished map[int64]bool, slowest time.Duration, err error) {
	republished = map[int64]bool{}
	var conn *amqp.Connection
	var ch *amqp.Channel
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	open := func() error {
		if conn != nil {
			closeConn(conn)
		}
		var err error
		if conn, err = dial(url); err != nil {
			return err
		}
		if ch, err = conn.Channel(); err != nil {
			return fmt.Errorf("channel: %w", err)
		}
		if err = ch.Confirm(false); err != nil {
			return fmt.Errorf("confirm mode: %w", err)
		}
		return nil
	}
	if err := open(); err != nil {
		return republished, 0, err
	}
	for seq := int64(0); seq < int64(total); seq++ {
		var lastErr error
		began := time.Now()
		for try := 0; ; try++ {
			if try == 30 {
				return republished, slowest, fmt.Errorf("seq %d: not confirmed after %d tries: %w", seq, try, lastErr)
			}
			if try > 0 {
				republished[seq] = true
				select {
				case <-ctx.Done():
					return republished, slowest, fmt.Errorf("seq %d: %w (last error: %v)", seq, ctx.Err(), lastErr)
				case <-time.After(200 * time.Millisecond):
				}
				if lastErr = open(); lastErr != nil {
					continue
				}
			}
			if lastErr = publishOne(ctx, ch, queue, seq); lastErr == nil {
				break
			}
		}
		slowest = max(slowest, time.Since(began))
		confirmed(seq)
		// A steady flow rather than one burst, so that the stop lands
		// in the middle of it.
		time.Sleep(5 * time.Millisecond)
	}
	return republished, slowest, nil
}

func publishOne(ctx context.Context, ch *amqp.Channel, queue string, seq int64) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, amqp.Publishing{
		Headers: amqp.Table{"seq": seq},
		Body:    []byte(fmt.Sprintf(`{"event":"Seq","payload":{"seq":%d}}`, seq)),
	})
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("confirm: %w", err)
	}
	if !ok {
		return errors.New("nacked")
	}
	return nil
}

// consumeFrom reads queue on the node at url, attaching at offset (an
// x-stream-offset value), until done says it has read enough. A refusal because the node's
// replica is not running yet is retried every 250ms until ctx ends.
func consumeFrom(ctx context.Context, url, queue string, offset any, done func([]record) bool) ([]record, int, error) {
	for retries := 0; ; retries++ {
		records, err := consumeOnce(ctx, url, queue, offset, done)
		var amqpErr *amqp.Error
		if err == nil || !errors.As(err, &amqpErr) || amqpErr.Code != amqp.PreconditionFailed ||
			!strings.Contains(amqpErr.Reason, "does not have a replica on the local node") {
			return records, retries, err
		}
		select {
		case <-ctx.Done():
			return nil, retries, fmt.Errorf("consume %s at %v: %w (last refusal: %v)", queue, offset, ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func consumeOnce(ctx context.Context, url, queue string, offset any, done func([]record) bool) ([]record, error) {
	conn, err := dial(url)
	if err != nil {
		return nil, err
	}
	defer closeConn(conn)
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("channel: %w", err)
	}
	// Streams refuse a consumer without a prefetch (406) and with
	// automatic acks (540): credit comes back through acks.
	if err := ch.Qos(100, 0, false); err != nil {
		return nil, fmt.Errorf("qos: %w", err)
	}
	deliveries, err := ch.Consume(queue, "", false, false, false, false, amqp.Table{"x-stream-offset": offset})
	if err != nil {
		return nil, fmt.Errorf("consume: %w", err)
	}
	var out []record
	idle := time.NewTimer(10 * time.Second)
	defer idle.Stop()
	for !done(out) {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return out, fmt.Errorf("deliveries closed after %d records (consumer cancelled or channel closed)", len(out))
			}
			off, okOff := d.Headers["x-stream-offset"].(int64)
			seq, okSeq := d.Headers["seq"].(int64)
			if !okOff || !okSeq {
				return out, fmt.Errorf("record without int64 x-stream-offset/seq headers: %#v", d.Headers)
			}
			out = append(out, record{offset: off, seq: seq})
			if len(out)%50 == 0 {
				if err := d.Ack(true); err != nil {
					return out, fmt.Errorf("ack: %w", err)
				}
			}
			idle.Reset(10 * time.Second)
		case <-idle.C:
			return out, fmt.Errorf("no record for 10s after %d", len(out))
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
	return out, nil
}

func distinct(records []record) int {
	seqs := make(map[int64]bool, len(records))
	for _, r := range records {
		seqs[r.seq] = true
	}
	return len(seqs)
}

func nodeIndex(c *Cluster, name string) int {
	for n := 1; n <= 3; n++ {
		if c.NodeName(n) == name {
			return n
		}
	}
	return 0
}

// others returns the two nodes that are not n.
func others(n int) (int, int) {
	switch n {
	case 1:
		return 2, 3
	case 2:
		return 1, 3
	default:
		return 1, 2
	}
}

func randomHex() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
