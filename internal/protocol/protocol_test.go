package protocol

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
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

// encoding/json copies a json.RawMessage's bytes without checking their
// UTF-8: EncodeEvent must refuse what would be an invalid text frame.
func TestEncodeEventRefusesInvalidUTF8(t *testing.T) {
	bad := json.RawMessage("{\"s\":\"\xfe\"}")
	if out, err := json.Marshal(bad); err != nil || utf8.Valid(out) {
		t.Fatalf("premise: json.Marshal passed invalid UTF-8 through = %q, %v", out, err)
	}
	cases := []struct {
		name    string
		tag     json.RawMessage
		payload any
	}{
		{"raw payload", nil, bad},
		{"raw tag", json.RawMessage("\"\xc3\""), nil},
		{"raw value in a map", nil, map[string]any{"k": json.RawMessage("\"\xff\"")}},
	}
	for _, tc := range cases {
		out, err := EncodeEvent("E", tc.tag, tc.payload)
		if !errors.Is(err, ErrInvalidUTF8) {
			t.Errorf("%s: got %q, %v; want ErrInvalidUTF8", tc.name, out, err)
		}
	}
	// A Go string with invalid UTF-8 is coerced by encoding/json, not refused.
	out, err := EncodeEvent("E", nil, map[string]string{"s": "\xfe"})
	if err != nil || !utf8.Valid(out) {
		t.Fatalf("string payload: %q, %v", out, err)
	}
}

func TestBrokerEvent(t *testing.T) {
	got, err := BrokerEvent("widgets", "42", []byte("{\n \"event\": \"WidgetQtyChanged\",\n \"payload\": {\"quantity\": 5},\n \"mq\": \"forged\", \"zeta\": [1, 2], \"alpha\": true}"), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"event":"WidgetQtyChanged","tag":null,"payload":{"quantity":5},"mq":{"e":"widgets","rk":"42"},"alpha":true,"zeta":[1,2]}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	for body, want := range map[string]string{
		`{"event":"E","tag":"app"}`:               `{"event":"E","tag":"app","payload":{},"mq":{"e":"e","rk":"k"}}`,
		`{"event":"E","payload":null,"tag":null}`: `{"event":"E","tag":null,"payload":{},"mq":{"e":"e","rk":"k"}}`,
		`{"event":"E","payload":{"s":"\u00e9"}}`:  `{"event":"E","tag":null,"payload":{"s":"\u00e9"},"mq":{"e":"e","rk":"k"}}`,
		"{\"event\":\"\u00e9v\",\"payload\":{}}":  "{\"event\":\"\u00e9v\",\"tag\":null,\"payload\":{},\"mq\":{\"e\":\"e\",\"rk\":\"k\"}}",
	} {
		got, err := BrokerEvent("e", "k", []byte(body), 0)
		if err != nil || string(got) != want {
			t.Errorf("%s: got %s, %v; want %s", body, got, err, want)
		}
	}
	for bad, reason := range map[string]string{
		`not json`:                     DropNotObject,
		`[1]`:                          DropNotObject,
		`null`:                         DropNotObject,
		`"s"`:                          DropNotObject,
		`{"payload":{}}`:               DropBadEvent,
		`{"event":5}`:                  DropBadEvent,
		`{"event":""}`:                 DropBadEvent,
		`{"event":null}`:               DropBadEvent,
		`{"event":"E","payload":[1]}`:  DropBadPayload,
		`{"event":"E","payload":"s"}`:  DropBadPayload,
		`{"event":"E","payload":5}`:    DropBadPayload,
		`{"event":"E","payload":true}`: DropBadPayload,
		"{\"event\":\"E\",\"payload\":{\"s\":\"\xfe\"}}": DropInvalidUTF8,
		"{\"event\":\"E\xc3\"}":                          DropInvalidUTF8,
		"{\"event\":\"E\",\"x\":\"\xed\xa0\x80\"}":       DropInvalidUTF8, // an encoded surrogate
	} {
		_, err := BrokerEvent("e", "k", []byte(bad), 0)
		var be *BadBodyError
		if !errors.Is(err, ErrBadBrokerBody) || !errors.As(err, &be) || be.Reason != reason {
			t.Errorf("%q: err = %v, want reason %s", bad, err, reason)
		}
	}
}

