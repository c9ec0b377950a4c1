package myxi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
)

// writerPair returns a server-side conn (batching or not) wired to a real
// WebSocket, and the client end.
func writerPair(t *testing.T, batch bool) (*conn, *websocket.Conn) {
	t.Helper()
	srv, err := New(Config{ReauthorizeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	serverSide := make(chan *websocket.Conn, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := srv.upgrader.Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		serverSide <- ws
	}))
	t.Cleanup(hs.Close)
	client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	ws := <-serverSide
	t.Cleanup(func() { ws.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := &conn{srv: srv, ctx: ctx, cancel: cancel}
	c.transport.init(ws.NetConn(), srv.cfg.Limits)
	c.batch, c.logBase, c.m = batch, srv.log, srv.metrics
	return c, client
}

// writeAll queues frames and flushes them as the writer does when it wakes.
func writeAll(t *testing.T, c *conn, frames []*frame) error {
	t.Helper()
	for _, f := range frames {
		if !c.queue.push(f) {
			t.Fatal("queue full")
		}
	}
	return c.flush()
}

func readFrame(t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// Events already queued together go out as one newline-separated frame to
// a client that asked for batches, and one frame each to a 1.x client.
func TestBatchedFrames(t *testing.T) {
	events := []*frame{
		newFrame([]byte(`{"event":"A","tag":null,"payload":{}}`)),
		newFrame([]byte(`{"event":"B","tag":null,"payload":{}}`)),
		newFrame([]byte(`{"event":"C","tag":null,"payload":{"s":"x\ny"}}`)),
	}
	events[0].shared, events[0].received = true, time.Now()
	want := []string{string(events[0].data), string(events[1].data), string(events[2].data)}

	c, client := writerPair(t, true)
	if err := writeAll(t, c, events); err != nil {
		t.Fatal(err)
	}
	if got := readFrame(t, client); got != strings.Join(want, "\n") {
		t.Fatalf("batched frame = %q", got)
	}

	c, client = writerPair(t, false)
	if err := writeAll(t, c, events); err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		if got := readFrame(t, client); got != w {
			t.Fatalf("1.x client frame = %q, want %q", got, w)
		}
	}
}

// A batch never grows past maxBatchBytes: more events make more frames.
func TestBatchSizeCap(t *testing.T) {
	c, client := writerPair(t, true)
	big := `{"event":"Big","tag":null,"payload":{"pad":"` + strings.Repeat("x", 20<<10) + `"}}`
	var frames []*frame
	for range 8 {
		frames = append(frames, newFrame([]byte(big)))
	}
	go func() { _ = writeAll(t, c, frames) }()
	total := 0
	for total < 8 {
		got := readFrame(t, client)
		n := strings.Count(got, "\n") + 1
		if len(got) > maxBatchBytes+len(big) {
			t.Fatalf("frame of %d bytes", len(got))
		}
		total += n
	}
	if total != 8 {
		t.Fatalf("%d events, want 8", total)
	}
}

// Deliveries written inline by the fan-out and those handed to a writer
// (after a write that would block) reach the client whole and in order,
// batched or not.
func TestInlineDeliveryHandsOverPartialWrites(t *testing.T) {
	for _, batch := range []bool{false, true} {
		c, client := writerPair(t, batch)
		if c.raw == nil {
			t.Fatal("no raw conn: inline writes are off")
		}
		c.queue.maxItems, c.queue.maxBytes = 1<<20, 64<<20
		c.writeTimeout = time.Minute // the reader below is slow under -race
		const n = 2000
		pad := strings.Repeat("p", 16<<10) // 32 MB in all: far more than the socket buffers
		var inline int
		for i := range n {
			f := newFrame([]byte(fmt.Sprintf(`{"event":"E","tag":null,"payload":{"seq":%d,"pad":"%s"}}`, i, pad)))
			f.shared, f.received = true, time.Now()
			if c.deliver(f) {
				inline++
			}
		}
		if inline == 0 || inline == n {
			t.Fatalf("batch=%v: %d of %d written inline; want some inline and some handed over", batch, inline, n)
		}
		next := 0
		for next < n {
			for _, ev := range strings.Split(readFrame(t, client), "\n") {
				var got struct {
					Payload struct {
						Seq int    `json:"seq"`
						Pad string `json:"pad"`
					} `json:"payload"`
				}
				if err := json.Unmarshal([]byte(ev), &got); err != nil || got.Payload.Seq != next || got.Payload.Pad != pad {
					t.Fatalf("batch=%v: event %d: %v %.80q", batch, next, err, ev)
				}
				next++
			}
		}
	}
}

// An event with many subscribers is split between the delivering
// goroutine and the workers; every subscriber gets it exactly once.
func TestFanoutChunks(t *testing.T) {
	srv, err := New(Config{Exchanges: map[string]AuthorizeFunc{"e": AllowAll}, ReauthorizeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	conns := make([]*conn, 3*fanoutChunk+7)
	for i := range conns {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		c := &conn{srv: srv, ctx: ctx, cancel: cancel}
		c.queue = sendQueue{maxItems: 16, maxBytes: 1 << 20}
		c.logBase, c.m = srv.log, srv.metrics
		c.writing.Store(true) // no socket: every delivery stays queued
		conns[i] = c
	}
	for range 5 {
		srv.fanout(newFrame([]byte(`{"event":"E"}`)), conns)
	}
	for i, c := range conns {
		if n := len(c.queue.items); n != 5 {
			t.Fatalf("subscriber %d got %d events, want 5", i, n)
		}
	}
}

// Deliveries that keep coming back to back (a backlog) are queued, so
// that the writers can put several in one write; spaced ones, and a
// single late one, are written inline.
func TestFanoutQueuesWhenBehind(t *testing.T) {
	c, client := writerPair(t, true)
	srv := c.srv
	ev := func(received time.Time) *frame {
		f := newFrame([]byte(`{"event":"E","tag":null,"payload":{}}`))
		f.shared, f.received = true, received
		return f
	}
	if n := srv.fanout(ev(time.Now()), []*conn{c}); n != 1 {
		t.Fatalf("first delivery: %d written inline, want 1", n)
	}
	// The next messages were waiting when the last fan-out ended: the
	// first backlogStreak-1 of them are a hiccup, still written inline.
	justAfter := func() time.Time { return time.Unix(0, srv.lastFanoutEnd.Load()+1) }
	for i := 1; i < backlogStreak; i++ {
		if n := srv.fanout(ev(justAfter()), []*conn{c}); n != 1 {
			t.Fatalf("back-to-back delivery %d: %d written inline, want 1", i, n)
		}
		readFrame(t, client)
	}
	if n := srv.fanout(ev(justAfter()), []*conn{c}); n != 0 {
		t.Fatalf("back-to-back delivery %d: %d written inline, want it queued", backlogStreak, n)
	}
	readFrame(t, client)
	readFrame(t, client)
	// The queued event's writer goroutine gives the token back right
	// after its write; inline writes need it free.
	for deadline := time.Now().Add(5 * time.Second); c.writing.Load(); {
		if time.Now().After(deadline) {
			t.Fatal("the writer kept the token")
		}
		runtime.Gosched()
	}
	caughtUp := time.Unix(0, srv.lastFanoutEnd.Load()).Add(2 * backlogGap)
	if n := srv.fanout(ev(caughtUp), []*conn{c}); n != 1 {
		t.Fatalf("delivery after a gap: %d written inline, want 1", n)
	}
}

// The closing deadline only moves closer: closeWith's generous bound,
// when it runs after the writer has sent the Close and set the short
// one, must not undo it.
func TestCloseDeadlineOnlyMovesCloser(t *testing.T) {
	c, _ := writerPair(t, false)
	soon := time.Now().Add(closeGrace)
	c.setCloseDeadline(soon)
	c.setCloseDeadline(soon.Add(c.writeTimeout))
	if !c.closeDeadline.Equal(soon) {
		t.Fatalf("close deadline %v, want %v", c.closeDeadline, soon)
	}
}

// A session's own events (a reply, Session.Send) are written by the
// sender at once, like deliveries, when nothing else is pending: counted
// as written before send returns, with no writer goroutine. Behind a
// writer that holds the token they are queued, and arrive in order.
func TestSendWritesInlineWhenIdle(t *testing.T) {
	c, client := writerPair(t, false)
	written := func() float64 {
		var m dto.Metric
		if err := c.m.delivered.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	before := written()
	if err := c.send(newFrame([]byte(`{"event":"First","tag":null,"payload":{}}`))); err != nil {
		t.Fatal(err)
	}
	if got := written() - before; got != 1 || c.writing.Load() || !c.queue.empty() {
		t.Fatalf("after send: %v written, token held %v, queue empty %v; want it written inline", got, c.writing.Load(), c.queue.empty())
	}
	c.writing.Store(true) // a writer is busy
	if err := c.send(newFrame([]byte(`{"event":"Second","tag":null,"payload":{}}`))); err != nil {
		t.Fatal(err)
	}
	if c.queue.empty() {
		t.Fatal("send wrote while another writer held the token")
	}
	c.writing.Store(false)
	c.kick()
	for i, want := range []string{"First", "Second"} {
		if got := readFrame(t, client); !strings.Contains(got, `"event":"`+want+`"`) {
			t.Fatalf("frame %d: %s, want %s", i, got, want)
		}
	}
}
