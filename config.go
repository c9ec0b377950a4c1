package myxi

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"time"

	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/internal/protocol"
	"github.com/myxi/myxi/internal/randid"
)

// Config configures a Server. It is read once, by New. Every zero value
// means the documented default, so Config{Exchanges: ...} is a working
// server.
type Config struct {
	// Addr is the address ListenAndServe listens on. Default ":5005".
	// ConfigFromEnv fills it from MYXI_BIND_ADDRESS and MYXI_PORT (or
	// MIXI_PORT, or PORT).
	Addr string

	// Exchanges maps each exchange name to the authorizer deciding who may
	// subscribe to which routing key. Names are AMQP exchange names
	// (letters, digits, '-', '_', '.', ':'; at most 255 bytes). Use
	// AllowAll for a public exchange and ModelAuthorizer to authorize
	// against the application's own objects.
	Exchanges map[string]AuthorizeFunc

	// Actions maps action names to the application's handlers (such as
	// "Authenticate"). Subscribe, Unsubscribe, ListSubscriptions and Ping
	// are built in and cannot be replaced.
	Actions map[string]ActionHandler

	// Broker carries events between publishers and nodes. Default: the
	// embedded broker (broker/memory), a single node. Use broker/rabbitmq
	// for several nodes and for pushes from other processes. The server
	// closes the broker on Shutdown.
	Broker broker.Broker

	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger

	// Limits protect the node and its clients from each other.
	Limits Limits

	// AllowedOrigins lists the browser origins allowed to connect besides
	// the server's own host (any port) and localhost. Entries are origins
	// ("https://app.example.com") or host patterns with '*' wildcards
	// ("*.example.com", "https://*.example.com:8443"). "*" allows every
	// origin. Requests without an Origin header (non-browser clients) are
	// always accepted.
	AllowedOrigins []string

	// TrustedProxies are the addresses or CIDR ranges of reverse proxies
	// whose X-Forwarded-For header is believed when determining a
	// session's RemoteIP. Default: none (the TCP peer's address is used).
	TrustedProxies []string

	// ReauthorizeInterval is how often every subscription is checked again
	// with its exchange's authorizer; refused ones are removed and the
	// client told Unsubscribed {auto: true}. Default 60s; negative turns it
	// off.
	ReauthorizeInterval time.Duration

	// DrainPeriod is how long Shutdown spreads the closing of live sessions
	// over (close code 1001), so their clients do not all reconnect at
	// once. Default 5s.
	DrainPeriod time.Duration

	// NodeID names this node in logs and in the broker (the RabbitMQ
	// connection of ConfigFromEnv is named "myxi <NodeID>"). Default: a
	// random id.
	NodeID string

	// KeepHeaders names the request headers of the WebSocket handshake
	// that a session keeps (a copy) for Session.Header. Headers are not
	// kept otherwise, so that a client's big headers do not stay in
	// memory for the session's life. Default: Cookie, User-Agent,
	// Authorization.
	KeepHeaders []string

	// MetricsAddr is where ListenAndServe and Serve serve the Prometheus
	// metrics (/metrics), on a listener of their own. Default "": not
	// served. They are never served on the WebSocket port, which is
	// public; Mount users serve Server.MetricsHandler where they choose.
	// A non-loopback address is logged as a warning.
	MetricsAddr string

	// ReauthorizeConcurrency caps how many sessions the periodic
	// re-authorization checks at once. Default 32.
	ReauthorizeConcurrency int

	// History turns on history for some exchanges: their events pushed
	// through Myxi are recorded, carry a position, and a client that
	// reconnects with its last position gets the ones it missed
	// (docs/PROTOCOL.md, "history and recovery"). Each name must be in
	// Exchanges, and the Broker must keep history (both brokers shipped
	// with Myxi do). Default: none, every exchange is live-only, as in
	// myxi 1.x.
	History map[string]History
}

