package myxi_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/broker/rabbitmq"
	"github.com/myxi/myxi/internal/testutil"
)

// History on the real RabbitMQ: several nodes sharing one stream.

// onExchange makes a server use exchange (another node of the same
// application) instead of its own unique one.
func onExchange(exchange string) serverOption {
	return func(cfg *myxi.Config) {
		for name, authorize := range cfg.Exchanges {
			delete(cfg.Exchanges, name)
			cfg.Exchanges[exchange] = authorize
		}
		for name, h := range cfg.History {
			delete(cfg.History, name)
			cfg.History[exchange] = h
		}
	}
}

// historyNodes starts n nodes sharing one history exchange on RabbitMQ.
func historyNodes(t *testing.T, n int, opts ...serverOption) []*testServer {
	t.Helper()
	exchange := testutil.UniqueName("myxi-history")
	testutil.DeleteExchangesOnCleanup(t, testutil.RabbitMQURL(t), exchange)
	nodes := make([]*testServer, n)
	for i := range nodes {
		o := append([]serverOption{withHistory(myxi.History{MaxAge: time.Hour}), onExchange(exchange)}, opts...)
		nodes[i] = startServer(t, "rabbitmq", o...)
	}
	return nodes
}

// TestHistoryTwoNodes: a client on node 1 sees events 1-5 and goes away;
// 6-10 are pushed; it comes back on node 2 with since and gets exactly
// 6-10, replayed, then 11 live.
func TestHistoryTwoNodes(t *testing.T) {
	nodes := historyNodes(t, 2)
	one, two := nodes[0], nodes[1]
	c := testutil.Dial(t, one.WS)
	sub := subscribedPosition(t, subscribeSince(t, c, one.Exchange, "k", nil))
	one.pushN(t, "k", 1, 5)
	var last uint64
	for n := 1; n <= 5; n++ {
		last = expectRecorded(t, c, "k", n)
	}
	_ = c.Conn.Close()
	// Node 2 reads the stream a little behind node 1: a watcher there
	// shows when it has read event 10. (A node that has not yet read what
	// the client missed answers with its own, earlier offset and delivers
	// the rest live: correct, but not "replayed", which this test checks.)
	watcher := testutil.Dial(t, two.WS)
	subscribeSince(t, watcher, two.Exchange, "k", nil)
	one.pushN(t, "k", 6, 10)
	for { // it may also get some of 1-5, which node 2 read after it subscribed
		if ev := watcher.Expect("Numbered"); string(ev.Payload["n"]) == "10" {
			break
		}
	}

	c2 := testutil.Dial(t, two.WS)
	ev := subscribeSince(t, c2, two.Exchange, "k", &position{Offset: last, Epoch: sub.Epoch})
	p := subscribedPosition(t, ev)
	if recovered(ev) != "true" || p.Epoch != sub.Epoch {
		t.Fatalf("Subscribed on node 2 = %s, want recovered in epoch %s", ev.Raw, sub.Epoch)
	}
	for n := 6; n <= 10; n++ {
		if o := expectRecorded(t, c2, "k", n); o > p.Offset {
			t.Fatalf("event %d at %d is after Subscribed's %d: not marked replayed", n, o, p.Offset)
		}
	}
	two.pushN(t, "k", 11, 11)
	if o := expectRecorded(t, c2, "k", 11); o <= p.Offset {
		t.Fatalf("live event 11 at %d, not after %d", o, p.Offset)
	}
}

// TestHistoryNodesAgreeOnEpoch starts two nodes at once on a new stream.
func TestHistoryNodesAgreeOnEpoch(t *testing.T) {
	exchange := testutil.UniqueName("myxi-history")
	testutil.DeleteExchangesOnCleanup(t, testutil.RabbitMQURL(t), exchange)
	nodes := make([]*testServer, 2)
	done := make(chan int)
	for i := range nodes {
		go func() {
			defer func() { done <- i }()
			nodes[i] = startServer(t, "rabbitmq", withHistory(myxi.History{MaxAge: time.Hour}), onExchange(exchange))
		}()
	}
	<-done
	<-done
	var epochs [2]string
	for i, n := range nodes {
		c := testutil.Dial(t, n.WS)
		epochs[i] = subscribedPosition(t, subscribeSince(t, c, exchange, "k", nil)).Epoch
	}
	if epochs[0] != epochs[1] {
		t.Fatalf("nodes started together disagree on the epoch: %q and %q", epochs[0], epochs[1])
	}
}

