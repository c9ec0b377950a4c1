package myxi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Close codes (PROTOCOL.md).
const (
	closeNormal    = websocket.CloseNormalClosure   // 1000
	closeGoingAway = websocket.CloseGoingAway       // 1001: draining
	closePolicy    = websocket.ClosePolicyViolation // 1008: too slow
	closeTooBig    = websocket.CloseMessageTooBig   // 1009
)

// closeGrace is how long a closing connection waits for the client's
// close frame before dropping the TCP connection.
const closeGrace = time.Second

// maxBatchBytes caps one batched frame, so one slow drain does not build a
// huge frame.
const maxBatchBytes = 64 << 10

// WebSocket frame opcodes with the FIN bit set (RFC 6455 section 5.2).
const (
	finText  = 0x81
	finClose = 0x88
	finPing  = 0x89
	finPong  = 0x8a
)

var errFrameTooLarge = errors.New("frame over the size limit")

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

// writer is the state only the writer goroutine touches.
type writer struct {
	spare   []*frame
	iov     net.Buffers
	scratch []byte // headers of batched and control frames
}

// run serves the connection until it ends: it reads in this goroutine
// (the session's reader) while writers come and go (see kick), then
// cleans up.
func (c *conn) run() {
	c.pingMu.Lock()
	c.pingTimer = time.AfterFunc(c.srv.cfg.Limits.PingInterval, c.pingTick)
	c.pingMu.Unlock()
	err := c.readLoop()
	c.closeWith(closeNormal, "") // no-op when a close is already under way
	<-c.finished
	c.pingMu.Lock()
	c.pingTimer.Stop()
	c.pingMu.Unlock()
	_ = c.ws.NetConn().Close()
	c.cleanup()
	c.log.Debug("session ended", "err", err, "close_code", c.closeCode)
}

// pingTick runs on the keepalive timer: it asks the writer for a ping and
// arms the timer again.
func (c *conn) pingTick() {
	c.pingDue.Store(true)
	c.kick()
	c.pingMu.Lock()
	if !c.closing.Load() {
		c.pingTimer.Reset(c.srv.cfg.Limits.PingInterval)
	}
	c.pingMu.Unlock()
}

// readLoop reads frames and runs their actions, in order. Every socket
// write, pongs and the close reply included, is left to the writer: the
// handlers below only record what to send.
func (c *conn) readLoop() error {
	l := c.srv.cfg.Limits
	idle := 2 * l.PingInterval
	extend := func() { _ = c.ws.SetReadDeadline(time.Now().Add(idle)) }
	extend()
	c.ws.SetPongHandler(func(string) error { extend(); return nil })
	c.ws.SetPingHandler(func(data string) error {
		extend()
		c.pong.Store(&data)
		c.kick()
		return nil
	})
	c.ws.SetCloseHandler(func(code int, _ string) error {
		if code == websocket.CloseNoStatusReceived {
			code = closeNormal
		}
		c.closeWith(code, "")
		return nil
	})
	var buf bytes.Buffer
	for {
		_, r, err := c.ws.NextReader()
		if err != nil {
			return err
		}
		buf.Reset()
		if n, err := buf.ReadFrom(io.LimitReader(r, l.MaxFrameBytes+1)); err != nil {
			return err
		} else if n > l.MaxFrameBytes {
			c.closeWith(closeTooBig, "frame too large")
			return errFrameTooLarge
		}
		extend()
		c.handleFrame(buf.Bytes())
		if buf.Cap() > 64<<10 {
			buf = bytes.Buffer{} // do not keep a large frame's buffer for an idle session
		}
	}
}

// kick makes sure a writer is running to send what is pending. There is
// at most one writer per connection at any time, and none while the
// connection is idle: an idle session costs no writer goroutine (its
// stack was a third of an idle session's memory).
func (c *conn) kick() {
	if c.writing.CompareAndSwap(false, true) {
		go c.writeLoop()
	}
}

// writeLoop is the connection's writer, the only goroutine writing to the
// socket: queued events, pings, pongs and finally the close frame. It
// runs while there is something to write and then exits. It sets no
// write deadline per write (a timer reset per event is measurable at
// fan-out rates); the server's watchdog drops a connection whose write
// has been stuck for WriteTimeout.
func (c *conn) writeLoop() {
	for {
		if c.closing.Load() {
			c.finish(&c.w)
			close(c.finished) // writing stays true: no writer starts again
			return
		}
		if err := c.flush(&c.w); err != nil {
			c.log.Debug("write failed", "err", err)
			c.abort()
			continue // to finish
		}
		c.writing.Store(false)
		// Work that arrived after flush looked, whose kick saw this
		// writer still running, is this writer's to do, unless another
		// writer has already started for it.
		if !c.hasWork() || !c.writing.CompareAndSwap(false, true) {
			return
		}
	}
}

