package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/broker/memory"
	"github.com/myxi/myxi/internal/protocol"
)

// myxiData is Myxi's encoding of a broker message (nil when Myxi drops it).
func myxiData(t *testing.T, exchange, key string, body []byte) []byte {
	t.Helper()
	data, err := protocol.BrokerEvent(exchange, key, body, protocol.DefaultMaxEventBytes)
	if err != nil {
		return nil
	}
	return data
}

func TestFloorFrameEqualsMyxiEncoding(t *testing.T) {
	type tc struct {
		exchange, key string
		body          []byte
		fast          bool // the splice handles it (no JSON library)
	}
	var cases []tc
	for _, pad := range []int{0, 60, 200, 70_000} {
		for _, seq := range []int64{0, 7, 123456789} {
			cases = append(cases, tc{"bench", "k" + string(rune('0'+seq%10)), appendBody(nil, 1764400000123456789, seq, pad), true})
		}
	}
	cases = append(cases,
		tc{"bench", "k1", []byte(`{"event":"X","payload":{"a":[1,{"b":"}"}],"c":"\"{"}}`), true},
		tc{"bench", "k1", []byte(`{"event":"X","payload":{}}`), true},
		tc{"bench", "k1", []byte(`{"event":"X","payload":{"a":` + strings.Repeat("[", 31) + strings.Repeat("]", 31) + `}}`), true},
		tc{"bench", "k1", []byte(`{"event":"X","payload":{"a":` + strings.Repeat("[", 32) + strings.Repeat("]", 32) + `}}`), false},
		// outside the splice: Myxi's encoder, same bytes
		tc{"bench", "k1", []byte(`{"event":"X", "payload":{"a":1}}`), false},
		tc{"bench", "k1", []byte(`{"payload":{"a":1},"event":"X"}`), false},
		tc{"bench", "k1", []byte(`{"event":"X","payload":{"a":1},"tag":5}`), false},
		tc{"bench", "k1", []byte(`{"event":"X","payload":{"a":1},"mq":{"e":"forged"}}`), false},
		tc{"bench", "k1", []byte(`{"event":"X"}`), false},
		tc{"bench", "k1", []byte(`{"event":"X","payload":{"a":"é"}}`), false},
		tc{"bench", "k1", []byte(`{"event":"X\u0041","payload":{}}`), false},
		tc{"bench", "<k&\"1>", []byte(`{"event":"X","payload":{}}`), false},
		tc{"bench", "k1", []byte("{\"event\":\"X\",\"payload\":{\"a\":\n1}}"), false},
		// dropped by Myxi, dropped by the floor
		tc{"bench", "k1", []byte(`{"event":1,"payload":{}}`), false},
		tc{"bench", "k1", []byte(`not json`), false},
		tc{"bench", "k1", []byte(`{"event":"X","payload":[1]}`), false},
		tc{"bench", "k1", nil, false},
	)
	for _, c := range cases {
		_, _, fast := splitSimpleBody(c.body)
		fast = fast && plainJSONString(c.exchange) && plainJSONString(c.key)
		if fast != c.fast {
			t.Errorf("%.60s: spliced %v, want %v", c.body, fast, c.fast)
		}
		want := myxiData(t, c.exchange, c.key, c.body)
		got := appendFloorFrame([]byte("prefix"), c.exchange, c.key, c.body)
		if want == nil {
			if got != nil {
				t.Errorf("%.60s: Myxi drops it, the floor sends %q", c.body, got)
			}
			continue
		}
		wire := append(appendFrameHeader([]byte("prefix"), finText, len(want)), want...)
		if !bytes.Equal(got, wire) {
			t.Errorf("%.60s:\nfloor %q\nmyxi  %q", c.body, clip(got, 300), clip(wire, 300))
		}
	}
}

func TestFrameHeader(t *testing.T) {
	for n, want := range map[int][]byte{
		0:      {0x81, 0},
		125:    {0x81, 125},
		126:    {0x81, 126, 0, 126},
		65535:  {0x81, 126, 0xff, 0xff},
		65536:  {0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0},
		70_000: {0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70},
	} {
		if got := appendFrameHeader(nil, finText, n); !bytes.Equal(got, want) {
			t.Errorf("header for %d: % x, want % x", n, got, want)
		}
	}
}

// recordingConn keeps a copy of every byte read from the socket.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.buf.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recordingConn) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

