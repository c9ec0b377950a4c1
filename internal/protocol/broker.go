package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// DefaultMaxEventBytes is the default bound on one application event: the
// frame sent to clients, "mq" included. It stays well under the default
// send queue (1 MiB) so that one event never makes a client look slow.
const DefaultMaxEventBytes = 256 << 10

// ErrBadBrokerBody matches (with errors.Is) every *BadBodyError: a
// message from the broker that breaks the body rules of PROTOCOL.md is
// dropped, never forwarded.
var ErrBadBrokerBody = errors.New("invalid broker message body")

// Reasons a broker message is dropped, used as a metric label.
const (
	DropInvalidUTF8 = "invalid_utf8" // the body is not valid UTF-8
	DropNotObject   = "not_object"   // the body is not a JSON object
	DropBadEvent    = "bad_event"    // "event" missing, empty or not a string
	DropBadPayload  = "bad_payload"  // "payload" an array or a scalar
	DropTooLarge    = "too_large"    // the body or its frame over the maximum event size
)

// DropReasons lists every Drop* reason, to initialize metric labels.
var DropReasons = []string{DropInvalidUTF8, DropNotObject, DropBadEvent, DropBadPayload, DropTooLarge}

// BadBodyError says why a broker message is dropped.
type BadBodyError struct {
	Reason string // one of the Drop* constants
	Detail string // a sentence for the log
}

func (e *BadBodyError) Error() string { return "broker message dropped: " + e.Detail }

// Is makes every BadBodyError match ErrBadBrokerBody.
func (e *BadBodyError) Is(target error) bool { return target == ErrBadBrokerBody }

