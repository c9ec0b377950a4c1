// Package webhook lets an application written in any language take part
// in Myxi sessions over HTTP. Myxi POSTs JSON to the application's URLs
//
//   - to authenticate a session (Client.AuthAction): the application
//     answers the session's user;
//   - to decide whether a session may subscribe to a routing key
//     (Client.Authorizer): the application answers allow or not, and the
//     answer is cached for a while;
//   - to run a custom action (Client.Action): the application answers the
//     events to send to the client, which carry the action's tag.
//
// Every request carries "Content-Type: application/json" and, when
// Config.Secret is set, "Authorization: Bearer <secret>", so that the
// application can refuse calls that are not Myxi's. The application
// answers with a 2xx status and a JSON object (an empty body or 204 is an
// empty object). The request and answer formats are in docs/any-language.md
// and on each method.
//
// Failures are clear to the client and fail closed: an application that
// does not answer in time makes an action answer
// Error {"error": "ActionTimeout", "action": <name>}, and one that fails
// (unreachable, a non-2xx status, an answer that is not the documented
// JSON) Error {"error": "ActionFailed", "action": <name>}; a subscription
// it cannot decide is denied. The details go to the server log only.
package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/myxi/myxi"
)

// Error names the client may see in Error events.
const (
	// ErrActionTimeout: the application did not answer in time.
	ErrActionTimeout = "ActionTimeout"
	// ErrActionFailed: the application could not be reached, answered a
	// non-2xx status, or answered something that is not the documented
	// JSON.
	ErrActionFailed = "ActionFailed"
	// ErrAuthenticationFailed: the authentication webhook refused the
	// session without naming an error of its own.
	ErrAuthenticationFailed = "AuthenticationFailed"
)

// Config configures a Client. Zero values are the documented defaults.
type Config struct {
	// Secret, when set, is sent with every request as
	// "Authorization: Bearer <Secret>".
	Secret string
	// Timeout bounds each request whose endpoint sets none. Default 5s.
	// An action's request is also bounded by the action's own context
	// (myxi.Limits.ActionTimeout).
	Timeout time.Duration
	// MaxResponseBytes bounds an answer's body. Default 1 MiB.
	MaxResponseBytes int64
	// MaxConcurrent caps the requests in flight through this Client, every
	// webhook together (one Client serves a whole node). Default 64. A
	// caller beyond it waits for a free slot, at most until its context
	// or the endpoint's timeout ends, and then fails as a request that got
	// no answer in time does (ActionTimeout; a denied subscription). It
	// keeps a flood of Subscribes or actions from turning into as many
	// requests, goroutines and connections to the application.
	MaxConcurrent int
	// HTTPClient makes the requests. Default: a client of its own that
	// keeps connections to the application alive (Close releases them) and
	// does not follow redirects.
	HTTPClient *http.Client
	// Logger receives webhook failures. Default slog.Default().
	Logger *slog.Logger
}

// Client calls an application's webhooks. It is safe for concurrent use;
// one Client serves every webhook of a server.
type Client struct {
	cfg       Config
	hc        *http.Client
	transport *http.Transport // ours to close; nil with Config.HTTPClient
	log       *slog.Logger
	now       func() time.Time
	slots     chan struct{} // one per request in flight (Config.MaxConcurrent)
}

// New returns a Client.
func New(cfg Config) *Client {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent
	}
	c := &Client{cfg: cfg, hc: cfg.HTTPClient, log: cfg.Logger.With("component", "webhook"), now: time.Now,
		slots: make(chan struct{}, cfg.MaxConcurrent)}
	if c.hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		c.transport = t
		c.hc = &http.Client{
			Transport: t,
			// A redirect would turn the POST into a GET (301, 302) or send
			// the request to another URL than the configured one: the 3xx
			// is the answer, a failure, logged with its status.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return c
}

// Close releases the idle connections of the Client's own HTTP client.
// Requests still running finish.
func (c *Client) Close() {
	if c.transport != nil {
		c.transport.CloseIdleConnections()
	}
}

// DefaultMaxConcurrent is the default of Config.MaxConcurrent.
const DefaultMaxConcurrent = 64

// Endpoint is one application URL that Myxi POSTs a session's action to.
type Endpoint struct {
	// URL is the application's http or https URL.
	URL string
	// Timeout bounds the request. Default Config.Timeout.
	Timeout time.Duration
	// ForwardHeaders names headers of the client's WebSocket handshake
	// (such as Cookie or User-Agent) to pass on in the request's
	// "headers" object.
	ForwardHeaders []string
}

