// Package httpapi is Myxi's HTTP publish API, for applications that push
// events without speaking AMQP:
//
//	POST /api/publish        {"exchange": "widgets", "routing_key": "42", "event": "WidgetQtyChanged", "payload": {"quantity": 5}}
//	POST /api/publish/batch  {"events": [{...}, {...}]}
//
// Both need "Authorization: Bearer <API key>"; a missing or wrong key is
// answered 401. Each answers only once the broker has taken the events
// (RabbitMQ confirmed them): 200 {"published": n}. A batch is checked as a
// whole before anything is published (one bad event publishes none), then
// published in order; when the broker fails midway the answer is 503 with
// "published" counting the events that did go out, the first ones.
//
// Events follow the body rules every node applies at its broker edge
// (PROTOCOL.md), so an accepted event is never dropped there: the body is
// valid UTF-8, "event" a non-empty string, "payload" an object (absent or
// null: {}), and the event's frame at most MaxEventBytes.
//
// Errors are JSON {"error": Name, "message": "..."}: 400 InvalidJSON (the
// body is not JSON, or not valid UTF-8), InvalidExchange,
// InvalidRoutingKey, InvalidEvent, InvalidPayload or TooManyEvents; 401
// Unauthorized; 413 BodyTooLarge or EventTooLarge; 503 BrokerUnavailable
// (retry later); 500 PublishFailed (the broker refused, see the server
// log). Both publish failures carry "published".
package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/internal/protocol"
)

// Paths of the API.
const (
	PathPublish      = "/api/publish"
	PathPublishBatch = "/api/publish/batch"
)

// Error names of the API's answers.
const (
	ErrInvalidJSON       = "InvalidJSON"
	ErrInvalidExchange   = "InvalidExchange"
	ErrInvalidRoutingKey = "InvalidRoutingKey"
	ErrInvalidEvent      = "InvalidEvent"
	ErrInvalidPayload    = "InvalidPayload"
	ErrTooManyEvents     = "TooManyEvents"
	ErrUnauthorized      = "Unauthorized"
	ErrBodyTooLarge      = "BodyTooLarge"
	ErrEventTooLarge     = "EventTooLarge"
	ErrBrokerUnavailable = "BrokerUnavailable"
	ErrPublishFailed     = "PublishFailed"
)

// Config configures a Handler. Zero values are the documented defaults.
type Config struct {
	// Pusher publishes the events: a *myxi.Server, or a
	// *rabbitmq.Publisher.
	Pusher myxi.Pusher
	// Keys are the accepted API keys (several, to rotate them). At least
	// one is required.
	Keys []string
	// Exchanges, when not nil, are the only exchanges events may be
	// published to (a *myxi.Server refuses the others anyway); others are
	// answered 400 InvalidExchange. Nil allows every valid name (for a
	// *rabbitmq.Publisher).
	Exchanges []string
	// MaxBatch is the most events one batch may hold. Default 1000.
	MaxBatch int
	// MaxBodyBytes bounds a request body (a batch holds several events).
	// Default 1 MiB.
	MaxBodyBytes int64
	// MaxEventBytes bounds one event: the frame every node would send for
	// it, as Limits.MaxEventBytes does at the nodes' broker edge (a node
	// drops a larger event). A larger event is answered 413 EventTooLarge.
	// Default the Pusher's MaxEventBytes() when it has that method (a
	// *myxi.Server, a *rabbitmq.Publisher), else 256 KiB; it cannot be
	// above the Pusher's.
	MaxEventBytes int64
	// PublishTimeout bounds the publishing of one event. Default 10s.
	PublishTimeout time.Duration
	// Logger receives publish failures. Default slog.Default().
	Logger *slog.Logger
}

// Handler serves the publish API. It is an http.Handler answering the
// paths PathPublish and PathPublishBatch (and 404 for the others under
// /api/); mount it at "/api/".
type Handler struct {
	cfg       Config
	keys      [][sha256.Size]byte
	exchanges map[string]bool
	mux       *http.ServeMux
	log       *slog.Logger
}

