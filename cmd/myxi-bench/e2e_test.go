package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/myxi/myxi/internal/testutil"
)

// End to end: the tool against a small fake Myxi server (gorilla + the real
// RabbitMQ on loopback), so that the tool is tested without the real server.
// The fake binds one queue per key as clients subscribe, fans events out,
// batches for ?batch=1 clients, and can drop events to prove that loss fails
// the run. Skipped when RabbitMQ is not reachable or with -short.

type fakeServer struct {
	t        *testing.T
	exchange string
	conn     *amqp.Connection
	ch       *amqp.Channel
	queue    string
	dropSeq  int64 // drop events with this seq for one client (-1: none)
	dropped  atomic.Int64
	// pingLimit > 0: a session that sends more Pings is closed with 1008,
	// as a server that stops floods does.
	pingLimit int

	mu    sync.Mutex // guards subs and the binding channel
	subs  map[string][]*fakeSession
	bound map[string]bool
}

type fakeSession struct {
	ws    *websocket.Conn
	batch bool
	out   chan []byte
	idx   int
}

func amqpURLForTest(t *testing.T) string {
	if testing.Short() {
		t.Skip("-short: no end-to-end run")
	}
	// Skips locally without RabbitMQ; fails under CI=true.
	return testutil.RabbitMQURL(t)
}

func newFakeServer(t *testing.T, amqpURL string, dropSeq int64) (*fakeServer, *httptest.Server) {
	f := &fakeServer{
		t:        t,
		exchange: fmt.Sprintf("myxi-bench-test-%d-%d", os.Getpid(), time.Now().UnixNano()),
		dropSeq:  dropSeq,
		subs:     map[string][]*fakeSession{},
		bound:    map[string]bool{},
	}
	var err error
	if f.conn, err = amqp.Dial(amqpURL); err != nil {
		t.Fatal(err)
	}
	if f.ch, err = f.conn.Channel(); err != nil {
		t.Fatal(err)
	}
	if err := f.ch.ExchangeDeclare(f.exchange, "direct", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	q, err := f.ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.queue = q.Name
	deliveries, err := f.ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	go f.fanOut(deliveries)
	var sessions atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{ReadBufferSize: 512, WriteBufferSize: 1024}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s := &fakeSession{ws: ws, batch: r.URL.Query().Get("batch") == "1", out: make(chan []byte, 4096), idx: int(sessions.Add(1))}
		go s.writer()
		s.out <- []byte(`{"event":"Welcome","tag":null,"payload":{"id":"0123456789abcdef"}}`)
		f.read(s)
	}))
	t.Cleanup(func() {
		srv.Close()
		ch, err := f.conn.Channel()
		if err == nil {
			ch.ExchangeDelete(f.exchange, false, false)
		}
		f.conn.Close()
	})
	return f, srv
}

func (f *fakeServer) read(s *fakeSession) {
	defer close(s.out)
	pings := 0
	for {
		_, msg, err := s.ws.ReadMessage()
		if err != nil {
			return
		}
		var a struct {
			Action  string          `json:"action"`
			Tag     json.RawMessage `json:"tag"`
			Payload struct {
				Exchange   string `json:"exchange"`
				RoutingKey string `json:"routing_key"`
			} `json:"payload"`
		}
		if json.Unmarshal(msg, &a) != nil {
			continue
		}
		if a.Action == "Ping" {
			if pings++; f.pingLimit > 0 && pings > f.pingLimit {
				_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "flooding"), time.Now().Add(time.Second))
				// wait for the client's close reply, so that closing does
				// not reset a socket with unread data
				_ = s.ws.SetReadDeadline(time.Now().Add(2 * time.Second))
				for {
					if _, _, err := s.ws.ReadMessage(); err != nil {
						return
					}
				}
			}
			tag := a.Tag
			if len(tag) == 0 {
				tag = json.RawMessage("null")
			}
			s.out <- []byte(fmt.Sprintf(`{"event":"Pong","tag":%s,"payload":{"time":1}}`, tag))
			continue
		}
		if a.Action != "Subscribe" {
			continue
		}
		key := a.Payload.RoutingKey
		f.mu.Lock()
		if !f.bound[key] {
			if err := f.ch.QueueBind(f.queue, key, f.exchange, false, nil); err != nil {
				f.mu.Unlock()
				f.t.Errorf("bind: %v", err)
				return
			}
			f.bound[key] = true
		}
		f.subs[key] = append(f.subs[key], s)
		f.mu.Unlock()
		s.out <- []byte(fmt.Sprintf(`{"event":"Subscribed","tag":%s,"payload":{"exchange":%q,"routing_key":%q}}`, a.Tag, a.Payload.Exchange, key))
	}
}

