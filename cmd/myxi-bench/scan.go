package main

import (
	"bytes"
	"math"
)

// Reading events cheaply. A client needs only a few fields of each event, so
// instead of decoding the JSON it looks for the keys it needs. This is correct
// for what a Myxi server sends (compact JSON objects, one per line of a
// frame): a key is found only where the quoted name is followed by a colon
// (so "t" never matches "tag" nor a string value "t"), and a quote that
// belongs to an escape (\") never starts a key.

var (
	keyEvent = []byte(`"event"`)
	keyTag   = []byte(`"tag"`)
	keyT     = []byte(`"t"`)
	keySeq   = []byte(`"seq"`)
	keyRK    = []byte(`"rk"`)

	evBench      = []byte("Bench")
	evWelcome    = []byte("Welcome")
	evSubscribed = []byte("Subscribed")
	evError      = []byte("Error")
	evInternal   = []byte("InternalError")
)

// nextLine splits the first line off a frame. Batched frames hold several
// events separated by '\n'; a trailing '\r' is dropped. The line may be
// empty (caller skips it).
func nextLine(frame []byte) (line, rest []byte) {
	i := bytes.IndexByte(frame, '\n')
	if i < 0 {
		line, rest = frame, nil
	} else {
		line, rest = frame[:i], frame[i+1:]
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

func isSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }

// valueOf returns the text that follows key (a quoted name) and its colon,
// blanks skipped, or nil when the key is not in line.
func valueOf(line, key []byte) []byte {
	off := 0
	for off < len(line) {
		i := bytes.Index(line[off:], key)
		if i < 0 {
			return nil
		}
		start := off + i
		j := start + len(key)
		off = start + 1
		if start > 0 && line[start-1] == '\\' { // an escaped quote inside a string
			continue
		}
		for j < len(line) && isSpace(line[j]) {
			j++
		}
		if j >= len(line) || line[j] != ':' {
			continue // a string value, not a key
		}
		j++
		for j < len(line) && isSpace(line[j]) {
			j++
		}
		return line[j:]
	}
	return nil
}

// intField returns the integer value of key in line.
func intField(line, key []byte) (int64, bool) {
	v := valueOf(line, key)
	return parseInt(v)
}

// parseInt reads a JSON integer at the start of b (it must end there: an
// number with a fraction or exponent, or one beyond int64, is refused).
func parseInt(b []byte) (int64, bool) {
	neg := false
	i := 0
	if i < len(b) && b[i] == '-' {
		neg = true
		i++
	}
	start := i
	var n int64
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		d := int64(b[i] - '0')
		if n > (math.MaxInt64-d)/10 { // overflow
			return 0, false
		}
		n = n*10 + d
		i++
	}
	if i == start {
		return 0, false
	}
	if i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

// stringField returns the raw (still escaped) content of the string value of
// key in line.
func stringField(line, key []byte) ([]byte, bool) {
	return parseString(valueOf(line, key))
}

// parseString reads a JSON string at the start of b and returns its raw
// content, escapes left as they are.
func parseString(b []byte) ([]byte, bool) {
	if len(b) == 0 || b[0] != '"' {
		return nil, false
	}
	for i := 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return b[1:i], true
		}
	}
	return nil, false
}

// rawValue returns the JSON text of the scalar value of key (a string with
// its quotes, a number, true/false/null). Objects and arrays are not needed
// here and come back as false.
func rawValue(line, key []byte) ([]byte, bool) {
	v := valueOf(line, key)
	if len(v) == 0 {
		return nil, false
	}
	if v[0] == '"' {
		s, ok := parseString(v)
		if !ok {
			return nil, false
		}
		return v[:len(s)+2], true
	}
	if v[0] == '{' || v[0] == '[' {
		return nil, false
	}
	i := 0
	for i < len(v) && v[i] != ',' && v[i] != '}' && v[i] != ']' && !isSpace(v[i]) {
		i++
	}
	return v[:i], i > 0
}

// benchEvent is what a client takes from one Bench event.
type benchEvent struct {
	t, seq int64
	rk     []byte
	hasRK  bool
}

// parseBench reads t and seq (and mq.rk when present) from a Bench event.
func parseBench(line []byte) (benchEvent, bool) {
	var ev benchEvent
	var ok bool
	if ev.t, ok = intField(line, keyT); !ok {
		return ev, false
	}
	if ev.seq, ok = intField(line, keySeq); !ok {
		return ev, false
	}
	ev.rk, ev.hasRK = stringField(line, keyRK)
	return ev, true
}
