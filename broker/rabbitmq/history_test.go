package rabbitmq_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/broker/rabbitmq"
	"github.com/myxi/myxi/internal/testutil"
)

// feedCall is one call a fakeFeed received.
type feedCall struct {
	kind  string // reset, record, live, down
	epoch string // reset's
	rec   broker.Record
}

func (c feedCall) String() string {
	switch c.kind {
	case "reset":
		return "reset(" + c.epoch + ")"
	case "record":
		if c.rec.Body == nil {
			return fmt.Sprintf("marker(%d)", c.rec.Offset)
		}
		return fmt.Sprintf("record(%d %s %s)", c.rec.Offset, c.rec.RoutingKey, c.rec.Body)
	}
	return c.kind
}

// fakeFeed records every call, and checks the contract of HistoryFeed as
// it goes: calls never overlap, and records come in offset order within
// one Reset.
type fakeFeed struct {
	mu      sync.Mutex
	calls   []feedCall
	busy    bool
	lastOff int64
	errs    []string
}

func (f *fakeFeed) add(c feedCall) {
	f.mu.Lock()
	if f.busy {
		f.errs = append(f.errs, "overlapping calls")
	}
	f.busy = true
	switch c.kind {
	case "reset":
		f.lastOff = -1
	case "record":
		if int64(c.rec.Offset) <= f.lastOff {
			f.errs = append(f.errs, fmt.Sprintf("offset %d after %d", c.rec.Offset, f.lastOff))
		}
		f.lastOff = int64(c.rec.Offset)
	}
	f.calls = append(f.calls, c)
	f.busy = false
	f.mu.Unlock()
}

func (f *fakeFeed) Reset(epoch string)     { f.add(feedCall{kind: "reset", epoch: epoch}) }
func (f *fakeFeed) Record(r broker.Record) { f.add(feedCall{kind: "record", rec: r}) }
func (f *fakeFeed) Live()                  { f.add(feedCall{kind: "live"}) }
func (f *fakeFeed) Down()                  { f.add(feedCall{kind: "down"}) }

func (f *fakeFeed) snapshot() []feedCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]feedCall(nil), f.calls...)
}

func (f *fakeFeed) check(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.errs {
		t.Error("feed:", e)
	}
}

// since returns the calls from the n-th on.
func (f *fakeFeed) since(n int) []feedCall {
	all := f.snapshot()
	if n > len(all) {
		return nil
	}
	return all[n:]
}

// epoch is the epoch of the last Reset, "" before any.
func (f *fakeFeed) epoch() string {
	calls := f.snapshot()
	for i := len(calls) - 1; i >= 0; i-- {
		if calls[i].kind == "reset" {
			return calls[i].epoch
		}
	}
	return ""
}

// live reports whether the last Reset or Down was followed by Live.
func (f *fakeFeed) live() bool {
	calls := f.snapshot()
	for i := len(calls) - 1; i >= 0; i-- {
		switch calls[i].kind {
		case "live":
			return true
		case "reset", "down":
			return false
		}
	}
	return false
}

// records returns the records (markers excluded) fed from call n on.
func (f *fakeFeed) records(n int) []broker.Record {
	var out []broker.Record
	for _, c := range f.since(n) {
		if c.kind == "record" && c.rec.Body != nil {
			out = append(out, c.rec)
		}
	}
	return out
}

var epochFormat = regexp.MustCompile(`^[0-9a-z]+-[0-9a-f]{16}$`)

// deleteStreamOnCleanup deletes exchange's history stream when the test
// ends. Register it before starting the brokers: cleanups run last first,
// so the brokers are closed by then and do not create it again.
func deleteStreamOnCleanup(tb testing.TB, url, exchange string) {
	tb.Helper()
	tb.Cleanup(func() { deleteStream(tb, url, exchange) })
}

func deleteStream(tb testing.TB, url, exchange string) {
	tb.Helper()
	testutil.DeleteQueue(tb, url, rabbitmq.StreamName(exchange))
}

var testHistory = broker.History{MaxAge: 10 * time.Minute, MaxBytes: 4 << 20}

