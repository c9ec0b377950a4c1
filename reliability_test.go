package myxi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/internal/testutil"
)

// metricValue reads one unlabelled metric from the server's metrics.
func metricValue(t *testing.T, srv *myxi.Server, name string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.Bytes()
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// dialSmallBuffer connects with a tiny receive buffer so that a client
// that stops reading fills the server's queue quickly.
func dialSmallBuffer(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{NetDialContext: (&net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}).DialContext}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// A client that stops reading is disconnected (1008, counted) while every
// other subscriber of the same key gets every message, on time.
func TestSlowConsumerDoesNotHurtOthers(t *testing.T) {
	forEachBroker(t, func(t *testing.T, kind string) {
		ts := startServer(t, kind, func(c *myxi.Config) {
			c.Limits.SendQueueBytes = 256 << 10
			c.Limits.WriteTimeout = time.Second
		})
		slow := dialSmallBuffer(t, ts.WS)
		if err := slow.WriteJSON(map[string]any{"action": "Subscribe", "payload": map[string]string{"exchange": ts.Exchange, "routing_key": "k"}}); err != nil {
			t.Fatal(err)
		}
		healthy := testutil.Dial(t, ts.WS)
		healthy.Subscribe(ts.Exchange, "k")
		testutil.Eventually(t, 5*time.Second, "the slow client's subscription", func() bool {
			return metricValue(t, ts.Srv, "myxi_subscriptions") == 2
		})

		const n = 400
		pad := strings.Repeat("x", 8<<10)
		received := make(chan error, 1)
		var worst time.Duration
		go func() {
			for i := range n {
				ev, err := healthy.NextWithin(10 * time.Second)
				if err != nil {
					received <- fmt.Errorf("event %d: %w", i, err)
					return
				}
				var seq, sent int64
				_ = json.Unmarshal(ev.Payload["seq"], &seq)
				_ = json.Unmarshal(ev.Payload["sent"], &sent)
				if seq != int64(i) {
					received <- fmt.Errorf("event %d has seq %d", i, seq)
					return
				}
				worst = max(worst, time.Since(time.Unix(0, sent)))
			}
			received <- nil
		}()
		// 8 MB/s: more than the slow client's buffers can absorb, well
		// within what a reading client takes.
		pace := time.NewTicker(time.Millisecond)
		defer pace.Stop()
		for i := range n {
			<-pace.C
			ts.push(t, "k", "Big", map[string]any{"seq": i, "sent": time.Now().UnixNano(), "pad": pad})
		}
		if err := <-received; err != nil {
			t.Fatalf("healthy client: %v", err)
		}
		t.Logf("healthy client got all %d events; worst latency %v", n, worst.Round(time.Millisecond))
		if worst > 2*time.Second {
			t.Fatalf("healthy client's worst latency %v", worst)
		}
		testutil.Eventually(t, 10*time.Second, "the slow client to be disconnected", func() bool {
			return metricValue(t, ts.Srv, "myxi_slow_client_disconnects_total") == 1 && ts.Srv.Sessions() == 1
		})
	})
}

// Over the limit, a socket gets one tagged RateLimited a second; the rest
// of its frames, valid or not, are dropped unanswered.
func TestRateLimit(t *testing.T) {
	ts := startServer(t, "memory", func(c *myxi.Config) {
		c.Limits.ActionsPerSecond = 1
		c.Limits.ActionBurst = 5
		c.Limits.MaxSubscriptions = 1 // the welcome credit: one frame
	})
	c := testutil.Dial(t, ts.WS)
	c.SendRaw("not json") // invalid frames cost a token too
	for i := range 20 {
		c.Send("Ping", i, nil)
	}
	c.ExpectError("InvalidJSON")
	for i := range 5 {
		if ev := c.Expect("Pong"); string(ev.Tag) != fmt.Sprint(i) {
			t.Fatalf("pong %d has tag %s", i, ev.Tag)
		}
	}
	if ev := c.ExpectError("RateLimited"); string(ev.Tag) != "5" || ev.Str("message") == "" {
		t.Fatalf("RateLimited: %s", ev.Raw)
	}
	if ev, err := c.NextWithin(300 * time.Millisecond); err == nil {
		t.Fatalf("a dropped frame was answered: %s", ev.Raw)
	}
}

// A Subscribe of n keys costs n tokens up front, or is refused whole; a
// new session may subscribe to as many keys as it may hold at once.
func TestSubscribeChargesPerKey(t *testing.T) {
	ts := startServer(t, "memory", func(c *myxi.Config) {
		c.Limits.ActionsPerSecond = 1
		c.Limits.ActionBurst = 5
		c.Limits.MaxSubscriptions = 50
	})
	c := testutil.Dial(t, ts.WS)
	keys := make([]string, 50)
	for i := range keys {
		keys[i] = fmt.Sprint(i)
	}
	c.Send("Subscribe", "all", map[string]any{"exchange": ts.Exchange, "routing_keys": keys})
	for range keys {
		c.Expect("Subscribed")
	}
	c.Send("Unsubscribe", "u", map[string]any{"exchange": ts.Exchange, "routing_keys": keys[:10]})
	ev := c.ExpectError("RateLimited")
	if string(ev.Tag) != `"u"` || ev.Str("exchange") != ts.Exchange || !strings.Contains(string(ev.Payload["routing_keys"]), `"9"`) {
		t.Fatalf("RateLimited: %s", ev.Raw)
	}
	c.Send("ListSubscriptions", "l", nil)
	if ev := c.Expect("YourSubscriptions"); strings.Count(string(ev.Payload["subscriptions"]), ",") != 49 {
		t.Fatalf("a refused Unsubscribe removed keys: %s", ev.Raw)
	}
}

// A reconnecting client that resubscribes one key per frame, as the
// JavaScript client does, gets every key at once with the default limits.
func TestResubscribeOneFramePerKey(t *testing.T) {
	ts := startServer(t, "memory")
	c := testutil.Dial(t, ts.WS)
	const keys = 1000
	for i := range keys {
		c.Send("Subscribe", i, map[string]any{"exchange": ts.Exchange, "routing_key": fmt.Sprint(i)})
	}
	for range keys {
		if ev := c.Next(); ev.Event != "Subscribed" {
			t.Fatalf("got %s", ev.Raw)
		}
	}
}

// A socket over its limit for 5 s in a row is closed with 1008, while a
// healthy client keeps getting its Pongs promptly.
func TestFlooderClosed(t *testing.T) {
	ts := startServer(t, "memory")
	healthy := testutil.Dial(t, ts.WS)
	flooder, _, err := websocket.DefaultDialer.Dial(ts.WS, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer flooder.Close()
	closed := make(chan int, 1)
	go func() { // reads its replies, as the hostile test's flooder did
		for {
			if _, _, err := flooder.ReadMessage(); err != nil {
				var ce *websocket.CloseError
				code := 0
				if errors.As(err, &ce) {
					code = ce.Code
				}
				closed <- code
				return
			}
		}
	}()
	go func() {
		ping := []byte(`{"action":"Ping"}`)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if flooder.WriteMessage(websocket.TextMessage, ping) != nil {
				return
			}
		}
	}()
	var worst time.Duration
	for i := 0; ; i++ {
		select {
		case code := <-closed:
			if code != 1008 {
				t.Fatalf("flooder closed with %d, want 1008", code)
			}
			t.Logf("healthy client's worst Pong during the flood: %v", worst)
			if worst > 200*time.Millisecond {
				t.Fatalf("healthy client waited %v for a Pong", worst)
			}
			return
		default:
		}
		if i > 200 {
			t.Fatal("flooder not closed after 10s")
		}
		start := time.Now()
		healthy.Send("Ping", i, nil)
		healthy.Expect("Pong")
		worst = max(worst, time.Since(start))
		time.Sleep(50 * time.Millisecond) // the healthy client's own pace
	}
}

func TestConnectionLimit(t *testing.T) {
	ts := startServer(t, "memory", func(c *myxi.Config) { c.Limits.MaxConnections = 2 })
	testutil.Dial(t, ts.WS)
	testutil.Dial(t, ts.WS)
	conn, _, err := websocket.DefaultDialer.Dial(ts.WS, nil)
	if conn != nil {
		defer conn.Close()
	}
	if err != nil {
		t.Fatalf("third connection: %v", err)
	}
	// Over the limit, the upgrade succeeds and the one Close frame says
	// 1013 (try again later), which a browser can read, unlike a 503.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = conn.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 1013 {
		t.Fatalf("third connection: %v; want close 1013", err)
	}
}

