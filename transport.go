package myxi

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"
)

// Close codes (PROTOCOL.md, "Close codes").
const (
	closeNormal       = 1000 // the client asked
	closeGoingAway    = 1001 // draining or shutting down
	closeProtocol     = 1002 // bad framing
	closeNoStatus     = 1005 // never on the wire: a Close frame without a code
	closeAbnormal     = 1006 // never on the wire: the TCP connection just ended
	closeInvalidData  = 1007 // invalid UTF-8 in a text frame
	closePolicy       = 1008 // too slow to read its events, or flooding
	closeTooBig       = 1009 // a message over the size limit
	closeInternal     = 1011
	closeTryLater     = 1013 // overloaded: over the connection limit
	closeIdle         = 4000 // no frame for too long
	closeTerminated   = 4001 // Session.Terminate: do not come back
	closeByApp        = 4002 // Session.Close: come back (and authenticate again)
	maxControlPayload = 125
)

// closeGrace is how long a closing connection waits for the client's
// Close frame before dropping the TCP connection.
const closeGrace = time.Second

// readBufferSize is the transport's read buffer: client frames are small
// actions, and an idle connection should hold little.
const readBufferSize = 256

// protocolError ends a connection with a close code because the client
// broke the framing rules; the stream cannot be read any further.
type protocolError struct {
	code   int
	reason string
}

func (e *protocolError) Error() string { return e.reason }

// errPeerClosed ends the read loop when the client's Close frame arrives.
var errPeerClosed = errors.New("client sent a close frame")

// transport owns one client's TCP connection after the WebSocket upgrade.
// Gorilla's Upgrader does the handshake; every byte after it, in both
// directions, goes through this type:
//
//   - readLoop parses and unmasks the client's frames on the session's
//     reader goroutine and hands each complete message to the session.
//     It validates the framing (1002), UTF-8 (1007) and size (1009).
//   - the writer is a token (writing) held by at most one goroutine at a
//     time. offer (deliver, send) takes it when it is free and nothing is
//     pending, and makes one non-blocking write; otherwise kick starts a
//     writer goroutine when there is something to write and none runs, so
//     an idle connection keeps no writer stack. Only the token holder
//     writes: events, pings, pongs and the one Close frame. Each blocking
//     flush has a write deadline (WriteTimeout).
//   - closeWith records the close code (the first call wins); the writer
//     sends it, then the reader waits at most closeGrace for the client's
//     Close before the connection is dropped.
type transport struct {
	nc    net.Conn
	br    *bufio.Reader
	batch bool // the client asked for batched frames (?batch=1)
	m     *metrics

	// The session's logger is the server's with the session id, built on
	// first use (logger): most sessions never log, and slog's With
	// formats the id at once, for each of thousands of connections.
	id         string
	logBase    *slog.Logger
	sessionLog atomic.Pointer[slog.Logger]

	maxMessage   int64
	idleTimeout  time.Duration
	writeTimeout time.Duration
	pingInterval time.Duration

	// onClose runs once, when closing begins (the session cancels its
	// context there).
	onClose func()
	// admitPing, when set, decides on the reader goroutine whether a
	// client's ping gets a pong (the session's rate limit).
	admitPing func() bool

	queue   sendQueue
	writing atomic.Bool     // the writer token
	w       writer          // the token holder's scratch state
	raw     syscall.RawConn // for non-blocking writes; nil when the conn has none

	pong      atomic.Pointer[[]byte] // a ping's payload the writer must answer
	pingDue   atomic.Bool            // the keepalive timer asks for a ping
	pingMu    sync.Mutex
	pingTimer *time.Timer // guarded by pingMu

	// A replay (history.go) runs inside a Subscribe and waits on
	// drained, which the writer signals after taking the queue while
	// replaying is set. The first replay makes drained, before it sets
	// replaying.
	replaying atomic.Bool
	drained   chan struct{}

	closing     atomic.Bool // set by closeWith; cheaper than a channel on the hot path
	closeOnce   sync.Once
	closeCode   int // set once, before closing
	closeReason string
	slow        atomic.Bool
	finished    chan struct{} // closed once the writer is done for good

	// deadlineMu orders the reader's idle deadline extensions against the
	// closing deadline, so that a client that keeps sending after the
	// server's Close cannot push the read deadline back.
	deadlineMu    sync.Mutex
	closeDeadline time.Time // guarded by deadlineMu; zero until closing
}

