package main

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// The storm's clients: each subscribes to one key of the history exchange
// twice, in two sessions: first without since (noting the position from
// Subscribed and any event), then, after everything was pushed, with since
// that position, keeping every Bench event for checkRecovery.

var (
	keyO         = []byte(`"o"`)
	keyEp        = []byte(`"ep"`)
	keyEpoch     = []byte(`"epoch"`)
	keyOffset    = []byte(`"offset"`)
	keyRecovered = []byte(`"recovered"`)
)

// stormSignal is one client's news for the fleet: subscribed (first
// session) or recovered (second), or failed.
type stormSignal struct {
	ok bool
	at time.Time
}

type stormFleet struct {
	url       string
	dialers   []*websocket.Dialer
	hsTimeout time.Duration
	sem       chan struct{} // handshakes in flight
	signals   chan stormSignal
	clients   []*stormClient
	wg        sync.WaitGroup
}

type stormClient struct {
	idx    int
	keyIdx int
	key    []byte
	tag    []byte // JSON text
	plain  []byte // Subscribe without since

	conn    atomic.Pointer[websocket.Conn]
	closing atomic.Bool

	// Written by the session goroutine, read by the run after wait.
	pos       position // the last position seen (first session)
	hasPos    bool
	since     *position // the second session's since
	lastSeq   int64     // the last seq pushed to the key (-1: none): its arrival ends the recovery
	subAt     time.Time // Subscribed of the current session
	recovered bool      // Subscribed's fields, second session
	epoch     string
	upTo      int64
	hasUpTo   bool
	doneAt    time.Time // when the recovery was complete
	events    []recEvent
	failure   string // the session never got to Subscribed
	endReason string // a subscribed session ended without the run closing it
	errorEv   string // the first Error event after Subscribed
	signaled  bool
	released  bool
}

func newStormFleet(cfg *config) *stormFleet {
	f := &stormFleet{
		url:       cfg.wsURL(),
		dialers:   newDialers(cfg),
		hsTimeout: cfg.HandshakeTimeout,
		sem:       make(chan struct{}, cfg.DialConcurrency),
		signals:   make(chan stormSignal, cfg.Conns),
		clients:   make([]*stormClient, cfg.Conns),
	}
	for i := range f.clients {
		k := i % cfg.Keys
		tag := "s" + strconv.Itoa(i)
		f.clients[i] = &stormClient{
			idx: i, keyIdx: k, key: []byte(keyName(k)), tag: []byte(strconv.Quote(tag)), lastSeq: -1,
			plain: fmt.Appendf(nil, `{"action":"Subscribe","tag":%q,"payload":{"exchange":%q,"routing_key":%q}}`, tag, cfg.Exchange, keyName(k)),
		}
	}
	return f
}

// subscribeMsg is the client's Subscribe, with since when it has one.
func (c *stormClient) subscribeMsg() []byte {
	if c.since == nil {
		return c.plain
	}
	// The epoch is JSON string content as the server sent it: put back as is.
	head := c.plain[:len(c.plain)-2] // without the closing "}}"
	return fmt.Appendf(bytes.Clone(head), `,"since":{"offset":%d,"epoch":"%s"}}}`, c.since.offset, c.since.epoch)
}

// start launches every client's session, at most len(sem) handshakes at
// once; each sends one signal. It returns when all are launched.
func (f *stormFleet) start(ctx context.Context) int {
	launched := 0
	for _, c := range f.clients {
		select {
		case f.sem <- struct{}{}:
		case <-ctx.Done():
			return launched
		}
		launched++
		c.closing.Store(false)
		c.signaled, c.released = false, false
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			c.session(ctx, f)
		}()
	}
	return launched
}

// collect waits for n signals, at most until deadline, calling progress
// about every 2 s; it returns the successes, the failures and the time of
// the last success.
func (f *stormFleet) collect(ctx context.Context, n int, deadline time.Time, progress func(ok, failed int)) (ok, failed int, last time.Time) {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for ok+failed < n {
		select {
		case s := <-f.signals:
			if s.ok {
				ok++
				last = s.at
			} else {
				failed++
			}
		case <-tick.C:
			progress(ok, failed)
		case <-timer.C:
			return ok, failed, last
		case <-ctx.Done():
			return ok, failed, last
		}
	}
	return ok, failed, last
}

// closeAll closes every connection, 64 at a time, and waits (at most d)
// for the sessions to end; then no signal is pending any more.
func (f *stormFleet) closeAll(d time.Duration) bool {
	closeEach(f.clients)
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		return false
	}
	for {
		select {
		case <-f.signals:
		default:
			return true
		}
	}
}

func (c *stormClient) closeConn() {
	c.closing.Store(true)
	if conn := c.conn.Load(); conn != nil {
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		conn.Close()
	}
}

