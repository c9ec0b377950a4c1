package testutil

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Event is a decoded server frame.
type Event struct {
	Event   string                     `json:"event"`
	Tag     json.RawMessage            `json:"tag"`
	Payload map[string]json.RawMessage `json:"payload"`
	MQ      *struct {
		E  string  `json:"e"`
		RK string  `json:"rk"`
		O  *uint64 `json:"o"`  // recorded events only
		EP string  `json:"ep"` // recorded events only
	} `json:"mq"`
	Raw []byte `json:"-"`
}

// Str returns a payload field decoded as a string ("" when absent or not a
// string).
func (e Event) Str(field string) string {
	var s string
	_ = json.Unmarshal(e.Payload[field], &s)
	return s
}

// Client is a protocol-speaking WebSocket client for tests.
type Client struct {
	tb      testing.TB
	Conn    *websocket.Conn
	Welcome Event
	pending []Event // events of a batched frame not yet returned
}

// Dial connects to a Myxi server at wsURL and reads the Welcome event.
func Dial(tb testing.TB, wsURL string) *Client {
	tb.Helper()
	return DialHeader(tb, wsURL, nil)
}

// DialHeader is Dial with request headers (such as Origin).
func DialHeader(tb testing.TB, wsURL string, header http.Header) *Client {
	tb.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(wsURL, header)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		tb.Fatalf("dial %s: %v (HTTP %d)", wsURL, err, status)
	}
	c := &Client{tb: tb, Conn: conn}
	tb.Cleanup(func() { _ = conn.Close() })
	c.Welcome = c.Next()
	if c.Welcome.Event != "Welcome" {
		tb.Fatalf("first event = %s, want Welcome", c.Welcome.Raw)
	}
	return c
}

// Send sends an action; a nil tag is omitted.
func (c *Client) Send(action string, tag any, payload any) {
	c.tb.Helper()
	frame := map[string]any{"action": action}
	if tag != nil {
		frame["tag"] = tag
	}
	if payload != nil {
		frame["payload"] = payload
	}
	if err := c.Conn.WriteJSON(frame); err != nil {
		c.tb.Fatalf("send %s: %v", action, err)
	}
}

// SendRaw sends a text frame as is.
func (c *Client) SendRaw(data string) {
	c.tb.Helper()
	if err := c.Conn.WriteMessage(websocket.TextMessage, []byte(data)); err != nil {
		c.tb.Fatalf("send raw: %v", err)
	}
}

// Next returns the next event, failing the test after 5s.
func (c *Client) Next() Event {
	c.tb.Helper()
	ev, err := c.NextWithin(5 * time.Second)
	if err != nil {
		c.tb.Fatalf("waiting for an event: %v", err)
	}
	return ev
}

// NextWithin returns the next event or the read error (a timeout among
// them). It splits batched frames.
func (c *Client) NextWithin(d time.Duration) (Event, error) {
	if len(c.pending) > 0 {
		ev := c.pending[0]
		c.pending = c.pending[1:]
		return ev, nil
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(d))
	_, data, err := c.Conn.ReadMessage()
	if err != nil {
		return Event{}, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		var ev Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			// An error, not Fatalf: NextWithin may run off the test's goroutine.
			return Event{}, fmt.Errorf("server sent a non-JSON event %q: %w", line, err)
		}
		ev.Raw = []byte(line)
		c.pending = append(c.pending, ev)
	}
	ev := c.pending[0]
	c.pending = c.pending[1:]
	return ev, nil
}

// Expect returns the next event, failing unless it is named event.
func (c *Client) Expect(event string) Event {
	c.tb.Helper()
	ev := c.Next()
	if ev.Event != event {
		c.tb.Fatalf("got %s, want a %s event", ev.Raw, event)
	}
	return ev
}

// ExpectError returns the next event, failing unless it is an Error with
// the given error name.
func (c *Client) ExpectError(name string) Event {
	c.tb.Helper()
	ev := c.Expect("Error")
	if got := ev.Str("error"); got != name {
		c.tb.Fatalf("got error %q (%s), want %q", got, ev.Raw, name)
	}
	return ev
}

// Subscribe subscribes and waits for Subscribed.
func (c *Client) Subscribe(exchange string, key any) {
	c.tb.Helper()
	c.Send("Subscribe", "sub", map[string]any{"exchange": exchange, "routing_key": key})
	c.Expect("Subscribed")
}