// startHistoryBroker starts a node broker for exchange (deliver may be
// nil: a no-op) that reads its history into a new fake feed.
func startHistoryBroker(tb testing.TB, exchange string, deliver broker.DeliverFunc, cfg rabbitmq.Config) (*rabbitmq.Broker, *fakeFeed) {
	tb.Helper()
	return startHistoryBrokerWith(tb, exchange, deliver, cfg, testHistory)
}

func startHistoryBrokerWith(tb testing.TB, exchange string, deliver broker.DeliverFunc, cfg rabbitmq.Config, h broker.History) (*rabbitmq.Broker, *fakeFeed) {
	tb.Helper()
	url := testutil.RabbitMQURL(tb)
	if deliver == nil {
		deliver = func(broker.Message) {}
	}
	cfg.URLs = []string{url}
	cfg.ConnectionName = testutil.UniqueName("myxi history test")
	cfg.Logger = testutil.Logger(tb)
	b, err := rabbitmq.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := b.Start(context.Background(), []string{exchange}, deliver); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	feed := &fakeFeed{}
	if err := b.StartHistory(context.Background(), exchange, h, feed); err != nil {
		tb.Fatal(err)
	}
	return b, feed
}

func newHistoryExchange(tb testing.TB, prefix string) (url, exchange string) {
	tb.Helper()
	url = testutil.RabbitMQURL(tb)
	exchange = testutil.UniqueName(prefix)
	testutil.DeleteExchangesOnCleanup(tb, url, exchange)
	deleteStreamOnCleanup(tb, url, exchange)
	return url, exchange
}

func waitLive(tb testing.TB, f *fakeFeed) {
	tb.Helper()
	testutil.Eventually(tb, 20*time.Second, "the feed to go live", f.live)
}

func appendOK(tb testing.TB, b *rabbitmq.Broker, exchange, key, body string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Append(ctx, exchange, key, []byte(body)); err != nil {
		tb.Fatalf("append %s/%s: %v", exchange, key, err)
	}
}

// A new history: Reset with a fresh epoch, its genesis marker, Live; then
// every Append reaches the feed once, in order, with its key and body.
func TestHistoryAppendIsFed(t *testing.T) {
	_, ex := newHistoryExchange(t, "myxi-test-hist")
	b, feed := startHistoryBroker(t, ex, nil, rabbitmq.Config{})
	waitLive(t, feed)
	calls := feed.snapshot()
	if len(calls) != 3 || calls[0].kind != "reset" || calls[1].String() != "marker(0)" || calls[2].kind != "live" {
		t.Fatalf("start of a new history: %v, want reset, marker(0), live", calls)
	}
	if !epochFormat.MatchString(calls[0].epoch) {
		t.Fatalf("epoch %q", calls[0].epoch)
	}
	args, ok := testutil.QueueArguments(t, rabbitmq.StreamName(ex))
	for _, want := range []string{`{"x-queue-type","stream"}`, `{"x-max-age","600s"}`,
		`{"x-max-length-bytes",4194304}`, `{"x-stream-max-segment-size-bytes",1048576}`} {
		if !ok || !strings.Contains(args, want) {
			t.Errorf("stream arguments %s (exists: %v), want %s", args, ok, want)
		}
	}
	for i, k := range []string{"a", "b", "a"} {
		appendOK(t, b, ex, k, fmt.Sprintf(`{"event":"E%d"}`, i))
	}
	testutil.Eventually(t, 10*time.Second, "3 records", func() bool { return len(feed.records(0)) == 3 })
	recs := feed.records(0)
	for i, k := range []string{"a", "b", "a"} {
		if recs[i].RoutingKey != k || string(recs[i].Body) != fmt.Sprintf(`{"event":"E%d"}`, i) {
			t.Errorf("record %d: %+v", i, recs[i])
		}
		if i > 0 && recs[i].Offset <= recs[i-1].Offset {
			t.Errorf("offsets %d then %d", recs[i-1].Offset, recs[i].Offset)
		}
	}
	for _, c := range feed.since(3) {
		if c.kind != "record" {
			t.Errorf("after live: %v", c)
		}
	}
	feed.check(t)
}