// History bounds an exchange's history. MaxAge is required (at least a
// second); MaxBytes defaults to 64 MiB. Retention by age is a minimum;
// by size RabbitMQ may keep less, as it deletes whole segments. Each node
// also keeps the history's tail in memory within the same bounds: that
// is what it replays from.
type History = broker.History

// defaultHistoryBytes is History.MaxBytes's default.
const defaultHistoryBytes = 64 << 20

// Limits bound what one client can cost the node. Zero values are the
// documented defaults; a negative value turns that limit off where said.
type Limits struct {
	// MaxFrameBytes is the largest message a client may send; a larger
	// one closes the connection with code 1009. Default 64 KiB; at least
	// 1 KiB.
	MaxFrameBytes int64
	// MaxSubscriptions per session; beyond it Subscribe answers
	// TooManySubscriptions. Default 1000.
	MaxSubscriptions int
	// ActionsPerSecond and ActionBurst shape a token bucket per session;
	// an action over it answers RateLimited. Defaults 50 and 100;
	// ActionsPerSecond < 0 turns rate limiting off.
	ActionsPerSecond float64
	ActionBurst      int
	// MaxConnections on this node; further upgrades get HTTP 503.
	// Default 0: no limit besides the process's open files.
	MaxConnections int
	// SendQueueMessages and SendQueueBytes bound the events waiting to be
	// written to one client; a client that lets either fill is too slow
	// and is disconnected with code 1008. Defaults 1024 and 1 MiB.
	SendQueueMessages int
	SendQueueBytes    int64
	// MaxEventBytes bounds one application event from the broker: its
	// body, and the frame sent to clients ("mq" included). A larger event
	// is dropped at the node, logged and counted
	// (myxi_broker_bad_messages_total{reason="too_large"}), and Push
	// refuses it, so that one event never makes a healthy client look too
	// slow. It must be below SendQueueBytes. Default 256 KiB, or half of
	// SendQueueBytes when that is smaller.
	MaxEventBytes int64
	// WriteTimeout bounds each blocking flush to a client socket (a
	// write deadline); a client that does not take the bytes in time is
	// dropped. Default 5s.
	WriteTimeout time.Duration
	// HandshakeTimeout bounds the WebSocket upgrade. Default 10s.
	HandshakeTimeout time.Duration
	// PingInterval is how often the server pings an idle client; a client
	// silent (no frame, no pong) for two intervals is disconnected.
	// Default 25s.
	PingInterval time.Duration
	// ActionTimeout bounds the context of one action: its authorizer
	// calls, the application's handler and the broker binds of a
	// Subscribe (a bind that has not answered by then is reported as
	// BrokerUnavailable). It also bounds each session's periodic
	// re-authorization. Default 10s.
	ActionTimeout time.Duration
	// MaxHeaderBytes caps the request headers of a WebSocket upgrade;
	// beyond it the upgrade is answered 431. ListenAndServe and Serve
	// also set it as their http.Server's MaxHeaderBytes; behind Mount,
	// the application's own http.Server.MaxHeaderBytes applies first
	// (Go's default is 1 MB). Default 16 KiB.
	MaxHeaderBytes int
	// ReplayLimit is the most events one Subscribe with "since" replays on
	// a history exchange; a client that missed more is told
	// "recovered": false and reloads its state. Default 1000.
	ReplayLimit int
}

// minFrameBytes is the smallest MaxFrameBytes New accepts: a Subscribe
// or an Authenticate with a token must fit.
const minFrameBytes = 1 << 10

