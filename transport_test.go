package myxi_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/internal/testutil"
)

// rawClient speaks WebSocket frames by hand, so that tests can send what
// a well-behaved client library never would.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, wsURL string) *rawClient {
	t.Helper()
	u, err := url.Parse(wsURL)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	// The handshake by hand: a client library's reader would swallow the
	// first frames along with the response.
	req := "GET / HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: HTTP %d", resp.StatusCode)
	}
	return &rawClient{t: t, nc: nc, br: br}
}

// frame writes one frame; masked as a client must, unless told not to.
func (c *rawClient) frame(header0 byte, payload []byte, masked bool) {
	c.t.Helper()
	b := []byte{header0}
	maskBit := byte(0)
	if masked {
		maskBit = 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, maskBit|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, maskBit|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, maskBit|127), uint64(n))
	}
	data := append([]byte(nil), payload...)
	if masked {
		key := [4]byte{0x12, 0x34, 0x56, 0x78}
		b = append(b, key[:]...)
		for i := range data {
			data[i] ^= key[i%4]
		}
	}
	if _, err := c.nc.Write(append(b, data...)); err != nil {
		c.t.Fatalf("write frame: %v", err)
	}
}

type serverFrame struct {
	op      byte
	payload []byte
}

// read returns the next server frame, or an error (io.EOF once the server
// dropped the connection).
func (c *rawClient) read(timeout time.Duration) (serverFrame, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return serverFrame{}, err
	}
	if h[1]&0x80 != 0 {
		c.t.Fatal("server frame masked")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(c.br, l[:]); err != nil {
			return serverFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(c.br, l[:]); err != nil {
			return serverFrame{}, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return serverFrame{}, err
	}
	return serverFrame{op: h[0] & 0x0f, payload: p}, nil
}

// closeCodes reads until the server drops the connection and returns the
// codes of every Close frame it sent.
func (c *rawClient) closeCodes(within time.Duration) []int {
	c.t.Helper()
	deadline := time.Now().Add(within)
	var codes []int
	for {
		f, err := c.read(time.Until(deadline))
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.t.Fatalf("the server kept the connection open for %v (close codes so far %v)", within, codes)
			}
			return codes
		}
		if f.op == 0x8 {
			code := 1005
			if len(f.payload) >= 2 {
				code = int(binary.BigEndian.Uint16(f.payload))
			}
			codes = append(codes, code)
		}
	}
}

func expectOneClose(t *testing.T, c *rawClient, want int) {
	t.Helper()
	codes := c.closeCodes(5 * time.Second)
	if len(codes) != 1 || codes[0] != want {
		t.Fatalf("close frames %v, want exactly one %d", codes, want)
	}
}

// Each framing violation gets exactly one Close with its code (RFC 6455
// section 5.5.1), and the server then drops the connection.
func TestTransportProtocolErrors(t *testing.T) {
	ts := startServer(t, "memory")
	cases := []struct {
		name string
		send func(c *rawClient)
		code int
	}{
		{"unmasked frame", func(c *rawClient) { c.frame(0x81, []byte(`{"action":"Ping"}`), false) }, 1002},
		{"reserved bits", func(c *rawClient) { c.frame(0xc1, []byte(`{}`), true) }, 1002},
		{"unknown opcode", func(c *rawClient) { c.frame(0x83, []byte(`{}`), true) }, 1002},
		{"continuation without a message", func(c *rawClient) { c.frame(0x80, []byte(`{}`), true) }, 1002},
		{"new message inside a fragmented one", func(c *rawClient) {
			c.frame(0x01, []byte(`{"act`), true)
			c.frame(0x81, []byte(`{}`), true)
		}, 1002},
		{"fragmented ping", func(c *rawClient) { c.frame(0x09, nil, true) }, 1002},
		{"long ping", func(c *rawClient) { c.frame(0x89, make([]byte, 126), true) }, 1002},
		{"invalid UTF-8 text", func(c *rawClient) { c.frame(0x81, []byte("{\"action\":\"Ping\",\"tag\":\"\xfe\"}"), true) }, 1007},
		{"invalid UTF-8 binary", func(c *rawClient) { c.frame(0x82, []byte("{\"tag\":\"\xc3\"}"), true) }, 1007},
		{"invalid UTF-8 across fragments", func(c *rawClient) {
			c.frame(0x01, []byte("{\"tag\":\"\xe2\x82"), true)
			c.frame(0x80, []byte("\"}"), true)
		}, 1007},
		{"message too big", func(c *rawClient) { c.frame(0x81, make([]byte, 64<<10+1), true) }, 1009},
		{"message too big in fragments", func(c *rawClient) {
			c.frame(0x01, make([]byte, 40<<10), true)
			c.frame(0x80, make([]byte, 40<<10), true)
		}, 1009},
		{"close with a 1-byte payload", func(c *rawClient) { c.frame(0x88, []byte{3}, true) }, 1002},
		{"close with an invalid code", func(c *rawClient) { c.frame(0x88, []byte{0x03, 0xed}, true) }, 1002}, // 1005
		{"close with an invalid reason", func(c *rawClient) { c.frame(0x88, []byte{0x03, 0xe8, 0xff}, true) }, 1007},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, ts.WS)
			if f, err := c.read(5 * time.Second); err != nil || !strings.Contains(string(f.payload), "Welcome") {
				t.Fatalf("welcome: %v %q", err, f.payload)
			}
			tc.send(c)
			expectOneClose(t, c, tc.code)
		})
	}
}