// CheckURL reports whether u can be a webhook URL: absolute, http or
// https.
func CheckURL(u string) error {
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("not a URL: %w", err)
	}
	if p.Scheme != "http" && p.Scheme != "https" {
		return fmt.Errorf("%q is not an http or https URL", u)
	}
	if p.Host == "" {
		return fmt.Errorf("%q has no host", u)
	}
	return nil
}

func (c *Client) timeout(d time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return c.cfg.Timeout
}

// errTimeout is the failure of a request that got no answer in time.
var errTimeout = errors.New("no answer in time")

// statusError is a non-2xx answer.
type statusError struct{ code int }

func (e *statusError) Error() string { return fmt.Sprintf("answered HTTP %d", e.code) }

// post sends body as JSON to u and decodes a 2xx answer into out (an
// empty body leaves out as it is). Timeouts are errTimeout; non-2xx
// statuses are *statusError.
func (c *Client) post(ctx context.Context, u string, timeout time.Duration, body, out any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The wait for a slot counts against the same deadline as the request:
	// to the client, a saturated node looks like a slow application.
	select {
	case c.slots <- struct{}{}:
		defer func() { <-c.slots }()
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%w: all %d webhook slots of this node stayed busy (webhooks.max_concurrent)", errTimeout, cap(c.slots))
		}
		return fmt.Errorf("waiting for a webhook slot: %w", ctx.Err())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "myxi-webhook/1")
	if c.cfg.Secret != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.Secret)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return timeoutOr(ctx, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxResponseBytes+1))
	if err != nil {
		return timeoutOr(ctx, fmt.Errorf("read answer: %w", err))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &statusError{resp.StatusCode}
	}
	if int64(len(raw)) > c.cfg.MaxResponseBytes {
		return fmt.Errorf("answer larger than %d bytes", c.cfg.MaxResponseBytes)
	}
	if len(bytes.TrimSpace(raw)) == 0 || out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("answer is not the expected JSON object: %w", err)
	}
	return nil
}

func timeoutOr(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return errTimeout
	}
	return err
}

// actionRequest is what Myxi POSTs for an action (Authenticate included).
type actionRequest struct {
	Action    string            `json:"action"`
	SessionID string            `json:"session_id"`
	RemoteIP  string            `json:"remote_ip"`
	User      any               `json:"user"`
	Headers   map[string]string `json:"headers,omitempty"`
	Payload   json.RawMessage   `json:"payload"`
}

func newActionRequest(name string, s *myxi.Session, e Endpoint, payload json.RawMessage) actionRequest {
	req := actionRequest{
		Action:    name,
		SessionID: s.ID(),
		RemoteIP:  s.RemoteIP(),
		User:      s.User(),
		Payload:   payload,
	}
	if len(req.Payload) == 0 {
		req.Payload = json.RawMessage("{}")
	}
	for _, h := range e.ForwardHeaders {
		if v := s.Header(h); v != "" {
			if req.Headers == nil {
				req.Headers = make(map[string]string, len(e.ForwardHeaders))
			}
			req.Headers[h] = v
		}
	}
	return req
}

// answer is what the application answers an action (Authenticate
// included: only it reads User).
type answer struct {
	User   json.RawMessage `json:"user"`
	Events []event         `json:"events"`
	Error  string          `json:"error"`
}

type event struct {
	Event   string          `json:"event"`
	Payload json.RawMessage `json:"payload"`
}

func (a *answer) check() error {
	for i, ev := range a.Events {
		if ev.Event == "" {
			return fmt.Errorf("events[%d]: no event name", i)
		}
		if p := bytes.TrimSpace(ev.Payload); len(p) > 0 && p[0] != '{' && string(p) != "null" {
			return fmt.Errorf("events[%d] (%s): payload is not a JSON object", i, ev.Event)
		}
	}
	return nil
}

// send sends the answer's events to the client, with the action's tag.
func (a *answer) send(s *myxi.Session) {
	for _, ev := range a.Events {
		var payload any
		if p := bytes.TrimSpace(ev.Payload); len(p) > 0 && string(p) != "null" {
			payload = json.RawMessage(p)
		}
		if err := s.Send(ev.Event, payload); err != nil {
			return // the session is ending or its queue is full
		}
	}
}

// failure logs why a webhook failed and returns what the client sees.
func (c *Client) failure(s *myxi.Session, action, u string, err error) error {
	name := ErrActionFailed
	if errors.Is(err, errTimeout) {
		name = ErrActionTimeout
	}
	level := slog.LevelWarn
	if errors.Is(err, context.Canceled) {
		level = slog.LevelDebug // the session ended while waiting
	}
	c.log.Log(context.Background(), level, "webhook failed", "action", action, "url", redactURL(u), "session", s.ID(), "err", err)
	return &myxi.ClientError{Name: name, Details: map[string]any{"action": action}}
}

