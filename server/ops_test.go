package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/myxi/myxi/internal/config"
	"github.com/myxi/myxi/internal/testutil"
)

// TestDevMode: `make run` (-dev) makes up an API key and prints lines that
// publish to this very server.
func TestDevMode(t *testing.T) {
	c, stdout, stderr := newCLI(nil)
	listening := make(chan net.Addr, 1)
	c.onListen = func(a net.Addr) { listening <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.run(ctx, []string{"-dev", "-bind", "127.0.0.1", "-port", "0", "-exchanges", "widgets"})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v\n%s", err, stderr)
		}
	})
	var addr net.Addr
	select {
	case addr = <-listening:
	case err := <-done:
		t.Fatalf("stopped: %v\n%s", err, stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("not listening:\n%s", stderr)
	}
	out := stdout.String() // printed before onListen is called
	port := addr.(*net.TCPAddr).Port
	base := fmt.Sprintf("http://localhost:%d", port)
	curl := regexp.MustCompile(`curl -H "Authorization: Bearer ([0-9a-f]{32})" -H 'Content-Type: application/json' -d '(\{.*\})' ` + regexp.QuoteMeta(base) + `/api/publish`).FindStringSubmatch(out)
	if curl == nil {
		t.Fatalf("no curl line for %s in:\n%s", base, out)
	}
	key := curl[1]
	pushLine := "MYXI_URL=" + base + " MYXI_API_KEY=" + key + ` go run ./server push widgets 42 WidgetQtyChanged '{"quantity":5}'`
	if !strings.Contains(out, pushLine) {
		t.Fatalf("no push line %q in:\n%s", pushLine, out)
	}

	ws := testutil.Dial(t, fmt.Sprintf("ws://127.0.0.1:%d/", port))
	ws.Subscribe("widgets", "42")
	req, _ := http.NewRequest(http.MethodPost, base+"/api/publish", strings.NewReader(curl[2]))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the printed curl line: HTTP %d", resp.StatusCode)
	}
	if ev := ws.Expect("WidgetQtyChanged"); string(ev.Payload["quantity"]) != "5" {
		t.Fatalf("event: %s", ev.Raw)
	}
	// The push line, as the push command reads it.
	if err := push(t, map[string]string{"MYXI_URL": base, "MYXI_API_KEY": key}, "", "widgets", "42", "WidgetQtyChanged", `{"quantity":6}`); err != nil {
		t.Fatal(err)
	}
	if ev := ws.Expect("WidgetQtyChanged"); string(ev.Payload["quantity"]) != "6" {
		t.Fatalf("event: %s", ev.Raw)
	}
}

// TestDevModeKeepsConfiguredKey: a configured key is used, never printed.
func TestDevModeKeepsConfiguredKey(t *testing.T) {
	c, stdout, _ := newCLI(map[string]string{"MYXI_API_KEY": "configured-key"})
	listening := make(chan net.Addr, 1)
	c.onListen = func(a net.Addr) { listening <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.run(ctx, []string{"-dev", "-bind", "127.0.0.1", "-port", "0", "-exchanges", "news"}) }()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case <-listening:
	case err := <-done:
		t.Fatal(err)
	}
	out := stdout.String()
	if strings.Contains(out, "configured-key") || !strings.Contains(out, `"Authorization: Bearer $MYXI_API_KEY"`) ||
		!strings.Contains(out, `"exchange":"news"`) {
		t.Fatalf("output:\n%s", out)
	}
}

var metricsLine = regexp.MustCompile(`msg="serving metrics" addr=(\S+)`)