// A fragmented message with a ping between its fragments is one action.
func TestTransportFragments(t *testing.T) {
	ts := startServer(t, "memory")
	c := dialRaw(t, ts.WS)
	if _, err := c.read(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	c.frame(0x01, []byte(`{"action":"Pi`), true)
	c.frame(0x89, []byte("hi"), true)
	c.frame(0x80, []byte(`ng","tag":"é"}`), true)
	var sawPong, sawEvent bool
	for !sawPong || !sawEvent {
		f, err := c.read(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case f.op == 0xa && string(f.payload) == "hi":
			sawPong = true
		case f.op == 0x1 && strings.Contains(string(f.payload), `"event":"Pong","tag":"é"`):
			sawEvent = true
		default:
			t.Fatalf("unexpected frame %x %q", f.op, f.payload)
		}
	}
	// The client closes: one Close back (1000), then the server hangs up.
	c.frame(0x88, []byte{0x03, 0xe8}, true)
	expectOneClose(t, c, 1000)
}

// After its Close, the server waits a bounded time for the client's: a
// client that keeps sending cannot hold the connection open.
func TestTransportClosingClientKeepsSending(t *testing.T) {
	ts := startServer(t, "memory", func(c *myxi.Config) {
		c.Actions["Bye"] = func(_ context.Context, s *myxi.Session, _ json.RawMessage) error {
			s.Close("bye")
			return nil
		}
	})
	c := dialRaw(t, ts.WS)
	c.frame(0x81, []byte(`{"action":"Bye"}`), true)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // keeps sending frames every 50 ms, never a Close
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 200; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			b := []byte{0x81, 0x80 | 2, 0, 0, 0, 0, '{', '}'}
			if _, err := c.nc.Write(b); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	codes := c.closeCodes(5 * time.Second)
	if len(codes) != 1 || codes[0] != 4002 {
		t.Fatalf("close frames %v, want one 4002", codes)
	}
	if waited := time.Since(start); waited > 3*time.Second {
		t.Fatalf("connection dropped after %v", waited)
	}
}

// A client that sends nothing (not even pongs) is closed with 4000.
func TestTransportIdleClose(t *testing.T) {
	ts := startServer(t, "memory", func(c *myxi.Config) { c.Limits.PingInterval = 100 * time.Millisecond })
	c := dialRaw(t, ts.WS) // reads, but never answers the pings
	expectOneClose(t, c, 4000)
}

// Session.Close asks the client to come back (4002), Session.Terminate
// not to (4001).
func TestSessionCloseCodes(t *testing.T) {
	ts := startServer(t, "memory", func(c *myxi.Config) {
		c.Actions["Kick"] = func(_ context.Context, s *myxi.Session, _ json.RawMessage) error {
			s.Terminate("banned")
			return nil
		}
		c.Actions["Reauth"] = func(_ context.Context, s *myxi.Session, _ json.RawMessage) error {
			s.Close("token expired")
			return nil
		}
	})
	for action, want := range map[string]int{"Kick": 4001, "Reauth": 4002} {
		c := testutil.Dial(t, ts.WS)
		c.Send(action, nil, nil)
		_ = c.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		var err error
		for err == nil {
			_, _, err = c.Conn.ReadMessage()
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != want {
			t.Fatalf("%s: %v, want close %d", action, err, want)
		}
	}
}

// When Shutdown's ctx ends, a client that stopped reading (its writer
// blocked on a full TCP window) is dropped, and Shutdown returns the
// ctx's error without waiting for it.
func TestShutdownDropsStuckClient(t *testing.T) {
	srv, err := myxi.New(myxi.Config{
		Exchanges:           map[string]myxi.AuthorizeFunc{"e": myxi.AllowAll},
		ReauthorizeInterval: -1,
		DrainPeriod:         time.Millisecond,
		Logger:              testutil.Logger(t),
		Limits:              myxi.Limits{WriteTimeout: time.Hour, SendQueueBytes: 64 << 20, SendQueueMessages: 1 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	go func() { _ = srv.Serve(serveCtx, ln) }()
	if err := srv.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := testutil.Dial(t, "ws://"+ln.Addr().String()+"/") // reads nothing from now on
	c.Subscribe("e", "k")
	pad := strings.Repeat("x", 32<<10)
	for i := 0; i < 400; i++ { // ~13 MB: far more than the socket buffers hold
		if err := srv.Push(context.Background(), "e", "k", "Big", map[string]string{"pad": pad}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = srv.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the ctx's deadline error", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Shutdown took %v", took)
	}
	if n := srv.Sessions(); n != 0 {
		t.Fatalf("%d sessions still running after Shutdown", n)
	}
}

// New refuses limits that would break the server, naming the field.
func TestNewRefusesBadLimits(t *testing.T) {
	for field, limits := range map[string]myxi.Limits{
		"WriteTimeout":     {WriteTimeout: -time.Second},
		"PingInterval":     {PingInterval: -time.Second},
		"ActionTimeout":    {ActionTimeout: -1},
		"HandshakeTimeout": {HandshakeTimeout: -1},
		"MaxFrameBytes":    {MaxFrameBytes: 100},
		"MaxSubscriptions": {MaxSubscriptions: -1},
		"MaxConnections":   {MaxConnections: -5},
		"MaxHeaderBytes":   {MaxHeaderBytes: -1},
		"ActionBurst":      {ActionBurst: -1},
	} {
		_, err := myxi.New(myxi.Config{Limits: limits})
		if err == nil || !strings.Contains(err.Error(), "Limits."+field) {
			t.Errorf("%s: New = %v, want an error naming the field", field, err)
		}
	}
	// "Negative means off" stays valid.
	if _, err := myxi.New(myxi.Config{Limits: myxi.Limits{ActionsPerSecond: -1}, ReauthorizeInterval: -1}); err != nil {
		t.Errorf("documented off values refused: %v", err)
	}
}

// Exchange names that would make "exchange::key" ambiguous are refused.
func TestExchangeNames(t *testing.T) {
	for _, name := range []string{"a::b", "a:", "", strings.Repeat("x", 256), "amq.topic", "a b"} {
		if _, err := myxi.New(myxi.Config{Exchanges: map[string]myxi.AuthorizeFunc{name: myxi.AllowAll}}); err == nil {
			t.Errorf("exchange %q accepted", name)
		}
	}
	if _, err := myxi.New(myxi.Config{Exchanges: map[string]myxi.AuthorizeFunc{"a:b.c-d_e": myxi.AllowAll}}); err != nil {
		t.Errorf("a valid name refused: %v", err)
	}
}

// WebSocket pings count against the action rate limit: a ping flooder
// gets no pong over the limit and is closed with 1008.
func TestPingFlooderClosed(t *testing.T) {
	ts := startServer(t, "memory", func(c *myxi.Config) {
		c.Limits.ActionsPerSecond = 10
		c.Limits.ActionBurst = 10
		c.Limits.MaxSubscriptions = 1
	})
	c := dialRaw(t, ts.WS)
	done := make(chan struct{})
	defer close(done)
	go func() {
		ping := []byte{0x89, 0x80, 1, 2, 3, 4} // masked, empty
		for i := 0; i < 200000; i++ {
			select {
			case <-done:
				return
			default:
			}
			if _, err := c.nc.Write(ping); err != nil {
				return
			}
			time.Sleep(100 * time.Microsecond) // ~10k pings/s, bounded to 20 s
		}
	}()
	start := time.Now()
	var pongs int
	deadline := time.Now().Add(15 * time.Second)
	for {
		f, err := c.read(time.Until(deadline))
		if err != nil {
			t.Fatalf("no 1008 within 15s (%d pongs): %v", pongs, err)
		}
		if f.op == 0xa {
			pongs++
		}
		if f.op == 0x8 {
			if code := int(binary.BigEndian.Uint16(f.payload)); code != 1008 {
				t.Fatalf("closed with %d, want 1008", code)
			}
			break
		}
	}
	t.Logf("closed after %v; %d pongs", time.Since(start).Round(time.Millisecond), pongs)
	// ~5 s at 10/s plus the burst and the credit: far fewer than the pings sent.
	if pongs > 100 {
		t.Fatalf("%d pongs: pings over the limit were answered", pongs)
	}
}
