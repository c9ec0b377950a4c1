package main

import "strconv"

// The body an application publishes for one bench event:
//
//	{"event":"Bench","payload":{"t":<unix ns>,"seq":<n>,"pad":"xx..."}}
//
// t is the send time, seq the event's number in the run (event seq goes to
// key seq mod keys). pad makes the body at least -payload-bytes long.

const (
	bodyHead = `{"event":"Bench","payload":{"t":`
	bodySeq  = `,"seq":`
	bodyPad  = `,"pad":"`
	bodyTail = `"}}`
)

// bodyLen is the length of the body without padding.
func bodyLen(t, seq int64) int {
	return len(bodyHead) + digits(t) + len(bodySeq) + digits(seq) + len(bodyPad) + len(bodyTail)
}

func digits(n int64) int {
	d := 1
	if n < 0 {
		d++
		n = -n
	}
	for n >= 10 {
		n /= 10
		d++
	}
	return d
}

// appendBody appends the body of event seq sent at t (unix ns), padded to at
// least size bytes.
func appendBody(dst []byte, t, seq int64, size int) []byte {
	pad := max(0, size-bodyLen(t, seq))
	dst = append(dst, bodyHead...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, bodySeq...)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, bodyPad...)
	for range pad {
		dst = append(dst, 'x')
	}
	return append(dst, bodyTail...)
}