func (c *conn) hasWork() bool {
	if c.closing.Load() || c.pingDue.Load() || c.pong.Load() != nil {
		return true
	}
	c.queue.mu.Lock()
	defer c.queue.mu.Unlock()
	return len(c.queue.items) > 0
}

// flush writes a pending pong and every queued event, in one system call
// where possible.
func (c *conn) flush(w *writer) error {
	iov := w.iov[:0]
	scratch := w.scratch[:0]
	if c.pingDue.Swap(false) {
		scratch = appendHeader(scratch, finPing, 0)
		iov = append(iov, scratch)
	}
	if p := c.pong.Swap(nil); p != nil {
		start := len(scratch)
		data := (*p)[:min(len(*p), 125)]
		scratch = growCap(scratch, 2+len(data))
		scratch = append(appendHeader(scratch, finPong, len(data)), data...)
		iov = append(iov, scratch[start:])
	}
	frames := c.queue.takeAll(w.spare)
	if c.batch && len(frames) > 1 {
		// Each batch header goes in scratch after the pong (if any); the
		// slices into scratch stay valid because its capacity is
		// reserved up front.
		scratch = growCap(scratch, 10*(1+len(frames)))
		for rest := frames; len(rest) > 0; {
			n, size := 0, 0
			for n < len(rest) && (n == 0 || size+1+len(rest[n].data) <= maxBatchBytes) {
				if n > 0 {
					size++
				}
				size += len(rest[n].data)
				n++
			}
			start := len(scratch)
			scratch = appendHeader(scratch, finText, size)
			iov = append(iov, scratch[start:])
			for i, f := range rest[:n] {
				if i > 0 {
					iov = append(iov, newline)
				}
				iov = append(iov, f.data)
			}
			rest = rest[n:]
		}
	} else {
		for _, f := range frames {
			iov = append(iov, f.wire)
		}
	}
	err := c.write(iov)
	if err == nil && len(frames) > 0 {
		c.observe(frames)
	}
	clear(iov)
	w.iov = iov[:0]
	w.scratch = scratch[:0]
	clear(frames)
	w.spare = frames[:0]
	return err
}

func growCap(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	grown := make([]byte, len(b), len(b)+n)
	copy(grown, b)
	return grown
}

var newline = []byte{'\n'}

// write writes prepared frame bytes to the socket: write(2) for one buffer
// (the common case at fan-out), writev(2) for several. writeStarted lets
// the watchdog see a write that is stuck.
func (c *conn) write(iov net.Buffers) error {
	if len(iov) == 0 {
		return nil
	}
	c.writeStarted.Store(time.Now().UnixNano())
	defer c.writeStarted.Store(0)
	if len(iov) == 1 {
		_, err := c.ws.NetConn().Write(iov[0])
		return err
	}
	_, err := iov.WriteTo(c.ws.NetConn())
	return err
}

// observe counts written frames and samples the delivery latency once per
// socket write (of its oldest broadcast): per-event observations from
// every writer contend on the histogram's counters at fan-out rates.
func (c *conn) observe(frames []*frame) {
	c.srv.metrics.delivered.Add(float64(len(frames)))
	for _, f := range frames {
		if f.shared {
			c.srv.metrics.latency.Observe(time.Since(f.received).Seconds())
			return
		}
	}
}

// abort drops a connection whose socket failed: no close frame can be
// written, and closing the socket ends the reader's blocked read.
func (c *conn) abort() {
	c.closeWith(websocket.CloseAbnormalClosure, "")
	_ = c.ws.NetConn().Close()
}

// finish flushes what is queued (unless the client is the slow one) and
// sends the close frame, then gives the client a moment to answer.
func (c *conn) finish(w *writer) {
	netConn := c.ws.NetConn()
	_ = netConn.SetWriteDeadline(time.Now().Add(closeGrace))
	if !c.slow.Load() {
		if err := c.flush(w); err != nil {
			_ = netConn.Close()
			return
		}
	}
	payload := websocket.FormatCloseMessage(c.closeCode, c.closeReason)
	if c.closeCode == websocket.CloseAbnormalClosure {
		payload = nil // 1006 never goes on the wire
	}
	if len(payload) > 125 {
		payload = payload[:125]
	}
	msg := append(appendHeader(nil, finClose, len(payload)), payload...)
	if _, err := netConn.Write(msg); err != nil {
		_ = netConn.Close() // nothing to wait for
		return
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(closeGrace))
}
