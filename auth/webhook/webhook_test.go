package webhook

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/internal/servertest"
	"github.com/myxi/myxi/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const hookSecret = "hook-secret"

// app is the application's side: a real HTTP server answering Myxi's
// webhooks, recording what it was asked.
type app struct {
	*httptest.Server
	mu       sync.Mutex
	requests map[string][]map[string]json.RawMessage // by path
	calls    map[string]int                          // subscribe checks by routing key
	failing  atomic.Bool                             // "flaky" keys answer 500 once set
}

func (a *app) record(path string, body map[string]json.RawMessage) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.requests[path] = append(a.requests[path], body)
}

func (a *app) last(t *testing.T, path string) map[string]json.RawMessage {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	reqs := a.requests[path]
	if len(reqs) == 0 {
		t.Fatalf("no request to %s", path)
	}
	return reqs[len(reqs)-1]
}

func (a *app) callsFor(key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[key]
}

func str(raw json.RawMessage) string {
	var s string
	_ = json.Unmarshal(raw, &s)
	return s
}

func startApp(t *testing.T) *app {
	a := &app{requests: map[string][]map[string]json.RawMessage{}, calls: map[string]int{}}
	answer := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Authorization") != "Bearer "+hookSecret ||
			r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "not Myxi", http.StatusTeapot)
			return
		}
		var body map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		a.record(r.URL.Path, body)
		var payload map[string]json.RawMessage
		_ = json.Unmarshal(body["payload"], &payload)
		switch r.URL.Path {
		case "/auth":
			switch token := str(payload["session_token"]); token {
			case "alice-token":
				answer(w, map[string]any{"user": "alice"})
			case "object":
				answer(w, map[string]any{"user": map[string]any{"id": 7, "name": "alice"}})
			case "custom":
				answer(w, map[string]any{"user": "carol", "events": []any{map[string]any{"event": "LoggedIn", "payload": map[string]int{"level": 3}}}})
			case "refused":
				answer(w, map[string]any{"error": "InvalidSessionToken"})
			case "silent":
				answer(w, map[string]any{"user": nil})
			case "both":
				answer(w, map[string]any{"user": "x", "error": "Y"})
			case "401":
				w.WriteHeader(http.StatusUnauthorized)
			case "500":
				http.Error(w, "database down", http.StatusInternalServerError)
			case "junk":
				_, _ = w.Write([]byte("<html>oops</html>"))
			case "slow":
				<-r.Context().Done()
			default:
				answer(w, map[string]any{"error": "UnknownToken"})
			}
		case "/subscribe":
			key := str(body["routing_key"])
			a.mu.Lock()
			a.calls[key]++
			a.mu.Unlock()
			user := string(body["user"])
			switch {
			case key == "slow":
				<-r.Context().Done()
			case key == "boom", key == "flaky" && a.failing.Load():
				http.Error(w, "boom", http.StatusInternalServerError)
			case key == "junk":
				answer(w, map[string]any{"allow": "yes"})
			case key == "open", key == "flaky":
				answer(w, map[string]bool{"allow": true})
			default:
				answer(w, map[string]bool{"allow": user == `"alice"` && (key == "1" || key == "2")})
			}
		case "/actions/hello":
			answer(w, map[string]any{"events": []any{
				map[string]any{"event": "Hello", "payload": map[string]any{"text": "Hello, " + str(payload["name"]), "user": body["user"]}},
				map[string]any{"event": "Second"},
			}})
		case "/actions/refuse":
			answer(w, map[string]any{"events": []any{map[string]any{"event": "Sorry"}}, "error": "NotToday"})
		case "/actions/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/actions/slow":
			<-r.Context().Done()
		case "/actions/boom":
			http.Error(w, "boom", http.StatusBadGateway)
		case "/actions/bad-event":
			answer(w, map[string]any{"events": []any{map[string]any{"event": "X", "payload": []int{1}}}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(a.Close)
	return a
}

type setup struct {
	app    *app
	client *Client
	srv    *servertest.Server
	offset atomic.Int64 // added to the clock of the policy cache
}

func start(t *testing.T, reauthorize time.Duration) *setup {
	t.Helper()
	s := &setup{app: startApp(t)}
	s.client = New(Config{Secret: hookSecret, Timeout: 300 * time.Millisecond, Logger: testutil.Logger(t)})
	s.client.now = func() time.Time { return time.Now().Add(time.Duration(s.offset.Load())) }
	t.Cleanup(s.client.Close)
	must := func(v any, err error) any {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	auth := must(s.client.AuthAction("Authenticate", Endpoint{URL: s.app.URL + "/auth", ForwardHeaders: []string{"Cookie", "X-Absent"}})).(myxi.ActionHandler)
	cfg := myxi.Config{
		Exchanges: map[string]myxi.AuthorizeFunc{
			"orders":   must(s.client.Authorizer("orders", Policy{URL: s.app.URL + "/subscribe", CacheTTL: time.Minute})).(myxi.AuthorizeFunc),
			"nocache":  must(s.client.Authorizer("nocache", Policy{URL: s.app.URL + "/subscribe"})).(myxi.AuthorizeFunc),
			"everyone": myxi.AllowAll,
		},
		Actions: map[string]myxi.ActionHandler{
			"Authenticate": auth,
			"Whoami": myxi.AuthRequired(func(_ context.Context, s *myxi.Session, _ json.RawMessage) error {
				return s.Send("You", map[string]any{"user": s.User()})
			}),
		},
		ReauthorizeInterval: reauthorize,
	}
	for _, name := range []string{"hello", "refuse", "empty", "slow", "boom", "bad-event"} {
		cfg.Actions["Action-"+name] = must(s.client.Action("Action-"+name, Endpoint{URL: s.app.URL + "/actions/" + name, ForwardHeaders: []string{"Cookie"}})).(myxi.ActionHandler)
	}
	s.srv = servertest.Start(t, cfg)
	return s
}

func (s *setup) dial(t *testing.T) *testutil.Client {
	return testutil.DialHeader(t, s.srv.WS, http.Header{"Cookie": {"sid=abc"}})
}

func authenticate(c *testutil.Client, token string) testutil.Event {
	c.Send("Authenticate", "auth", map[string]any{"session_token": token})
	return c.Next()
}

func TestAuthAction(t *testing.T) {
	s := start(t, -1)
	c := s.dial(t)

	ev := authenticate(c, "alice-token")
	if ev.Event != "Authenticated" || ev.Str("username") != "alice" || string(ev.Tag) != `"auth"` {
		t.Fatalf("got %s, want Authenticated {username: alice} tagged auth", ev.Raw)
	}
	req := s.app.last(t, "/auth")
	if str(req["action"]) != "Authenticate" || str(req["session_id"]) != c.Welcome.Str("id") ||
		str(req["remote_ip"]) != "127.0.0.1" || string(req["user"]) != "null" ||
		string(req["headers"]) != `{"Cookie":"sid=abc"}` || string(req["payload"]) != `{"session_token":"alice-token"}` {
		t.Fatalf("auth request: %v", req)
	}
	c.Send("Whoami", "w", nil)
	if ev := c.Expect("You"); ev.Str("user") != "alice" {
		t.Fatalf("user: %s", ev.Raw)
	}

	// The user is any JSON value, sent back as it came.
	c2 := s.dial(t)
	if ev := authenticate(c2, "object"); ev.Event != "Authenticated" || string(ev.Payload["username"]) != `{"id":7,"name":"alice"}` {
		t.Fatalf("object user: %s", ev.Raw)
	}
	// The application's own events replace the default reply.
	c3 := s.dial(t)
	if ev := authenticate(c3, "custom"); ev.Event != "LoggedIn" || string(ev.Payload["level"]) != "3" || string(ev.Tag) != `"auth"` {
		t.Fatalf("custom events: %s", ev.Raw)
	}
	c3.Send("Whoami", "w", nil)
	if ev := c3.Expect("You"); ev.Str("user") != "carol" {
		t.Fatalf("user: %s", ev.Raw)
	}
}

func TestAuthActionFailures(t *testing.T) {
	s := start(t, -1)
	c := s.dial(t)
	for token, want := range map[string]string{
		"refused": "InvalidSessionToken",
		"silent":  "AuthenticationFailed",
		"401":     "AuthenticationFailed",
		"500":     "ActionFailed",
		"junk":    "ActionFailed",
		"both":    "ActionFailed",
		"slow":    "ActionTimeout",
	} {
		ev := authenticate(c, token)
		if ev.Event != "Error" || ev.Str("error") != want || string(ev.Tag) != `"auth"` {
			t.Errorf("%s: got %s, want Error %s tagged auth", token, ev.Raw, want)
		}
		if want == "ActionFailed" || want == "ActionTimeout" {
			if ev.Str("action") != "Authenticate" {
				t.Errorf("%s: no action in %s", token, ev.Raw)
			}
		}
	}
	c.Send("Whoami", "w", nil)
	c.ExpectError("AuthRequired")

	// A refusal leaves an authenticated session as it was.
	authenticate(c, "alice-token")
	authenticate(c, "refused")
	c.Send("Whoami", "w", nil)
	if ev := c.Expect("You"); ev.Str("user") != "alice" {
		t.Fatalf("user after a refusal: %s", ev.Raw)
	}
}

func TestPolicy(t *testing.T) {
	s := start(t, -1)
	anon := s.dial(t)
	anon.Send("Subscribe", "s", map[string]any{"exchange": "orders", "routing_key": "1"})
	anon.ExpectError("SubscriptionDenied")
	req := s.app.last(t, "/subscribe")
	if str(req["exchange"]) != "orders" || str(req["routing_key"]) != "1" || string(req["user"]) != "null" {
		t.Fatalf("policy request: %v", req)
	}

	alice := s.dial(t)
	authenticate(alice, "alice-token")
	alice.Subscribe("orders", "1")
	alice.Subscribe("orders", 2)
	alice.Send("Subscribe", "s", map[string]any{"exchange": "orders", "routing_key": "3"})
	alice.ExpectError("SubscriptionDenied")
	if req := s.app.last(t, "/subscribe"); string(req["user"]) != `"alice"` {
		t.Fatalf("user in the policy request: %v", req)
	}
	if err := s.srv.Srv.Push(context.Background(), "orders", "2", "Shipped", nil); err != nil {
		t.Fatal(err)
	}
	alice.Expect("Shipped")
}

func TestPolicyCache(t *testing.T) {
	s := start(t, -1)
	subscribe := func(c *testutil.Client, exchange, key, want string) {
		t.Helper()
		c.Send("Subscribe", "s", map[string]any{"exchange": exchange, "routing_key": key})
		if ev := c.Next(); ev.Event != want && ev.Str("error") != want {
			t.Fatalf("%s/%s: got %s, want %s", exchange, key, ev.Raw, want)
		}
	}
	a, b := s.dial(t), s.dial(t)
	subscribe(a, "orders", "open", "Subscribed")
	subscribe(b, "orders", "open", "Subscribed")
	subscribe(a, "orders", "1", "SubscriptionDenied")
	subscribe(b, "orders", "1", "SubscriptionDenied")
	if n, m := s.app.callsFor("open"), s.app.callsFor("1"); n != 1 || m != 1 {
		t.Fatalf("calls: open %d, 1 %d; want one each (answers cached per key and user)", n, m)
	}
	// Another user is another question.
	alice := s.dial(t)
	authenticate(alice, "alice-token")
	subscribe(alice, "orders", "1", "Subscribed")
	if n := s.app.callsFor("1"); n != 2 {
		t.Fatalf("calls for 1: %d, want 2", n)
	}
	// Once the TTL has passed, the application is asked again.
	s.offset.Store(int64(2 * time.Minute))
	c := s.dial(t)
	subscribe(c, "orders", "open", "Subscribed")
	if n := s.app.callsFor("open"); n != 2 {
		t.Fatalf("calls for open after the TTL: %d, want 2", n)
	}
	// Without a TTL every check asks.
	subscribe(a, "nocache", "open", "Subscribed")
	subscribe(b, "nocache", "open", "Subscribed")
	if n := s.app.callsFor("open"); n != 4 {
		t.Fatalf("calls for open without cache: %d, want 4", n)
	}
}

func TestPolicyFailsClosed(t *testing.T) {
	s := start(t, -1)
	c := s.dial(t)
	for _, key := range []string{"slow", "boom", "junk", "boom"} {
		c.Send("Subscribe", key, map[string]any{"exchange": "orders", "routing_key": key})
		if ev := c.ExpectError("SubscriptionDenied"); string(ev.Tag) != `"`+key+`"` {
			t.Fatalf("%s: %s", key, ev.Raw)
		}
	}
	// Failures are not cached: the second "boom" asked again.
	if n := s.app.callsFor("boom"); n != 2 {
		t.Fatalf("calls for boom: %d, want 2", n)
	}
	// Still serving the session.
	c.Subscribe("everyone", "x")
}

// TestPolicyFailsClosedOnReauthorization: a subscription the application
// can no longer vouch for is removed by the periodic check.
func TestPolicyFailsClosedOnReauthorization(t *testing.T) {
	s := start(t, 50*time.Millisecond)
	c := s.dial(t)
	c.Subscribe("nocache", "flaky")
	c.Subscribe("everyone", "x")
	s.app.failing.Store(true)
	ev, err := c.NextWithin(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Event != "Unsubscribed" || ev.Str("routing_key") != "flaky" || string(ev.Payload["auto"]) != "true" {
		t.Fatalf("got %s, want Unsubscribed nocache/flaky auto", ev.Raw)
	}
}

func TestActions(t *testing.T) {
	s := start(t, -1)
	c := s.dial(t)
	c.Send("Action-hello", 7, map[string]string{"name": "Bob"})
	ev := c.Expect("Hello")
	if ev.Str("text") != "Hello, Bob" || string(ev.Tag) != "7" || string(ev.Payload["user"]) != "null" {
		t.Fatalf("Hello: %s", ev.Raw)
	}
	if ev := c.Expect("Second"); string(ev.Tag) != "7" || string(ev.Raw) != `{"event":"Second","tag":7,"payload":{}}` {
		t.Fatalf("Second: %s", ev.Raw)
	}
	req := s.app.last(t, "/actions/hello")
	if str(req["action"]) != "Action-hello" || str(req["session_id"]) != c.Welcome.Str("id") || string(req["headers"]) != `{"Cookie":"sid=abc"}` {
		t.Fatalf("action request: %v", req)
	}

	authenticate(c, "alice-token")
	c.Send("Action-hello", "h", map[string]string{"name": "Eve"})
	if ev := c.Expect("Hello"); string(ev.Payload["user"]) != `"alice"` {
		t.Fatalf("user not passed on: %s", ev.Raw)
	}
	c.Expect("Second")

	c.Send("Action-refuse", "r", nil)
	c.Expect("Sorry")
	if ev := c.ExpectError("NotToday"); string(ev.Tag) != `"r"` {
		t.Fatalf("refuse: %s", ev.Raw)
	}

	c.Send("Action-empty", "e", nil)
	c.Send("Ping", "p", nil)
	if ev := c.Next(); ev.Event != "Pong" {
		t.Fatalf("after an empty answer: %s", ev.Raw)
	}

	for action, want := range map[string]string{
		"Action-slow":      "ActionTimeout",
		"Action-boom":      "ActionFailed",
		"Action-bad-event": "ActionFailed",
	} {
		c.Send(action, action, nil)
		ev := c.ExpectError(want)
		if string(ev.Tag) != `"`+action+`"` || ev.Str("action") != action || strings.Contains(string(ev.Raw), "502") {
			t.Errorf("%s: %s", action, ev.Raw)
		}
	}
}

func TestConstructorErrors(t *testing.T) {
	c := New(Config{})
	defer c.Close()
	if _, err := c.Action("A", Endpoint{URL: "ftp://example.com/x"}); err == nil || !strings.Contains(err.Error(), "not an http or https URL") {
		t.Errorf("ftp URL: %v", err)
	}
	if _, err := c.AuthAction("A", Endpoint{URL: "/relative"}); err == nil {
		t.Error("relative URL accepted")
	}
	if _, err := c.Authorizer("x", Policy{URL: "http://example.com", CacheTTL: -time.Second}); err == nil {
		t.Error("negative TTL accepted")
	}
}

func TestCacheBound(t *testing.T) {
	p := &policy{c: &Client{now: time.Now}, cfg: Policy{CacheTTL: time.Minute, MaxCacheEntries: 10}, cache: map[string]cached{}}
	for i := range 100 {
		p.store(strings.Repeat("k", i+1), true)
	}
	if n := len(p.cache); n > 10 {
		t.Fatalf("cache holds %d entries, bound 10", n)
	}
}

// TestConcurrencyCap: webhook requests in flight are capped node-wide; a
// caller beyond the cap waits at most its timeout and gets ActionTimeout,
// without the application ever seeing the request.
func TestConcurrencyCap(t *testing.T) {
	if c := New(Config{}); cap(c.slots) != DefaultMaxConcurrent || DefaultMaxConcurrent != 64 {
		t.Fatalf("default cap %d", cap(c.slots))
	}
	var (
		mu       sync.Mutex
		seen     = map[string]int{}
		arrived  = make(chan struct{}, 8)
		released = make(chan struct{})
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path]++
		mu.Unlock()
		if r.URL.Path == "/hold" {
			arrived <- struct{}{}
			select {
			case <-released:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"events": [{"event": "Done"}]}`))
	}))
	t.Cleanup(hook.Close)
	count := func(path string) int {
		mu.Lock()
		defer mu.Unlock()
		return seen[path]
	}

	client := New(Config{MaxConcurrent: 2, Logger: testutil.Logger(t)})
	t.Cleanup(client.Close)
	hold, err := client.Action("Hold", Endpoint{URL: hook.URL + "/hold", Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	quick, err := client.Action("Quick", Endpoint{URL: hook.URL + "/quick", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, myxi.Config{Actions: map[string]myxi.ActionHandler{"Hold": hold, "Quick": quick}})

	// Two sessions fill both slots (a session runs its actions in order).
	a, b, c := testutil.Dial(t, srv.WS), testutil.Dial(t, srv.WS), testutil.Dial(t, srv.WS)
	a.Send("Hold", "a", nil)
	b.Send("Hold", "b", nil)
	for range 2 {
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("the held requests did not reach the application")
		}
	}
	started := time.Now()
	c.Send("Quick", "q", nil)
	ev := c.ExpectError("ActionTimeout")
	if ev.Str("action") != "Quick" || string(ev.Tag) != `"q"` {
		t.Fatalf("over the cap: %s", ev.Raw)
	}
	if waited := time.Since(started); waited < 150*time.Millisecond {
		t.Fatalf("refused after %v: the caller should wait for a slot up to its timeout", waited)
	}
	if n := count("/quick"); n != 0 {
		t.Fatalf("the application saw %d requests beyond the cap", n)
	}

	close(released)
	a.Expect("Done")
	b.Expect("Done")
	c.Send("Quick", "q2", nil)
	if ev := c.Expect("Done"); string(ev.Tag) != `"q2"` {
		t.Fatalf("after the slots freed: %s", ev.Raw)
	}
	if n := count("/hold"); n != 2 {
		t.Fatalf("held requests: %d", n)
	}
}
