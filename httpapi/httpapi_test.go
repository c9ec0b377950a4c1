package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/httpapi"
	"github.com/myxi/myxi/internal/servertest"
	"github.com/myxi/myxi/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is a Pusher that records what it was given, failing from the
// failAt-th push on when failAt > 0 (with failure, or ErrUnavailable).
type recorder struct {
	mu      sync.Mutex
	pushed  []string
	failAt  int
	failure error
}

func (r *recorder) Push(_ context.Context, exchange, key, event string, payload any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failAt > 0 && len(r.pushed)+1 >= r.failAt {
		if r.failure != nil {
			return r.failure
		}
		return fmt.Errorf("publish: %w", broker.ErrUnavailable)
	}
	p, _ := json.Marshal(payload)
	r.pushed = append(r.pushed, fmt.Sprintf("%s/%s %s %s", exchange, key, event, p))
	return nil
}

func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.pushed, "; ")
}

func newAPI(t *testing.T, cfg httpapi.Config) *httptest.Server {
	t.Helper()
	if cfg.Keys == nil {
		cfg.Keys = []string{"key-1", "key-2"}
	}
	cfg.Logger = testutil.Logger(t)
	h, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts
}

type answer struct {
	status int
	body   map[string]any
}

func post(t *testing.T, url, key, body string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode}
	_ = json.NewDecoder(resp.Body).Decode(&a.body)
	return a
}

