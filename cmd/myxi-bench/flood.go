package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Flood mode (issue 12, item 4): while the scenario runs, -flooders sockets
// send Ping actions as fast as they can for -flood-duration (and at most
// -flood-max-frames each), reading whatever comes back, and one healthy
// socket sends a Ping every -flood-ping-interval. The report gives the
// healthy socket's Ping->Pong latency during the flood and whether, when and
// with which close code the server closed each flooder.

// healthyGrace is how long the healthy socket waits for its last Pongs
// after its last Ping; a Ping unanswered by then is counted as missing.
const healthyGrace = 2 * time.Second

// floodSlow is the Pong latency a healthy client should stay under (issue 12).
const floodSlow = 200 * time.Millisecond

type floodResult struct {
	Flooders         int              `json:"flooders"`
	DurationS        float64          `json:"duration_s"`
	Sent             int64            `json:"sent"`
	SentPerS         float64          `json:"sent_per_s"` // the flooders' rates (each over its own sending time), added up
	Replies          int64            `json:"replies"`
	Pongs            int64            `json:"pongs"`
	RateLimited      int64            `json:"rate_limited"`
	Closed           int              `json:"closed"`
	FirstCloseAfterS float64          `json:"first_close_after_s"`
	PerFlooder       []flooderOutcome `json:"per_flooder"`

	HealthySent      int64   `json:"healthy_sent"`
	HealthyAnswered  int64   `json:"healthy_answered"`
	HealthyMissing   int64   `json:"healthy_missing"`
	HealthyP50Ms     float64 `json:"healthy_p50_ms"`
	HealthyP99Ms     float64 `json:"healthy_p99_ms"`
	HealthyMaxMs     float64 `json:"healthy_max_ms"`
	HealthyOver200ms int64   `json:"healthy_over_200ms"`
	HealthyLimited   int64   `json:"healthy_rate_limited"`
	// The same for the Pings sent while a flooder was still sending: a
	// server that closes the flooder early ends the flood early.
	HealthyDuringN     int64   `json:"healthy_during_flood"`
	HealthyDuringP99Ms float64 `json:"healthy_during_flood_p99_ms"`
	HealthyDuringMaxMs float64 `json:"healthy_during_flood_max_ms"`
	HealthyEnd         string  `json:"healthy_end,omitempty"` // why the healthy socket ended early
}

type flooderOutcome struct {
	Sent        int64   `json:"sent"`
	SendingS    float64 `json:"sending_s"` // from the start of the flood to its last write
	SentPerS    float64 `json:"sent_per_s"`
	Pongs       int64   `json:"pongs"`
	RateLimited int64   `json:"rate_limited"`
	Other       int64   `json:"other"`
	CloseCode   int     `json:"close_code"` // 0: the server did not close it
	CloseText   string  `json:"close_text,omitempty"`
	ClosedAfter float64 `json:"closed_after_s"`
	End         string  `json:"end"` // how its flood ended
}

type floodConfig struct {
	url       string
	dialer    *websocket.Dialer
	flooders  int
	duration  time.Duration
	interval  time.Duration
	maxFrames int64
	hsTimeout time.Duration
}

type flood struct {
	cfg      floodConfig
	flooders []*flooder
	healthy  *healthy
	wg       sync.WaitGroup
	start    time.Time
}

type flooder struct {
	ws       *websocket.Conn
	weClosed atomic.Bool
	sent     atomic.Int64
	out      flooderOutcome // written by its reader, read after wg
	end      string         // written by its writer
	sending  time.Duration  // written by its writer
}

type healthy struct {
	ws    *websocket.Conn
	sent  []atomic.Int64 // send time (unix ns) of Ping i; 0 = not sent
	count atomic.Int64   // Pings sent
	// owned by the reader until wg is done
	rtts     []time.Duration
	sentAt   []int64 // send time of each rtts entry (unix ns)
	answered []bool
	rateLim  int64
	end      string
	ended    atomic.Bool // the run closed it
}

var (
	evPong        = []byte("Pong")
	errRateLimit  = []byte("RateLimited")
	keyError      = []byte(`"error"`)
	flooderAction = []byte(`{"action":"Ping","tag":"f"}`)
)