// writer is the state only the token holder touches.
type writer struct {
	spare   []*frame
	iov     net.Buffers
	scratch []byte // headers of batched and control frames
	partial []byte // the rest of a frame a non-blocking write began
}

func (t *transport) init(nc net.Conn, l Limits) {
	t.nc = nc
	t.br = bufio.NewReaderSize(nc, readBufferSize)
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			t.raw = raw
		}
	}
	t.maxMessage = l.MaxFrameBytes
	t.idleTimeout = 2 * l.PingInterval
	t.writeTimeout = l.WriteTimeout
	t.pingInterval = l.PingInterval
	t.queue = sendQueue{maxItems: l.SendQueueMessages, maxBytes: l.SendQueueBytes}
	t.finished = make(chan struct{})
}

// logger returns the session's logger, building it on first use (two
// goroutines that race build equal ones).
func (t *transport) logger() *slog.Logger {
	if l := t.sessionLog.Load(); l != nil {
		return l
	}
	l := t.logBase.With("session", t.id)
	t.sessionLog.Store(l)
	return l
}

// closeWith asks the writer to close the connection with code; the first
// call wins. It never blocks.
func (t *transport) closeWith(code int, reason string) {
	t.closeOnce.Do(func() {
		t.closeCode, t.closeReason = code, reason
		t.closing.Store(true)
		// Until the writer has sent the Close frame, the reader may wait
		// as long as a flush may take, then closeGrace for the reply.
		t.setCloseDeadline(time.Now().Add(t.writeTimeout + closeGrace))
		if t.onClose != nil {
			t.onClose()
		}
		t.kick()
	})
}

// extendReadDeadline pushes the idle deadline back after a frame, unless
// the connection is closing.
func (t *transport) extendReadDeadline() {
	t.deadlineMu.Lock()
	if !t.closing.Load() {
		_ = t.nc.SetReadDeadline(time.Now().Add(t.idleTimeout))
	}
	t.deadlineMu.Unlock()
}

// setCloseDeadline bounds the wait for the client's Close frame. It only
// ever moves the deadline closer: closeWith's generous bound may run after
// the writer has already sent the Close and set the short one.
func (t *transport) setCloseDeadline(at time.Time) {
	t.deadlineMu.Lock()
	if t.closeDeadline.IsZero() || at.Before(t.closeDeadline) {
		t.closeDeadline = at
		_ = t.nc.SetReadDeadline(at)
	}
	t.deadlineMu.Unlock()
}

// enqueue queues f for the writer. A client whose queue is full is too
// slow: it is disconnected with 1008 rather than slowing anyone else.
func (t *transport) enqueue(f *frame) error {
	if t.closing.Load() {
		return ErrSessionClosed
	}
	if !t.queue.push(f) {
		if t.slow.CompareAndSwap(false, true) {
			t.m.slowClients.Inc()
			t.logger().Warn("client too slow, disconnecting", "queued_bytes_limit", t.queue.maxBytes, "queued_messages_limit", t.queue.maxItems)
			t.closeWith(closePolicy, "too slow to read events")
		}
		t.m.dropped.Inc()
		return ErrSlowClient
	}
	t.kick()
	return nil
}

// deliver hands f, a broadcast, to this connection from the fan-out and
// reports whether it was written already. When no writer holds the token
// and nothing else is pending, the fan-out takes the token and writes f
// itself with one non-blocking write: no goroutine wakes up for the
// common case of a client that keeps up. A write that would block hands
// the rest, and the token, to a writer goroutine, whose flushes have a
// deadline.
func (t *transport) deliver(f *frame) bool {
	written, _ := t.offer(f)
	return written
}

// send hands f, an event for this session only (a reply, Session.Send),
// to the connection the way deliver does: written at once when nothing
// else is pending, else queued. A session that connects and subscribes
// then starts no writer goroutine and sets no write deadline for its
// Welcome and Subscribed. The error is enqueue's.
func (t *transport) send(f *frame) error {
	written, err := t.offer(f)
	if written {
		t.m.delivered.Inc() // as flush counts what it writes
	}
	return err
}