func (f *fakeServer) fanOut(deliveries <-chan amqp.Delivery) {
	for d := range deliveries {
		var body map[string]json.RawMessage
		if json.Unmarshal(d.Body, &body) != nil {
			continue
		}
		body["tag"] = json.RawMessage("null")
		body["mq"], _ = json.Marshal(map[string]string{"e": d.Exchange, "rk": d.RoutingKey})
		out, _ := json.Marshal(body)
		var seq struct {
			Seq int64 `json:"seq"`
		}
		json.Unmarshal(body["payload"], &seq)
		f.mu.Lock()
		subs := f.subs[d.RoutingKey]
		f.mu.Unlock()
		for _, s := range subs {
			if seq.Seq == f.dropSeq && s.idx == 1 {
				f.dropped.Add(1)
				continue
			}
			select {
			case s.out <- out:
			default:
				f.dropped.Add(1) // a full queue drops, as a real server may
			}
		}
	}
}

// writer sends what is queued; for batch clients, everything pending in one
// frame, one event per line, after a pause that lets several queue up.
func (s *fakeSession) writer() {
	var buf bytes.Buffer
	for msg := range s.out {
		buf.Reset()
		buf.Write(msg)
		if s.batch {
			time.Sleep(120 * time.Millisecond)
		more:
			for range 64 {
				select {
				case m, ok := <-s.out:
					if !ok {
						break more
					}
					buf.WriteByte('\n')
					buf.Write(m)
				default:
					break more
				}
			}
		}
		if s.ws.WriteMessage(websocket.TextMessage, buf.Bytes()) != nil {
			break
		}
	}
	s.ws.Close()
	for range s.out { // let the reader finish
	}
}

func runTool(t *testing.T, args ...string) (int, result, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	var r result
	for _, line := range strings.Split(out.String(), "\n") {
		if js, ok := strings.CutPrefix(line, "RESULT "); ok {
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				t.Fatalf("RESULT line: %v\n%s", err, js)
			}
		}
	}
	return code, r, out.String() + errb.String()
}

func TestEndToEndAgainstFakeServer(t *testing.T) {
	amqpURL := amqpURLForTest(t)
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			f, srv := newFakeServer(t, amqpURL, -1)
			wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/"
			args := []string{"-url", wsURL, "-amqp", amqpURL, "-exchange", f.exchange,
				"-conns", "30", "-keys", "3", "-rate", "60", "-duration", "1s", "-settle", "0s",
				"-drain", "5s", "-timeout", "60s", "-pid", fmt.Sprint(os.Getpid()), "-confirm",
				"-payload-bytes", "200", "-source-ips", "2"}
			if batch {
				args = append(args, "-batch")
			}
			code, r, out := runTool(t, args...)
			if code != exitPass || !r.Pass {
				t.Fatalf("exit %d, pass %v:\n%s", code, r.Pass, out)
			}
			// 60 events over 3 keys, 10 clients per key
			if r.Connected != 30 || r.Published != 60 || r.Expected != 600 || r.Received != 600 || r.Lost != 0 {
				t.Fatalf("counts: connected %d published %d expected %d received %d lost %d\n%s",
					r.Connected, r.Published, r.Expected, r.Received, r.Lost, out)
			}
			if r.LatP99Ms <= 0 || r.LatMaxMs < r.LatP99Ms || r.ServerPID != os.Getpid() || r.RSSBeforeKB <= 0 {
				t.Fatalf("figures: %+v", r)
			}
			if r.Frames < 1 || r.Frames > 600 {
				t.Fatalf("frames %d for 600 deliveries", r.Frames)
			}
			// the fake batches 2-3 events (20/s per key, 120 ms pause)
			if batch && r.EventsPerFrame < 1.5 {
				t.Fatalf("%.2f events per frame with batching", r.EventsPerFrame)
			}
		})
	}
}

func TestEndToEndLossFails(t *testing.T) {
	amqpURL := amqpURLForTest(t)
	f, srv := newFakeServer(t, amqpURL, 7) // one client misses event 7
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/"
	code, r, out := runTool(t, "-url", wsURL, "-amqp", amqpURL, "-exchange", f.exchange,
		"-conns", "4", "-keys", "1", "-rate", "40", "-duration", "500ms", "-settle", "0s",
		"-drain", "1s", "-timeout", "60s", "-pid", "-1")
	if f.dropped.Load() != 1 {
		t.Fatalf("the fake dropped %d events, want 1\n%s", f.dropped.Load(), out)
	}
	if code != exitFail || r.Pass || r.Lost != 1 || r.Expected != 80 || r.Received != 79 {
		t.Fatalf("exit %d pass %v lost %d expected %d received %d\n%s", code, r.Pass, r.Lost, r.Expected, r.Received, out)
	}
	if !strings.Contains(out, "lost 1 of 80 deliveries") {
		t.Fatalf("report does not name the loss:\n%s", out)
	}
}