func (l Limits) withDefaults() Limits {
	if l.MaxFrameBytes == 0 {
		l.MaxFrameBytes = 64 << 10
	}
	if l.MaxSubscriptions == 0 {
		l.MaxSubscriptions = 1000
	}
	if l.ActionsPerSecond == 0 {
		l.ActionsPerSecond = 50
	}
	if l.ActionBurst == 0 {
		l.ActionBurst = 100
	}
	if l.SendQueueMessages == 0 {
		l.SendQueueMessages = 1024
	}
	if l.SendQueueBytes == 0 {
		l.SendQueueBytes = 1 << 20
	}
	if l.MaxEventBytes == 0 && l.SendQueueBytes > 0 {
		l.MaxEventBytes = min(protocol.DefaultMaxEventBytes, l.SendQueueBytes/2)
	}
	if l.WriteTimeout == 0 {
		l.WriteTimeout = 5 * time.Second
	}
	if l.HandshakeTimeout == 0 {
		l.HandshakeTimeout = 10 * time.Second
	}
	if l.PingInterval == 0 {
		l.PingInterval = 25 * time.Second
	}
	if l.ActionTimeout == 0 {
		l.ActionTimeout = 10 * time.Second
	}
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = 16 << 10
	}
	if l.ReplayLimit == 0 {
		l.ReplayLimit = 1000
	}
	return l
}

func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = ":5005"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ReauthorizeInterval == 0 {
		c.ReauthorizeInterval = 60 * time.Second
	}
	if c.DrainPeriod == 0 {
		c.DrainPeriod = 5 * time.Second
	}
	if c.NodeID == "" {
		c.NodeID = randid.New()
	}
	if c.KeepHeaders == nil {
		c.KeepHeaders = []string{"Cookie", "User-Agent", "Authorization"}
	}
	if c.ReauthorizeConcurrency == 0 {
		c.ReauthorizeConcurrency = 32
	}
	c.Limits = c.Limits.withDefaults()
	if len(c.History) > 0 {
		history := make(map[string]History, len(c.History))
		for name, h := range c.History {
			if h.MaxBytes == 0 {
				h.MaxBytes = defaultHistoryBytes
			}
			history[name] = h
		}
		c.History = history
	}
	return c
}

var builtinActions = map[string]bool{
	protocol.ActionSubscribe:         true,
	protocol.ActionUnsubscribe:       true,
	protocol.ActionListSubscriptions: true,
	protocol.ActionPing:              true,
}

func (c Config) validate() error {
	var errs []error
	for name, authorize := range c.Exchanges {
		if !protocol.ValidExchangeName(name) {
			errs = append(errs, fmt.Errorf("exchange %q: not a valid exchange name (1-255 bytes of letters, digits, '-', '_', '.', ':'; no \"::\", not ending with ':', not starting with \"amq.\")", name))
		}
		if authorize == nil {
			errs = append(errs, fmt.Errorf("exchange %q: nil authorizer (use myxi.AllowAll for a public exchange)", name))
		}
	}
	for name, handler := range c.Actions {
		if builtinActions[name] {
			errs = append(errs, fmt.Errorf("action %q: built in, cannot be replaced", name))
		}
		if name == "" {
			errs = append(errs, errors.New("action with an empty name"))
		}
		if handler == nil {
			errs = append(errs, fmt.Errorf("action %q: nil handler", name))
		}
	}
	for _, p := range c.TrustedProxies {
		if _, err := parseCIDR(p); err != nil {
			errs = append(errs, fmt.Errorf("trusted proxy %q: %w", p, err))
		}
	}
	for _, o := range c.AllowedOrigins {
		if strings.TrimSpace(o) == "" {
			errs = append(errs, errors.New("allowed origin: empty entry"))
		}
	}
	if c.DrainPeriod < 0 {
		errs = append(errs, fmt.Errorf("DrainPeriod: %v is negative", c.DrainPeriod))
	}
	for name, h := range c.History {
		if _, ok := c.Exchanges[name]; !ok {
			errs = append(errs, &FieldError{Field: fmt.Sprintf("History[%q]", name), Problem: "not an exchange of Exchanges"})
		}
		if h.MaxAge < time.Second {
			errs = append(errs, &FieldError{Field: fmt.Sprintf("History[%q].MaxAge", name), Problem: fmt.Sprintf("%v is below the minimum of 1s", h.MaxAge)})
		}
		if h.MaxBytes < 0 {
			errs = append(errs, &FieldError{Field: fmt.Sprintf("History[%q].MaxBytes", name), Problem: fmt.Sprintf("%d is negative", h.MaxBytes)})
		}
	}
	if c.ReauthorizeConcurrency < 0 {
		errs = append(errs, fmt.Errorf("ReauthorizeConcurrency: %d is negative", c.ReauthorizeConcurrency))
	}
	errs = append(errs, c.Limits.validate()...)
	return errors.Join(errs...)
}

