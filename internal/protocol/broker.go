package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// ErrBadBrokerBody means a message from the broker is not a JSON object
// with a string "event"; such a message is dropped, never forwarded.
var ErrBadBrokerBody = errors.New(`broker message is not a JSON object with a string "event"`)

// PushBody is the body an application publishes to the broker, exactly as
// myxi 1.x's push_event did: {"event": name, "payload": {...}}.
func PushBody(event string, payload any) ([]byte, error) {
	if event == "" {
		return nil, errors.New("push: empty event name")
	}
	if payload == nil {
		payload = emptyObject
	}
	body, err := json.Marshal(struct {
		Event   string `json:"event"`
		Payload any    `json:"payload"`
	}{event, payload})
	if err != nil {
		return nil, fmt.Errorf("push: encode payload of %s: %w", event, err)
	}
	return body, nil
}

// BrokerEvent turns a broker message body into the frame sent to every
// subscriber: the body's keys kept (compacted, so the frame has no raw
// newline), "tag" defaulting to null, "payload" to {}, and "mq" always set
// by the server to {"e": exchange, "rk": routingKey}.
func BrokerEvent(exchange, routingKey string, body []byte) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return nil, ErrBadBrokerBody
	}
	rawEvent, ok := fields["event"]
	if !ok || len(rawEvent) == 0 || rawEvent[0] != '"' {
		return nil, ErrBadBrokerBody
	}
	delete(fields, "mq")

	var buf bytes.Buffer
	buf.Grow(len(body) + len(exchange) + len(routingKey) + 48)
	buf.WriteString(`{"event":`)
	buf.Write(rawEvent)
	buf.WriteString(`,"tag":`)
	writeCompact(&buf, fields["tag"], Null)
	buf.WriteString(`,"payload":`)
	writeCompact(&buf, fields["payload"], emptyObject)
	buf.WriteString(`,"mq":{"e":`)
	writeString(&buf, exchange)
	buf.WriteString(`,"rk":`)
	writeString(&buf, routingKey)
	buf.WriteByte('}')

	extra := make([]string, 0, len(fields))
	for k := range fields {
		switch k {
		case "event", "tag", "payload":
		default:
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
	return buf.Bytes(), nil
}

func writeCompact(buf *bytes.Buffer, raw json.RawMessage, fallback json.RawMessage) {
	if len(raw) == 0 {
		buf.Write(fallback)
		return
	}
	if err := json.Compact(buf, raw); err != nil {
		// Unreachable: raw came out of a successful json.Unmarshal.
		buf.Write(fallback)
	}
}

func writeString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // a string always marshals
	buf.Write(b)
}