// TestHistorySurvivesNodeRestart: a node that stops and a new one that
// starts lose nothing; the history lives in RabbitMQ.
func TestHistorySurvivesNodeRestart(t *testing.T) {
	nodes := historyNodes(t, 1)
	c := testutil.Dial(t, nodes[0].WS)
	sub := subscribedPosition(t, subscribeSince(t, c, nodes[0].Exchange, "k", nil))
	nodes[0].pushN(t, "k", 1, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := nodes[0].Srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	fresh := startServer(t, "rabbitmq", withHistory(myxi.History{MaxAge: time.Hour}), onExchange(nodes[0].Exchange))
	c2 := testutil.Dial(t, fresh.WS)
	ev := subscribeSince(t, c2, fresh.Exchange, "k", &sub)
	if recovered(ev) != "true" {
		t.Fatalf("Subscribed on a new node = %s, want recovered", ev.Raw)
	}
	for n := 1; n <= 3; n++ {
		expectRecorded(t, c2, "k", n)
	}
}

// TestHistoryNoSilentGap cuts a node's AMQP connection while its client
// stays connected and events are pushed through another node: the client
// gets every one of them, in order, once the node is back.
func TestHistoryNoSilentGap(t *testing.T) {
	nodes := historyNodes(t, 2)
	cut, other := nodes[0], nodes[1]
	c := testutil.Dial(t, cut.WS)
	subscribeSince(t, c, cut.Exchange, "k", nil)
	testutil.CloseConnection(t, cut.ConnectionName)
	other.pushN(t, "k", 1, 20)
	for n := 1; n <= 20; n++ {
		expectRecorded(t, c, "k", n)
	}
	cut.pushN(t, "k", 21, 21)
	expectRecorded(t, c, "k", 21)
}

// TestHistoryStreamDeleted: a deleted stream is created again with a new
// epoch on every node, and the sessions subscribed to it are closed
// (1011) so that their clients recover.
func TestHistoryStreamDeleted(t *testing.T) {
	nodes := historyNodes(t, 2)
	c := testutil.Dial(t, nodes[0].WS)
	old := subscribedPosition(t, subscribeSince(t, c, nodes[0].Exchange, "k", nil)).Epoch

	testutil.DeleteQueue(t, testutil.RabbitMQURL(t), rabbitmq.StreamName(nodes[0].Exchange))
	if code := closeCode(t, c); code != 1011 {
		t.Fatalf("close code after the stream was deleted: %d, want 1011", code)
	}
	epochs := make([]string, len(nodes))
	for i, n := range nodes {
		testutil.Eventually(t, 20*time.Second, fmt.Sprint("node ", i, " to read the new history"), func() bool {
			c := testutil.Dial(t, n.WS)
			c.Send("Subscribe", "s", map[string]any{"exchange": n.Exchange, "routing_key": "k"})
			ev := c.Next()
			_ = c.Conn.Close()
			if ev.Event != "Subscribed" || ev.Str("epoch") == old {
				return false
			}
			epochs[i] = ev.Str("epoch")
			return true
		})
	}
	if epochs[0] != epochs[1] {
		t.Fatalf("nodes disagree on the new epoch: %q and %q", epochs[0], epochs[1])
	}
	nodes[1].pushN(t, "k", 1, 1)
}

// closeCode reads until the server closes the connection and returns the
// close code.
func closeCode(t *testing.T, c *testutil.Client) int {
	t.Helper()
	_ = c.Conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, _, err := c.Conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("connection ended without a close frame: %v", err)
		}
		return ce.Code
	}
}