// FieldError is a value New refuses. Field names it as a Go field path
// ("Limits.WriteTimeout"), so that a configuration file can name its own
// key for it.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// Validate reports every value of l that New would refuse, each as a
// *FieldError (joined). Zero values are the defaults and always valid.
// The standalone server checks its configuration file with it: one set
// of rules for the Go API and the file.
func (l Limits) Validate() error {
	return errors.Join(l.withDefaults().validate()...)
}

// validate checks limits after defaults: zero means the default, so only
// what is left can be wrong.
func (l Limits) validate() []error {
	var errs []error
	bad := func(field string, format string, args ...any) {
		errs = append(errs, &FieldError{Field: "Limits." + field, Problem: fmt.Sprintf(format, args...)})
	}
	if l.MaxEventBytes < 0 {
		bad("MaxEventBytes", "%d is negative", l.MaxEventBytes)
	} else if l.MaxEventBytes >= l.SendQueueBytes {
		bad("MaxEventBytes", "%d must be below Limits.SendQueueBytes (%d): an event as large as the send queue would close every healthy subscriber as too slow", l.MaxEventBytes, l.SendQueueBytes)
	}
	if l.MaxFrameBytes < minFrameBytes {
		bad("MaxFrameBytes", "%d is below the minimum of %d bytes", l.MaxFrameBytes, minFrameBytes)
	}
	for _, f := range []struct {
		name string
		n    int64
	}{
		{"MaxSubscriptions", int64(l.MaxSubscriptions)},
		{"ActionBurst", int64(l.ActionBurst)},
		{"MaxConnections", int64(l.MaxConnections)},
		{"SendQueueMessages", int64(l.SendQueueMessages)},
		{"SendQueueBytes", l.SendQueueBytes},
		{"MaxHeaderBytes", int64(l.MaxHeaderBytes)},
		{"ReplayLimit", int64(l.ReplayLimit)},
	} {
		if f.n < 0 {
			bad(f.name, "%d is negative", f.n)
		}
	}
	if math.IsNaN(l.ActionsPerSecond) || math.IsInf(l.ActionsPerSecond, 0) {
		bad("ActionsPerSecond", "%v is not a rate (negative turns the limit off)", l.ActionsPerSecond)
	}
	for _, f := range []struct {
		name string
		d    time.Duration
		min  time.Duration
	}{
		{"WriteTimeout", l.WriteTimeout, time.Millisecond},
		{"HandshakeTimeout", l.HandshakeTimeout, time.Millisecond},
		{"PingInterval", l.PingInterval, 10 * time.Millisecond},
		{"ActionTimeout", l.ActionTimeout, time.Millisecond},
	} {
		if f.d < f.min {
			bad(f.name, "%v is below the minimum of %v", f.d, f.min)
		}
	}
	return errs
}

// MaxEventBytes is the node's maximum event size (Limits.MaxEventBytes
// after defaults), for publishers such as the HTTP API that check events
// before they publish them.
func (s *Server) MaxEventBytes() int64 { return s.cfg.Limits.MaxEventBytes }

// parseCIDR accepts "10.0.0.0/8" or a single address.
func parseCIDR(s string) (*net.IPNet, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, errors.New("not an IP address or CIDR range")
		}
		bits := 128
		if ip.To4() != nil {
			ip, bits = ip.To4(), 32
		}
		return &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, nil
	}
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, fmt.Errorf("not an IP address or CIDR range: %w", err)
	}
	return n, nil
}
