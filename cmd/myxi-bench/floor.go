package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/myxi/myxi/internal/protocol"
)

// The floor server (issue 13): the least a node needs to do Myxi's fan-out
// job, so that Myxi's server CPU per delivery can be compared with it in the
// same run. The load tool starts it as a separate process (the hidden
// subcommand "floor-server" of this binary), because the tool's own sockets
// plus as many server sockets would not fit one process's open-files limit,
// and samples it through /proc as it samples a spawned Myxi.
//
// It accepts and upgrades any path, sends Welcome, answers Subscribe with
// Subscribed once the key's binding exists, and consumes the broker with the
// queue and ack mode of Myxi (an exclusive server-named queue with
// x-max-length and x-overflow, bound per routing key; manual acks,
// multiple=true, sent when the consumer has caught up or every ackEvery
// deliveries; a prefetch). For each event it builds the frame Myxi would
// send once, then writes it to each subscriber of the key from the consuming
// goroutine, with blocking writes: no queues, no writer goroutines, no
// deadlines, no metrics and no JSON work per subscriber. Batched clients
// (?batch=1) get one event per frame, which they accept. Other actions are
// not answered.

// floorSubcommand is the first argument that makes this binary a floor server.
const floorSubcommand = "floor-server"

// Defaults of the node queue and consumer: the values Myxi moves to.
const (
	defaultFloorPrefetch  = 1024
	defaultFloorMaxLength = 100000
	defaultFloorOverflow  = "drop-head"
)

type floorConfig struct {
	Addr      string
	AMQP      string
	Exchange  string
	Prefetch  int
	MaxLength int
	Overflow  string
	AckEvery  int // 0: half the prefetch (512 with no prefetch)
}

// ackEvery is how many deliveries may go unacknowledged while more keep
// arriving.
func (c *floorConfig) ackEvery() int {
	switch {
	case c.AckEvery > 0:
		return c.AckEvery
	case c.Prefetch > 1:
		return c.Prefetch / 2
	case c.Prefetch == 1:
		return 1
	}
	return 512
}

// parseFloorConfig reads the floor server's flags. Without -addr it listens
// on 127.0.0.1:$MYXI_PORT and without -amqp it uses $RABBITMQ_URL, so that it
// can also be started by -spawn like Myxi.
func parseFloorConfig(args []string, stderr io.Writer) (*floorConfig, error) {
	c := &floorConfig{}
	fs := flag.NewFlagSet("myxi-bench "+floorSubcommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	defAddr := "127.0.0.1:5005"
	if p := os.Getenv("MYXI_PORT"); p != "" {
		defAddr = net.JoinHostPort("127.0.0.1", p)
	}
	fs.StringVar(&c.Addr, "addr", defAddr, "address to listen on (loopback only; default 127.0.0.1:$MYXI_PORT)")
	fs.StringVar(&c.AMQP, "amqp", defaultAMQP(), "RabbitMQ URL (loopback only; default $RABBITMQ_URL)")
	fs.StringVar(&c.Exchange, "exchange", "bench", "exchange to declare (direct, non-durable, as Myxi does) and serve")
	fs.IntVar(&c.Prefetch, "prefetch", defaultFloorPrefetch, "consumer prefetch (basic.qos); 0 = unlimited")
	fs.IntVar(&c.MaxLength, "max-length", defaultFloorMaxLength, "x-max-length of the node queue; 0 = unbounded")
	fs.StringVar(&c.Overflow, "overflow", defaultFloorOverflow, "x-overflow of the node queue: drop-head or reject-publish")
	fs.IntVar(&c.AckEvery, "ack-every", 0, "acknowledge (multiple) at least every N deliveries; 0 = prefetch/2")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return c, c.validate()
}

func (c *floorConfig) validate() error {
	var errs []error
	host, port, err := net.SplitHostPort(c.Addr)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("-addr %q: %w", c.Addr, err))
	case !isLoopbackHost(host):
		errs = append(errs, fmt.Errorf("-addr %q: the floor server only listens on loopback", c.Addr))
	default:
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			errs = append(errs, fmt.Errorf("-addr %q: bad port", c.Addr))
		}
	}
	if err := checkAMQPURL(c.AMQP); err != nil {
		errs = append(errs, err)
	}
	if c.Exchange == "" || len(c.Exchange) > 255 {
		errs = append(errs, errors.New("-exchange must be 1 to 255 bytes"))
	}
	if c.Prefetch < 0 || c.Prefetch > 65535 {
		errs = append(errs, errors.New("-prefetch must be between 0 and 65535"))
	}
	if c.MaxLength < 0 {
		errs = append(errs, errors.New("-max-length must not be negative"))
	}
	if c.Overflow != "drop-head" && c.Overflow != "reject-publish" && c.Overflow != "reject-publish-dlx" {
		errs = append(errs, fmt.Errorf("-overflow %q: want drop-head, reject-publish or reject-publish-dlx", c.Overflow))
	}
	if c.AckEvery < 0 || (c.Prefetch > 0 && c.AckEvery > c.Prefetch) {
		errs = append(errs, fmt.Errorf("-ack-every %d must be between 0 and the prefetch (%d)", c.AckEvery, c.Prefetch))
	}
	return errors.Join(errs...)
}

