package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeAction: any frame decodes to an action or a DecodeError with
// a known name and a tag that is valid JSON; never a panic.
func FuzzDecodeAction(f *testing.F) {
	for _, seed := range []string{
		`{"action":"Subscribe","tag":"t1","payload":{"exchange":"widgets","routing_key":"42"}}`,
		`{"action":"Unsubscribe","payload":{}}`, `{"action":5}`, `[]`, `{"payload":[]}`, `{"action":"x","tag":{"a":[1,{"b":null}]}}`,
		"\x00", `{"action":"\ud800"}`, `{"action":"A","action":"B"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		a, err := DecodeAction(frame)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error of type %T", err)
			}
			switch de.Name {
			case ErrInvalidJSON, ErrInvalidAction, ErrInvalidPayload:
			default:
				t.Fatalf("unknown error name %q", de.Name)
			}
			if !json.Valid(de.Tag) {
				t.Fatalf("tag %q is not JSON", de.Tag)
			}
			return
		}
		if a.Name == "" || !json.Valid(a.Tag) || !json.Valid(a.Payload) || a.Payload[0] != '{' {
			t.Fatalf("bad action %+v", a)
		}
		// What the server sends back must be one line of valid JSON and
		// valid UTF-8, or refused.
		out, err := EncodeEvent("Echo", a.Tag, a.Payload)
		if err != nil {
			if !errors.Is(err, ErrInvalidUTF8) || utf8.Valid(frame) {
				t.Fatalf("reply refused: %v", err)
			}
			return
		}
		if !json.Valid(out) || bytes.ContainsRune(out, '\n') || !utf8.Valid(out) {
			t.Fatalf("reply %q", out)
		}
	})
}

// FuzzSubscriptionPayload: routing keys and broker bodies from anywhere
// never panic, and what is forwarded is one line of valid JSON and valid
// UTF-8, within the size bound, with a non-empty string event, an object
// payload and the server's mq.
func FuzzSubscriptionPayload(f *testing.F) {
	f.Add([]byte(`"42"`), []byte(`{"event":"E","payload":{"q":1}}`))
	f.Add([]byte(`42.0e1`), []byte("{\"event\":\"E\",\n\"mq\":1}"))
	f.Add([]byte(`null`), []byte(`{"event":"E","tag":[1],"x":"\u2028"}`))
	f.Add([]byte(`{"a":1}`), []byte(`[1]`))
	f.Add([]byte(`"k"`), []byte("{\"event\":\"E\",\"payload\":{\"s\":\"\xfe\"}}"))
	f.Add([]byte(`"k"`), []byte(`{"event":"","payload":null}`))
	f.Add([]byte(`"k"`), []byte(`{"event":"E","payload":[1]}`))
	f.Fuzz(func(t *testing.T, rawKey, body []byte) {
		key, err := RoutingKey(rawKey)
		if err != nil {
			return
		}
		const maxBytes = 200
		out, err := BrokerEvent("ex", key, body, maxBytes)
		if err != nil {
			var bad *BadBodyError
			if !errors.As(err, &bad) || !errors.Is(err, ErrBadBrokerBody) {
				t.Fatalf("error %v is not a *BadBodyError", err)
			}
			return
		}
		if len(out) > maxBytes || !utf8.Valid(out) {
			t.Fatalf("forwarded %d bytes, invalid UTF-8 or over %d: %q", len(out), maxBytes, out)
		}
		var ev struct {
			Event   string          `json:"event"`
			Payload json.RawMessage `json:"payload"`
			MQ      struct {
				E  string `json:"e"`
				RK string `json:"rk"`
			} `json:"mq"`
		}
		if bytes.ContainsRune(out, '\n') || json.Unmarshal(out, &ev) != nil {
			t.Fatalf("forwarded %q", out)
		}
		if ev.Event == "" || len(ev.Payload) == 0 || ev.Payload[0] != '{' {
			t.Fatalf("forwarded event %q with payload %s", ev.Event, ev.Payload)
		}
		if want := string([]rune(key)); ev.MQ.E != "ex" || ev.MQ.RK != want {
			t.Fatalf("mq = %+v, want ex/%q", ev.MQ, key)
		}
	})
}

// FuzzString: String agrees with encoding/json on every input, whether it
// takes the fast path or not: the same strings accepted, the same values.
func FuzzString(f *testing.F) {
	for _, seed := range []string{`"k1"`, ` "widgets"`, `"widgets" `, `"a\"b"`, `"\u00e9"`, `"é"`, `"tab	in"`, `"\xff"`, `"open`, `"a"b"`, `""`, `null`, `12`, `"\\"`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, ok := String(raw)
		var want string
		wantOK := len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &want) == nil
		if ok != wantOK || got != want {
			t.Fatalf("String(%q) = %q, %v; encoding/json: %q, %v", raw, got, ok, want, wantOK)
		}
	})
}
