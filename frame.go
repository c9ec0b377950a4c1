package myxi

// Frames and the send queue: what the transport writes.

import (
	"encoding/binary"
	"sync"
	"time"
)

// maxBatchBytes caps one batched frame, so one slow drain does not build a
// huge frame.
const maxBatchBytes = 64 << 10

// WebSocket opcodes (RFC 6455 section 5.2) and the FIN bit.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
	finBit         = 0x80

	finText  = finBit | opText
	finClose = finBit | opClose
	finPing  = finBit | opPing
	finPong  = finBit | opPong
)

// appendHeader appends the header of an unmasked server frame carrying n
// payload bytes.
func appendHeader(dst []byte, opcode byte, n int) []byte {
	dst = append(dst, opcode)
	switch {
	case n <= 125:
		return append(dst, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(dst, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, 127), uint64(n))
	}
}

// frame is one encoded event waiting to be written. A broadcast frame is
// shared by every subscriber's queue: it is encoded and framed once.
type frame struct {
	wire     []byte // the whole WebSocket frame: header, then data
	data     []byte // the event alone (a suffix of wire)
	shared   bool
	received time.Time // when a broadcast arrived from the broker
}

func newFrame(data []byte) *frame {
	wire := appendHeader(make([]byte, 0, len(data)+10), finText, len(data))
	wire = append(wire, data...)
	return &frame{wire: wire, data: wire[len(wire)-len(data):]}
}

// sendQueue is a connection's bounded outgoing queue. It grows only as
// far as the client lags, so an idle connection holds almost nothing.
type sendQueue struct {
	mu       sync.Mutex
	items    []*frame
	bytes    int64
	maxItems int
	maxBytes int64
}

// push queues f, or reports false when the queue is over its limits.
func (q *sendQueue) push(f *frame) bool {
	q.mu.Lock()
	if len(q.items) >= q.maxItems || q.bytes+int64(len(f.data)) > q.maxBytes {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, f)
	q.bytes += int64(len(f.data))
	q.mu.Unlock()
	return true
}

// pushBelowHalf queues f while the queue holds less than half of its
// limits (or nothing, so that one large event still goes), and reports
// whether it did.
func (q *sendQueue) pushBelowHalf(f *frame) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) > 0 && (len(q.items) >= q.maxItems/2 || q.bytes+int64(len(f.data)) > q.maxBytes/2) {
		return false
	}
	q.items = append(q.items, f)
	q.bytes += int64(len(f.data))
	return true
}

// empty reports whether nothing is queued.
func (q *sendQueue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) == 0
}

// takeAll moves every queued frame out and returns them; the queue keeps
// spare's backing array for new pushes.
func (q *sendQueue) takeAll(spare []*frame) []*frame {
	q.mu.Lock()
	defer q.mu.Unlock()
	taken := q.items
	q.items = spare[:0]
	q.bytes = 0
	return taken
}
