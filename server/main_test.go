package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/myxi/myxi/internal/servertest"
	"github.com/myxi/myxi/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer collects a command's output, written from its goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newCLI(env map[string]string) (*cli, *syncBuffer, *syncBuffer) {
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	return &cli{
		stdout: stdout,
		stderr: stderr,
		stdin:  strings.NewReader(""),
		getenv: func(name string) string { return env[name] },
	}, stdout, stderr
}

// running is a server started by run, as `go run ./server` would.
type running struct {
	HTTP, WS string
	log      *syncBuffer
	stop     func() error
}

// serve runs the command with args and env until the test ends (or stop
// is called). Unless env sets a port, it listens on 127.0.0.1:0.
func serve(t *testing.T, env map[string]string, args ...string) *running {
	t.Helper()
	if env == nil {
		env = map[string]string{}
	}
	if _, ok := env["MYXI_PORT"]; !ok {
		args = append([]string{"-bind", "127.0.0.1", "-port", "0"}, args...)
	}
	c, _, stderr := newCLI(env)
	listening := make(chan net.Addr, 1)
	c.onListen = func(a net.Addr) { listening <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.run(ctx, args) }()
	var addr net.Addr
	select {
	case addr = <-listening:
	case err := <-done:
		cancel()
		t.Fatalf("server stopped at start: %v\n%s", err, stderr)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("server not listening after 30s:\n%s", stderr)
	}
	var once sync.Once
	var stopErr error
	r := &running{HTTP: "http://" + addr.String(), WS: "ws://" + addr.String() + "/", log: stderr}
	r.stop = func() error {
		once.Do(func() {
			cancel()
			stopErr = <-done
		})
		return stopErr
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("server: %v\n%s", err, stderr)
		}
	})
	servertest.WaitReady(t, r.HTTP)
	return r
}

// runErr runs the command expecting it to fail at start.
func runErr(t *testing.T, env map[string]string, args ...string) error {
	t.Helper()
	c, _, stderr := newCLI(env)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.run(ctx, args)
	if err == nil {
		t.Fatalf("run %v: no error\n%s", args, stderr)
	}
	return err
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type httpAnswer struct {
	status int
	body   map[string]any
}

func post(t *testing.T, url, key string, body any) httpAnswer {
	t.Helper()
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	a := httpAnswer{status: resp.StatusCode}
	_ = json.NewDecoder(resp.Body).Decode(&a.body)
	return a
}

// TestLegacyFlags: `go run ./server -exchanges widgets` works as before:
// open exchanges, the embedded broker, no HTTP API.
func TestLegacyFlags(t *testing.T) {
	r := serve(t, nil, "-exchanges", "widgets,bench")
	c := testutil.Dial(t, r.WS)
	c.Subscribe("widgets", "42")
	c.Subscribe("bench", "1")
	c.Send("Subscribe", "x", map[string]any{"exchange": "nope", "routing_key": "1"})
	c.ExpectError("InvalidExchange")
	if a := post(t, r.HTTP+"/api/publish", "any", map[string]any{"exchange": "widgets", "event": "E"}); a.status != http.StatusNotFound {
		t.Fatalf("HTTP API without a key: %d, want 404", a.status)
	}
	resp, err := http.Get(r.HTTP + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "Myxi") {
		t.Fatalf("status page: %d %s", resp.StatusCode, page)
	}
	if log := r.log.String(); !strings.Contains(log, `msg="myxi listening" addr=127.0.0.1:`) || !strings.Contains(log, "broker=embedded") {
		t.Fatalf("startup log line missing:\n%s", log)
	}
}

// TestEnvironmentOnly: the environment alone configures the server.
func TestEnvironmentOnly(t *testing.T) {
	r := serve(t, map[string]string{
		"MYXI_PORT": "0", "MYXI_BIND_ADDRESS": "127.0.0.1", "MYXI_EXCHANGES": "widgets",
		"MYXI_API_KEY": "env-key", "MYXI_LOG_FORMAT": "json",
	})
	c := testutil.Dial(t, r.WS)
	c.Subscribe("widgets", "1")
	if a := post(t, r.HTTP+"/api/publish", "env-key", map[string]any{"exchange": "widgets", "routing_key": "1", "event": "Hi"}); a.status != http.StatusOK {
		t.Fatalf("publish: %d %v", a.status, a.body)
	}
	c.Expect("Hi")
	if !strings.Contains(r.log.String(), `"msg":"myxi listening"`) {
		t.Fatalf("not JSON logs:\n%s", r.log)
	}
}

const jwtSecret = "test-secret-test-secret-test-secret!"

func token(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// application is the application's webhook endpoints.
func application(t *testing.T) *httptest.Server {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer hook-secret" {
			http.Error(w, "who are you?", http.StatusForbidden)
			return
		}
		var req map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/subscribe":
			_ = json.NewEncoder(w).Encode(map[string]bool{"allow": string(req["user"]) == `"alice"`})
		case "/hello":
			var p struct{ Name string }
			_ = json.Unmarshal(req["payload"], &p)
			_ = json.NewEncoder(w).Encode(map[string]any{"events": []any{
				map[string]any{"event": "Hello", "payload": map[string]any{"text": "Hello, " + p.Name, "user": req["user"]}},
			}})
		case "/auth":
			var p struct{ Password string }
			_ = json.Unmarshal(req["payload"], &p)
			if p.Password == "open sesame" {
				_ = json.NewEncoder(w).Encode(map[string]any{"user": "alice"})
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"error": "WrongPassword"})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(app.Close)
	return app
}