// offer is deliver and send: it reports whether f was written at once,
// and enqueue's error when f was queued.
func (t *transport) offer(f *frame) (written bool, err error) {
	if t.raw == nil || t.closing.Load() || !t.writing.CompareAndSwap(false, true) {
		return false, t.enqueue(f) // a writer is running: it takes f with the rest
	}
	if t.pingDue.Load() || t.pong.Load() != nil || !t.queue.empty() {
		if t.queue.push(f) {
			go t.writeLoop() // with the token
			return false, nil
		}
		t.writing.Store(false)
		return false, t.enqueue(f) // full: enqueue closes the slow client
	}
	n, err := t.tryWrite(f.wire)
	switch {
	case err != nil:
		t.logger().Debug("write failed", "err", err)
		t.abort()
		go t.writeLoop() // to finish, with the token
		return false, nil
	case n < len(f.wire):
		t.w.partial = f.wire[n:]
		go t.writeLoop() // to write the rest, with the token
		return false, nil
	}
	t.writing.Store(false)
	// Work queued while the token was held (a Send, a ping, a close) is
	// ours to start, unless a writer already has.
	if t.hasWork() && t.writing.CompareAndSwap(false, true) {
		go t.writeLoop()
	}
	return true, nil
}

// tryWrite makes one non-blocking write(2) and reports how much of b it
// wrote; a full socket buffer is not an error (n is then short).
func (t *transport) tryWrite(b []byte) (n int, err error) {
	var werr error
	if err := t.raw.Write(func(fd uintptr) bool {
		n, werr = syscall.Write(int(fd), b)
		return true // never wait for the socket: that is the writer's job
	}); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, nil // an old flush's deadline: the writer sets a new one
		}
		return 0, err
	}
	if n < 0 {
		n = 0
	}
	if werr == syscall.EAGAIN || werr == syscall.EINTR {
		werr = nil
	}
	return n, werr
}

// serve runs the connection on the calling goroutine (the session's
// reader) until it ends: keepalive pings, the read loop, then the closing
// handshake. handle receives each complete client message, in order.
func (t *transport) serve(handle func([]byte)) error {
	t.pingMu.Lock()
	t.pingTimer = time.AfterFunc(t.pingInterval, t.pingTick)
	t.pingMu.Unlock()
	t.extendReadDeadline()

	err := t.readLoop(handle)
	if errors.Is(err, errIdle) {
		t.closeWith(closeIdle, "idle")
		err = t.readLoop(nil) // the client's reply, within the closing deadline
	}
	var pe *protocolError
	switch {
	case errors.As(err, &pe):
		t.closeWith(pe.code, pe.reason)
		// The stream cannot be parsed any more: wait for the client to
		// hang up, within the closing deadline, reading nothing into
		// memory.
		_, _ = io.Copy(io.Discard, t.br)
	case errors.Is(err, errPeerClosed):
		t.closeWith(closeNormal, "") // the reply, when the client spoke first
	default:
		// The TCP connection failed or the closing deadline passed.
		t.closeWith(closeAbnormal, "")
	}
	<-t.finished
	t.pingMu.Lock()
	t.pingTimer.Stop()
	t.pingMu.Unlock()
	_ = t.nc.Close()
	return err
}

// pingTick runs on the keepalive timer: it asks the writer for a ping and
// arms the timer again.
func (t *transport) pingTick() {
	t.pingDue.Store(true)
	t.kick()
	t.pingMu.Lock()
	if !t.closing.Load() {
		t.pingTimer.Reset(t.pingInterval)
	}
	t.pingMu.Unlock()
}