// floorArgs is the command line that starts the floor server for this run.
func (c *floorConfig) args() []string {
	return []string{floorSubcommand,
		"-addr", c.Addr, "-amqp", c.AMQP, "-exchange", c.Exchange,
		"-prefetch", strconv.Itoa(c.Prefetch), "-max-length", strconv.Itoa(c.MaxLength),
		"-overflow", c.Overflow, "-ack-every", strconv.Itoa(c.AckEvery)}
}

// runFloorServer is the floor-server subcommand: it serves until SIGTERM or
// SIGINT, or until its broker connection fails.
func runFloorServer(args []string, stderr io.Writer) int {
	cfg, err := parseFloorConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitPass
	}
	if err != nil {
		fmt.Fprintln(stderr, "myxi-bench floor-server:", err)
		return exitSetup
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if _, _, err := raiseNoFile(); err != nil {
		log.Warn("open files limit", "err", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serveFloor(ctx, cfg, log); err != nil {
		log.Error("floor server", "err", err)
		return exitFail
	}
	return exitPass
}

// floorServer is the floor's state. subs maps a routing key to its
// subscribers. The fan-out takes a snapshot (the slice) under the lock and
// writes without it: Subscribe only appends (past every snapshot's length)
// and removals build a new slice, so a snapshot never changes.
type floorServer struct {
	exchange string
	queue    string
	bindCh   *amqp.Channel
	log      *slog.Logger
	ids      atomic.Uint64

	bindMu sync.Mutex // one bind at a time; held across the broker's reply
	mu     sync.Mutex // guards subs and bound
	subs   map[string][]*floorConn
	bound  map[string]bool
}

type floorConn struct {
	ws *websocket.Conn
	nc net.Conn
}

func serveFloor(ctx context.Context, cfg *floorConfig, log *slog.Logger) error {
	conn, err := amqp.DialConfig(cfg.AMQP, amqp.Config{
		Properties: amqp.Table{"connection_name": "myxi-bench floor"},
		Dial:       amqp.DefaultDial(5 * time.Second),
	})
	if err != nil {
		return fmt.Errorf("connecting to RabbitMQ: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	bindCh, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open bind channel: %w", err)
	}
	if err := ch.ExchangeDeclare(cfg.Exchange, amqp.ExchangeDirect, false, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", cfg.Exchange, err)
	}
	qargs := amqp.Table{"x-overflow": cfg.Overflow}
	if cfg.MaxLength > 0 {
		qargs["x-max-length"] = int64(cfg.MaxLength)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, qargs)
	if err != nil {
		return fmt.Errorf("declare node queue: %w", err)
	}
	if cfg.Prefetch > 0 {
		if err := ch.Qos(cfg.Prefetch, 0, false); err != nil {
			return fmt.Errorf("set prefetch %d: %w", cfg.Prefetch, err)
		}
	}
	deliveries, err := ch.Consume(q.Name, "", false, true, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume node queue: %w", err)
	}
	f := &floorServer{exchange: cfg.Exchange, queue: q.Name, bindCh: bindCh, log: log,
		subs: map[string][]*floorConn{}, bound: map[string]bool{}}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	consumed := make(chan error, 1)
	go func() { consumed <- f.consume(deliveries, cfg.ackEvery()) }()
	log.Info("floor server ready", "addr", ln.Addr().String(), "exchange", cfg.Exchange, "queue", q.Name,
		"prefetch", cfg.Prefetch, "max_length", cfg.MaxLength, "overflow", cfg.Overflow, "ack_every", cfg.ackEvery())

	select {
	case <-ctx.Done():
		err = nil
	case err = <-served:
		err = fmt.Errorf("http server: %w", err)
	case err = <-consumed:
	}
	// Hijacked sockets are not the http.Server's to close: the process
	// exits right after this, which closes them.
	_ = srv.Close()
	return err
}

// upgrader keeps no write buffer per connection: every server frame is
// written whole with one Write on the socket.
var floorUpgrader = websocket.Upgrader{
	ReadBufferSize:  512,
	WriteBufferSize: 256,
	WriteBufferPool: &sync.Pool{},
	CheckOrigin:     func(*http.Request) bool { return true }, // loopback only
}

// ServeHTTP upgrades, sends Welcome and then reads the client's actions on
// this goroutine until the connection ends.
func (f *floorServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws, err := floorUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &floorConn{ws: ws, nc: ws.NetConn()}
	defer c.nc.Close() // a later write to it fails and the fan-out drops it
	ws.SetReadLimit(64 << 10)
	welcome := fmt.Appendf(nil, `{"event":"Welcome","tag":null,"payload":{"id":"%016x"}}`, f.ids.Add(1))
	if writeTextFrame(c.nc, welcome) != nil {
		return
	}
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if reply := f.action(c, msg); reply != nil && writeTextFrame(c.nc, reply) != nil {
			return
		}
	}
}

var (
	keyAction     = []byte(`"action"`)
	keyExchange   = []byte(`"exchange"`)
	keyRoutingKey = []byte(`"routing_key"`)
	actSubscribe  = []byte("Subscribe")
)

// action handles one client frame: Subscribe is answered, anything else is
// ignored. The fields are read with the tool's scanner, not decoded.
func (f *floorServer) action(c *floorConn, msg []byte) []byte {
	name, _ := stringField(msg, keyAction)
	if !bytes.Equal(name, actSubscribe) {
		return nil
	}
	tag, ok := rawValue(msg, keyTag)
	if !ok {
		tag = []byte("null")
	}
	exchange, okE := stringField(msg, keyExchange)
	key, okK := stringField(msg, keyRoutingKey)
	switch {
	case !okE || string(exchange) != f.exchange:
		return fmt.Appendf(nil, `{"event":"Error","tag":%s,"payload":{"error":"InvalidExchange"}}`, tag)
	case !okK || len(key) > 255 || bytes.IndexByte(key, '\\') >= 0:
		// an escaped key would need decoding: the load tool never sends one
		return fmt.Appendf(nil, `{"event":"Error","tag":%s,"payload":{"error":"InvalidPayload"}}`, tag)
	}
	k := string(key)
	if err := f.bind(k); err != nil {
		f.log.Warn("bind", "routing_key", k, "err", err)
		return fmt.Appendf(nil, `{"event":"Error","tag":%s,"payload":{"error":"BrokerUnavailable","exchange":"%s","routing_key":"%s"}}`, tag, exchange, key)
	}
	// Appending in place is safe for the fan-out's snapshots: they never
	// read past their own length, and removals build a new slice.
	f.mu.Lock()
	f.subs[k] = append(f.subs[k], c)
	f.mu.Unlock()
	return fmt.Appendf(nil, `{"event":"Subscribed","tag":%s,"payload":{"exchange":"%s","routing_key":"%s"}}`, tag, exchange, key)
}

// bind makes sure the node queue is bound to key; it returns once the
// broker has confirmed it, so that Subscribed means events reach the client.
func (f *floorServer) bind(key string) error {
	f.mu.Lock()
	done := f.bound[key]
	f.mu.Unlock()
	if done {
		return nil
	}
	f.bindMu.Lock()
	defer f.bindMu.Unlock()
	f.mu.Lock()
	done = f.bound[key]
	f.mu.Unlock()
	if done {
		return nil
	}
	if err := f.bindCh.QueueBind(f.queue, key, f.exchange, false, nil); err != nil {
		return fmt.Errorf("bind %s/%s: %w", f.exchange, key, err)
	}
	f.mu.Lock()
	f.bound[key] = true
	f.mu.Unlock()
	return nil
}

// consume is the fan-out: one goroutine, one frame per event, one blocking
// write per subscriber. It acknowledges with multiple=true when the
// consumer has caught up (no delivery is waiting) or every ackEvery
// deliveries, so acks cost little at high rates and nothing stays unacked
// when the stream pauses.
func (f *floorServer) consume(deliveries <-chan amqp.Delivery, ackEvery int) error {
	var (
		frame   []byte
		last    amqp.Delivery
		pending int
	)
	ack := func() error {
		if pending == 0 {
			return nil
		}
		pending = 0
		if err := last.Ack(true); err != nil {
			return fmt.Errorf("ack: %w", err)
		}
		return nil
	}
	for {
		var d amqp.Delivery
		var ok bool
		select {
		case d, ok = <-deliveries:
		default:
			if err := ack(); err != nil {
				return err
			}
			d, ok = <-deliveries
		}
		if !ok {
			return errors.New("the broker closed the consumer")
		}
		// nil: a body Myxi drops (not a JSON object with an event)
		if out := appendFloorFrame(frame[:0], d.Exchange, d.RoutingKey, d.Body); out != nil {
			frame = out
			f.fanOut(d.RoutingKey, frame)
		}
		last = d
		if pending++; pending >= ackEvery {
			if err := ack(); err != nil {
				return err
			}
		}
	}
}

// fanOut writes frame to every subscriber of key. A failed write (the
// client went away) removes that subscriber.
func (f *floorServer) fanOut(key string, frame []byte) {
	f.mu.Lock()
	subs := f.subs[key]
	f.mu.Unlock()
	var dead map[*floorConn]bool
	for _, c := range subs {
		if _, err := c.nc.Write(frame); err != nil {
			if dead == nil {
				dead = map[*floorConn]bool{}
			}
			dead[c] = true
			_ = c.nc.Close()
		}
	}
	if dead == nil {
		return
	}
	f.mu.Lock()
	cur := f.subs[key]
	keep := make([]*floorConn, 0, len(cur))
	for _, c := range cur {
		if !dead[c] {
			keep = append(keep, c)
		}
	}
	f.subs[key] = keep
	f.mu.Unlock()
}

// writeTextFrame writes data as one unmasked text frame with a single
// Write: net.Conn serializes whole Write calls, so replies written by a
// connection's reader never interleave with the fan-out's frames.
func writeTextFrame(nc net.Conn, data []byte) error {
	_, err := nc.Write(append(appendFrameHeader(make([]byte, 0, len(data)+10), finText, len(data)), data...))
	return err
}

// finText is the first byte of a final text frame (RFC 6455 section 5.2).
const finText = 0x81

// appendFrameHeader appends the header of an unmasked server frame of n
// payload bytes, as Myxi writes it.
func appendFrameHeader(dst []byte, opcode byte, n int) []byte {
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

// appendFloorFrame appends the WebSocket frame Myxi sends for a broker
// message, or returns nil when Myxi would drop the message. The event is
// spliced from the body when it has the load tool's shape; any other body
// goes through Myxi's own encoder, so the bytes are the same either way.
func appendFloorFrame(dst []byte, exchange, routingKey string, body []byte) []byte {
	var data []byte
	if ev, payload, ok := splitSimpleBody(body); ok && plainJSONString(exchange) && plainJSONString(routingKey) {
		n := len(`{"event":,"tag":null,"payload":,"mq":{"e":"","rk":""}}`) + len(ev) + len(payload) + len(exchange) + len(routingKey)
		dst = appendFrameHeader(dst, finText, n)
		dst = append(dst, `{"event":`...)
		dst = append(dst, ev...)
		dst = append(dst, `,"tag":null,"payload":`...)
		dst = append(dst, payload...)
		dst = append(dst, `,"mq":{"e":"`...)
		dst = append(dst, exchange...)
		dst = append(dst, `","rk":"`...)
		dst = append(dst, routingKey...)
		return append(dst, `"}}`...)
	}
	data, err := protocol.BrokerEvent(exchange, routingKey, body, protocol.DefaultMaxEventBytes)
	if err != nil {
		return nil
	}
	return append(appendFrameHeader(dst, finText, len(data)), data...)
}

// plainJSONString reports whether s is written unchanged between quotes by
// encoding/json: printable ASCII without '"', '\\' and the HTML characters
// it escapes.
func plainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case b < 0x20 || b > 0x7e, b == '"', b == '\\', b == '<', b == '>', b == '&':
			return false
		}
	}
	return true
}