// Action returns the handler of a custom action forwarded to the
// application.
//
// Request, POSTed to e.URL:
//
//	{"action": "SayHello", "session_id": "9f86d081884c7d65", "remote_ip": "203.0.113.7",
//	 "user": "alice", "headers": {"Cookie": "..."}, "payload": {"name": "Bob"}}
//
// "user" is null for an anonymous session; "headers" holds the handshake
// headers named in e.ForwardHeaders that the client sent.
//
// Answer (2xx):
//
//	{"events": [{"event": "Hello", "payload": {"text": "Hello, Bob"}}], "error": "NotToday"}
//
// Each event is sent to the client with the action's tag, in order; then,
// when "error" is set, Error {"error": <error>}. Both are optional.
func (c *Client) Action(name string, e Endpoint) (myxi.ActionHandler, error) {
	if err := CheckURL(e.URL); err != nil {
		return nil, fmt.Errorf("webhook action %s: %w", name, err)
	}
	timeout := c.timeout(e.Timeout)
	return func(ctx context.Context, s *myxi.Session, payload json.RawMessage) error {
		var ans answer
		if err := c.post(ctx, e.URL, timeout, newActionRequest(name, s, e, payload), &ans); err != nil {
			return c.failure(s, name, e.URL, err)
		}
		if err := ans.check(); err != nil {
			return c.failure(s, name, e.URL, err)
		}
		ans.send(s)
		if ans.Error != "" {
			return &myxi.ClientError{Name: ans.Error}
		}
		return nil
	}, nil
}

// AuthAction returns the handler of an authentication action (usually
// named Authenticate) decided by the application.
//
// The request is that of Action, its payload the client's (such as
// {"session_token": "..."}). Answers (2xx):
//
//	{"user": "alice"}                    the session is now alice's
//	{"user": {"id": 7, "name": "alice"}} any JSON value but null is a user
//	{"error": "InvalidSessionToken"}     refused, with this error name
//
// An answer without "events" gets the reply Authenticated
// {"username": <user>} when it authenticates, and Error {"error": <error,
// default "AuthenticationFailed">} when it refuses; with "events", those
// are sent instead (and the Error of a refusal after them). HTTP 401 and
// 403 refuse with AuthenticationFailed. A refusal leaves the session as it
// was. When an authenticated session becomes another user, its
// subscriptions are checked again.
func (c *Client) AuthAction(name string, e Endpoint) (myxi.ActionHandler, error) {
	if err := CheckURL(e.URL); err != nil {
		return nil, fmt.Errorf("webhook authentication %s: %w", name, err)
	}
	timeout := c.timeout(e.Timeout)
	return func(ctx context.Context, s *myxi.Session, payload json.RawMessage) error {
		var ans answer
		err := c.post(ctx, e.URL, timeout, newActionRequest(name, s, e, payload), &ans)
		var se *statusError
		if errors.As(err, &se) && (se.code == http.StatusUnauthorized || se.code == http.StatusForbidden) {
			c.log.Debug("authentication refused", "session", s.ID(), "status", se.code)
			return &myxi.ClientError{Name: ErrAuthenticationFailed}
		}
		if err != nil {
			return c.failure(s, name, e.URL, err)
		}
		if err := ans.check(); err != nil {
			return c.failure(s, name, e.URL, err)
		}
		user, ok, err := decodeUser(ans.User)
		if err != nil || (ok && ans.Error != "") {
			if err == nil {
				err = errors.New(`answer has both "user" and "error"`)
			}
			return c.failure(s, name, e.URL, err)
		}
		if !ok {
			ans.send(s)
			if ans.Error == "" {
				ans.Error = ErrAuthenticationFailed
			}
			return &myxi.ClientError{Name: ans.Error}
		}
		wasAuthenticated := s.Authenticated()
		s.SetUser(user)
		if len(ans.Events) == 0 {
			ans.Events = []event{{Event: "Authenticated"}}
			if p, err := json.Marshal(map[string]any{"username": user}); err == nil {
				ans.Events[0].Payload = p
			}
		}
		ans.send(s)
		if wasAuthenticated {
			s.Reauthorize(ctx)
		}
		return nil
	}, nil
}

// decodeUser turns the answer's "user" into the session's user: a JSON
// string becomes a Go string, numbers stay exact (json.Number), objects
// become maps. ok is false for a missing or null user.
func decodeUser(raw json.RawMessage) (user any, ok bool, err error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&user); err != nil {
		return nil, false, fmt.Errorf("user: %w", err)
	}
	return user, true, nil
}

// redactURL drops credentials and the query from a URL for logs.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	p.User = nil
	p.RawQuery = ""
	return p.String()
}