// TestMetricsAddr: metrics are served on their own address only.
func TestMetricsAddr(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
	}{
		"flag": {nil, []string{"-metrics-addr", "127.0.0.1:0"}},
		"env":  {map[string]string{"MYXI_METRICS_ADDR": "127.0.0.1:0"}, nil},
		"file": {nil, []string{"-config", writeFile(t, "m.toml", "[server]\nmetrics_addr = \"127.0.0.1:0\"\n")}},
	} {
		t.Run(name, func(t *testing.T) {
			r := serve(t, tc.env, append([]string{"-exchanges", "widgets"}, tc.args...)...)
			m := metricsLine.FindStringSubmatch(r.log.String())
			if m == nil {
				t.Fatalf("no metrics address logged:\n%s", r.log)
			}
			if status, body := get(t, "http://"+m[1]+"/metrics"); status != http.StatusOK || !strings.Contains(body, "myxi_connections") {
				t.Fatalf("metrics address: %d %.200s", status, body)
			}
			if strings.Contains(r.log.String(), "RISKY SETTING") {
				t.Fatalf("loopback metrics warned about:\n%s", r.log)
			}
		})
	}
	r := serve(t, nil, "-exchanges", "widgets")
	if status, _ := get(t, r.HTTP+"/metrics"); status != http.StatusNotFound {
		t.Fatalf("/metrics on the public port: %d, want 404", status)
	}
	if status, _ := get(t, r.HTTP+"/healthz"); status != http.StatusOK {
		t.Fatalf("/healthz: %d", status)
	}
	if metricsLine.MatchString(r.log.String()) {
		t.Fatal("metrics served without an address")
	}
	if err := runErr(t, nil, "-bind", "127.0.0.1", "-port", "0", "-metrics-addr", r.HTTP[len("http://"):]); !strings.Contains(err.Error(), "server.metrics_addr (-metrics-addr): listen") {
		t.Fatalf("metrics address in use: %v", err)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestRiskySettings: warned about loudly at start, or refused.
func TestRiskySettings(t *testing.T) {
	r := serve(t, map[string]string{"MYXI_ALLOWED_ORIGINS": "*"}, "-exchanges", "w", "-metrics-addr", "0.0.0.0:0", "-pprof", ":0")
	log := r.log.String()
	for _, want := range []string{
		`RISKY SETTING: server.allowed_origins (MYXI_ALLOWED_ORIGINS) contains \"*\"`,
		`RISKY SETTING: server.metrics_addr (-metrics-addr) is \"0.0.0.0:0\", not a loopback address`,
		`RISKY SETTING: -pprof \":0\" is not a loopback address`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
		want string
	}{
		"short secret": {map[string]string{"MYXI_JWT_SECRET": "jwt-secret"}, nil, "auth.jwt.secret (MYXI_JWT_SECRET): 10 bytes is too short"},
		"tiny frames":  {nil, []string{"-max-frame-bytes", "100"}, "limits.max_frame_bytes (-max-frame-bytes): 100 is below the minimum of 1024"},
	} {
		if err := runErr(t, tc.env, tc.args...); !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

// startApp builds and serves the configuration with the given HTTP
// timeouts, for the tests of those.
func startWithTimeouts(t *testing.T, timeouts httpTimeouts) string {
	t.Helper()
	cfg := config.Defaults()
	cfg.Server.Bind, cfg.Server.Port = "127.0.0.1", 0
	cfg.PublicExchanges = []string{"widgets"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := build(cfg, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	a.http = timeouts
	listening := make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.serve(ctx, func(addr net.Addr) { listening <- addr }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	select {
	case addr := <-listening:
		return addr.String()
	case err := <-done:
		t.Fatal(err)
	}
	return ""
}

// TestBuiltTimeouts: the public server has every timeout.
func TestBuiltTimeouts(t *testing.T) {
	cfg := config.Defaults()
	cfg.PublicExchanges = []string{"w"}
	a, err := build(cfg, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.srv.Shutdown(context.Background()) }()
	hs := newHTTPServer(a.handler, a.http, a.log)
	if hs.ReadHeaderTimeout != 10*time.Second || hs.ReadTimeout <= 0 || hs.IdleTimeout <= 0 || hs.WriteTimeout <= cfg.API.PublishTimeout {
		t.Fatalf("timeouts: header %v, read %v, write %v, idle %v", hs.ReadHeaderTimeout, hs.ReadTimeout, hs.WriteTimeout, hs.IdleTimeout)
	}
}

// TestIdleConnectionsClosed: an idle keep-alive connection, and one that
// never finishes its headers, are closed; a WebSocket outlives the read
// and write timeouts.
func TestIdleConnectionsClosed(t *testing.T) {
	addr := startWithTimeouts(t, httpTimeouts{readHeader: 300 * time.Millisecond, read: 300 * time.Millisecond, write: 300 * time.Millisecond, idle: 300 * time.Millisecond})

	closedWithin := func(conn net.Conn, d time.Duration) bool {
		_ = conn.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, conn) // returns at EOF: the server closed it
		return err == nil
	}
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v", err)
	}
	if !closedWithin(idle, 5*time.Second) {
		t.Fatal("an idle keep-alive connection stayed open")
	}

	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	if !closedWithin(slow, 5*time.Second) {
		t.Fatal("a connection that never finished its headers stayed open")
	}

	ws := testutil.Dial(t, "ws://"+addr+"/")
	ws.Subscribe("widgets", "1")
	// Past every HTTP timeout, the socket still reads and writes.
	time.Sleep(time.Second)
	ws.Send("Ping", "p", nil)
	ws.Expect("Pong")
}