func (c *stormClient) release(f *stormFleet) {
	if !c.released {
		c.released = true
		<-f.sem
	}
}

func (c *stormClient) signal(f *stormFleet, ok bool, at time.Time) {
	if !c.signaled {
		c.signaled = true
		f.signals <- stormSignal{ok: ok, at: at}
	}
}

// session is one connection: Welcome, Subscribe (with since in the second
// session), Subscribed, then events until the run closes it.
func (c *stormClient) session(ctx context.Context, f *stormFleet) {
	defer c.release(f)
	defer func() { c.signal(f, false, time.Now()) }() // a session that ends unsignaled failed
	c.subAt, c.failure, c.endReason = time.Time{}, "", ""
	hsCtx, cancel := context.WithTimeout(ctx, f.hsTimeout)
	conn, resp, err := f.dialers[c.idx%len(f.dialers)].DialContext(hsCtx, f.url, nil)
	cancel()
	if err != nil {
		c.failure = "dial: " + describeDialError(err, resp)
		return
	}
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	c.conn.Store(conn)
	defer conn.Close()
	if c.closing.Load() {
		c.failure = "closed before subscribing"
		return
	}
	conn.SetReadLimit(maxFrame)
	_ = conn.SetReadDeadline(time.Now().Add(f.hsTimeout))
	welcomed := false
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			switch {
			case c.subAt.IsZero():
				c.failure = "before Subscribed: " + describeReadError(err)
			case !c.closing.Load():
				c.endReason = describeReadError(err)
			}
			return
		}
		now := time.Now()
		for rest := msg; len(rest) > 0; {
			var line []byte
			line, rest = nextLine(rest)
			if len(line) == 0 {
				continue
			}
			name, _ := stringField(line, keyEvent)
			switch {
			case !welcomed:
				welcomed = true // the first event is Welcome; subscribe after it in any case
				_ = conn.SetWriteDeadline(now.Add(f.hsTimeout))
				if err := conn.WriteMessage(websocket.TextMessage, c.subscribeMsg()); err != nil {
					c.failure = "sending Subscribe: " + err.Error()
					return
				}
			case c.subAt.IsZero():
				tag, _ := rawValue(line, keyTag)
				if !bytes.Equal(tag, c.tag) {
					continue
				}
				if !bytes.Equal(name, evSubscribed) {
					c.failure = "Subscribe answered: " + clip(line, 200)
					return
				}
				c.subscribed(f, conn, line, now)
			case bytes.Equal(name, evBench):
				c.bench(f, line, now)
			case bytes.Equal(name, evError) || bytes.Equal(name, evInternal):
				if c.errorEv == "" {
					c.errorEv = clip(line, 200)
				}
			}
		}
	}
}

// subscribed reads Subscribed's position: the first session notes it, the
// second takes recovered and O2 and may be done already.
func (c *stormClient) subscribed(f *stormFleet, conn *websocket.Conn, line []byte, now time.Time) {
	c.subAt = now
	_ = conn.SetReadDeadline(time.Time{})
	c.release(f)
	epoch, hasEpoch := stringField(line, keyEpoch)
	offset, hasOffset := intField(line, keyOffset)
	if c.since == nil {
		if hasEpoch && hasOffset {
			c.pos, c.hasPos = position{offset: offset, epoch: string(epoch)}, true
		}
		c.signal(f, true, now)
		return
	}
	rec, _ := rawValue(line, keyRecovered)
	c.recovered = bytes.Equal(rec, []byte("true"))
	c.epoch, c.upTo, c.hasUpTo = string(epoch), offset, hasOffset
	c.events = c.events[:0]
	if !c.recovered || c.lastSeq < 0 || !hasOffset || offset <= c.since.offset {
		// nothing to replay (or nothing will be): recovered as far as it goes
		c.doneAt = now
		c.signal(f, true, now)
	}
}

// bench takes one Bench event after Subscribed.
func (c *stormClient) bench(f *stormFleet, line []byte, now time.Time) {
	seq, okSeq := intField(line, keySeq)
	if !okSeq {
		seq = -1
	}
	o, hasO := intField(line, keyO)
	ep, _ := stringField(line, keyEp)
	if c.since == nil {
		// first session: events move the noted position
		if hasO && c.hasPos && string(ep) == c.pos.epoch && o > c.pos.offset {
			c.pos.offset = o
		}
		return
	}
	c.events = append(c.events, recEvent{seq: seq, o: o, hasO: hasO, epOK: string(ep) == c.epoch})
	// Replays come in order: the key's last event, or a live one, ends it.
	if !c.signaled && (seq == c.lastSeq || (hasO && c.hasUpTo && o > c.upTo)) {
		c.doneAt = now
		c.signal(f, true, now)
	}
}