// New checks cfg and returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Pusher == nil {
		return nil, errors.New("httpapi: no Pusher")
	}
	if len(cfg.Keys) == 0 {
		return nil, errors.New("httpapi: no API key: the publish API needs at least one")
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1000
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.MaxEventBytes < 0 {
		return nil, fmt.Errorf("httpapi: MaxEventBytes %d: cannot be negative", cfg.MaxEventBytes)
	}
	if limited, ok := cfg.Pusher.(interface{ MaxEventBytes() int64 }); ok {
		limit := limited.MaxEventBytes()
		if cfg.MaxEventBytes > limit {
			return nil, fmt.Errorf("httpapi: MaxEventBytes (%d) is above the Pusher's maximum event size (%d, Limits.MaxEventBytes): "+
				"the nodes would drop the events between the two", cfg.MaxEventBytes, limit)
		}
		if cfg.MaxEventBytes == 0 {
			cfg.MaxEventBytes = limit
		}
	}
	if cfg.MaxEventBytes == 0 {
		cfg.MaxEventBytes = protocol.DefaultMaxEventBytes
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Handler{cfg: cfg, log: cfg.Logger.With("component", "httpapi")}
	for i, k := range cfg.Keys {
		if strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("httpapi: API key %d is empty", i)
		}
		h.keys = append(h.keys, sha256.Sum256([]byte(k)))
	}
	if cfg.Exchanges != nil {
		h.exchanges = make(map[string]bool, len(cfg.Exchanges))
		for _, name := range cfg.Exchanges {
			h.exchanges[name] = true
		}
	}
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("POST "+PathPublish, h.publish)
	h.mux.HandleFunc("POST "+PathPublishBatch, h.publishBatch)
	return h, nil
}

// ServeHTTP authenticates the request, then routes it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="myxi"`)
		writeError(w, http.StatusUnauthorized, ErrUnauthorized, `missing or wrong API key: send "Authorization: Bearer <key>"`)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// authorized compares the presented key with every configured key in
// constant time (hashed first, so that lengths do not leak either).
func (h *Handler) authorized(r *http.Request) bool {
	scheme, key, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(key)))
	match := 0
	for i := range h.keys {
		match |= subtle.ConstantTimeCompare(sum[:], h.keys[i][:])
	}
	return match == 1
}

// Event is one event to publish, as the API takes it. RoutingKey is a
// JSON string or number (or null or absent: the empty key, the whole
// exchange).
type Event struct {
	Exchange   string          `json:"exchange"`
	RoutingKey json.RawMessage `json:"routing_key"`
	Event      string          `json:"event"`
	Payload    json.RawMessage `json:"payload"`
}

// published is an event ready to publish.
type published struct {
	exchange, routingKey, event string
	payload                     json.RawMessage
}

// apiError is an answer other than 200.
type apiError struct {
	status  int
	name    string
	message string
}

func (e *apiError) Error() string { return e.message }

func badRequest(name, format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, name, fmt.Sprintf(format, args...)}
}

// check validates one event; where prefixes the messages (such as
// "events[3].").
func (h *Handler) check(ev Event, where string) (published, *apiError) {
	if !protocol.ValidExchangeName(ev.Exchange) {
		return published{}, badRequest(ErrInvalidExchange, "%sexchange: %q is not a valid exchange name", where, ev.Exchange)
	}
	if h.exchanges != nil && !h.exchanges[ev.Exchange] {
		return published{}, badRequest(ErrInvalidExchange, "%sexchange: %q is not an exchange of this server", where, ev.Exchange)
	}
	key, err := protocol.RoutingKey(ev.RoutingKey)
	if err != nil {
		return published{}, badRequest(ErrInvalidRoutingKey, "%srouting_key: must be a string, a number or null", where)
	}
	if len(key) > protocol.MaxRoutingKeyBytes {
		return published{}, badRequest(ErrInvalidRoutingKey, "%srouting_key: longer than %d bytes", where, protocol.MaxRoutingKeyBytes)
	}
	if ev.Event == "" {
		return published{}, badRequest(ErrInvalidEvent, "%sevent: a non-empty string is required", where)
	}
	payload := json.RawMessage("{}")
	if p := bytes.TrimSpace(ev.Payload); len(p) > 0 && string(p) != "null" {
		if p[0] != '{' {
			return published{}, badRequest(ErrInvalidPayload, "%spayload: must be a JSON object (or null), not %s", where, kind(p[0]))
		}
		payload = json.RawMessage(p)
	}
	body, err := protocol.PushBody(ev.Event, payload)
	if err != nil { // unreachable: the body was valid UTF-8 and the payload an object
		return published{}, badRequest(ErrInvalidPayload, "%spayload: %v", where, err)
	}
	if err := protocol.CheckEventSize(ev.Exchange, key, body, int(h.cfg.MaxEventBytes)); err != nil {
		return published{}, &apiError{http.StatusRequestEntityTooLarge, ErrEventTooLarge, fmt.Sprintf("%sevent: %s", where, eventTooLarge(err))}
	}
	return published{ev.Exchange, key, ev.Event, payload}, nil
}