// splitSimpleBody recognizes the body the load tool publishes,
// {"event":"<name>","payload":{...}} written compactly in printable ASCII,
// and returns the event's JSON string (quotes included) and the payload
// object. Myxi's encoder keeps both as they are for such a body. Anything
// else (another key, white space, a non-object payload) is refused. It
// checks the shape, not full JSON validity: a payload with balanced
// brackets but a bad value inside is forwarded where Myxi drops it, which
// no body of the load tool is.
func splitSimpleBody(body []byte) (event, payload []byte, ok bool) {
	const head = `{"event":"`
	const mid = `,"payload":{`
	if !bytes.HasPrefix(body, []byte(head)) || len(body) < len(head)+len(mid)+2 || body[len(body)-1] != '}' {
		return nil, nil, false
	}
	i := len(head)
	for ; i < len(body) && body[i] != '"'; i++ {
		if body[i] == '\\' || body[i] < 0x20 || body[i] > 0x7e {
			return nil, nil, false
		}
	}
	if i == len(head) || !bytes.HasPrefix(body[i+1:], []byte(mid)) {
		return nil, nil, false // an empty name, or not followed by the payload
	}
	event = body[len(head)-1 : i+1]
	start := i + 1 + len(mid) - 1
	payload = body[start : len(body)-1]
	// The payload must be one object ending where the body does: brackets
	// matched outside strings (at most 32 deep here), no white space,
	// printable ASCII only.
	var open [32]byte
	depth, inString := 0, false
	for j := 0; j < len(payload); j++ {
		b := payload[j]
		if b < 0x20 || b > 0x7e {
			return nil, nil, false
		}
		if inString {
			switch b {
			case '\\':
				j++
			case '"':
				inString = false
			}
			continue
		}
		switch b {
		case '"':
			inString = true
		case '{', '[':
			if depth == len(open) {
				return nil, nil, false
			}
			open[depth] = b + 2 // '{'+2 is '}', '['+2 is ']'
			depth++
		case '}', ']':
			if depth == 0 || open[depth-1] != b {
				return nil, nil, false
			}
			depth--
			if depth == 0 && j != len(payload)-1 {
				return nil, nil, false
			}
		case ' ':
			return nil, nil, false
		}
	}
	if depth != 0 || inString {
		return nil, nil, false
	}
	return event, payload, true
}