// openFlood connects the flooders and the healthy socket and waits for each
// one's first event (Welcome), so that the flood starts on live sockets.
func openFlood(ctx context.Context, cfg floodConfig) (*flood, error) {
	f := &flood{cfg: cfg}
	dial := func() (*websocket.Conn, error) {
		hctx, cancel := context.WithTimeout(ctx, cfg.hsTimeout)
		defer cancel()
		ws, resp, err := cfg.dialer.DialContext(hctx, cfg.url, nil)
		if err != nil {
			return nil, fmt.Errorf("flood socket: %s", describeDialError(err, resp))
		}
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		ws.SetReadLimit(maxFrame)
		_ = ws.SetReadDeadline(time.Now().Add(cfg.hsTimeout))
		if _, _, err := ws.ReadMessage(); err != nil {
			ws.Close()
			return nil, fmt.Errorf("flood socket: waiting for Welcome: %s", describeReadError(err))
		}
		return ws, nil
	}
	for range cfg.flooders {
		ws, err := dial()
		if err != nil {
			f.closeAll()
			return nil, err
		}
		f.flooders = append(f.flooders, &flooder{ws: ws})
	}
	ws, err := dial()
	if err != nil {
		f.closeAll()
		return nil, err
	}
	n := pingCount(cfg.duration, cfg.interval)
	f.healthy = &healthy{ws: ws, sent: make([]atomic.Int64, n), answered: make([]bool, n)}
	return f, nil
}

// pingCount is how many Pings the healthy socket sends: one at the start and
// one per interval within the duration, at most 100,000.
func pingCount(d, interval time.Duration) int {
	if interval <= 0 {
		return 1
	}
	return int(min(int64(d/interval), 99_999)) + 1
}

func (f *flood) closeAll() {
	for _, fl := range f.flooders {
		fl.ws.Close()
	}
	if f.healthy != nil {
		f.healthy.ws.Close()
	}
}

// run starts the flood; wait collects it.
func (f *flood) run() {
	f.start = time.Now()
	end := f.start.Add(f.cfg.duration)
	for _, fl := range f.flooders {
		f.wg.Add(2)
		go func() { defer f.wg.Done(); fl.write(f.start, end, f.cfg.maxFrames) }()
		go func() { defer f.wg.Done(); fl.read(f.start, end.Add(5*time.Second)) }()
	}
	h := f.healthy
	f.wg.Add(2)
	go func() { defer f.wg.Done(); h.ping(f.start, f.cfg.interval) }()
	go func() { defer f.wg.Done(); h.read(end.Add(healthyGrace + 5*time.Second)) }()
}

// write sends Pings back to back until end or maxFrames, then closes the
// flood normally. A failed write means the server closed or dropped the
// socket: the reader reports how.
func (fl *flooder) write(start, end time.Time, maxFrames int64) {
	_ = fl.ws.SetWriteDeadline(end.Add(2 * time.Second)) // a server that stops reading cannot hold it
	n := int64(0)
	fl.end = "ran the whole duration"
	var werr error
	for ; n < maxFrames; n++ {
		if n%64 == 0 && !time.Now().Before(end) {
			break
		}
		if werr = fl.ws.WriteMessage(websocket.TextMessage, flooderAction); werr != nil {
			fl.end = "write failed: " + werr.Error()
			break
		}
	}
	if n == maxFrames {
		fl.end = fmt.Sprintf("reached -flood-max-frames %d", maxFrames)
	}
	fl.sent.Store(n)
	fl.sending = time.Since(start)
	if werr == nil {
		fl.weClosed.Store(true)
		_ = fl.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	}
	// The reader ends on the server's close frame, or at this deadline.
	_ = fl.ws.SetReadDeadline(time.Now().Add(2 * time.Second))
}

// read counts the replies and notes how the server ended the socket.
func (fl *flooder) read(start, deadline time.Time) {
	defer fl.ws.Close()
	_ = fl.ws.SetReadDeadline(deadline)
	for {
		_, msg, err := fl.ws.ReadMessage()
		if err != nil {
			if fl.weClosed.Load() {
				return // ended by us (the server's close reply, or our deadline)
			}
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				fl.out.CloseCode, fl.out.CloseText = ce.Code, ce.Text
			} else {
				fl.out.CloseCode, fl.out.CloseText = websocket.CloseAbnormalClosure, describeReadError(err)
			}
			fl.out.ClosedAfter = round3(time.Since(start).Seconds())
			return
		}
		for rest := msg; len(rest) > 0; {
			var line []byte
			line, rest = nextLine(rest)
			if len(line) == 0 {
				continue
			}
			name, _ := stringField(line, keyEvent)
			switch {
			case bytes.Equal(name, evPong):
				fl.out.Pongs++
			case bytes.Equal(name, evError) && isRateLimited(line):
				fl.out.RateLimited++
			default:
				fl.out.Other++
			}
		}
	}
}

func isRateLimited(line []byte) bool {
	v, ok := stringField(line, keyError)
	return ok && bytes.Equal(v, errRateLimit)
}