// The bytes a real Myxi server puts on the wire for a bench event are the
// floor's frame, byte for byte.
func TestFloorFrameEqualsMyxiWire(t *testing.T) {
	br := memory.New()
	srv, err := myxi.New(myxi.Config{Exchanges: map[string]myxi.AuthorizeFunc{"bench": myxi.AllowAll}, Broker: br})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() {
		stop()
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, context.Canceled) {
			t.Errorf("serve: %v", err)
		}
	}()

	var rec *recordingConn
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		rec = &recordingConn{Conn: c}
		return rec, nil
	}}
	ws, _, err := d.Dial("ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	read := func(want string) []byte {
		t.Helper()
		_, msg, err := ws.ReadMessage()
		if err != nil || !strings.Contains(string(msg), `"event":"`+want+`"`) {
			t.Fatalf("want %s, got %q, %v", want, msg, err)
		}
		return msg
	}
	read("Welcome")
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"action":"Subscribe","tag":"t","payload":{"exchange":"bench","routing_key":"k3"}}`)); err != nil {
		t.Fatal(err)
	}
	read("Subscribed")
	for _, pad := range []int{0, 300} {
		body := appendBody(nil, time.Now().UnixNano(), 42, pad)
		if err := br.Publish(ctx, "bench", "k3", body); err != nil {
			t.Fatal(err)
		}
		msg := read("Bench")
		frame := appendFloorFrame(nil, "bench", "k3", body)
		if _, _, ok := splitSimpleBody(body); !ok {
			t.Fatalf("the bench body %s is not spliced", body)
		}
		if !bytes.HasSuffix(rec.bytes(), frame) {
			t.Fatalf("Myxi's wire bytes do not end with the floor's frame:\nmyxi event %s\nfloor frame %q", msg, frame)
		}
	}
}

func TestSplitSimpleBodyGarbage(t *testing.T) {
	for _, b := range []string{
		``, `{`, `}`, `{"event":"`, `{"event":"X"`, `{"event":"X","payload":{`, `{"event":"X","payload":{}`,
		`{"event":"","payload":{}}`, `{"event":"X","payload":{"a":"}`, `{"event":"X","payload":{}}}`,
		`{"event":"X","payload":{}},{}}`, `{"event":"X","payload":{"a":"\`, `{"event":"X","payload":{]}`,
		`{"event":"X","payload":{"a":[}]}`, `{"event":"X","payload":{"a":[]]}`,
	} {
		if ev, p, ok := splitSimpleBody([]byte(b)); ok {
			t.Errorf("%q accepted: event %q payload %q", b, ev, p)
		}
	}
}

func TestParseFloorConfig(t *testing.T) {
	t.Setenv("MYXI_PORT", "15999")
	t.Setenv("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5673/")
	c, err := parseFloorConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:15999" || c.AMQP != "amqp://guest:guest@127.0.0.1:5673/" || c.Exchange != "bench" ||
		c.Prefetch != 1024 || c.MaxLength != 100000 || c.Overflow != "drop-head" || c.ackEvery() != 512 {
		t.Fatalf("defaults: %+v ack every %d", c, c.ackEvery())
	}
	// the command line the tool builds parses back to the same values
	c2, err := parseFloorConfig((&floorConfig{Addr: "127.0.0.1:1234", AMQP: c.AMQP, Exchange: "x", Prefetch: 10,
		MaxLength: 5, Overflow: "reject-publish", AckEvery: 3}).args()[1:], io.Discard)
	if err != nil || c2.Addr != "127.0.0.1:1234" || c2.Exchange != "x" || c2.Prefetch != 10 || c2.MaxLength != 5 ||
		c2.Overflow != "reject-publish" || c2.ackEvery() != 3 {
		t.Fatalf("round trip: %+v %v", c2, err)
	}
	for _, p := range []struct{ prefetch, ackEvery, want int }{{0, 0, 512}, {1, 0, 1}, {3, 0, 1}, {100, 7, 7}} {
		if got := (&floorConfig{Prefetch: p.prefetch, AckEvery: p.ackEvery}).ackEvery(); got != p.want {
			t.Errorf("prefetch %d ack-every %d: %d, want %d", p.prefetch, p.ackEvery, got, p.want)
		}
	}
	for name, args := range map[string][]string{
		"public addr":  {"-addr", "0.0.0.0:5005"},
		"no port":      {"-addr", "127.0.0.1"},
		"remote amqp":  {"-amqp", "amqp://guest:guest@10.1.1.1:5672/"},
		"prefetch":     {"-prefetch", "-1"},
		"overflow":     {"-overflow", "drop-tail"},
		"ack > fetch":  {"-prefetch", "10", "-ack-every", "11"},
		"max length":   {"-max-length", "-5"},
		"no exchange":  {"-exchange", ""},
		"extra args":   {"x"},
		"unknown flag": {"-nope"},
	} {
		if _, err := parseFloorConfig(args, io.Discard); err == nil {
			t.Errorf("%s: %v accepted", name, args)
		}
	}
}

func TestFloorAction(t *testing.T) {
	f := &floorServer{exchange: "bench", subs: map[string][]*floorConn{}, bound: map[string]bool{"k1": true}}
	c := &floorConn{}
	got := f.action(c, []byte(`{"action":"Subscribe","tag":"b7","payload":{"exchange":"bench","routing_key":"k1"}}`))
	if string(got) != `{"event":"Subscribed","tag":"b7","payload":{"exchange":"bench","routing_key":"k1"}}` {
		t.Fatalf("Subscribe answered %s", got)
	}
	if len(f.subs["k1"]) != 1 || f.subs["k1"][0] != c {
		t.Fatalf("subscribers %v", f.subs)
	}
	// the tool's own client reads the reply as its Subscribed
	cl := newClient(7, 2, "bench")
	if tag, _ := rawValue(got, keyTag); !bytes.Equal(tag, cl.tag) {
		t.Fatalf("tag %s, the client waits for %s", tag, cl.tag)
	}
	for msg, want := range map[string]string{
		`{"action":"Ping","tag":1}`: "",
		`garbage`:                   "",
		`{"action":"Subscribe","tag":{"x":1},"payload":{"exchange":"other","routing_key":"k1"}}`:                 `{"event":"Error","tag":null,"payload":{"error":"InvalidExchange"}}`,
		`{"action":"Subscribe","tag":2,"payload":{"exchange":"bench","routing_key":"a\"b"}}`:                     `{"event":"Error","tag":2,"payload":{"error":"InvalidPayload"}}`,
		`{"action":"Subscribe","payload":{"exchange":"bench"}}`:                                                  `{"event":"Error","tag":null,"payload":{"error":"InvalidPayload"}}`,
		`{"action":"Subscribe","payload":{"exchange":"bench","routing_key":"` + strings.Repeat("k", 256) + `"}}`: `{"event":"Error","tag":null,"payload":{"error":"InvalidPayload"}}`,
	} {
		if got := f.action(c, []byte(msg)); string(got) != want {
			t.Errorf("%.80s: %s, want %s", msg, got, want)
		}
	}
	if len(f.subs["k1"]) != 1 {
		t.Fatalf("refused actions subscribed: %v", f.subs)
	}
}

// A subscriber whose socket fails is dropped by the fan-out; the others
// still get the frame.
func TestFloorFanOutDropsDeadSockets(t *testing.T) {
	a1, a2 := net.Pipe()
	b1, b2 := net.Pipe()
	defer a2.Close()
	b2.Close()
	live, dead := &floorConn{nc: a1}, &floorConn{nc: b1}
	f := &floorServer{subs: map[string][]*floorConn{"k": {dead, live}}}
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 3)
		_, _ = io.ReadFull(a2, buf)
		got <- buf
	}()
	f.fanOut("k", []byte("abc"))
	if b := <-got; string(b) != "abc" {
		t.Fatalf("live subscriber got %q", b)
	}
	if len(f.subs["k"]) != 1 || f.subs["k"][0] != live {
		t.Fatalf("subscribers after a failed write: %v", f.subs["k"])
	}
}

// Subscribes append in place while the fan-out writes to a snapshot: the
// race detector checks that they never touch the same element.
func TestFloorSubscribeDuringFanOut(t *testing.T) {
	f := &floorServer{exchange: "bench", subs: map[string][]*floorConn{}, bound: map[string]bool{"k": true}}
	const n = 200
	var readers sync.WaitGroup
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		readers.Wait()
	}()
	subscribed := make(chan struct{})
	go func() {
		defer close(subscribed)
		for range n {
			a, b := net.Pipe()
			conns = append(conns, a, b)
			readers.Add(1)
			go func() { defer readers.Done(); _, _ = io.Copy(io.Discard, b) }()
			f.action(&floorConn{nc: a}, []byte(`{"action":"Subscribe","tag":1,"payload":{"exchange":"bench","routing_key":"k"}}`))
		}
	}()
fanning:
	for range 10_000 {
		select {
		case <-subscribed:
			break fanning
		default:
		}
		f.fanOut("k", []byte("x"))
	}
	<-subscribed
	if got := len(f.subs["k"]); got != n {
		t.Fatalf("%d subscribers, want %d", got, n)
	}
}