// readLoop reads frames until the client's Close frame (errPeerClosed),
// a framing error (*protocolError) or a read error. Complete messages go
// to handle while the connection is open; once closing, they are read
// and dropped while waiting for the client's Close.
func (t *transport) readLoop(handle func([]byte)) error {
	var (
		hdr       [8]byte
		mask      [4]byte
		control   [maxControlPayload]byte
		msg       []byte
		inMessage bool
	)
	for {
		if _, err := io.ReadFull(t.br, hdr[:2]); err != nil {
			return t.readError(err)
		}
		fin, op := hdr[0]&finBit != 0, hdr[0]&0x0f
		if hdr[0]&0x70 != 0 {
			return &protocolError{closeProtocol, "reserved bits set"}
		}
		if hdr[1]&0x80 == 0 {
			return &protocolError{closeProtocol, "client frame not masked"}
		}
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(t.br, hdr[:2]); err != nil {
				return t.readError(err)
			}
			n = uint64(binary.BigEndian.Uint16(hdr[:2]))
		case 127:
			if _, err := io.ReadFull(t.br, hdr[:8]); err != nil {
				return t.readError(err)
			}
			n = binary.BigEndian.Uint64(hdr[:8])
		}
		if _, err := io.ReadFull(t.br, mask[:]); err != nil {
			return t.readError(err)
		}

		switch op {
		case opClose, opPing, opPong:
			if !fin || n > maxControlPayload {
				return &protocolError{closeProtocol, "control frame fragmented or over 125 bytes"}
			}
			payload := control[:n]
			if _, err := io.ReadFull(t.br, payload); err != nil {
				return t.readError(err)
			}
			unmask(payload, mask)
			t.extendReadDeadline()
			if err := t.control(op, payload); err != nil {
				return err
			}
			continue
		case opText, opBinary:
			if inMessage {
				return &protocolError{closeProtocol, "new message inside a fragmented one"}
			}
			inMessage, msg = true, msg[:0]
		case opContinuation:
			if !inMessage {
				return &protocolError{closeProtocol, "continuation frame without a message"}
			}
		default:
			return &protocolError{closeProtocol, "unknown opcode"}
		}

		if n > uint64(t.maxMessage) || uint64(len(msg))+n > uint64(t.maxMessage) {
			return &protocolError{closeTooBig, "message too large"}
		}
		start := len(msg)
		msg = growLen(msg, int(n))
		if _, err := io.ReadFull(t.br, msg[start:]); err != nil {
			return t.readError(err)
		}
		unmask(msg[start:], mask)
		t.extendReadDeadline()
		if !fin {
			continue
		}
		inMessage = false
		// Binary frames are read as text, as myxi 1.x did: both must be
		// UTF-8, since their bytes (a tag, say) may be echoed in events.
		if !utf8.Valid(msg) {
			return &protocolError{closeInvalidData, "invalid UTF-8"}
		}
		if handle != nil && !t.closing.Load() {
			handle(msg)
		}
		if cap(msg) > 64<<10 {
			msg = nil // do not keep a large message's buffer for an idle session
		}
	}
}

// errIdle ends the read loop when no frame came for the idle timeout.
var errIdle = errors.New("idle: no frame for too long")

// readError turns a failed read into the reason the loop ends.
func (t *transport) readError(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && !t.closing.Load() {
		return errIdle
	}
	return err
}

// control handles a control frame from the client.
func (t *transport) control(op byte, payload []byte) error {
	switch op {
	case opPing:
		if !t.closing.Load() && (t.admitPing == nil || t.admitPing()) {
			p := append([]byte(nil), payload...)
			t.pong.Store(&p)
			t.kick()
		}
	case opClose:
		if len(payload) == 1 {
			return &protocolError{closeProtocol, "close frame with a 1-byte payload"}
		}
		if len(payload) >= 2 {
			if code := int(binary.BigEndian.Uint16(payload)); !validCloseCode(code) {
				return &protocolError{closeProtocol, "invalid close code"}
			}
			if !utf8.Valid(payload[2:]) {
				return &protocolError{closeInvalidData, "invalid UTF-8 in the close reason"}
			}
		}
		return errPeerClosed
	}
	return nil // a pong: the read deadline was extended, nothing more
}

// validCloseCode reports whether a client may send code (RFC 6455
// section 7.4).
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// unmask XORs a client frame's payload with its masking key.
func unmask(b []byte, key [4]byte) {
	if len(b) >= 8 {
		k := uint64(binary.LittleEndian.Uint32(key[:]))
		k |= k << 32
		for len(b) >= 8 {
			binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k)
			b = b[8:]
		}
	}
	for i := range b {
		b[i] ^= key[i&3]
	}
}

// growLen extends b by n bytes, reallocating when needed.
func growLen(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	grown := make([]byte, len(b)+n, max(2*cap(b), len(b)+n))
	copy(grown, b)
	return grown
}

// kick makes sure a writer is running to send what is pending. There is
// at most one writer per connection at any time, and none while the
// connection is idle: an idle session costs no writer goroutine.
func (t *transport) kick() {
	if t.writing.CompareAndSwap(false, true) {
		go t.writeLoop()
	}
}

