package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/myxi/myxi/internal/runpool"
)

// One WebSocket client: one goroutine that has a reused goroutine connect,
// wait for Welcome, subscribe to its key and wait for Subscribed, then
// reads events until the run closes it. Its counters are written by one
// goroutine at a time (the handshake's, then the client's) and read once
// it has ended.

const maxFrame = 4 << 20 // read limit per frame

type clientState int32

const (
	stConnecting clientState = iota
	stWaitSubscribed
	stLive
	stFailed // never got subscribed
	stEnded  // was live, read loop ended
)

// shared is what all clients of a run use.
type shared struct {
	url       string
	dialers   []*websocket.Dialer
	keys      int
	perKey    int64 // bitmap size: events one key gets at most
	exchange  string
	hsTimeout time.Duration
	hist      *histogram
	bufPool   sync.Pool
	// samples: each client also keeps every Bench event's send time and
	// latency, so that the storm can take percentiles over any window.
	samples bool

	// handshake results go here (the fleet waits for one per client)
	handshakes chan handshakeResult
	sem        chan struct{}
	setup      *runpool.Pool // runs the handshakes (client.run); set by fleet.open
}

type handshakeResult struct {
	idx int
	ok  bool
	at  time.Time
}

type client struct {
	idx    int
	keyIdx int
	key    []byte // routing key as it appears in mq.rk
	tag    []byte // our Subscribe tag, as JSON text
	subMsg []byte

	conn    atomic.Pointer[websocket.Conn]
	state   atomic.Int32
	closing atomic.Bool // set by the run before it closes the connection
	done    chan struct{}

	// owned by the client's goroutine until done is closed
	failReason  string
	endReason   string // why a live read loop ended
	noWelcome   bool   // first event was not Welcome
	seen        []uint64
	distinct    int64
	dups        int64
	wrongKey    int64
	outOfRange  int64
	unparsable  int64
	negative    int64 // latency < 0 (clock step): counted as 0
	otherEvents int64
	errorEvents int64
	firstError  string
	lastRecvNs  int64
	frames      int64
	samples     []latSample // with sh.samples
}

// latSample is one delivery: when it was sent and how long it took.
type latSample struct{ sentNs, latNs int64 }

func newClient(idx, keys int, exchange string) *client {
	return newNamedClient(idx, keys, exchange, keyName)
}

// newNamedClient is newClient with the routing keys named by name (the
// storm's live clients use keys of their own).
func newNamedClient(idx, keys int, exchange string, name func(int) string) *client {
	k := idx % keys
	key := name(k)
	tag := "b" + strconv.Itoa(idx)
	msg := fmt.Sprintf(`{"action":"Subscribe","tag":%q,"payload":{"exchange":%q,"routing_key":%q}}`, tag, exchange, key)
	return &client{
		idx:    idx,
		keyIdx: k,
		key:    []byte(key),
		tag:    []byte(strconv.Quote(tag)),
		subMsg: []byte(msg),
		done:   make(chan struct{}),
	}
}

func (c *client) getState() clientState { return clientState(c.state.Load()) }

// handshakeDone reports the end of the handshake to the fleet exactly once.
func (c *client) handshakeDone(sh *shared, ok bool) {
	<-sh.sem
	sh.handshakes <- handshakeResult{idx: c.idx, ok: ok, at: time.Now()}
}

func (c *client) fail(sh *shared, reason string) {
	c.failReason = reason
	c.state.Store(int32(stFailed))
	c.handshakeDone(sh, false)
	if conn := c.conn.Load(); conn != nil {
		conn.Close()
	}
}

// run is the client's goroutine. The handshake (dial, Welcome,
// Subscribe, Subscribed) runs on one of sh.setup's reused goroutines
// while run waits: dialing and parsing HTTP need a deep stack, which
// would otherwise be grown, copied and kept by each of thousands of
// client goroutines, on the cores the measured server uses too. The live
// read loop then runs here, on a shallow stack.
func (c *client) run(ctx context.Context, sh *shared) {
	defer close(c.done)
	var conn *websocket.Conn
	sh.setup.Run(func() { conn = c.connect(ctx, sh) })
	if conn != nil {
		c.readLoop(sh, conn, false)
	}
}

// connect dials and reads until the client is live: it returns the
// connection then, or nil when the client failed (already reported).
func (c *client) connect(ctx context.Context, sh *shared) *websocket.Conn {
	hsCtx, cancel := context.WithTimeout(ctx, sh.hsTimeout)
	dialer := sh.dialers[c.idx%len(sh.dialers)]
	conn, resp, err := dialer.DialContext(hsCtx, sh.url, nil)
	cancel()
	if err != nil {
		c.fail(sh, "dial: "+describeDialError(err, resp))
		return nil
	}
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	c.conn.Store(conn)
	conn.SetReadLimit(maxFrame)
	_ = conn.SetReadDeadline(time.Now().Add(sh.hsTimeout))
	if c.closing.Load() { // the run is being torn down
		c.fail(sh, "closed before subscribing")
		return nil
	}
	if !c.readLoop(sh, conn, true) {
		return nil
	}
	return conn
}

