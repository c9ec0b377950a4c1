package myxi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/internal/testutil"
)

// A session keeps only the headers it is told to: big handshake headers
// are released with the request. Measured as heap retained after a GC.
func TestHandshakeHeadersNotRetained(t *testing.T) {
	ts := startServer(t, "memory", func(c *myxi.Config) {
		c.Limits.MaxHeaderBytes = 2 << 20
		c.Actions["Headers"] = func(_ context.Context, s *myxi.Session, _ json.RawMessage) error {
			return s.Send("Headers", map[string]string{"cookie": s.Header("Cookie"), "junk": s.Header("X-Junk-0")})
		}
	})
	const sessions, junkBytes = 20, 256 << 10
	junk := strings.Repeat("j", 8<<10)
	header := http.Header{"Cookie": {"sid=abc"}}
	for i := 0; i < junkBytes/len(junk); i++ {
		header.Set("X-Junk-"+strings.Repeat("a", i%5)+string(rune('a'+i%26))+string(rune('a'+i/26)), junk)
	}
	header.Set("X-Junk-0", junk)
	heap := func() uint64 { return memAfterGC().HeapAlloc }
	before := heap()
	clients := make([]*testutil.Client, sessions)
	for i := range clients {
		clients[i] = testutil.DialHeader(t, ts.WS, header)
	}
	clients[0].Send("Headers", nil, nil)
	ev := clients[0].Expect("Headers")
	if ev.Str("cookie") != "sid=abc" || ev.Str("junk") != "" {
		t.Fatalf("Session.Header: %s", ev.Raw)
	}
	perSession := (int64(heap()) - int64(before)) / sessions
	t.Logf("heap retained per session with %d KiB of headers: %d bytes", junkBytes>>10, perSession)
	if perSession > 32<<10 {
		t.Fatalf("each session retains %d bytes of heap: its handshake headers are kept", perSession)
	}
}

// An action that needs a deep stack does not leave one with each idle
// session: actions run on the server's pooled goroutines, and a session's
// reader keeps its shallow stack. Run on the readers, 40 sessions would
// each keep 64 KiB or more after two GCs (the GC halves an idle stack
// once a cycle).
func TestDeepActionLeavesNoStackWithIdleSession(t *testing.T) {
	ts := startServer(t, "memory", func(c *myxi.Config) {
		c.Actions["Deep"] = func(_ context.Context, s *myxi.Session, _ json.RawMessage) error {
			return s.Send("Deep", map[string]int{"sum": deepStack(1024)})
		}
	})
	stacks := func() uint64 { return memAfterGC().StackInuse }
	const sessions = 40
	before := stacks()
	for range sessions {
		c := testutil.Dial(t, ts.WS)
		c.Send("Deep", nil, nil)
		c.Expect("Deep")
	}
	perSession := (int64(stacks()) - int64(before)) / sessions
	t.Logf("stack in use per idle session after a deep action: %d bytes", perSession)
	if perSession > 24<<10 {
		t.Fatalf("each idle session keeps %d bytes of stack after a deep action", perSession)
	}
}

// memAfterGC reads the memory statistics after two collections: the
// second frees what the first's finalizers released, and halves idle
// stacks once more.
func memAfterGC() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

// deepStack recurses n times with a 256-byte frame: about 256 KiB of stack.
//
//go:noinline
func deepStack(n int) int {
	var pad [256]byte
	pad[n%256] = byte(n)
	if n == 0 {
		return int(pad[0])
	}
	return deepStack(n-1) + int(pad[n%256])
}

// A session's log lines carry its id (the logger is built when the
// session first logs, not when it connects).
func TestSessionLogNamesTheSession(t *testing.T) {
	var logs syncBuffer
	ts := startServer(t, "memory", func(c *myxi.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		c.Actions["Fail"] = func(context.Context, *myxi.Session, json.RawMessage) error {
			return errors.New("disk on fire")
		}
	})
	c := testutil.Dial(t, ts.WS)
	c.Send("Fail", nil, nil)
	c.Expect("InternalError")
	id := c.Welcome.Str("id")
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "disk on fire") {
			if !strings.Contains(line, "session="+id) {
				t.Fatalf("the failure's log line does not name session %s: %s", id, line)
			}
			return
		}
	}
	t.Fatalf("no log line for the failed action:\n%s", logs.String())
}

// Upgrades with headers over Limits.MaxHeaderBytes get 431.
func TestHandshakeHeaderLimit(t *testing.T) {
	ts := startServer(t, "memory")
	header := http.Header{"X-Big": {strings.Repeat("b", 17<<10)}}
	_, resp, err := websocket.DefaultDialer.Dial(ts.WS, header)
	if err == nil || resp == nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("upgrade with 17 KiB of headers: %v %v, want 431", resp, err)
	}
}

// The public port serves no metrics and a status page that tells only
// ready or not; Config.MetricsAddr serves the metrics on a listener of
// their own.
func TestMetricsOffThePublicPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := ln.Addr().String()
	ln.Close()
	ts := startServer(t, "memory", func(c *myxi.Config) { c.MetricsAddr = metricsAddr })
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := get(ts.HTTP + "/metrics"); code != http.StatusNotFound {
		t.Fatalf("public /metrics: HTTP %d", code)
	}
	code, page := get(ts.HTTP + "/")
	if code != 200 || !strings.Contains(page, "ready") || strings.Contains(page, ts.Exchange) || strings.Contains(page, "sessions") {
		t.Fatalf("status page (HTTP %d) shows more than ready or not:\n%s", code, page)
	}
	if code, body := get("http://" + metricsAddr + "/metrics"); code != 200 || !strings.Contains(body, "myxi_connections") {
		t.Fatalf("metrics address: HTTP %d", code)
	}
}

// A refused origin is logged with the setting that allows it, and the
// 403 names it too.
func TestRefusedOriginExplained(t *testing.T) {
	var logs syncBuffer
	ts := startServer(t, "memory", func(c *myxi.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	_, resp, err := websocket.DefaultDialer.Dial(ts.WS, http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %v %v", resp, err)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "MYXI_ALLOWED_ORIGINS") || !strings.Contains(string(body), "evil.example") {
		t.Fatalf("403 body: %s", body)
	}
	if l := logs.String(); !strings.Contains(l, "https://evil.example") || !strings.Contains(l, "allowed_origins") {
		t.Fatalf("log: %s", l)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Push before Start says so; ListenAndServe's listen error reaches both
// its caller and WaitReady; after WaitReady, Push works at once.
func TestReadiness(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	srv, err := myxi.New(myxi.Config{Addr: busy.Addr().String(), Exchanges: map[string]myxi.AuthorizeFunc{"e": myxi.AllowAll}, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Push(context.Background(), "e", "k", "Ev", nil); !errors.Is(err, myxi.ErrNotStarted) {
		t.Fatalf("Push before Start = %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.WaitReady(ctx); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("WaitReady with the port in use = %v", err)
	}
	if err := <-served; err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("ListenAndServe with the port in use = %v", err)
	}

	srv, err = myxi.New(myxi.Config{Addr: "127.0.0.1:0", Exchanges: map[string]myxi.AuthorizeFunc{"e": myxi.AllowAll}, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stop := context.WithCancel(context.Background())
	go func() { served <- srv.ListenAndServe(serveCtx) }()
	if err := srv.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.Push(ctx, "e", "k", "Ev", nil); err != nil {
		t.Fatalf("Push after WaitReady = %v", err)
	}
	stop()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