// TestConfigFile runs the server from a configuration file, every
// subscribe policy, JWT authentication, a webhook action and the HTTP API
// end to end.
func TestConfigFile(t *testing.T) {
	app := application(t)
	path := writeFile(t, "myxi.toml", `
[auth.jwt]
issuer = "test"

[webhooks]
secret = "hook-secret"
timeout = "2s"

[exchanges.news]
policy = "public"
[exchanges.chat]
policy = "authenticated"
[exchanges.widgets]
policy = "jwt"
[exchanges.orders]
policy = "webhook"
url = "`+app.URL+`/subscribe"
cache_ttl = "1m"

[actions.SayHello]
url = "`+app.URL+`/hello"
auth_required = true
`)
	r := serve(t, map[string]string{"MYXI_JWT_SECRET": jwtSecret, "MYXI_API_KEY": "api-key"}, "-config", path)

	c := testutil.Dial(t, r.WS)
	c.Subscribe("news", "1")
	for _, sub := range []struct{ exchange, key string }{{"chat", "room"}, {"widgets", "1"}, {"orders", "7"}} {
		c.Send("Subscribe", "s", map[string]any{"exchange": sub.exchange, "routing_key": sub.key})
		c.ExpectError("SubscriptionDenied")
	}
	c.Send("SayHello", "h", map[string]string{"name": "Bob"})
	c.ExpectError("AuthRequired")

	c.Send("Authenticate", "a", map[string]string{"token": token(t, jwt.MapClaims{"sub": "alice", "iss": "other"})})
	c.ExpectError("InvalidToken")
	c.Send("Authenticate", "a", map[string]string{"token": token(t, jwt.MapClaims{
		"sub": "alice", "iss": "test", "exp": jwt.NewNumericDate(time.Now().Add(time.Hour)),
		"myxi": map[string]any{"subscribe": map[string]any{"widgets": []string{"1", "9*"}}},
	})})
	if ev := c.Expect("Authenticated"); ev.Str("username") != "alice" || string(ev.Tag) != `"a"` {
		t.Fatalf("Authenticated: %s", ev.Raw)
	}
	c.Subscribe("chat", "room")
	c.Subscribe("widgets", "1")
	c.Subscribe("widgets", "99")
	c.Subscribe("orders", "7")
	c.Send("Subscribe", "s", map[string]any{"exchange": "widgets", "routing_key": "2"})
	c.ExpectError("SubscriptionDenied")

	c.Send("SayHello", "h", map[string]string{"name": "Bob"})
	if ev := c.Expect("Hello"); ev.Str("text") != "Hello, Bob" || ev.Str("user") != "alice" || string(ev.Tag) != `"h"` {
		t.Fatalf("Hello: %s", ev.Raw)
	}

	// The HTTP API.
	publish := r.HTTP + "/api/publish"
	event := map[string]any{"exchange": "widgets", "routing_key": "1", "event": "WidgetQtyChanged", "payload": map[string]int{"quantity": 5}}
	for _, key := range []string{"", "wrong"} {
		if a := post(t, publish, key, event); a.status != http.StatusUnauthorized {
			t.Fatalf("key %q: %d, want 401", key, a.status)
		}
	}
	if a := post(t, publish, "api-key", event); a.status != http.StatusOK || a.body["published"] != 1.0 {
		t.Fatalf("publish: %d %v", a.status, a.body)
	}
	ev := c.Expect("WidgetQtyChanged")
	if ev.MQ == nil || ev.MQ.E != "widgets" || ev.MQ.RK != "1" || string(ev.Payload["quantity"]) != "5" {
		t.Fatalf("event: %s", ev.Raw)
	}
	a := post(t, r.HTTP+"/api/publish/batch", "api-key", map[string]any{"events": []any{
		map[string]any{"exchange": "orders", "routing_key": "7", "event": "Shipped"},
		map[string]any{"exchange": "news", "routing_key": 1, "event": "Headline", "payload": map[string]string{"title": "Hi"}},
	}})
	if a.status != http.StatusOK || a.body["published"] != 2.0 {
		t.Fatalf("batch: %d %v", a.status, a.body)
	}
	c.Expect("Shipped")
	if ev := c.Expect("Headline"); ev.Str("title") != "Hi" {
		t.Fatalf("Headline: %s", ev.Raw)
	}
	if a := post(t, publish, "api-key", map[string]any{"exchange": "nope", "event": "E"}); a.status != http.StatusBadRequest || a.body["error"] != "InvalidExchange" {
		t.Fatalf("unknown exchange: %d %v", a.status, a.body)
	}
	if log := r.log.String(); !strings.Contains(log, "auth=jwt") || !strings.Contains(log, "http_api=true") {
		t.Fatalf("startup log:\n%s", log)
	}
}