// ping sends Ping i with tag "h<i>" at start + i×interval.
func (h *healthy) ping(start time.Time, interval time.Duration) {
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	var msg []byte
	for i := range h.sent {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			t.Reset(wait)
			<-t.C
		}
		if h.ended.Load() {
			return
		}
		msg = append(msg[:0], `{"action":"Ping","tag":"h`...)
		msg = strconv.AppendInt(msg, int64(i), 10)
		msg = append(msg, `"}`...)
		h.sent[i].Store(time.Now().UnixNano())
		_ = h.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := h.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
			h.sent[i].Store(0)
			return
		}
		h.count.Add(1)
	}
}

// read matches Pongs to Pings by tag until the run closes the socket.
func (h *healthy) read(deadline time.Time) {
	defer h.ws.Close()
	_ = h.ws.SetReadDeadline(deadline)
	for {
		_, msg, err := h.ws.ReadMessage()
		if err != nil {
			if !h.ended.Load() {
				h.end = describeReadError(err)
			}
			return
		}
		now := time.Now().UnixNano()
		for rest := msg; len(rest) > 0; {
			var line []byte
			line, rest = nextLine(rest)
			if len(line) == 0 {
				continue
			}
			name, _ := stringField(line, keyEvent)
			if bytes.Equal(name, evError) && isRateLimited(line) {
				h.rateLim++
				continue
			}
			if !bytes.Equal(name, evPong) {
				continue
			}
			tag, ok := stringField(line, keyTag)
			if !ok || len(tag) < 2 || tag[0] != 'h' {
				continue
			}
			i, err := strconv.Atoi(string(tag[1:]))
			if err != nil || i < 0 || i >= len(h.sent) || h.answered[i] {
				continue
			}
			if sent := h.sent[i].Load(); sent > 0 {
				h.answered[i] = true
				h.rtts = append(h.rtts, time.Duration(max(0, now-sent)))
				h.sentAt = append(h.sentAt, sent)
			}
		}
	}
}

// wait waits for the flood to end (bounded), then ends the healthy socket
// after its grace and returns the figures.
func (f *flood) wait() *floodResult {
	h := f.healthy
	stop := time.NewTimer(time.Until(f.start.Add(f.cfg.duration + healthyGrace)))
	<-stop.C
	h.ended.Store(true)
	_ = h.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	_ = h.ws.SetReadDeadline(time.Now().Add(time.Second))
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		f.closeAll() // every read and write is bounded by a deadline; this is a last resort
		<-done
	}
	return f.result()
}

func (f *flood) result() *floodResult {
	r := &floodResult{Flooders: len(f.flooders), DurationS: secs(f.cfg.duration)}
	first := math.Inf(1)
	var flooding time.Duration // until the last flooder's last write
	for _, fl := range f.flooders {
		flooding = max(flooding, fl.sending)
		out := fl.out
		out.Sent = fl.sent.Load()
		out.End = fl.end
		out.SendingS = secs(fl.sending)
		if fl.sending > 0 {
			out.SentPerS = round3(float64(out.Sent) / fl.sending.Seconds())
		}
		r.Sent += out.Sent
		r.SentPerS += out.SentPerS
		r.Pongs += out.Pongs
		r.RateLimited += out.RateLimited
		r.Replies += out.Pongs + out.RateLimited + out.Other
		if out.CloseCode != 0 {
			r.Closed++
			first = min(first, out.ClosedAfter)
		}
		r.PerFlooder = append(r.PerFlooder, out)
	}
	if r.Closed > 0 {
		r.FirstCloseAfterS = first
	}
	r.SentPerS = round3(r.SentPerS)
	h := f.healthy
	r.HealthySent = h.count.Load()
	r.HealthyAnswered = int64(len(h.rtts))
	r.HealthyMissing = r.HealthySent - r.HealthyAnswered
	r.HealthyEnd = h.end
	r.HealthyLimited = h.rateLim
	p50, p99, mx := rttPercentiles(h.rtts)
	r.HealthyP50Ms, r.HealthyP99Ms, r.HealthyMaxMs = ms(float64(p50)), ms(float64(p99)), ms(float64(mx))
	floodEnd := f.start.Add(flooding).UnixNano()
	var during []time.Duration
	for i, d := range h.rtts {
		if d > floodSlow {
			r.HealthyOver200ms++
		}
		if h.sentAt[i] < floodEnd {
			during = append(during, d)
		}
	}
	_, p99, mx = rttPercentiles(during)
	r.HealthyDuringN, r.HealthyDuringP99Ms, r.HealthyDuringMaxMs = int64(len(during)), ms(float64(p99)), ms(float64(mx))
	return r
}

// rttPercentiles returns the exact p50, p99 (nearest rank) and max of ds.
func rttPercentiles(ds []time.Duration) (p50, p99, mx time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return rank(0.50), rank(0.99), s[len(s)-1]
}