// writeLoop is the connection's writer while it holds the token: it
// writes what is pending, then gives the token back and exits, unless
// more arrived meanwhile. Once closing, it writes the Close frame and
// keeps the token for good, so that nothing is written after it.
func (t *transport) writeLoop() {
	for {
		if t.closing.Load() {
			t.finish()
			close(t.finished)
			return
		}
		if err := t.flush(); err != nil {
			t.logger().Debug("write failed", "err", err)
			t.abort()
			continue // to finish
		}
		t.writing.Store(false)
		// Work that arrived after flush looked, whose kick saw this
		// writer still running, is this writer's to do, unless another
		// writer has already started for it.
		if !t.hasWork() || !t.writing.CompareAndSwap(false, true) {
			return
		}
	}
}

func (t *transport) hasWork() bool {
	if t.closing.Load() || t.pingDue.Load() || t.pong.Load() != nil {
		return true
	}
	t.queue.mu.Lock()
	defer t.queue.mu.Unlock()
	return len(t.queue.items) > 0
}

// flush writes a pending ping and pong and every queued event, in one
// system call where possible, within the write deadline.
func (t *transport) flush() error {
	w := &t.w
	iov := w.iov[:0]
	scratch := w.scratch[:0]
	partial := w.partial != nil
	if partial {
		iov = append(iov, w.partial) // a frame already begun goes first, whole
		w.partial = nil
	}
	if t.pingDue.Swap(false) {
		scratch = appendHeader(scratch, finPing, 0)
		iov = append(iov, scratch)
	}
	if p := t.pong.Swap(nil); p != nil {
		start := len(scratch)
		scratch = growCap(scratch, 2+len(*p))
		scratch = append(appendHeader(scratch, finPong, len(*p)), *p...)
		iov = append(iov, scratch[start:])
	}
	frames := t.queue.takeAll(w.spare)
	if len(frames) > 0 && t.replaying.Load() {
		select {
		case t.drained <- struct{}{}:
		default:
		}
	}
	if t.batch && len(frames) > 1 {
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
	err := t.write(iov)
	if err == nil && partial {
		t.m.delivered.Inc()
	}
	if err == nil && len(frames) > 0 {
		t.observe(frames)
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

// write writes prepared frame bytes to the socket within WriteTimeout:
// write(2) for one buffer (the common case at fan-out), writev(2) for
// several.
func (t *transport) write(iov net.Buffers) error {
	if len(iov) == 0 {
		return nil
	}
	if err := t.nc.SetWriteDeadline(time.Now().Add(t.writeTimeout)); err != nil {
		return err
	}
	var err error
	if len(iov) == 1 {
		_, err = t.nc.Write(iov[0])
	} else {
		_, err = iov.WriteTo(t.nc)
	}
	if err == nil && t.raw != nil {
		// A deadline left in the past would fail the next non-blocking
		// write from the fan-out.
		err = t.nc.SetWriteDeadline(time.Time{})
	}
	return err
}

// observe counts written frames and samples the delivery latency once per
// socket write (of its oldest broadcast): per-event observations from
// every writer contend on the histogram's counters at fan-out rates.
func (t *transport) observe(frames []*frame) {
	t.m.delivered.Add(float64(len(frames)))
	for _, f := range frames {
		if f.shared {
			t.m.latency.Observe(time.Since(f.received).Seconds())
			return
		}
	}
}

// abort drops a connection whose socket failed or must go now: no Close
// frame can be written, and closing the socket ends the reader's read.
func (t *transport) abort() {
	t.closeWith(closeAbnormal, "")
	_ = t.nc.Close()
}

// finish flushes what is queued (unless the client is the slow one) and
// sends the one Close frame, then bounds the wait for the client's.
func (t *transport) finish() {
	if t.closeCode == closeAbnormal {
		return // 1006 never goes on the wire: the socket is gone
	}
	if !t.slow.Load() {
		if err := t.flush(); err != nil {
			_ = t.nc.Close()
			return
		}
	}
	reason := truncateUTF8(t.closeReason, maxControlPayload-2)
	msg := appendHeader(make([]byte, 0, 4+len(reason)), finClose, 2+len(reason))
	msg = binary.BigEndian.AppendUint16(msg, uint16(t.closeCode))
	msg = append(msg, reason...)
	_ = t.nc.SetWriteDeadline(time.Now().Add(closeGrace))
	if _, err := t.nc.Write(msg); err != nil {
		_ = t.nc.Close() // nothing to wait for
		return
	}
	t.setCloseDeadline(time.Now().Add(closeGrace))
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