// Append refuses an exchange without StartHistory, and a broker refuses
// StartHistory twice for one exchange.
func TestHistoryMisuse(t *testing.T) {
	_, ex := newHistoryExchange(t, "myxi-test-histmisuse")
	b, feed := startHistoryBroker(t, ex, nil, rabbitmq.Config{})
	if err := b.StartHistory(context.Background(), ex, testHistory, &fakeFeed{}); err == nil {
		t.Error("a second StartHistory for one exchange was accepted")
	}
	if err := b.Append(context.Background(), ex+"-other", "k", []byte(`{}`)); err == nil {
		t.Error("Append to an exchange without history was accepted")
	}
	waitLive(t, feed)
}

// Two nodes that create one history at the same moment agree on its
// epoch, and on its records.
func TestHistoryTwoNodesAgree(t *testing.T) {
	_, ex := newHistoryExchange(t, "myxi-test-histtwo")
	var wg sync.WaitGroup
	var brokers [2]*rabbitmq.Broker
	var feeds [2]*fakeFeed
	for i := range brokers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			brokers[i], feeds[i] = startHistoryBroker(t, ex, nil, rabbitmq.Config{})
		}()
	}
	wg.Wait()
	waitLive(t, feeds[0])
	waitLive(t, feeds[1])
	if feeds[0].epoch() != feeds[1].epoch() || feeds[0].epoch() == "" {
		t.Fatalf("epochs %q and %q", feeds[0].epoch(), feeds[1].epoch())
	}
	appendOK(t, brokers[0], ex, "k", `{"event":"A"}`)
	appendOK(t, brokers[1], ex, "k", `{"event":"B"}`)
	for _, f := range feeds {
		testutil.Eventually(t, 10*time.Second, "both records", func() bool { return len(f.records(0)) == 2 })
	}
	if a, b := feeds[0].records(0), feeds[1].records(0); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("the nodes read %v and %v", a, b)
	}
	feeds[0].check(t)
	feeds[1].check(t)
}

// A stream deleted under a running node: Down, then the node creates it
// again, with a new epoch (Reset), and Append works again.
func TestHistoryStreamDeleted(t *testing.T) {
	url, ex := newHistoryExchange(t, "myxi-test-histdel")
	b, feed := startHistoryBroker(t, ex, nil, rabbitmq.Config{})
	waitLive(t, feed)
	appendOK(t, b, ex, "k", `{"event":"Before"}`)
	testutil.Eventually(t, 10*time.Second, "the record", func() bool { return len(feed.records(0)) == 1 })
	old := feed.epoch()
	n := len(feed.snapshot())
	deleteStream(t, url, ex)
	testutil.Eventually(t, 20*time.Second, "a new epoch, live", func() bool { return feed.epoch() != old && feed.live() })
	after := feed.since(n)
	if len(after) < 3 || after[0].kind != "down" || after[1].kind != "reset" {
		t.Fatalf("after the deletion: %v, want down, reset, ...", after)
	}
	appendOK(t, b, ex, "k", `{"event":"After"}`)
	testutil.Eventually(t, 10*time.Second, "the record in the new epoch", func() bool { return len(feed.records(n)) == 1 })
	if got := feed.records(n)[0]; string(got.Body) != `{"event":"After"}` {
		t.Fatalf("got %+v", got)
	}
	feed.check(t)
}