func badBody(reason, format string, args ...any) error {
	return &BadBodyError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// tooLarge is the error for an event over maxBytes.
func tooLarge(what string, n, maxBytes int) error {
	return badBody(DropTooLarge, "%s is %d bytes, over the maximum event size of %d bytes", what, n, maxBytes)
}

// PushBody is the body an application publishes to the broker, exactly as
// myxi 1.x's push_event did: {"event": name, "payload": {...}}. It refuses
// what every node would drop: an empty event name, a payload that does not
// encode to a JSON object (nil and null become {}), and output that is not
// valid UTF-8 (encoding/json copies a json.RawMessage or a Marshaler's
// bytes without checking them).
func PushBody(event string, payload any) ([]byte, error) {
	if event == "" {
		return nil, errors.New("push: empty event name")
	}
	if !utf8.ValidString(event) {
		return nil, fmt.Errorf("push: event name %q is not valid UTF-8", event)
	}
	p := []byte(emptyObject)
	if payload != nil {
		var err error
		if p, err = json.Marshal(payload); err != nil {
			return nil, fmt.Errorf("push: encode payload of %s: %w", event, err)
		}
		switch {
		case isNull(p):
			p = emptyObject
		case p[0] != '{':
			return nil, fmt.Errorf("push: payload of %s must encode to a JSON object, not %s", event, abbreviate(p))
		case !utf8.Valid(p):
			return nil, fmt.Errorf("push: payload of %s is not valid UTF-8", event)
		}
	}
	name, _ := json.Marshal(event) // a valid UTF-8 string always marshals
	body := make([]byte, 0, len(`{"event":,"payload":}`)+len(name)+len(p))
	body = append(body, `{"event":`...)
	body = append(body, name...)
	body = append(body, `,"payload":`...)
	body = append(body, p...)
	return append(body, '}'), nil
}

// CheckEventSize reports an error when body, published to exchange and
// routingKey, would be dropped by a node whose maximum event size is
// maxBytes: when the body or the frame BrokerEvent makes of it is larger.
// It encodes the frame only when the body is near the limit; maxBytes <= 0
// means no bound.
func CheckEventSize(exchange, routingKey string, body []byte, maxBytes int) error {
	if maxBytes <= 0 {
		return nil
	}
	if len(body) > maxBytes {
		return tooLarge("the body", len(body), maxBytes)
	}
	if len(body)+frameOverhead(exchange, routingKey) <= maxBytes {
		return nil
	}
	_, err := BrokerEvent(exchange, routingKey, body, maxBytes)
	return err
}

// CheckRecordSize is CheckEventSize for an event appended to a history:
// its frame also carries a position ("o" and "ep"), counted at its
// largest (an offset of 16 digits, an epoch of 64 bytes), so that no node
// drops a record that was accepted.
func CheckRecordSize(exchange, routingKey string, body []byte, maxBytes int) error {
	if maxBytes <= 0 {
		return nil
	}
	if len(body) > maxBytes {
		return tooLarge("the body", len(body), maxBytes)
	}
	if len(body)+frameOverhead(exchange, routingKey)+maxPositionBytes <= maxBytes {
		return nil
	}
	_, err := RecordEvent(exchange, routingKey, body, maxBytes, largestPosition)
	return err
}

// largestPosition is the longest position a record's frame can carry.
var largestPosition = Position{Offset: 1<<53 - 1, Epoch: strings.Repeat("x", 64)}

// maxPositionBytes bounds what a position adds to a frame: `,"o":` and
// 16 digits (below 2^53), `,"ep":""` and 64 bytes that need no escaping
// (broker.NewEpoch's alphabet; a longer or odd epoch is never written).
const maxPositionBytes = len(`,"o":,"ep":""`) + 16 + 64

// frameOverhead bounds what BrokerEvent adds to a body: a null tag, an
// empty payload, and "mq" with both names escaped (at most 6 bytes per
// byte, as in \u001f).
func frameOverhead(exchange, routingKey string) int {
	return len(`,"tag":null,"payload":{},"mq":{"e":"","rk":""}`) + 6*(len(exchange)+len(routingKey))
}

// BrokerEvent turns a broker message body into the frame sent to every
// subscriber: the body's keys kept (compacted, so the frame has no raw
// newline), "tag" defaulting to null, "payload" to {}, and "mq" always set
// by the server to {"e": exchange, "rk": routingKey}.
//
// It enforces PROTOCOL.md's body rules, returning a *BadBodyError: the
// body must be valid UTF-8 and a JSON object with a non-empty string
// "event" and a "payload" that is an object, null or absent; the body and
// the frame must be at most maxBytes long (maxBytes <= 0: no bound). So
// every frame it returns is valid UTF-8.
func BrokerEvent(exchange, routingKey string, body []byte, maxBytes int) ([]byte, error) {
	return brokerEvent(exchange, routingKey, body, maxBytes, nil)
}

// Position is a recorded event's place in its exchange's history.
type Position struct {
	Offset uint64
	Epoch  string
}

// RecordEvent is BrokerEvent for a recorded event: "mq" also carries its
// position, {"e", "rk", "o", "ep"}.
func RecordEvent(exchange, routingKey string, body []byte, maxBytes int, pos Position) ([]byte, error) {
	return brokerEvent(exchange, routingKey, body, maxBytes, &pos)
}

func brokerEvent(exchange, routingKey string, body []byte, maxBytes int, pos *Position) ([]byte, error) {
	if maxBytes > 0 && len(body) > maxBytes {
		return nil, tooLarge("the body", len(body), maxBytes)
	}
	// encoding/json accepts invalid UTF-8 inside strings and keeps it in a
	// RawMessage, so it is checked here, once for every subscriber.
	if !utf8.Valid(body) {
		return nil, badBody(DropInvalidUTF8, "the body is not valid UTF-8")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return nil, badBody(DropNotObject, "the body is not a JSON object: %s", abbreviate(body))
	}
	rawEvent := fields["event"]
	if len(rawEvent) < 3 || rawEvent[0] != '"' { // `""` is the empty name
		return nil, badBody(DropBadEvent, `"event" must be a non-empty string, not %s`, orAbsent(rawEvent))
	}
	payload := fields["payload"]
	if len(payload) > 0 && !isNull(payload) && payload[0] != '{' {
		return nil, badBody(DropBadPayload, `"payload" must be a JSON object (or null), not %s`, abbreviate(payload))
	}
	delete(fields, "mq")

	var buf bytes.Buffer
	buf.Grow(len(body) + len(exchange) + len(routingKey) + 48)
	buf.WriteString(`{"event":`)
	buf.Write(rawEvent)
	buf.WriteString(`,"tag":`)
	writeCompact(&buf, fields["tag"], Null)
	buf.WriteString(`,"payload":`)
	writeCompact(&buf, payload, emptyObject)
	buf.WriteString(`,"mq":{"e":`)
	writeString(&buf, exchange)
	buf.WriteString(`,"rk":`)
	writeString(&buf, routingKey)
	if pos != nil {
		buf.WriteString(`,"o":`)
		buf.WriteString(strconv.FormatUint(pos.Offset, 10))
		buf.WriteString(`,"ep":`)
		writeString(&buf, pos.Epoch)
	}
	buf.WriteByte('}')

	extra := make([]string, 0, len(fields))
	for k := range fields {
		if !reservedKey(k) {
			extra = append(extra, k)
		}
	}
	slices.Sort(extra)
	for _, k := range extra {
		buf.WriteByte(',')
		writeString(&buf, k)
		buf.WriteByte(':')
		writeCompact(&buf, fields[k], Null)
	}
	buf.WriteByte('}')
	if maxBytes > 0 && buf.Len() > maxBytes {
		return nil, tooLarge("the frame", buf.Len(), maxBytes)
	}
	return buf.Bytes(), nil
}

func writeCompact(buf *bytes.Buffer, raw json.RawMessage, fallback json.RawMessage) {
	if len(raw) == 0 || isNull(raw) && fallback[0] == '{' {
		buf.Write(fallback)
		return
	}
	if err := json.Compact(buf, raw); err != nil {
		// Unreachable: raw came out of a successful json.Unmarshal.
		buf.Write(fallback)
	}
}

// writeString writes s as a JSON string; invalid UTF-8 (a routing key
// from AMQP may hold any bytes) becomes U+FFFD.
func writeString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // a string always marshals
	buf.Write(b)
}

func orAbsent(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "absent"
	}
	return abbreviate(raw)
}

// abbreviate shortens raw JSON for an error message.
func abbreviate(raw []byte) string {
	const limit = 40
	if len(raw) <= limit {
		return string(raw)
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(raw[cut]) {
		cut--
	}
	return string(raw[:cut]) + "..."
}

// reservedKey reports whether a body's key is, or differs only in case
// from, a key the server writes itself: Go's encoding/json matches struct
// fields without regard to case, so a "pAYlOAd" or an "Mq" passed through
// could override the real one in a Go client.
func reservedKey(k string) bool {
	for _, r := range [...]string{"event", "tag", "payload", "mq"} {
		if strings.EqualFold(k, r) {
			return true
		}
	}
	return false
}
