package clustertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/broker/rabbitmq"
	"github.com/myxi/myxi/internal/servertest"
	"github.com/myxi/myxi/internal/testutil"
)

// TestMyxiHistoryLeaderStop is issue 14's end-to-end check on a real
// cluster: two Myxi nodes connected to different RabbitMQ nodes share one
// history exchange whose stream is replicated on all three; the RabbitMQ
// node holding the stream's leader (and the connection of the Myxi node
// that pushes) stops while numbered events are pushed at a steady rate,
// and starts again. A client that was connected before, goes away during
// the outage and comes back with since ends up with every event, in
// order, once; the only duplicates allowed are of an event whose push
// returned an error and was retried (docs/history.md, "Duplicates after a
// lost confirm").
func TestMyxiHistoryLeaderStop(t *testing.T) {
	c := FromEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const (
		key          = "k"
		pushEvery    = 20 * time.Millisecond // 50 events a second
		beforeStop   = 50                    // confirmed pushes before the node stops
		missed       = 20                    // pushes confirmed after the client left, before it comes back
		afterRestart = 50                    // pushes after the node is back
	)

	exchange := "myxi-clustertest-" + randomHex()
	stream := "myxi.history." + exchange
	// Registered first, so it runs last: after the Myxi nodes have stopped
	// (a running node would create the stream again) and the RabbitMQ node
	// has been started again.
	t.Cleanup(func() {
		deleteQueue(t, c, stream)
		deleteExchange(t, c, exchange)
	})

	// Node A dials RabbitMQ node 1 first, node B node 2: the URLs are tried
	// in order. A starts first, so that it declares the stream through node
	// 1, where the default leader locator (client-local) puts its leader.
	a := startMyxi(t, c, exchange, "A", 1, 2, 3)
	b := startMyxi(t, c, exchange, "B", 2, 3, 1)

	reps, err := c.AwaitReplicas(ctx, stream, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	stopped := nodeIndex(c, reps.Leader)
	if stopped == 0 {
		t.Fatalf("leader %q of %s is not a node of the cluster", reps.Leader, stream)
	}
	t.Logf("stream %s: leader %s, replicas on %v; stopping node %d (Myxi A is connected to node 1, B to node 2)",
		stream, reps.Leader, reps.Online, stopped)

	// The client's first session, on B, from the start of the key.
	f := &follower{t: t, key: key}
	c1 := testutil.Dial(t, b.WS)
	f.start(subscribe(ctx, t, c1, exchange, key, nil))

	// The pusher: event n is pushed through A until a push of it succeeds.
	// errs[n] counts the pushes of n that returned an error (each may
	// still have been appended).
	var confirmed atomic.Int64
	errs := map[int]int{}
	restarted := make(chan struct{})
	pushDone := make(chan error, 1)
	go func() {
		pushDone <- push(ctx, a.Srv, exchange, key, pushEvery, errs, &confirmed, restarted, afterRestart, t.Logf)
	}()
	var total int
	finished := false     // the pusher has returned nil: errs and total are final
	pushReturned := false // pushDone has been received from
	defer func() {
		cancel()
		if !pushReturned {
			<-pushDone // errs is the pusher's until it has returned
		}
	}()

	// Phase 1: the first session reads while the first events go out.
	events1 := pump(ctx, c1)
	await(ctx, t, "the first pushes", func() bool { return confirmed.Load() >= beforeStop }, events1, f)

	// The RabbitMQ node stops (in the background: the session reads on).
	// Stopping and starting have their own deadlines, not the test's: a
	// failing test must not kill the script half way.
	chaos := make(chan error, 2)
	nodeDown := make(chan struct{})
	var nodeUp atomic.Bool
	var chaosWG sync.WaitGroup
	t.Cleanup(func() {
		// Whatever happened, the node runs again before the stream is
		// deleted and before the next test.
		chaosWG.Wait()
		if nodeUp.Load() {
			return
		}
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer scancel()
		if err := c.StartNode(sctx, stopped); err != nil {
			t.Errorf("cleanup: start node %d again: %v", stopped, err)
		}
	})
	stopAt := time.Now()
	chaosWG.Add(1)
	go func() {
		defer chaosWG.Done()
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer scancel()
		if err := c.StopNode(sctx, stopped); err != nil {
			chaos <- fmt.Errorf("stop node %d: %w", stopped, err)
			return
		}
		close(nodeDown)
		chaos <- nil
	}()
	for stopping := true; stopping; {
		select {
		case <-nodeDown:
			stopping = false
		case err := <-chaos:
			if err != nil {
				t.Fatal(err)
			}
		case r, ok := <-events1:
			if !ok {
				events1 = nil // the session ended (B's broker was the one stopping): handled below
				continue
			}
			f.handle(r)
		case <-ctx.Done():
			t.Fatal("timed out stopping the node")
		}
	}
	atStop := confirmed.Load()
	t.Logf("node %d stopped in %v; %d events confirmed, the client has %d", stopped, time.Since(stopAt).Round(time.Millisecond), atStop, len(f.ns))

	// The client goes away during the outage...
	_ = c1.Conn.Close()
	for r := range events1 {
		f.handle(r)
	}
	f.endSession()
	// ...while events go on without it (pushes through A fail until A has
	// reconnected to another node)...
	if err := awaitPushes(ctx, pushDone, func() bool { return confirmed.Load() >= atStop+missed }); err != nil {
		pushReturned = true
		t.Fatalf("waiting for %d pushes during the outage: %v", missed, err)
	}
	// ...and the stopped node starts again while the client recovers.
	chaosWG.Add(1)
	go func() {
		defer chaosWG.Done()
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer scancel()
		startAt := time.Now()
		if err := c.StartNode(sctx, stopped); err != nil {
			chaos <- fmt.Errorf("start node %d: %w", stopped, err)
			return
		}
		nodeUp.Store(true)
		t.Logf("node %d started again in %v, %v after it was stopped", stopped, time.Since(startAt).Round(time.Millisecond), time.Since(stopAt).Round(time.Millisecond))
		close(restarted)
		chaos <- nil
	}()

	// Phase 2: the client comes back on A with since, and again whenever a
	// node closes its session with 1011 (the contract's way of asking for
	// a recovery), until it has the last event.
	pushes := pushDone
sessions:
	for session := 2; ; session++ {
		if session > 6 {
			t.Fatalf("still incomplete after %d sessions", session-1)
		}
		cl := testutil.Dial(t, a.WS)
		since := f.position()
		ev := subscribe(ctx, t, cl, exchange, key, &since)
		if string(ev.Payload["recovered"]) != "true" || ev.Str("epoch") != f.epoch {
			t.Fatalf("resubscribe from %+v: %s, want recovered in the same epoch", since, ev.Raw)
		}
		t.Logf("session %d recovered from offset %d (Subscribed at %s)", session, since.Offset, ev.Payload["offset"])
		events := pump(ctx, cl)
		ended := false
		for !ended {
			if finished && f.lastN() == total {
				_ = cl.Conn.Close()
				for r := range events {
					f.handle(r)
				}
				break sessions
			}
			select {
			case r, ok := <-events:
				if !ok {
					ended = true
					continue
				}
				if r.err != nil {
					var ce *websocket.CloseError
					if !errors.As(r.err, &ce) || ce.Code != websocket.CloseInternalServerErr {
						t.Fatalf("session %d ended: %v (the client has %d events, last %d)", session, r.err, len(f.ns), f.lastN())
					}
					t.Logf("session %d closed with 1011 after event %d: recovering", session, f.lastN())
				}
				f.handle(r)
			case err := <-pushes:
				pushes, pushReturned = nil, true
				if err != nil {
					t.Fatalf("pusher: %v", err)
				}
				finished, total = true, int(confirmed.Load())
			case err := <-chaos:
				if err != nil {
					t.Fatal(err)
				}
			case <-ctx.Done():
				t.Fatalf("timed out: the client has %d events, last %d; pushed %d", len(f.ns), f.lastN(), confirmed.Load())
			}
		}
		f.endSession()
	}
	if _, err := c.AwaitReplicas(ctx, stream, 60*time.Second); err != nil {
		t.Errorf("after the restart: %v", err)
	}
	f.check(total, errs)
}

// startMyxi runs a Myxi node with one history exchange, connected to the
// cluster through the URLs of nodes order (tried in that order).
func startMyxi(t *testing.T, c *Cluster, exchange, name string, order ...int) *servertest.Server {
	t.Helper()
	urls := make([]string, len(order))
	for i, n := range order {
		urls[i] = c.URL(n)
	}
	logger := testutil.Logger(t).With("myxi", name)
	b, err := rabbitmq.New(rabbitmq.Config{URLs: urls, ConnectionName: "myxi clustertest " + name + " " + randomHex(), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	return servertest.Start(t, myxi.Config{
		Exchanges: map[string]myxi.AuthorizeFunc{
			exchange: func(context.Context, *myxi.Session, string) (bool, error) { return true, nil },
		},
		History: map[string]myxi.History{exchange: {MaxAge: time.Hour}},
		Broker:  b,
		Logger:  logger,
	})
}

// push pushes events {"n": 1}, {"n": 2}, ... through srv every interval,
// retrying each until a push succeeds (counting the failed ones in errs),
// until after more events have been confirmed once restarted is closed.
func push(ctx context.Context, srv *myxi.Server, exchange, key string, interval time.Duration,
	errs map[int]int, confirmed *atomic.Int64, restarted <-chan struct{}, after int, logf func(string, ...any)) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	stopAt := -1
	for n := 1; ; n++ {
		var firstErr time.Time
		for {
			// Push must honour its context: one that outlives it by far is
			// a hang, reported with the broker's goroutines rather than
			// left to the test's deadline.
			const pushTimeout = 5 * time.Second
			pctx, cancel := context.WithTimeout(ctx, pushTimeout)
			pushed := make(chan error, 1)
			go func() { pushed <- srv.Push(pctx, exchange, key, "Numbered", map[string]int{"n": n}) }()
			var err error
			select {
			case err = <-pushed:
				cancel()
			case <-time.After(pushTimeout + 10*time.Second):
				cancel()
				return fmt.Errorf("push %d: Push with a %v context has not returned after %v; broker goroutines:\n%s",
					n, pushTimeout, pushTimeout+10*time.Second, brokerStacks())
			}
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs[n]++
			if errs[n] == 1 {
				logf("push %d failed (retrying): %v", n, err)
			}
			if firstErr.IsZero() {
				firstErr = time.Now()
			} else if time.Since(firstErr) > time.Minute {
				return fmt.Errorf("push %d failed for a minute: %w", n, err)
			}
			// Pacing the retries while the node reconnects.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
		confirmed.Store(int64(n))
		if stopAt < 0 {
			select {
			case <-restarted:
				stopAt = n + after
			default:
			}
		}
		if n == stopAt {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// brokerStacks returns the stacks of the goroutines in the broker or the
// AMQP client.
func brokerStacks() string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "broker/rabbitmq") || strings.Contains(g, "amqp091") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// follower is the client's state across its sessions: the position it
// has reached and every numbered event it got, in order.
type follower struct {
	t       *testing.T
	key     string
	epoch   string
	last    uint64 // offset of the last recorded event (or of Subscribed)
	ns      []int
	offsets []uint64
}

func (f *follower) start(ev testutil.Event) {
	var o uint64
	if err := json.Unmarshal(ev.Payload["offset"], &o); err != nil || ev.Str("epoch") == "" {
		f.t.Fatalf("Subscribed without a position: %s", ev.Raw)
	}
	f.epoch, f.last = ev.Str("epoch"), o
}

func (f *follower) position() historyPosition {
	return historyPosition{Offset: f.last, Epoch: f.epoch}
}

func (f *follower) lastN() int {
	if len(f.ns) == 0 {
		return 0
	}
	return f.ns[len(f.ns)-1]
}

// handle takes an event of a session: each must be a recorded Numbered
// event of the key, in the epoch, after the last one.
func (f *follower) handle(r result) {
	f.t.Helper()
	if r.err != nil {
		return // the session's end: the caller decides
	}
	ev := r.ev
	if ev.Event != "Numbered" || ev.MQ == nil || ev.MQ.RK != f.key || ev.MQ.O == nil {
		f.t.Fatalf("got %s, want a recorded Numbered event of %q", ev.Raw, f.key)
	}
	if ev.MQ.EP != f.epoch {
		f.t.Fatalf("event in epoch %q, want %q: %s", ev.MQ.EP, f.epoch, ev.Raw)
	}
	if *ev.MQ.O <= f.last {
		f.t.Fatalf("event at offset %d after %d (offsets must increase): %s", *ev.MQ.O, f.last, ev.Raw)
	}
	n, err := strconv.Atoi(string(ev.Payload["n"]))
	if err != nil {
		f.t.Fatalf("event without a number: %s", ev.Raw)
	}
	f.last = *ev.MQ.O
	f.ns = append(f.ns, n)
	f.offsets = append(f.offsets, f.last)
}

func (f *follower) endSession() {
	f.t.Logf("session ended at event %d (offset %d), %d events so far", f.lastN(), f.last, len(f.ns))
}

// check asserts that the client got 1..total in order, each once, except
// that an event whose push failed (errs[n] times) and was retried may
// come up to errs[n] more times, right after itself.
func (f *follower) check(total int, errs map[int]int) {
	f.t.Helper()
	counts := map[int]int{}
	var distinct []int
	for i, n := range f.ns {
		counts[n]++
		if i == 0 || n != f.ns[i-1] {
			distinct = append(distinct, n)
		}
	}
	want := make([]int, total)
	for i := range want {
		want[i] = i + 1
	}
	if !slices.Equal(distinct, want) {
		for i := range min(len(distinct), len(want)) {
			if distinct[i] != want[i] {
				f.t.Fatalf("event #%d of %d distinct is %d, want %d (gap, reorder or duplicate out of place); total %d", i+1, len(distinct), distinct[i], want[i], total)
			}
		}
		f.t.Fatalf("got %d distinct events in order, want %d", len(distinct), total)
	}
	dups, failed := 0, 0
	for n := 1; n <= total; n++ {
		failed += errs[n]
		if extra := counts[n] - 1; extra > 0 {
			dups += extra
			if extra > errs[n] {
				f.t.Errorf("event %d came %d times, but %d of its pushes failed: a duplicate no failed push explains", n, counts[n], errs[n])
			}
		}
	}
	f.t.Logf("client got %d events %d..%d in order (%d duplicates of retried pushes); %d pushes failed and were retried", len(f.ns), 1, total, dups, failed)
}

type historyPosition struct {
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
}

// subscribe subscribes c to key (from since when not nil) and returns the
// Subscribed event, retrying while the node answers BrokerUnavailable
// (the contract: the client retries with its position).
func subscribe(ctx context.Context, t *testing.T, c *testutil.Client, exchange, key string, since *historyPosition) testutil.Event {
	t.Helper()
	p := map[string]any{"exchange": exchange, "routing_key": key}
	if since != nil {
		p["since"] = since
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		c.Send("Subscribe", "s", p)
		ev, err := c.NextWithin(30 * time.Second)
		if err != nil {
			t.Fatalf("subscribe from %+v: %v", since, err)
		}
		if ev.Event == "Subscribed" {
			return ev
		}
		if ev.Event != "Error" || ev.Str("error") != "BrokerUnavailable" || time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("subscribe from %+v: %s", since, ev.Raw)
		}
		select { // pacing the retries while the node reconnects
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// result is one read of a session: an event, or the error that ended it.
type result struct {
	ev  testutil.Event
	err error
}

// pump reads c until a read fails (the last result carries the error),
// then closes the channel. Whoever closes c drains it; once ctx is done
// (the test is over) it drops what it reads.
func pump(ctx context.Context, c *testutil.Client) <-chan result {
	out := make(chan result)
	go func() {
		defer close(out)
		for {
			// Long: a session sees nothing while its node fails over.
			ev, err := c.NextWithin(2 * time.Minute)
			select {
			case out <- result{ev, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return out
}

// await handles the session's events until cond holds.
func await(ctx context.Context, t *testing.T, what string, cond func() bool, events <-chan result, f *follower) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case r := <-events:
			if r.err != nil {
				t.Fatalf("session ended waiting for %s: %v", what, r.err)
			}
			f.handle(r)
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// awaitPushes polls cond (the pusher's progress) until it holds, or
// returns the error that ended the pusher or the test's deadline.
func awaitPushes(ctx context.Context, pushDone <-chan error, cond func() bool) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case err := <-pushDone:
			return fmt.Errorf("the pusher returned early: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("timed out: %w", ctx.Err())
		}
	}
	return nil
}

// deleteExchange removes Myxi's exchange through whichever node answers.
func deleteExchange(t *testing.T, c *Cluster, exchange string) {
	var errs []error
	for n := 1; n <= 3; n++ {
		conn, err := dial(c.URL(n))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ch, err := conn.Channel()
		if err == nil {
			err = ch.ExchangeDelete(exchange, false, false)
		}
		closeConn(conn)
		if err == nil {
			return
		}
		errs = append(errs, err)
	}
	t.Errorf("deleting exchange %s: %v", exchange, errors.Join(errs...))
}