// A client that answers no ping is dropped after two ping intervals; one
// that reads (and so answers pings) stays.
func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, "memory", func(c *myxi.Config) { c.Limits.PingInterval = 100 * time.Millisecond })
	testutil.Dial(t, ts.WS) // a mute client: never reads again, so never answers pings
	alive := testutil.Dial(t, ts.WS)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			if _, err := alive.NextWithin(5 * time.Second); err != nil {
				return
			}
		}
	}()
	testutil.Eventually(t, 5*time.Second, "the mute client to be dropped", func() bool { return ts.Srv.Sessions() == 1 })
	alive.Send("Ping", nil, nil)
	time.Sleep(300 * time.Millisecond) // three ping intervals: the point is that nothing happens
	if n := ts.Srv.Sessions(); n != 1 {
		t.Fatalf("%d sessions; the reading client must stay", n)
	}
	alive.Conn.Close()
	<-readerDone
}

// Thousands of random and malformed frames over real connections: the
// server stays healthy and a well-behaved subscriber loses nothing.
func TestSoakMalformedFrames(t *testing.T) {
	ts := startServer(t, "memory", func(c *myxi.Config) { c.Limits.ActionsPerSecond = -1 })
	good := testutil.Dial(t, ts.WS)
	good.Subscribe(ts.Exchange, "k")

	valid := []string{
		`{"action":"Subscribe","tag":1,"payload":{"exchange":"%s","routing_key":"x"}}`,
		`{"action":"Unsubscribe","payload":{"exchange":"%s"}}`,
		`{"action":"ListSubscriptions"}`, `{"action":"Ping","tag":[1,2]}`,
		`{"action":"Subscribe","payload":{"exchange":"%s","routing_keys":[1,null,"k",true]}}`,
		`{"action":"Authenticate","payload":{"session_token":"alice-token"}}`, `{"action":"Panic"}`,
	}
	rng := rand.New(rand.NewPCG(1, 2))
	mutate := func() []byte {
		f := []byte(fmt.Sprintf(valid[rng.IntN(len(valid))], ts.Exchange))
		switch rng.IntN(4) {
		case 0: // flip bytes
			for range 1 + rng.IntN(4) {
				f[rng.IntN(len(f))] = byte(rng.IntN(256))
			}
		case 1: // truncate
			f = f[:rng.IntN(len(f))]
		case 2: // random bytes
			f = make([]byte, rng.IntN(200))
			for i := range f {
				f[i] = byte(rng.IntN(256))
			}
		}
		return f
	}
	const clients, framesEach = 4, 1500
	var wg sync.WaitGroup
	for range clients {
		bad := testutil.Dial(t, ts.WS)
		frames := make([][]byte, framesEach)
		for i := range frames {
			frames[i] = mutate()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			go func() { // read and discard the replies
				for {
					if _, _, err := bad.Conn.ReadMessage(); err != nil {
						return
					}
				}
			}()
			for _, f := range frames {
				if err := bad.Conn.WriteMessage(websocket.TextMessage, f); err != nil {
					return
				}
			}
		}()
	}
	const pushes = 300
	go func() {
		for i := range pushes {
			_ = ts.Srv.Push(context.Background(), ts.Exchange, "k", "Good", map[string]int{"seq": i})
		}
	}()
	for i := range pushes {
		ev := good.Expect("Good")
		if got := string(ev.Payload["seq"]); got != fmt.Sprint(i) {
			t.Fatalf("good client got seq %s, want %d", got, i)
		}
	}
	wg.Wait()
	if code := readyz(t, ts.HTTP); code != http.StatusOK {
		t.Fatalf("/readyz = %d after the soak", code)
	}
	good.Send("Ping", "after", nil)
	good.Expect("Pong")
}

// A connection that never completes its handshake is closed after the
// HandshakeTimeout.
func TestHandshakeTimeout(t *testing.T) {
	ts := startServer(t, "memory", func(c *myxi.Config) { c.Limits.HandshakeTimeout = 200 * time.Millisecond })
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.HTTP, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n")) // and never the end of the headers
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = io.ReadAll(conn)
	if err != nil {
		t.Fatalf("want the server to close the connection, got %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("closed after %v", took)
	}
}
