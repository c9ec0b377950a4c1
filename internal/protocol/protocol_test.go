package protocol

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestDecodeAction(t *testing.T) {
	cases := []struct {
		frame   string
		name    string
		tag     string
		payload string
		err     string
	}{
		{`{"action":"Ping"}`, "Ping", "null", "{}", ""},
		{`{"action":"Subscribe","tag":"t1","payload":{"exchange":"w"}}`, "Subscribe", `"t1"`, `{"exchange":"w"}`, ""},
		{` {"action":"Ping","tag":{"a":[1]},"payload":null} `, "Ping", `{"a":[1]}`, "{}", ""},
		{`not json`, "", "null", "", ErrInvalidJSON},
		{`[1]`, "", "null", "", ErrInvalidJSON},
		{`{"action":`, "", "null", "", ErrInvalidJSON},
		{``, "", "null", "", ErrInvalidJSON},
		{`{"tag":5}`, "", "5", "", ErrInvalidAction},
		{`{"action":5,"tag":"x"}`, "", `"x"`, "", ErrInvalidAction},
		{`{"action":""}`, "", "null", "", ErrInvalidAction},
		{`{"action":"Ping","tag":"p","payload":[1]}`, "Ping", `"p"`, "", ErrInvalidPayload},
		{`{"action":"Ping","payload":"x"}`, "Ping", "null", "", ErrInvalidPayload},
	}
	for _, tc := range cases {
		a, err := DecodeAction([]byte(tc.frame))
		if tc.err != "" {
			var de *DecodeError
			if !errors.As(err, &de) || de.Name != tc.err || string(de.Tag) != tc.tag {
				t.Errorf("%q: err = %v (%+v), want %s with tag %s", tc.frame, err, de, tc.err, tc.tag)
			}
			continue
		}
		if err != nil || a.Name != tc.name || string(a.Tag) != tc.tag || string(a.Payload) != tc.payload {
			t.Errorf("%q: got %+v, %v", tc.frame, a, err)
		}
	}
}

func TestRoutingKey(t *testing.T) {
	cases := map[string]string{
		`"42"`: "42", `42`: "42", `4.5`: "4.5", `-1e3`: "-1e3", `null`: "", ``: "", `true`: "true", `"a b"`: "a b", `"\u00e9"`: "é",
	}
	for raw, want := range cases {
		got, err := RoutingKey(json.RawMessage(raw))
		if err != nil || got != want {
			t.Errorf("RoutingKey(%s) = %q, %v; want %q", raw, got, err, want)
		}
	}
	for _, raw := range []string{`{}`, `[1]`, `"unterminated`} {
		if _, err := RoutingKey(json.RawMessage(raw)); err == nil {
			t.Errorf("RoutingKey(%s): want an error", raw)
		}
	}
	if string(EchoKey(nil)) != "null" || string(EchoKey(json.RawMessage(`42`))) != "42" {
		t.Error("EchoKey must echo the raw key, null when absent")
	}
}

func TestValidExchangeName(t *testing.T) {
	for _, ok := range []string{"widgets", "a.b-c_d:e", strings.Repeat("x", 255)} {
		if !ValidExchangeName(ok) {
			t.Errorf("%q should be valid", ok)
		}
	}
	for _, bad := range []string{"", "amq.direct", "with space", "ü", strings.Repeat("x", 256), "a/b"} {
		if ValidExchangeName(bad) {
			t.Errorf("%q should be invalid", bad)
		}
	}
}

func TestEncodeEvent(t *testing.T) {
	b, err := EncodeEvent("Pong", nil, nil)
	if err != nil || string(b) != `{"event":"Pong","tag":null,"payload":{}}` {
		t.Fatalf("got %s, %v", b, err)
	}
	b, _ = EncodeEvent("X", json.RawMessage(`"t"`), map[string]string{"a": "line\nbreak"})
	if strings.Contains(string(b), "\n") {
		t.Fatalf("raw newline in %q", b)
	}
}

func TestBrokerEvent(t *testing.T) {
	got, err := BrokerEvent("widgets", "42", []byte("{\n \"event\": \"WidgetQtyChanged\",\n \"payload\": {\"quantity\": 5},\n \"mq\": \"forged\", \"zeta\": [1, 2], \"alpha\": true}"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"event":"WidgetQtyChanged","tag":null,"payload":{"quantity":5},"mq":{"e":"widgets","rk":"42"},"alpha":true,"zeta":[1,2]}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	got, _ = BrokerEvent("e", "k", []byte(`{"event":"E","tag":"app"}`))
	if string(got) != `{"event":"E","tag":"app","payload":{},"mq":{"e":"e","rk":"k"}}` {
		t.Fatalf("defaults: %s", got)
	}
	for _, bad := range []string{`not json`, `[1]`, `{"payload":{}}`, `{"event":5}`, `null`, `"s"`} {
		if _, err := BrokerEvent("e", "k", []byte(bad)); !errors.Is(err, ErrBadBrokerBody) {
			t.Errorf("%s: err = %v, want ErrBadBrokerBody", bad, err)
		}
	}
}

func TestPushBody(t *testing.T) {
	b, err := PushBody("WidgetQtyChanged", map[string]int{"quantity": 5})
	if err != nil || string(b) != `{"event":"WidgetQtyChanged","payload":{"quantity":5}}` {
		t.Fatalf("got %s, %v", b, err)
	}
	if _, err := PushBody("", nil); err == nil {
		t.Fatal("empty event name must be refused")
	}
	if _, err := PushBody("E", func() {}); err == nil {
		t.Fatal("unencodable payload must be an error")
	}
}
