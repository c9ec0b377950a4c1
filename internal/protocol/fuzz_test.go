package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
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
		// What the server sends back must be one line of valid JSON.
		out, err := EncodeEvent("Echo", a.Tag, a.Payload)
		if err != nil || !json.Valid(out) || bytes.ContainsRune(out, '\n') {
			t.Fatalf("reply %q, %v", out, err)
		}
	})
}

// FuzzSubscriptionPayload: routing keys and broker bodies from anywhere
// never panic, and what is forwarded is one line of valid JSON carrying
// the server's mq.
func FuzzSubscriptionPayload(f *testing.F) {
	f.Add([]byte(`"42"`), []byte(`{"event":"E","payload":{"q":1}}`))
	f.Add([]byte(`42.0e1`), []byte("{\"event\":\"E\",\n\"mq\":1}"))
	f.Add([]byte(`null`), []byte(`{"event":"E","tag":[1],"x":"\u2028"}`))
	f.Add([]byte(`{"a":1}`), []byte(`[1]`))
	f.Fuzz(func(t *testing.T, rawKey, body []byte) {
		key, err := RoutingKey(rawKey)
		if err != nil {
			return
		}
		out, err := BrokerEvent("ex", key, body)
		if err != nil {
			return
		}
		var ev struct {
			Event string `json:"event"`
			MQ    struct {
				E  string `json:"e"`
				RK string `json:"rk"`
			} `json:"mq"`
		}
		if bytes.ContainsRune(out, '\n') || json.Unmarshal(out, &ev) != nil {
			t.Fatalf("forwarded %q", out)
		}
		if ev.MQ.E != "ex" || ev.MQ.RK != key {
			t.Fatalf("mq = %+v, want ex/%q", ev.MQ, key)
		}
	})
}