func TestRefusesMissingExchange(t *testing.T) {
	amqpURL := amqpURLForTest(t)
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/"
	code, _, out := runTool(t, "-url", wsURL, "-amqp", amqpURL, "-exchange", "myxi-bench-no-such-exchange",
		"-pid", "-1", "-timeout", "60s")
	if code != exitSetup || !strings.Contains(out, "does not exist") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestEndToEndFlood(t *testing.T) {
	amqpURL := amqpURLForTest(t)
	for _, limit := range []int{0, 300} {
		t.Run(fmt.Sprintf("pingLimit=%d", limit), func(t *testing.T) {
			f, srv := newFakeServer(t, amqpURL, -1)
			f.pingLimit = limit
			// With a limit, the flooder must still be sending when the fake
			// closes it: a busy machine may let it send 2,000 frames
			// before the fake has read 300.
			maxFrames := 2000
			if limit > 0 {
				maxFrames = 200000
			}
			wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/"
			code, r, out := runTool(t, "-url", wsURL, "-amqp", amqpURL, "-exchange", f.exchange,
				"-conns", "10", "-keys", "1", "-rate", "20", "-duration", "1s", "-settle", "0s", "-drain", "5s",
				"-timeout", "60s", "-pid", fmt.Sprint(os.Getpid()),
				"-flood", "-flood-duration", "1s", "-flood-ping-interval", "20ms", "-flood-max-frames", fmt.Sprint(maxFrames))
			if code != exitPass || !r.Pass || r.Received != 200 || r.Flood == nil {
				t.Fatalf("exit %d pass %v received %d:\n%s", code, r.Pass, r.Received, out)
			}
			fl := r.Flood
			// one Ping at 0 and one every 20 ms within 1 s
			if fl.HealthySent != 51 || fl.HealthyAnswered != 51 || fl.HealthyMissing != 0 || fl.HealthyP99Ms <= 0 ||
				fl.HealthyMaxMs < fl.HealthyP99Ms || fl.HealthyP50Ms > fl.HealthyP99Ms {
				t.Fatalf("healthy socket: %+v\n%s", fl, out)
			}
			if fl.Flooders != 1 || len(fl.PerFlooder) != 1 {
				t.Fatalf("flooders: %+v", fl)
			}
			o := fl.PerFlooder[0]
			// A flood that ends within a few ping intervals (20 ms), closed
			// or done with its frames (2,000 can go in 18 ms), may see no
			// healthy Ping at all.
			floodLasted := o.SendingS
			if limit > 0 {
				floodLasted = o.ClosedAfter
			}
			if fl.HealthyDuringN < 1 && floodLasted > 0.1 || fl.HealthyDuringN > fl.HealthyAnswered || fl.HealthyDuringMaxMs > fl.HealthyMaxMs {
				t.Fatalf("healthy socket during the flood: %+v (flooder %+v)", fl, o)
			}
			if limit == 0 {
				// never closed: it stops at -flood-max-frames (or the duration)
				// (the fake answers a close before the Pongs it has queued)
				if fl.Closed != 0 || o.CloseCode != 0 || o.Sent < 1 || o.Sent > 2000 || o.Pongs < 1 || o.Pongs > o.Sent ||
					o.SendingS <= 0 || o.SendingS > 1.2 || o.SentPerS <= 0 || fl.SentPerS != o.SentPerS ||
					!strings.Contains(out, "the server closed 0 of 1 flooders") {
					t.Fatalf("flooder: %+v\n%s", o, out)
				}
				return
			}
			if fl.Closed != 1 || o.CloseCode != 1008 || o.CloseText != "flooding" || o.ClosedAfter <= 0 || o.ClosedAfter > 1.5 ||
				fl.FirstCloseAfterS != o.ClosedAfter || o.Pongs > int64(limit) || o.Sent <= int64(limit) {
				t.Fatalf("flooder: %+v\n%s", o, out)
			}
			if !strings.Contains(out, `closed by the server after`) || !strings.Contains(out, `with 1008 "flooding"`) {
				t.Fatalf("report:\n%s", out)
			}
		})
	}
}

// freePort returns a loopback port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// deleteExchangeAtEnd removes the exchange the floor server declares.
func deleteExchangeAtEnd(t *testing.T, amqpURL, exchange string) {
	t.Cleanup(func() {
		conn, err := amqp.Dial(amqpURL)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		if err := ch.ExchangeDelete(exchange, false, false); err != nil {
			t.Errorf("cleanup: delete exchange %s: %v", exchange, err)
		}
	})
}

func processGone(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return os.IsNotExist(err)
}

// The floor server, spawned as a separate process (this test binary with
// the floor-server subcommand), on the real RabbitMQ.
func TestEndToEndFloor(t *testing.T) {
	amqpURL := amqpURLForTest(t)
	exchange := testutil.UniqueName("myxi-bench-floor")
	deleteExchangeAtEnd(t, amqpURL, exchange)
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			args := []string{"-floor", "-url", fmt.Sprintf("ws://127.0.0.1:%d/", freePort(t)), "-amqp", amqpURL,
				"-exchange", exchange, "-conns", "50", "-keys", "2", "-rate", "40", "-duration", "1s", "-settle", "0s",
				"-drain", "5s", "-timeout", "60s", "-spawn-wait", "20s", "-spawn-log", t.TempDir() + "/server.log"}
			if batch {
				args = append(args, "-batch")
			}
			code, r, out := runTool(t, args...)
			if code != exitPass || !r.Pass {
				t.Fatalf("exit %d pass %v:\n%s", code, r.Pass, out)
			}
			// 40 events over 2 keys, 25 clients per key; one event per frame
			if r.Target != "floor" || r.Connected != 50 || r.NoWelcome != 0 || r.Expected != 1000 || r.Received != 1000 ||
				r.Frames != 1000 || r.Unroutable != 0 {
				t.Fatalf("counts: %+v\n%s", r, out)
			}
			if r.ServerPID <= 0 || r.ServerPID == os.Getpid() || r.RSSBeforeKB <= 0 {
				t.Fatalf("the floor was not sampled as a process of its own: pid %d rss %d", r.ServerPID, r.RSSBeforeKB)
			}
			if !processGone(r.ServerPID) {
				t.Fatalf("the floor server (pid %d) still runs after the tool returned", r.ServerPID)
			}
			if !strings.Contains(out, "(floor server) ==") {
				t.Fatalf("report:\n%s", out)
			}
		})
	}
}