func TestWebhookAuthentication(t *testing.T) {
	app := application(t)
	path := writeFile(t, "myxi.toml", `
[auth.webhook]
url = "`+app.URL+`/auth"
[exchanges.chat]
policy = "authenticated"
`)
	r := serve(t, map[string]string{"MYXI_WEBHOOK_SECRET": "hook-secret"}, "-config", path)
	c := testutil.Dial(t, r.WS)
	c.Send("Authenticate", 1, map[string]string{"password": "guess"})
	c.ExpectError("WrongPassword")
	c.Send("Subscribe", "s", map[string]any{"exchange": "chat", "routing_key": "room"})
	c.ExpectError("SubscriptionDenied")
	c.Send("Authenticate", 2, map[string]string{"password": "open sesame"})
	if ev := c.Expect("Authenticated"); ev.Str("username") != "alice" || string(ev.Tag) != "2" {
		t.Fatalf("Authenticated: %s", ev.Raw)
	}
	c.Subscribe("chat", "room")
}

// TestJWTPublicKeyFile: an ECDSA public key from MYXI_JWT_PUBLIC_KEY_FILE;
// an HMAC token "signed" with that public key is refused.
func TestJWTPublicKeyFile(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	path := writeFile(t, "jwt.pem", string(pubPEM))
	r := serve(t, map[string]string{"MYXI_JWT_PUBLIC_KEY_FILE": path, "MYXI_EXCHANGES": "news"})
	c := testutil.Dial(t, r.WS)
	confused, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "mallory"}).SignedString(pubPEM)
	c.Send("Authenticate", "a", map[string]string{"token": confused})
	c.ExpectError("InvalidToken")
	good, _ := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"sub": "alice"}).SignedString(key)
	c.Send("Authenticate", "a", map[string]string{"token": good})
	if ev := c.Expect("Authenticated"); ev.Str("username") != "alice" {
		t.Fatalf("Authenticated: %s", ev.Raw)
	}
}

