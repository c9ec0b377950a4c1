package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestNextLine(t *testing.T) {
	frame := []byte("a\nbb\n\nccc\r\nd")
	var got []string
	for rest := frame; len(rest) > 0; {
		var line []byte
		line, rest = nextLine(rest)
		got = append(got, string(line))
	}
	want := []string{"a", "bb", "", "ccc", "d"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("lines = %q, want %q", got, want)
	}
	if l, r := nextLine([]byte("x\n")); string(l) != "x" || len(r) != 0 {
		t.Fatalf("trailing newline: %q %q", l, r)
	}
}

func TestParseBenchForms(t *testing.T) {
	cases := []struct {
		name, line string
		t, seq     int64
		rk         string
	}{
		{"server order", `{"event":"Bench","tag":null,"payload":{"t":1718000000123456789,"seq":42,"pad":"xx"},"mq":{"e":"bench","rk":"k2"}}`, 1718000000123456789, 42, "k2"},
		{"sorted keys", `{"event":"Bench","mq":{"e":"bench","rk":"k0"},"payload":{"pad":"","seq":0,"t":5},"tag":null}`, 5, 0, "k0"},
		{"blanks", `{ "event" : "Bench" , "payload" : { "seq" : 7 , "t" : 9 } , "mq" : { "rk" : "k1" } }`, 9, 7, "k1"},
		{"tag t and key at", `{"event":"Bench","tag":"t","payload":{"at":1,"t":3,"seq":4},"mq":{"e":"t","rk":"t"}}`, 3, 4, "t"},
		{"escaped quote", `{"event":"Bench","tag":"x\"t\":99","payload":{"t":11,"seq":12},"mq":{"rk":"k\"q"}}`, 11, 12, `k\"q`},
	}
	for _, c := range cases {
		ev, ok := parseBench([]byte(c.line))
		if !ok || ev.t != c.t || ev.seq != c.seq || !ev.hasRK || string(ev.rk) != c.rk {
			t.Errorf("%s: got %+v ok=%v rk=%q, want t=%d seq=%d rk=%q", c.name, ev, ok, ev.rk, c.t, c.seq, c.rk)
		}
	}
	for _, bad := range []string{
		`{"event":"Bench","payload":{"seq":1}}`,                          // no t
		`{"event":"Bench","payload":{"t":1.5,"seq":1}}`,                  // not an integer
		`{"event":"Bench","payload":{"t":"1","seq":1}}`,                  // a string
		`{"event":"Bench","payload":{"t":1,"seq":-}}`,                    // no digits
		`{"event":"Bench","payload":{"t":99999999999999999999,"seq":1}}`, // overflow
	} {
		if ev, ok := parseBench([]byte(bad)); ok {
			t.Errorf("parseBench(%s) = %+v, want failure", bad, ev)
		}
	}
}

func TestParseInt(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "-12,": -12, "9223372036854775807}": 9223372036854775807, "123 ": 123} {
		if got, ok := parseInt([]byte(in)); !ok || got != want {
			t.Errorf("parseInt(%q) = %d %v, want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "-", "x1", "9223372036854775808", "1e5", "2.0"} {
		if got, ok := parseInt([]byte(in)); ok {
			t.Errorf("parseInt(%q) = %d, want failure", in, got)
		}
	}
}

func TestEventAndTagFields(t *testing.T) {
	line := []byte(`{"event":"Subscribed","tag":"b17","payload":{"exchange":"bench","routing_key":"k3"}}`)
	if name, ok := stringField(line, keyEvent); !ok || string(name) != "Subscribed" {
		t.Fatalf("event = %q %v", name, ok)
	}
	if tag, ok := rawValue(line, keyTag); !ok || string(tag) != `"b17"` {
		t.Fatalf("tag = %q %v", tag, ok)
	}
	for in, want := range map[string]string{
		`{"tag":null,"event":"X"}`: "null", `{"tag":12}`: "12", `{"tag" : true }`: "true", `{"tag":"a\"b"}`: `"a\"b"`,
	} {
		if got, ok := rawValue([]byte(in), keyTag); !ok || string(got) != want {
			t.Errorf("rawValue(%s) = %q %v, want %q", in, got, ok, want)
		}
	}
	if _, ok := rawValue([]byte(`{"tag":{"a":1}}`), keyTag); ok {
		t.Error("an object tag is not a scalar")
	}
	if _, ok := stringField([]byte(`{"event":"unterminated`), keyEvent); ok {
		t.Error("unterminated string accepted")
	}
}

// The body the tool publishes, passed through a server that re-encodes it
// (Go maps: keys sorted) and adds tag and mq, is read back exactly.
func TestBodyRoundTrip(t *testing.T) {
	for _, size := range []int{0, 50, 300} {
		body := appendBody(nil, 1718000000123456789, 123456, size)
		if len(body) < size {
			t.Fatalf("body of %d bytes, asked >= %d", len(body), size)
		}
		if size > 0 && len(body) > max(size, bodyLen(1718000000123456789, 123456)) {
			t.Fatalf("body of %d bytes, padded beyond %d", len(body), size)
		}
		// a server keeps the values as they are (json.Number, not float64,
		// which would round the nanosecond timestamp)
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("body %s: %v", body, err)
		}
		if m["event"] != "Bench" {
			t.Fatalf("event = %v", m["event"])
		}
		m["tag"] = nil
		m["mq"] = map[string]string{"e": "bench", "rk": "k6"}
		out, _ := json.Marshal(m)
		ev, ok := parseBench(out)
		if !ok || ev.t != 1718000000123456789 || ev.seq != 123456 || string(ev.rk) != "k6" {
			t.Fatalf("from %s: %+v %v", out, ev, ok)
		}
	}
	if got := len(appendBody(nil, 1, 2, 0)); got != bodyLen(1, 2) {
		t.Fatalf("unpadded body is %d bytes, bodyLen says %d", got, bodyLen(1, 2))
	}
}

func TestParseBenchDoesNotAllocate(t *testing.T) {
	line := []byte(`{"event":"Bench","tag":null,"payload":{"t":1718000000123456789,"seq":42,"pad":"xx"},"mq":{"e":"bench","rk":"k2"}}`)
	if a := testing.AllocsPerRun(1000, func() { parseBench(line) }); a != 0 {
		t.Fatalf("parseBench allocates %v times", a)
	}
}