// -floor-compare, with the floor itself standing in for the -spawn server
// (the test cannot build Myxi): two processes, two runs, one ratio.
func TestEndToEndFloorCompare(t *testing.T) {
	amqpURL := amqpURLForTest(t)
	exchange := testutil.UniqueName("myxi-bench-cmp")
	deleteExchangeAtEnd(t, amqpURL, exchange)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	spawn := fmt.Sprintf("'%s' %s -exchange %s -prefetch 100", strings.ReplaceAll(exe, "'", `'\''`), floorSubcommand, exchange)
	code, r, out := runTool(t, "-floor-compare", "-spawn", spawn, "-url", fmt.Sprintf("ws://127.0.0.1:%d/", freePort(t)),
		"-amqp", amqpURL, "-exchange", exchange, "-conns", "50", "-keys", "1", "-rate", "50", "-duration", "1s",
		"-settle", "0s", "-drain", "5s", "-timeout", "60s", "-spawn-wait", "20s", "-spawn-log", t.TempDir()+"/server.log")
	if code != exitPass || !r.Pass || r.Floor == nil {
		t.Fatalf("exit %d pass %v:\n%s", code, r.Pass, out)
	}
	fl := r.Floor
	if r.Target != "server" || fl.Target != "floor" || !fl.Pass || r.Received != 2500 || fl.Received != 2500 {
		t.Fatalf("runs: server %+v\nfloor %+v\n%s", r, fl, out)
	}
	if r.ServerPID <= 0 || fl.ServerPID <= 0 || r.ServerPID == fl.ServerPID || !processGone(r.ServerPID) || !processGone(fl.ServerPID) {
		t.Fatalf("pids: server %d floor %d", r.ServerPID, fl.ServerPID)
	}
	if r.FloorServerCPUUSPerDelivery != fl.ServerCPUUSPerDelivery {
		t.Fatalf("floor figure %v in the result, %v in the floor's run", r.FloorServerCPUUSPerDelivery, fl.ServerCPUUSPerDelivery)
	}
	want, ok := floorRatio(r.ServerCPUS, r.Received, fl.ServerCPUS, fl.Received)
	if r.FloorRatio != round3(want) || ok != (r.FloorRatio > 0) {
		t.Fatalf("ratio %v, want %v (%v)", r.FloorRatio, round3(want), ok)
	}
	if strings.Count(out, "RESULT ") != 1 || !strings.Contains(out, "floor vs server") {
		t.Fatalf("want one RESULT line and the comparison:\n%s", out)
	}
}
