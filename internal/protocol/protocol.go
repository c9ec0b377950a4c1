// Package protocol holds the Myxi wire format (PROTOCOL.md, version 1): the
// action frames clients send, the event frames the server sends, the error
// names both sides rely on, and the rules for routing keys. It does no I/O,
// so every rule here can be unit-tested and fuzzed on its own.
package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Error names sent in the "error" field of an Error event.
const (
	ErrInvalidJSON          = "InvalidJSON"
	ErrInvalidAction        = "InvalidAction"
	ErrAuthRequired         = "AuthRequired"
	ErrInternalError        = "InternalError"
	ErrInvalidPayload       = "InvalidPayload"
	ErrInvalidRoutingKey    = "InvalidRoutingKey"
	ErrInvalidExchange      = "InvalidExchange"
	ErrSubscriptionDenied   = "SubscriptionDenied"
	ErrAlreadySubscribed    = "AlreadySubscribed"
	ErrTooManySubscriptions = "TooManySubscriptions"
	ErrBrokerUnavailable    = "BrokerUnavailable"
	ErrRateLimited          = "RateLimited"
)

// Event names the server itself sends.
const (
	EventWelcome           = "Welcome"
	EventError             = "Error"
	EventInternalError     = "InternalError"
	EventSubscribed        = "Subscribed"
	EventUnsubscribed      = "Unsubscribed"
	EventYourSubscriptions = "YourSubscriptions"
	EventPong              = "Pong"
)

// Built-in action names.
const (
	ActionSubscribe         = "Subscribe"
	ActionUnsubscribe       = "Unsubscribe"
	ActionListSubscriptions = "ListSubscriptions"
	ActionPing              = "Ping"
)

// MaxRoutingKeyBytes is the longest routing key AMQP 0-9-1 allows (a
// short string), so the longest a client may subscribe to.
const MaxRoutingKeyBytes = 255

// MaxExchangeNameBytes is the longest exchange name AMQP 0-9-1 allows.
const MaxExchangeNameBytes = 255

// Null is the JSON literal null, the tag of untagged events.
var Null = json.RawMessage("null")

var emptyObject = json.RawMessage("{}")

// Action is one decoded client frame.
type Action struct {
	Name    string
	Tag     json.RawMessage // raw JSON, Null when absent
	Payload json.RawMessage // raw JSON object, "{}" when absent or null
}

// DecodeError says why a frame is not a valid action. Name is the error
// name to send; Tag is the frame's tag when it could be read, so that even
// the error reply carries it.
type DecodeError struct {
	Name    string
	Tag     json.RawMessage
	Message string // for people reading logs: the field and the reason
}

func (e *DecodeError) Error() string { return "invalid action frame: " + e.Name }

type wireAction struct {
	Action  json.RawMessage `json:"action"`
	Tag     json.RawMessage `json:"tag"`
	Payload json.RawMessage `json:"payload"`
}

// DecodeAction parses a client frame. A frame that is not a JSON object is
// ErrInvalidJSON; an object without a string "action" is ErrInvalidAction;
// a payload that is present but not an object (nor null) is
// ErrInvalidPayload.
func DecodeAction(frame []byte) (Action, error) {
	trimmed := bytes.TrimSpace(frame)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return Action{}, &DecodeError{Name: ErrInvalidJSON, Tag: Null, Message: "frame: must be a JSON object"}
	}
	var w wireAction
	if err := json.Unmarshal(trimmed, &w); err != nil {
		return Action{}, &DecodeError{Name: ErrInvalidJSON, Tag: Null, Message: "frame: not valid JSON"}
	}
	tag := Null
	if len(w.Tag) > 0 {
		tag = w.Tag
	}
	name, ok := String(w.Action)
	if !ok || name == "" {
		return Action{}, &DecodeError{Name: ErrInvalidAction, Tag: tag, Message: "action: must be a non-empty string"}
	}
	payload := emptyObject
	switch {
	case len(w.Payload) == 0 || isNull(w.Payload):
	case w.Payload[0] == '{':
		payload = w.Payload
	default:
		return Action{Name: name, Tag: tag}, &DecodeError{Name: ErrInvalidPayload, Tag: tag, Message: "payload: must be an object"}
	}
	return Action{Name: name, Tag: tag, Payload: payload}, nil
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// Event is one server frame before encoding.
type Event struct {
	Event   string          `json:"event"`
	Tag     json.RawMessage `json:"tag"`
	Payload any             `json:"payload"`
}