// TestInvalidConfiguration: the server does not start, and says which key
// is wrong and why.
func TestInvalidConfiguration(t *testing.T) {
	pem := writeFile(t, "key.pem", "not a key")
	for name, tc := range map[string]struct {
		file string
		env  map[string]string
		args []string
		want []string
	}{
		"unknown key": {file: "[server]\nprot = 5\n", want: []string{`server.prot: unknown key (did you mean "port"?)`}},
		"several problems": {
			file: "[exchanges.w]\npolicy = \"jwt\"\n[exchanges.o]\npolicy = \"webhook\"\n",
			want: []string{`exchanges.w.policy: "jwt" needs JWT authentication`, "exchanges.o.url: required"},
		},
		"bad env":          {env: map[string]string{"MYXI_PORT": "http"}, want: []string{`MYXI_PORT="http": not a port number`}},
		"bad flag":         {args: []string{"-port", "99999"}, want: []string{`-port "99999": not a port number`}},
		"flag and file":    {file: "[limits]\nmax_subscriptions = 5\n", args: []string{"-max-subscriptions", "-1"}, want: []string{"limits.max_subscriptions (-max-subscriptions): -1 is negative"}},
		"bad key file":     {env: map[string]string{"MYXI_JWT_PUBLIC_KEY_FILE": pem}, want: []string{"auth.jwt.public_key_file (MYXI_JWT_PUBLIC_KEY_FILE): " + pem + ": no PEM block found"}},
		"missing key file": {env: map[string]string{"MYXI_JWT_PUBLIC_KEY_FILE": "/nonexistent/key.pem"}, want: []string{"auth.jwt.public_key_file (MYXI_JWT_PUBLIC_KEY_FILE): open /nonexistent/key.pem"}},
		"algorithms":       {file: "[auth.jwt]\nalgorithms = [\"RS256\"]\n", env: map[string]string{"MYXI_JWT_SECRET": jwtSecret}, want: []string{`auth.jwt.algorithms: algorithm "RS256" does not fit an HMAC secret`}},
		"no such file":     {args: []string{"-config", "/nonexistent/myxi.toml"}, want: []string{"config file: open /nonexistent/myxi.toml"}},
		"stray argument":   {args: []string{"widgets"}, want: []string{`unexpected argument "widgets"`}},
	} {
		t.Run(name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append([]string{"-config", writeFile(t, "myxi.toml", tc.file)}, args...)
			}
			err := runErr(t, tc.env, args...)
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error:\n%v\nwant it to contain %q", err, want)
				}
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"help"}, {"serve", "-h"}} {
		c, _, stderr := newCLI(nil)
		if err := c.run(context.Background(), args); !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%v: %v", args, err)
		}
		for _, want := range []string{"-config", "-exchanges", "-rabbitmq", "MYXI_API_KEY", "MYXI_JWT_SECRET", "RABBITMQ_URL",
			"MYXI_PORT", "MYXI_WEBHOOK_SECRET", "-metrics-addr", "MYXI_METRICS_ADDR", "-dev", "POST /api/publish", "/api/publish/batch", "Authorization: Bearer", "myxi push", "SIGTERM"} {
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("%v: help lacks %q", args, want)
			}
		}
	}
	c, _, stderr := newCLI(nil)
	if err := c.run(context.Background(), []string{"push", "-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	for _, want := range []string{"EXCHANGE ROUTING_KEY EVENT [PAYLOAD]", "-url", "MYXI_URL", "-rabbitmq", "-timeout", "MYXI_API_KEY", "RABBITMQ_URL", "stdin"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("push help lacks %q", want)
		}
	}
}

// TestShutdown: cancelling (as SIGTERM does) closes sessions with 1001
// and returns without error.
func TestShutdown(t *testing.T) {
	r := serve(t, nil, "-exchanges", "widgets", "-drain", "100ms")
	c := testutil.Dial(t, r.WS)
	c.Subscribe("widgets", "1")
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	_, err := c.NextWithin(5 * time.Second)
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("want close 1001, got %v", err)
	}
	if !strings.Contains(r.log.String(), "stopped") {
		t.Fatalf("log:\n%s", r.log)
	}
}