// readLoop reads and handles frames until the connection ends or the
// client gives up (false), or, with untilLive, until the client has just
// become live (true).
func (c *client) readLoop(sh *shared, conn *websocket.Conn, untilLive bool) bool {
	for {
		_, r, err := conn.NextReader()
		if err != nil {
			switch c.getState() {
			case stLive:
				if !c.closing.Load() {
					c.endReason = describeReadError(err)
				}
				c.state.Store(int32(stEnded))
			default:
				c.fail(sh, "before Subscribed: "+describeReadError(err))
			}
			return false
		}
		bp := sh.bufPool.Get().(*[]byte)
		buf, err := readFrame(r, (*bp)[:0])
		if err != nil {
			sh.putBuf(bp, buf)
			continue // NextReader reports the connection's error next
		}
		now := time.Now().UnixNano()
		before := c.getState()
		if before == stLive {
			c.frames++
		}
		for rest := buf; len(rest) > 0; {
			var line []byte
			line, rest = nextLine(rest)
			if len(line) == 0 {
				continue
			}
			if !c.handle(sh, conn, line, now) {
				sh.putBuf(bp, buf)
				return false
			}
		}
		sh.putBuf(bp, buf)
		if before != stLive && c.getState() == stLive {
			_ = conn.SetReadDeadline(time.Time{})
			c.handshakeDone(sh, true)
			if untilLive {
				return true
			}
		}
	}
}

// handle processes one event; false means the client gave up.
func (c *client) handle(sh *shared, conn *websocket.Conn, line []byte, now int64) bool {
	name, _ := stringField(line, keyEvent)
	switch c.getState() {
	case stLive:
		if bytes.Equal(name, evBench) {
			c.bench(sh, line, now)
			return true
		}
		if bytes.Equal(name, evError) || bytes.Equal(name, evInternal) {
			c.errorEvents++
			if c.firstError == "" {
				c.firstError = clip(line, 200)
			}
			return true
		}
		c.otherEvents++
		return true
	case stConnecting:
		// The first event must be Welcome; subscribe after it in any case.
		if !bytes.Equal(name, evWelcome) {
			c.noWelcome = true
		}
		_ = conn.SetWriteDeadline(time.Now().Add(sh.hsTimeout))
		if err := conn.WriteMessage(websocket.TextMessage, c.subMsg); err != nil {
			c.fail(sh, "sending Subscribe: "+err.Error())
			return false
		}
		c.state.Store(int32(stWaitSubscribed))
		return true
	case stWaitSubscribed:
		tag, _ := rawValue(line, keyTag)
		mine := bytes.Equal(tag, c.tag)
		switch {
		case bytes.Equal(name, evSubscribed) && mine:
			c.state.Store(int32(stLive))
		case bytes.Equal(name, evError) || bytes.Equal(name, evInternal):
			c.fail(sh, "Subscribe answered: "+clip(line, 200))
			return false
		case bytes.Equal(name, evBench):
			c.otherEvents++ // an event before Subscribed: not this run's
		default:
			c.otherEvents++
		}
	}
	return true
}

// bench accounts one Bench event.
func (c *client) bench(sh *shared, line []byte, now int64) {
	ev, ok := parseBench(line)
	if !ok {
		c.unparsable++
		return
	}
	if (ev.hasRK && !bytes.Equal(ev.rk, c.key)) || ev.seq < 0 || ev.seq%int64(sh.keys) != int64(c.keyIdx) {
		c.wrongKey++
		return
	}
	i := ev.seq / int64(sh.keys)
	if i >= sh.perKey {
		c.outOfRange++
		return
	}
	if c.seen == nil {
		c.seen = make([]uint64, (sh.perKey+63)/64)
	}
	w, bit := i/64, uint64(1)<<(i%64)
	if c.seen[w]&bit != 0 {
		c.dups++
		return
	}
	c.seen[w] |= bit
	c.distinct++
	lat := now - ev.t
	if lat < 0 {
		c.negative++
		lat = 0
	}
	c.lastRecvNs = now
	sh.hist.record(c.idx, uint64(lat))
	if sh.samples {
		c.samples = append(c.samples, latSample{sentNs: ev.t, latNs: lat})
	}
}

// closeConn sends a normal close and closes the socket (safe from any
// goroutine).
func (c *client) closeConn() {
	c.closing.Store(true)
	conn := c.conn.Load()
	if conn == nil {
		return
	}
	_ = conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	conn.Close()
}

func (sh *shared) putBuf(bp *[]byte, buf []byte) {
	if cap(buf) > 256<<10 { // let an outsized frame's buffer go
		buf = make([]byte, 0, 4096)
	}
	*bp = buf
	sh.bufPool.Put(bp)
}

// readFrame reads a whole message into buf (grown as needed).
func readFrame(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func clip(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

func describeReadError(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return fmt.Sprintf("closed by server: %d %s", ce.Code, ce.Text)
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	return err.Error()
}