// kind names the JSON type a value starting with c has.
func kind(c byte) string {
	switch c {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}

func eventTooLarge(err error) string {
	var bad *protocol.BadBodyError
	if errors.As(err, &bad) {
		return bad.Detail
	}
	return err.Error()
}

func (h *Handler) publish(w http.ResponseWriter, r *http.Request) {
	var ev Event
	if aerr := h.decode(w, r, &ev); aerr != nil {
		writeError(w, aerr.status, aerr.name, aerr.message)
		return
	}
	p, aerr := h.check(ev, "")
	if aerr != nil {
		writeError(w, aerr.status, aerr.name, aerr.message)
		return
	}
	if err := h.push(r.Context(), p); err != nil {
		writePublishFailure(w, err, 0, "the event was not published")
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"published": 1})
}

func (h *Handler) publishBatch(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Events []Event `json:"events"`
	}
	if aerr := h.decode(w, r, &body); aerr != nil {
		writeError(w, aerr.status, aerr.name, aerr.message)
		return
	}
	if len(body.Events) > h.cfg.MaxBatch {
		writeError(w, http.StatusBadRequest, ErrTooManyEvents, fmt.Sprintf("events: %d events, at most %d per batch", len(body.Events), h.cfg.MaxBatch))
		return
	}
	batch := make([]published, 0, len(body.Events))
	for i, ev := range body.Events {
		p, aerr := h.check(ev, fmt.Sprintf("events[%d].", i))
		if aerr != nil {
			writeError(w, aerr.status, aerr.name, aerr.message)
			return
		}
		batch = append(batch, p)
	}
	// In order, one after the other: events of one routing key arrive in
	// the order the application listed them.
	for i, p := range batch {
		if err := h.push(r.Context(), p); err != nil {
			writePublishFailure(w, err, i, fmt.Sprintf("events[%d] was not published; the %d before it were", i, i))
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]int{"published": len(batch)})
}

func (h *Handler) push(ctx context.Context, p published) error {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	err := h.cfg.Pusher.Push(ctx, p.exchange, p.routingKey, p.event, p.payload)
	if err != nil {
		h.log.Warn("publish failed", "exchange", p.exchange, "routing_key", p.routingKey, "event", p.event, "err", err)
	}
	return err
}

// writePublishFailure answers a failed publish: 503 when the broker is
// unreachable or too slow (retry later), 500 otherwise (such as RabbitMQ
// refusing the exchange's declaration); the details are in the log.
func writePublishFailure(w http.ResponseWriter, err error, published int, message string) {
	status, name := http.StatusInternalServerError, ErrPublishFailed
	var bad *protocol.BadBodyError
	if errors.As(err, &bad) && bad.Reason == protocol.DropTooLarge {
		// The Pusher's limit is below what New was told (a Pusher
		// without MaxEventBytes()).
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"error": ErrEventTooLarge, "message": message + ": " + bad.Detail, "published": published})
		return
	}
	if errors.Is(err, broker.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		status, name = http.StatusServiceUnavailable, ErrBrokerUnavailable
		message += "; the broker is unavailable, retry later"
	}
	writeJSON(w, status, map[string]any{"error": name, "message": message, "published": published})
}

// decode reads a JSON request body into v, refusing unknown fields (a
// misspelt "routingKey" would otherwise publish to the empty key) and
// invalid UTF-8 (encoding/json would replace it in strings and keep it in
// a raw payload, which every node then drops). The Content-Type is not
// checked: `curl -d` sends a form type by default.
func (h *Handler) decode(w http.ResponseWriter, r *http.Request, v any) *apiError {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return &apiError{http.StatusRequestEntityTooLarge, ErrBodyTooLarge, fmt.Sprintf("body larger than %d bytes", h.cfg.MaxBodyBytes)}
		}
		return badRequest(ErrInvalidJSON, "body: cannot be read: %v", err)
	}
	if !utf8.Valid(data) {
		at := 0
		for rest := data; len(rest) > 0; {
			c, size := utf8.DecodeRune(rest)
			if c == utf8.RuneError && size <= 1 {
				break
			}
			at += size
			rest = rest[size:]
		}
		return badRequest(ErrInvalidJSON, "body: not valid UTF-8 (at byte %d); JSON text must be UTF-8", at)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest(ErrInvalidJSON, "body: %s", jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest(ErrInvalidJSON, "body: more than one JSON value")
	}
	return nil
}

// jsonProblem phrases a decoding error for the API's user.
func jsonProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		return fmt.Sprintf("%s: must be a JSON %s, not %s", typeErr.Field, expectedType(typeErr), typeErr.Value)
	}
	if errors.Is(err, io.EOF) {
		return "empty; want a JSON object"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

func expectedType(e *json.UnmarshalTypeError) string {
	switch e.Type.Kind().String() {
	case "string":
		return "string"
	case "slice":
		return "array"
	case "struct", "map":
		return "object"
	}
	return e.Type.String()
}

func writeError(w http.ResponseWriter, status int, name, message string) {
	writeJSON(w, status, map[string]string{"error": name, "message": message})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