// The live copy of an Append reaches a node that does not read the
// history, and not, a second time, a node that does; a raw 1.x publish
// reaches both, live-only.
func TestHistoryLiveCopy(t *testing.T) {
	url, ex := newHistoryExchange(t, "myxi-test-histcopy")
	gotA := make(chan broker.Message, 10)
	gotB := make(chan broker.Message, 10)
	a, feed := startHistoryBroker(t, ex, func(m broker.Message) { gotA <- m }, rabbitmq.Config{})
	bNode := startBroker(t, ex, func(m broker.Message) { gotB <- m })
	ctx := context.Background()
	for _, n := range []*rabbitmq.Broker{a, bNode} {
		if err := n.Bind(ctx, ex, "k"); err != nil {
			t.Fatal(err)
		}
	}
	waitLive(t, feed)
	appendOK(t, a, ex, "k", `{"event":"Recorded"}`)
	select {
	case m := <-gotB:
		if string(m.Body) != `{"event":"Recorded"}` || m.RoutingKey != "k" {
			t.Fatalf("the node without history got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the live copy did not reach the node without history")
	}
	// A raw publish, as myxi 1.x's push_event does.
	pub := startBroker(t, ex, nil)
	if err := pub.Publish(ctx, ex, "k", []byte(`{"event":"Raw"}`)); err != nil {
		t.Fatal(err)
	}
	// The node queue is FIFO: the raw event coming first proves that
	// the copy, published before it, was dropped.
	select {
	case m := <-gotA:
		if string(m.Body) != `{"event":"Raw"}` {
			t.Fatalf("the history node delivered %s live: the copy of a record it reads", m.Body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the raw publish did not reach the history node")
	}
	if m := <-gotB; string(m.Body) != `{"event":"Raw"}` {
		t.Fatalf("the node without history got %s", m.Body)
	}
	testutil.Eventually(t, 10*time.Second, "the record", func() bool { return len(feed.records(0)) == 1 })
	_ = url
	feed.check(t)
}

// NoLiveCopy: the record only.
func TestHistoryNoLiveCopy(t *testing.T) {
	_, ex := newHistoryExchange(t, "myxi-test-histnocopy")
	a, feed := startHistoryBroker(t, ex, nil, rabbitmq.Config{NoLiveCopy: true})
	gotB := make(chan broker.Message, 10)
	bNode := startBroker(t, ex, func(m broker.Message) { gotB <- m })
	ctx := context.Background()
	if err := bNode.Bind(ctx, ex, "k"); err != nil {
		t.Fatal(err)
	}
	waitLive(t, feed)
	appendOK(t, a, ex, "k", `{"event":"Recorded"}`)
	if err := a.Publish(ctx, ex, "k", []byte(`{"event":"Raw"}`)); err != nil {
		t.Fatal(err)
	}
	if m := <-gotB; string(m.Body) != `{"event":"Raw"}` {
		t.Fatalf("with NoLiveCopy the node without history got %s", m.Body)
	}
	testutil.Eventually(t, 10*time.Second, "the record", func() bool { return len(feed.records(0)) == 1 })
}

// The node's connection is closed: Down, and once it is back, the records
// appended meanwhile are fed, without a Reset, then Live.
func TestHistoryResumeAfterConnectionLoss(t *testing.T) {
	url, ex := newHistoryExchange(t, "myxi-test-histresume")
	b, feed := startHistoryBroker(t, ex, nil, rabbitmq.Config{ReconnectMin: 500 * time.Millisecond})
	other, otherFeed := startHistoryBroker(t, ex, nil, rabbitmq.Config{})
	waitLive(t, feed)
	waitLive(t, otherFeed)
	appendOK(t, b, ex, "k", `{"event":"E0"}`)
	testutil.Eventually(t, 10*time.Second, "the first record", func() bool { return len(feed.records(0)) == 1 })
	n := len(feed.snapshot())
	testutil.CloseConnection(t, b.ConnectionName())
	testutil.Eventually(t, 10*time.Second, "Down", func() bool {
		s := feed.since(n)
		return len(s) > 0 && s[0].kind == "down"
	})
	for i := 1; i <= 5; i++ {
		appendOK(t, other, ex, "k", fmt.Sprintf(`{"event":"E%d"}`, i))
	}
	testutil.Eventually(t, 20*time.Second, "the missed records, then live", func() bool {
		return len(feed.records(n)) == 5 && feed.live()
	})
	for _, c := range feed.since(n) {
		if c.kind == "reset" {
			t.Fatalf("a Reset on resume: %v", feed.since(n))
		}
	}
	for i, r := range feed.records(n) {
		if string(r.Body) != fmt.Sprintf(`{"event":"E%d"}`, i+1) {
			t.Errorf("record %d: %s", i, r.Body)
		}
	}
	// And the node appends again.
	appendOK(t, b, ex, "k", `{"event":"E6"}`)
	testutil.Eventually(t, 10*time.Second, "the next record", func() bool { return len(feed.records(n)) == 6 })
	_ = url
	feed.check(t)
}

// Publisher.Push to an exchange with history appends (a reader sees the
// record with its position); to one without a stream, it publishes
// live-only and creates nothing.
func TestPublisherPushHistory(t *testing.T) {
	url, ex := newHistoryExchange(t, "myxi-test-histpub")
	gotB := make(chan broker.Message, 10)
	_, feed := startHistoryBroker(t, ex, nil, rabbitmq.Config{})
	bNode := startBroker(t, ex, func(m broker.Message) { gotB <- m })
	ctx := context.Background()
	if err := bNode.Bind(ctx, ex, "k"); err != nil {
		t.Fatal(err)
	}
	waitLive(t, feed)
	pub, err := rabbitmq.NewPublisher(ctx, rabbitmq.PublisherConfig{URLs: []string{url}, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Push(ctx, ex, "k", "Pushed", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the record", func() bool { return len(feed.records(0)) == 1 })
	if r := feed.records(0)[0]; r.RoutingKey != "k" || !strings.Contains(string(r.Body), `"Pushed"`) || r.Offset == 0 {
		t.Fatalf("record %+v", r)
	}
	select {
	case m := <-gotB:
		if !strings.Contains(string(m.Body), `"Pushed"`) {
			t.Fatalf("the node without history got %s", m.Body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the live copy of the push did not reach the node without history")
	}

	// The history deleted under the publisher's watch: the next push waits
	// for the node to create it again and appends to the new epoch.
	old := feed.epoch()
	deleteStream(t, url, ex)
	testutil.Eventually(t, 20*time.Second, "a new epoch", func() bool { return feed.epoch() != old && feed.live() })
	n := len(feed.snapshot())
	if err := pub.Push(ctx, ex, "k", "Again", nil); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the record in the new epoch", func() bool { return len(feed.records(n)) == 1 })
	feed.check(t)
}

func TestPublisherPushWithoutStreamIsLiveOnly(t *testing.T) {
	url := testutil.RabbitMQURL(t)
	ex := testutil.UniqueName("myxi-test-histnone")
	deleteStreamOnCleanup(t, url, ex) // in case the test fails by creating it
	got := make(chan broker.Message, 10)
	node := startBroker(t, ex, func(m broker.Message) { got <- m })
	ctx := context.Background()
	if err := node.Bind(ctx, ex, "k"); err != nil {
		t.Fatal(err)
	}
	pub, err := rabbitmq.NewPublisher(ctx, rabbitmq.PublisherConfig{URLs: []string{url}, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for i := range 2 { // the second from the cached answer
		if err := pub.Push(ctx, ex, "k", fmt.Sprintf("E%d", i), nil); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if !strings.Contains(string(m.Body), fmt.Sprintf(`"E%d"`, i)) {
				t.Fatalf("got %s", m.Body)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the live push did not arrive")
		}
	}
	if _, ok := testutil.QueueArguments(t, rabbitmq.StreamName(ex)); ok {
		t.Fatal("a push created the history stream")
	}
}

// The history is truncated past the node's last record while the node is
// away: on its return it cannot prove that nothing was lost, so it resets
// the feed (same epoch) and reads from the first record kept. A node that
// starts then resolves the same epoch from the stamps of the tail.
func TestHistoryTruncatedWhileDown(t *testing.T) {
	_, ex := newHistoryExchange(t, "myxi-test-histtrunc")
	h := broker.History{MaxAge: 10 * time.Minute, MaxBytes: 1 << 20} // 1 MiB segments
	b, feed := startHistoryBrokerWith(t, ex, nil, rabbitmq.Config{ReconnectMin: 6 * time.Second, ReconnectMax: 6 * time.Second}, h)
	other, otherFeed := startHistoryBrokerWith(t, ex, nil, rabbitmq.Config{NoLiveCopy: true}, h)
	waitLive(t, feed)
	waitLive(t, otherFeed)
	epoch := feed.epoch()
	appendOK(t, b, ex, "k", `{"event":"First"}`)
	testutil.Eventually(t, 10*time.Second, "the first record", func() bool { return len(feed.records(0)) == 1 })
	n := len(feed.snapshot())
	testutil.CloseConnection(t, b.ConnectionName())
	testutil.Eventually(t, 5*time.Second, "Down", func() bool { return len(feed.since(n)) > 0 })
	// 3.5 MiB while the node is away (6 s): whole segments are deleted.
	body := `{"event":"Fill","payload":{"pad":"` + strings.Repeat("x", 1000) + `"}}`
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 220 {
				appendOK(t, other, ex, "fill", body)
			}
		}()
	}
	wg.Wait()
	testutil.Eventually(t, 30*time.Second, "a Reset, then live", func() bool {
		for _, c := range feed.since(n) {
			if c.kind == "reset" {
				return feed.live()
			}
		}
		return false
	})
	after := feed.since(n)
	if after[0].kind != "down" || after[1].kind != "reset" || after[1].epoch != epoch {
		t.Fatalf("after the truncation: %v ..., want down, reset(%s)", after[:min(len(after), 3)], epoch)
	}
	if first := after[2]; first.kind != "record" || first.rec.Offset < 100 {
		t.Fatalf("the first record after the Reset: %v, want one well past the truncated head", first)
	}
	_, late := startHistoryBrokerWith(t, ex, nil, rabbitmq.Config{}, h)
	waitLive(t, late)
	if late.epoch() != epoch {
		t.Fatalf("a node starting after the truncation resolved %q, want %q", late.epoch(), epoch)
	}
	feed.check(t)
	late.check(t)
}

// A stream that exists but is empty (created by someone else, with other
// arguments): the node uses it as it is, proposes an epoch and reads it.
func TestHistoryExistingEmptyStream(t *testing.T) {
	url, ex := newHistoryExchange(t, "myxi-test-histempty")
	ch := testutil.Channel(t, url)
	if _, err := ch.QueueDeclare(rabbitmq.StreamName(ex), true, false, false, false, amqp.Table{
		"x-queue-type": "stream", "x-max-age": "1200s",
	}); err != nil {
		t.Fatal(err)
	}
	b, feed := startHistoryBroker(t, ex, nil, rabbitmq.Config{})
	waitLive(t, feed)
	if !epochFormat.MatchString(feed.epoch()) {
		t.Fatalf("epoch %q", feed.epoch())
	}
	if args, _ := testutil.QueueArguments(t, rabbitmq.StreamName(ex)); !strings.Contains(args, `"1200s"`) {
		t.Fatalf("the stream's arguments changed: %s", args)
	}
	appendOK(t, b, ex, "k", `{"event":"E"}`)
	testutil.Eventually(t, 10*time.Second, "the record", func() bool { return len(feed.records(0)) == 1 })
}

// A history deleted for good (no node creates it again): the publisher's
// next push waits for it briefly, then goes live-only.
func TestPublisherPushAfterHistoryDeleted(t *testing.T) {
	url, ex := newHistoryExchange(t, "myxi-test-histgone")
	got := make(chan broker.Message, 10)
	node := startBroker(t, ex, func(m broker.Message) { got <- m })
	ctx := context.Background()
	if err := node.Bind(ctx, ex, "k"); err != nil {
		t.Fatal(err)
	}
	creator, feed := startHistoryBroker(t, ex, nil, rabbitmq.Config{NoLiveCopy: true})
	waitLive(t, feed)
	_ = creator.Close()
	pub, err := rabbitmq.NewPublisher(ctx, rabbitmq.PublisherConfig{URLs: []string{url}, Logger: testutil.Logger(t), NoLiveCopy: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	// Recorded, without a live copy: the node without history gets nothing.
	if err := pub.Push(ctx, ex, "k", "Recorded", nil); err != nil {
		t.Fatal(err)
	}
	deleteStream(t, url, ex)
	if err := pub.Push(ctx, ex, "k", "Live", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if !strings.Contains(string(m.Body), `"Live"`) {
			t.Fatalf("the node got %s, want the live push only", m.Body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the push after the deletion did not arrive live")
	}
	if _, ok := testutil.QueueArguments(t, rabbitmq.StreamName(ex)); ok {
		t.Fatal("the stream exists again")
	}
}