func TestAuthentication(t *testing.T) {
	rec := &recorder{}
	ts := newAPI(t, httpapi.Config{Pusher: rec})
	body := `{"exchange":"widgets","routing_key":"42","event":"E"}`
	for _, key := range []string{"", "key-1", "Basic key-1", "Bearer", "Bearer key-3", "Bearer key-1x", "Bearer key"} {
		a := post(t, ts.URL+httpapi.PathPublish, key, body)
		if a.status != http.StatusUnauthorized || a.body["error"] != "Unauthorized" {
			t.Errorf("Authorization %q: %d %v, want 401 Unauthorized", key, a.status, a.body)
		}
	}
	// Both keys work (rotation), the scheme in any case.
	for _, key := range []string{"Bearer key-1", "Bearer key-2", "bearer key-1"} {
		if a := post(t, ts.URL+httpapi.PathPublish, key, body); a.status != http.StatusOK {
			t.Errorf("Authorization %q: %d %v", key, a.status, a.body)
		}
	}
	if got := rec.all(); strings.Count(got, "widgets/42 E {}") != 3 {
		t.Fatalf("pushed: %s", got)
	}
	// Unauthenticated requests learn nothing about routes.
	if a := post(t, ts.URL+"/api/nothing", "", "{}"); a.status != http.StatusUnauthorized {
		t.Fatalf("unknown path without a key: %d", a.status)
	}
	if a := post(t, ts.URL+"/api/nothing", "Bearer key-1", "{}"); a.status != http.StatusNotFound {
		t.Fatalf("unknown path: %d", a.status)
	}
	req, _ := http.NewRequest(http.MethodGet, ts.URL+httpapi.PathPublish, nil)
	req.Header.Set("Authorization", "Bearer key-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
}

func TestPublish(t *testing.T) {
	rec := &recorder{}
	ts := newAPI(t, httpapi.Config{Pusher: rec, Exchanges: []string{"widgets"}})
	url := ts.URL + httpapi.PathPublish
	a := post(t, url, "Bearer key-1", `{"exchange":"widgets","routing_key":"42","event":"WidgetQtyChanged","payload":{"quantity": 5}}`)
	if a.status != http.StatusOK || a.body["published"] != 1.0 {
		t.Fatalf("publish: %d %v", a.status, a.body)
	}
	post(t, url, "Bearer key-1", `{"exchange":"widgets","routing_key":7,"event":"Numeric","payload":null}`)
	post(t, url, "Bearer key-1", `{"exchange":"widgets","event":"WholeExchange"}`)
	if got, want := rec.all(), `widgets/42 WidgetQtyChanged {"quantity":5}; widgets/7 Numeric {}; widgets/ WholeExchange {}`; got != want {
		t.Fatalf("pushed %s, want %s", got, want)
	}

	for body, want := range map[string]string{
		`not json`:                              "InvalidJSON",
		``:                                      "InvalidJSON",
		`{"exchange":"widgets","event":"E"} {}`: "InvalidJSON",
		`{"exchange":"widgets","routingKey":"1","event":"E"}`:                                 "InvalidJSON",
		`{"exchange":"gadgets","routing_key":"1","event":"E"}`:                                "InvalidExchange",
		`{"exchange":"amq.direct","routing_key":"1","event":"E"}`:                             "InvalidExchange",
		`{"exchange":"widgets","routing_key":{"a":1},"event":"E"}`:                            "InvalidRoutingKey",
		`{"exchange":"widgets","routing_key":"` + strings.Repeat("k", 256) + `","event":"E"}`: "InvalidRoutingKey",
		`{"exchange":"widgets","routing_key":"1"}`:                                            "InvalidEvent",
		`{"exchange":"widgets","routing_key":"1","event":"E","payload":[1]}`:                  "InvalidPayload",
		`{"exchange":"widgets","routing_key":"1","event":5}`:                                  "InvalidJSON",
	} {
		a := post(t, url, "Bearer key-1", body)
		if a.status != http.StatusBadRequest || a.body["error"] != want || a.body["message"] == "" {
			t.Errorf("%.60s: %d %v, want 400 %s", body, a.status, a.body, want)
		}
	}
	if n := strings.Count(rec.all(), ";"); n != 2 {
		t.Fatalf("bad requests published something: %s", rec.all())
	}
}

func TestBatch(t *testing.T) {
	rec := &recorder{}
	ts := newAPI(t, httpapi.Config{Pusher: rec, MaxBatch: 3, MaxBodyBytes: 1024})
	url := ts.URL + httpapi.PathPublishBatch
	a := post(t, url, "Bearer key-2", `{"events":[
		{"exchange":"widgets","routing_key":"1","event":"A","payload":{"n":1}},
		{"exchange":"widgets","routing_key":"1","event":"B"},
		{"exchange":"news","routing_key":"x","event":"C"}]}`)
	if a.status != http.StatusOK || a.body["published"] != 3.0 {
		t.Fatalf("batch: %d %v", a.status, a.body)
	}
	if got := rec.all(); got != `widgets/1 A {"n":1}; widgets/1 B {}; news/x C {}` {
		t.Fatalf("published, in order: %s", got)
	}

	// One bad event: none is published, and the answer names it.
	a = post(t, url, "Bearer key-2", `{"events":[{"exchange":"widgets","routing_key":"1","event":"A"},{"exchange":"widgets","routing_key":"1"}]}`)
	if a.status != http.StatusBadRequest || a.body["error"] != "InvalidEvent" || !strings.Contains(a.body["message"].(string), "events[1].event") {
		t.Fatalf("bad event: %d %v", a.status, a.body)
	}
	a = post(t, url, "Bearer key-2", `{"events":[{"exchange":"w","event":"A"},{"exchange":"w","event":"A"},{"exchange":"w","event":"A"},{"exchange":"w","event":"A"}]}`)
	if a.status != http.StatusBadRequest || a.body["error"] != "TooManyEvents" {
		t.Fatalf("too many: %d %v", a.status, a.body)
	}
	a = post(t, url, "Bearer key-2", `{"events":[{"exchange":"widgets","event":"A","payload":{"pad":"`+strings.Repeat("x", 2048)+`"}}]}`)
	if a.status != http.StatusRequestEntityTooLarge || a.body["error"] != "BodyTooLarge" {
		t.Fatalf("too large: %d %v", a.status, a.body)
	}
	a = post(t, url, "Bearer key-2", `{"events":{}}`)
	if a.status != http.StatusBadRequest || a.body["error"] != "InvalidJSON" || !strings.Contains(a.body["message"].(string), "events") {
		t.Fatalf("events not an array: %d %v", a.status, a.body)
	}
	if got := strings.Count(rec.all(), ";"); got != 2 {
		t.Fatalf("refused batches published: %s", rec.all())
	}
}

// The body rules of every node's broker edge hold at the API, so nothing
// it accepts is dropped downstream: invalid UTF-8 anywhere, an empty
// event, an array or scalar payload and an oversize event are refused
// with 400 or 413 and a message naming the problem; a null payload is {}.
func TestBodyRules(t *testing.T) {
	rec := &recorder{}
	ts := newAPI(t, httpapi.Config{Pusher: rec, MaxEventBytes: 1024})
	url := ts.URL + httpapi.PathPublish
	for _, tc := range []struct {
		body, name, message string
		status              int
	}{
		{"{\"exchange\":\"w\",\"event\":\"E\",\"payload\":{\"s\":\"\xfe\"}}", "InvalidJSON", "not valid UTF-8 (at byte 44)", 400},
		{"{\"exchange\":\"w\",\"event\":\"E\xc3\"}", "InvalidJSON", "UTF-8", 400},
		{"{\"exchange\":\"w\",\"routing_key\":\"\xff\",\"event\":\"E\"}", "InvalidJSON", "UTF-8", 400},
		{`{"exchange":"w","event":""}`, "InvalidEvent", "event: a non-empty string", 400},
		{`{"exchange":"w","event":"E","payload":[1]}`, "InvalidPayload", "payload: must be a JSON object (or null), not an array", 400},
		{`{"exchange":"w","event":"E","payload":"s"}`, "InvalidPayload", "not a string", 400},
		{`{"exchange":"w","event":"E","payload":5}`, "InvalidPayload", "not a number", 400},
		{`{"exchange":"w","event":"E","payload":{"pad":"` + strings.Repeat("x", 1000) + `"}}`, "EventTooLarge", "over the maximum event size of 1024 bytes", 413},
	} {
		a := post(t, url, "Bearer key-1", tc.body)
		msg, _ := a.body["message"].(string)
		if a.status != tc.status || a.body["error"] != tc.name || !strings.Contains(msg, tc.message) {
			t.Errorf("%.50q: %d %v, want %d %s with %q", tc.body, a.status, a.body, tc.status, tc.name, tc.message)
		}
	}
	// In a batch, the oversize event is named and nothing is published.
	a := post(t, ts.URL+httpapi.PathPublishBatch, "Bearer key-1", `{"events":[{"exchange":"w","event":"A"},{"exchange":"w","event":"E","payload":{"pad":"`+strings.Repeat("x", 1000)+`"}}]}`)
	if msg, _ := a.body["message"].(string); a.status != 413 || !strings.Contains(msg, "events[1].event") {
		t.Errorf("oversize in a batch: %d %v", a.status, a.body)
	}
	if a := post(t, url, "Bearer key-1", `{"exchange":"w","event":"E","payload":null}`); a.status != 200 {
		t.Errorf("null payload: %d %v", a.status, a.body)
	}
	if got := rec.all(); got != "w/ E {}" {
		t.Fatalf("published %q, want only the null-payload event", got)
	}
}

func TestBrokerFailure(t *testing.T) {
	rec := &recorder{failAt: 3}
	ts := newAPI(t, httpapi.Config{Pusher: rec})
	a := post(t, ts.URL+httpapi.PathPublishBatch, "Bearer key-1", `{"events":[
		{"exchange":"w","routing_key":"1","event":"A"},
		{"exchange":"w","routing_key":"1","event":"B"},
		{"exchange":"w","routing_key":"1","event":"C"},
		{"exchange":"w","routing_key":"1","event":"D"}]}`)
	if a.status != http.StatusServiceUnavailable || a.body["error"] != "BrokerUnavailable" || a.body["published"] != 2.0 {
		t.Fatalf("failing broker: %d %v", a.status, a.body)
	}
	a = post(t, ts.URL+httpapi.PathPublish, "Bearer key-1", `{"exchange":"w","routing_key":"1","event":"E"}`)
	if a.status != http.StatusServiceUnavailable || a.body["error"] != "BrokerUnavailable" {
		t.Fatalf("failing broker: %d %v", a.status, a.body)
	}

	refusing := &recorder{failAt: 1, failure: errors.New("PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'w'")}
	ts = newAPI(t, httpapi.Config{Pusher: refusing})
	a = post(t, ts.URL+httpapi.PathPublish, "Bearer key-1", `{"exchange":"w","routing_key":"1","event":"E"}`)
	if a.status != http.StatusInternalServerError || a.body["error"] != "PublishFailed" || strings.Contains(a.body["message"].(string), "PRECONDITION") {
		t.Fatalf("refusing broker: %d %v", a.status, a.body)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]httpapi.Config{
		"no pusher":          {Keys: []string{"k"}},
		"no key":             {Pusher: &recorder{}},
		"empty key":          {Pusher: &recorder{}, Keys: []string{" "}},
		"negative max event": {Pusher: &recorder{}, Keys: []string{"k"}, MaxEventBytes: -1},
	} {
		if _, err := httpapi.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The API takes its event limit from the server, and may not exceed it.
func TestMaxEventBytesFollowsServer(t *testing.T) {
	srv := servertest.Start(t, myxi.Config{
		Exchanges: map[string]myxi.AuthorizeFunc{"widgets": myxi.AllowAll},
		Limits:    myxi.Limits{MaxEventBytes: 2000},
	})
	if _, err := httpapi.New(httpapi.Config{Pusher: srv.Srv, Keys: []string{"k"}, MaxEventBytes: 2001}); err == nil || !strings.Contains(err.Error(), "MaxEventBytes") {
		t.Fatalf("MaxEventBytes above the server's: %v", err)
	}
	api := newAPI(t, httpapi.Config{Pusher: srv.Srv})
	c := testutil.Dial(t, srv.WS)
	c.Subscribe("widgets", "k")
	pad := func(n int) string {
		return `{"exchange":"widgets","routing_key":"k","event":"E","payload":{"pad":"` + strings.Repeat("x", n) + `"}}`
	}
	// The frame is {"event":"E","tag":null,"payload":{"pad":"..."},"mq":{"e":"widgets","rk":"k"}}: 75 bytes and the pad.
	if a := post(t, api.URL+httpapi.PathPublish, "Bearer key-1", pad(2000-75+1)); a.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("one byte over the server's limit: %d %v", a.status, a.body)
	}
	if a := post(t, api.URL+httpapi.PathPublish, "Bearer key-1", pad(2000-75)); a.status != http.StatusOK {
		t.Fatalf("at the server's limit: %d %v", a.status, a.body)
	}
	if ev := c.Expect("E"); len(ev.Raw) != 2000 {
		t.Fatalf("frame of %d bytes, want 2000", len(ev.Raw))
	}
}

// TestWithServer publishes through a real server to a WebSocket client.
func TestWithServer(t *testing.T) {
	srv := servertest.Start(t, myxi.Config{Exchanges: map[string]myxi.AuthorizeFunc{"widgets": myxi.AllowAll}})
	api := newAPI(t, httpapi.Config{Pusher: srv.Srv, Exchanges: []string{"widgets"}})
	c := testutil.Dial(t, srv.WS)
	c.Subscribe("widgets", "42")
	a := post(t, api.URL+httpapi.PathPublish, "Bearer key-1", `{"exchange":"widgets","routing_key":"42","event":"WidgetQtyChanged","payload":{"quantity":5}}`)
	if a.status != http.StatusOK {
		t.Fatalf("publish: %d %v", a.status, a.body)
	}
	ev := c.Expect("WidgetQtyChanged")
	if string(ev.Payload["quantity"]) != "5" || ev.MQ == nil || ev.MQ.E != "widgets" || ev.MQ.RK != "42" {
		t.Fatalf("event: %s", ev.Raw)
	}
	a = post(t, api.URL+httpapi.PathPublishBatch, "Bearer key-1", `{"events":[
		{"exchange":"widgets","routing_key":"42","event":"First"},
		{"exchange":"widgets","routing_key":"42","event":"Second"}]}`)
	if a.status != http.StatusOK {
		t.Fatalf("batch: %d %v", a.status, a.body)
	}
	c.Expect("First")
	c.Expect("Second")
}