func TestBrokerEventMaxBytes(t *testing.T) {
	body := []byte(`{"event":"E","payload":{"s":"` + strings.Repeat("x", 100) + `"}}`)
	frame, err := BrokerEvent("ex", "rk", body, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := BrokerEvent("ex", "rk", body, len(frame)); err != nil {
		t.Fatalf("a frame of exactly the limit: %v", err)
	}
	for _, limit := range []int{len(frame) - 1, len(body) - 1} {
		_, err := BrokerEvent("ex", "rk", body, limit)
		var be *BadBodyError
		if !errors.As(err, &be) || be.Reason != DropTooLarge {
			t.Errorf("limit %d: err = %v, want too_large", limit, err)
		}
		if err := CheckEventSize("ex", "rk", body, limit); !errors.As(err, &be) || be.Reason != DropTooLarge {
			t.Errorf("CheckEventSize with limit %d: %v", limit, err)
		}
	}
	if err := CheckEventSize("ex", "rk", body, len(frame)); err != nil {
		t.Fatalf("CheckEventSize at the limit: %v", err)
	}
	// The fast path (no encoding) must agree with the frame: a body far
	// under the limit, with the longest names, still fits.
	long := strings.Repeat("\x01", 255)
	frame, _ = BrokerEvent(long, long, body, 0)
	if err := CheckEventSize(long, long, body, len(frame)); err != nil {
		t.Fatalf("CheckEventSize with escaped names: %v", err)
	}
	if err := CheckEventSize(long, long, body, len(frame)-1); err == nil {
		t.Fatal("CheckEventSize missed a frame one byte over")
	}
}

func TestPushBody(t *testing.T) {
	b, err := PushBody("WidgetQtyChanged", map[string]int{"quantity": 5})
	if err != nil || string(b) != `{"event":"WidgetQtyChanged","payload":{"quantity":5}}` {
		t.Fatalf("got %s, %v", b, err)
	}
	for _, payload := range []any{nil, json.RawMessage("null"), map[string]int(nil)} {
		if b, err := PushBody("E", payload); err != nil || string(b) != `{"event":"E","payload":{}}` {
			t.Errorf("payload %#v: got %s, %v", payload, b, err)
		}
	}
	if b, err := PushBody("E", json.RawMessage(` {"a" : 1} `)); err != nil || string(b) != `{"event":"E","payload":{"a":1}}` {
		t.Errorf("raw payload: got %s, %v", b, err)
	}
	for name, tc := range map[string]struct {
		event   string
		payload any
	}{
		"empty event":         {"", nil},
		"unencodable":         {"E", func() {}},
		"array":               {"E", []int{1}},
		"scalar":              {"E", "s"},
		"raw array":           {"E", json.RawMessage(`[1]`)},
		"invalid UTF-8 raw":   {"E", json.RawMessage("{\"s\":\"\xfe\"}")},
		"invalid UTF-8 event": {"E\xfe", nil},
	} {
		if b, err := PushBody(tc.event, tc.payload); err == nil {
			t.Errorf("%s: accepted as %q", name, b)
		}
	}
	// Whatever PushBody accepts, every node forwards.
	b, _ = PushBody("E", map[string]any{"html": "<b>&</b>", "n": nil})
	if _, err := BrokerEvent("e", "k", b, 0); err != nil {
		t.Fatalf("PushBody output %s dropped: %v", b, err)
	}
}

// Keys that differ from the server's own only in case are not passed
// through: Go's encoding/json would let them override the real ones.
func TestBrokerEventDropsLookalikeKeys(t *testing.T) {
	out, err := BrokerEvent("ex", "k", []byte(`{"event":"E","payload":{"a":1},"pAYlOAd":[],"Mq":{"e":"spoof"},"TAG":1,"Event":"F","x":2}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"event":"E","tag":null,"payload":{"a":1},"mq":{"e":"ex","rk":"k"},"x":2}`
	if string(out) != want {
		t.Fatalf("got  %s\nwant %s", out, want)
	}
}

// TestCheckRecordSize: a record's frame carries a position too, so an
// event that fits as a live event may not fit as a record.
func TestCheckRecordSize(t *testing.T) {
	body := []byte(`{"event":"E","payload":{"s":"` + strings.Repeat("a", 500) + `"}}`)
	live, err := BrokerEvent("ex", "rk", body, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckEventSize("ex", "rk", body, len(live)); err != nil {
		t.Fatalf("CheckEventSize at the limit: %v", err)
	}
	if err := CheckRecordSize("ex", "rk", body, len(live)); !errors.Is(err, ErrBadBrokerBody) {
		t.Fatalf("CheckRecordSize without room for a position: %v", err)
	}
	largest, err := RecordEvent("ex", "rk", body, 0, largestPosition)
	if err != nil {
		t.Fatal(err)
	}
	if len(largest) != len(live)+maxPositionBytes {
		t.Fatalf("a position adds %d bytes, maxPositionBytes says %d", len(largest)-len(live), maxPositionBytes)
	}
	if err := CheckRecordSize("ex", "rk", body, len(largest)); err != nil {
		t.Fatalf("CheckRecordSize with room for the largest position: %v", err)
	}
}