// ErrInvalidUTF8 is returned by EncodeEvent for an event that would not
// be valid UTF-8: every text frame the server writes must be (RFC 6455
// section 8.1 tells a browser to fail the connection otherwise).
var ErrInvalidUTF8 = errors.New("not valid UTF-8")

// EncodeEvent renders an event compactly (no raw newlines, as batched
// frames require). A nil tag is sent as null and a nil payload as {}.
// encoding/json copies a json.RawMessage (a tag, raw JSON given to
// Session.Send, a webhook's reply) and a Marshaler's output without
// checking their UTF-8, so the result is checked: an event that is not
// valid UTF-8 is refused with ErrInvalidUTF8.
func EncodeEvent(event string, tag json.RawMessage, payload any) ([]byte, error) {
	if len(tag) == 0 {
		tag = Null
	}
	if payload == nil {
		payload = emptyObject
	}
	out, err := json.Marshal(Event{Event: event, Tag: tag, Payload: payload})
	if err != nil {
		return nil, err
	}
	if !utf8.Valid(out) {
		return nil, fmt.Errorf("event %q: tag or payload: %w", event, ErrInvalidUTF8)
	}
	return out, nil
}

// ErrorPayload builds the payload of an Error event: {"error": name} plus
// the given details.
func ErrorPayload(name string, details map[string]any) map[string]any {
	p := make(map[string]any, len(details)+1)
	for k, v := range details {
		p[k] = v
	}
	p["error"] = name
	return p
}

// ErrBadRoutingKey means a routing key is neither a string, a number, a
// boolean nor null.
var ErrBadRoutingKey = errors.New("routing key must be a string, a number or null")

// RoutingKey turns a routing key as a client sent it into the string used
// inside the server and on the broker: a string is itself, a number or
// boolean is its JSON text, and a missing or null key is "" (the exchange
// as a whole, as in myxi 1.x).
func RoutingKey(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || isNull(raw) {
		return "", nil
	}
	switch raw[0] {
	case '"':
		s, ok := String(raw)
		if !ok {
			return "", ErrBadRoutingKey
		}
		return s, nil
	case '{', '[':
		return "", ErrBadRoutingKey
	case 't', 'f':
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return "", ErrBadRoutingKey
		}
		return strconv.FormatBool(b), nil
	default:
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return "", ErrBadRoutingKey
		}
		return n.String(), nil
	}
}

// String decodes raw, one JSON value with no whitespace around it (as
// encoding/json leaves a json.RawMessage), as a string; ok is false when
// it is not a string. A string without escapes or control characters,
// which is what clients send for names and keys, is taken as it is,
// without encoding/json's reflection.
func String(raw json.RawMessage) (s string, ok bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	if raw[len(raw)-1] == '"' && plain(inner) {
		return string(inner), true
	}
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// plain reports whether b, a JSON string's contents, needs no decoding:
// valid UTF-8 with no escape, quote or control character.
func plain(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return utf8.Valid(b)
}

// EchoKey is the routing key as it goes back to the client in a reply:
// exactly as the client sent it, null when it sent none.
func EchoKey(raw json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(raw)) == 0 {
		return Null
	}
	return raw
}

// ValidExchangeName reports whether name can be a Myxi exchange: an AMQP
// exchange name (1 to 255 bytes of letters, digits, '-', '_', '.' and
// ':'; the "amq." prefix is reserved by RabbitMQ) that contains no "::"
// and does not end with ':', so that a client's subscription key
// "exchange::routing key" names one subscription only.
func ValidExchangeName(name string) bool {
	if name == "" || len(name) > MaxExchangeNameBytes {
		return false
	}
	if strings.HasPrefix(name, "amq.") || strings.Contains(name, "::") || strings.HasSuffix(name, ":") {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}
