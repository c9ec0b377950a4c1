// Package config is the configuration of the standalone Myxi server
// (`go run ./server`): the TOML file's schema, its loading (unknown keys
// are errors that name them), the environment variables that override it,
// and validation whose errors name the key and the problem.
//
// Precedence, lowest first: built-in defaults, the file, the environment,
// the command-line flags (which the server applies with Set). The
// documented example is server/myxi.example.toml.
package config

import (
	"errors"
	"fmt"
	"github.com/myxi/myxi"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Policies of an exchange: who may subscribe to its routing keys.
const (
	PolicyPublic        = "public"        // everyone
	PolicyAuthenticated = "authenticated" // every authenticated session
	PolicyJWT           = "jwt"           // the keys the session's token grants
	PolicyWebhook       = "webhook"       // the application decides, over HTTP
)

var policies = []string{PolicyPublic, PolicyAuthenticated, PolicyJWT, PolicyWebhook}

// Config is the whole configuration. Zero values of Limits mean Myxi's
// defaults (documented in the example file).
type Config struct {
	Server    Server              `toml:"server"`
	Log       Log                 `toml:"log"`
	Broker    Broker              `toml:"broker"`
	Limits    Limits              `toml:"limits"`
	API       API                 `toml:"api"`
	Auth      Auth                `toml:"auth"`
	Webhooks  Webhooks            `toml:"webhooks"`
	Exchanges map[string]Exchange `toml:"exchanges"`
	Actions   map[string]Action   `toml:"actions"`

	// PublicExchanges are exchanges open to everyone named outside the
	// file (MYXI_EXCHANGES, -exchanges), added to Exchanges.
	PublicExchanges []string `toml:"-"`

	// File is the path the configuration was read from, "" for none.
	File string `toml:"-"`

	sources map[string]string // key -> the variable or flag that set it
}

// Server is the [server] table.
type Server struct {
	Port                int           `toml:"port"`
	Bind                string        `toml:"bind"`
	AllowedOrigins      []string      `toml:"allowed_origins"`
	TrustedProxies      []string      `toml:"trusted_proxies"`
	DrainPeriod         time.Duration `toml:"drain_period"`
	ReauthorizeInterval time.Duration `toml:"reauthorize_interval"`
	NodeID              string        `toml:"node_id"`
	// MetricsAddr is where Prometheus metrics are served ("host:port");
	// "" serves none. Never on the public WebSocket port.
	MetricsAddr string `toml:"metrics_addr"`
}

// Log is the [log] table.
type Log struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// Broker is the [broker] table.
type Broker struct {
	RabbitMQURLs []string `toml:"rabbitmq_urls"`
}

// Limits is the [limits] table (myxi.Limits).
type Limits struct {
	MaxConnections    int           `toml:"max_connections"`
	MaxSubscriptions  int           `toml:"max_subscriptions"`
	MaxFrameBytes     int64         `toml:"max_frame_bytes"`
	ActionsPerSecond  float64       `toml:"actions_per_second"`
	ActionBurst       int           `toml:"action_burst"`
	SendQueueMessages int           `toml:"send_queue_messages"`
	SendQueueBytes    int64         `toml:"send_queue_bytes"`
	WriteTimeout      time.Duration `toml:"write_timeout"`
	HandshakeTimeout  time.Duration `toml:"handshake_timeout"`
	PingInterval      time.Duration `toml:"ping_interval"`
	ActionTimeout     time.Duration `toml:"action_timeout"`
	MaxEventBytes     int64         `toml:"max_event_bytes"`
	ReplayLimit       int           `toml:"history_replay_limit"`
}

// Myxi returns the limits as the library takes them.
func (l Limits) Myxi() myxi.Limits {
	return myxi.Limits{
		MaxFrameBytes:     l.MaxFrameBytes,
		MaxSubscriptions:  l.MaxSubscriptions,
		ActionsPerSecond:  l.ActionsPerSecond,
		ActionBurst:       l.ActionBurst,
		MaxConnections:    l.MaxConnections,
		SendQueueMessages: l.SendQueueMessages,
		SendQueueBytes:    l.SendQueueBytes,
		WriteTimeout:      l.WriteTimeout,
		HandshakeTimeout:  l.HandshakeTimeout,
		PingInterval:      l.PingInterval,
		ActionTimeout:     l.ActionTimeout,
		MaxEventBytes:     l.MaxEventBytes,
		ReplayLimit:       l.ReplayLimit,
	}
}

// API is the [api] table: the HTTP publish API.
type API struct {
	Keys           []string      `toml:"keys"`
	MaxBatch       int           `toml:"max_batch"`
	MaxBodyBytes   int64         `toml:"max_body_bytes"`
	PublishTimeout time.Duration `toml:"publish_timeout"`
}

// Auth is the [auth] table: at most one of JWT and Webhook.
type Auth struct {
	Action  string      `toml:"action"`
	JWT     JWT         `toml:"jwt"`
	Webhook AuthWebhook `toml:"webhook"`
}

// JWT is the [auth.jwt] table.
type JWT struct {
	Secret        string        `toml:"secret"`
	PublicKey     string        `toml:"public_key"`
	PublicKeyFile string        `toml:"public_key_file"`
	Algorithms    []string      `toml:"algorithms"`
	Issuer        string        `toml:"issuer"`
	Audience      string        `toml:"audience"`
	Leeway        time.Duration `toml:"leeway"`
	RequireExp    bool          `toml:"require_exp"`
	Claim         string        `toml:"claim"`
}

// Enabled reports whether JWT authentication is configured.
func (j JWT) Enabled() bool {
	return j.Secret != "" || j.PublicKey != "" || j.PublicKeyFile != ""
}

// AuthWebhook is the [auth.webhook] table.
type AuthWebhook struct {
	URL            string        `toml:"url"`
	Timeout        time.Duration `toml:"timeout"`
	ForwardHeaders []string      `toml:"forward_headers"`
}

// Webhooks is the [webhooks] table: what every webhook shares.
type Webhooks struct {
	Secret  string        `toml:"secret"`
	Timeout time.Duration `toml:"timeout"`
	// MaxConcurrent caps the webhook requests in flight on this node;
	// 0 means the default (64).
	MaxConcurrent int `toml:"max_concurrent"`
}

// Exchange is one [exchanges.<name>] table.
type Exchange struct {
	Policy   string        `toml:"policy"`
	URL      string        `toml:"url"`
	Timeout  time.Duration `toml:"timeout"`
	CacheTTL time.Duration `toml:"cache_ttl"`
	// History keeps the exchange's events for recovery: "0s" (the
	// default) means none, as in myxi 1.x.
	History         time.Duration `toml:"history"`
	HistoryMaxBytes int64         `toml:"history_max_bytes"`
}

// Action is one [actions.<name>] table: a custom action forwarded to the
// application.
type Action struct {
	URL            string        `toml:"url"`
	Timeout        time.Duration `toml:"timeout"`
	AuthRequired   bool          `toml:"auth_required"`
	ForwardHeaders []string      `toml:"forward_headers"`
}

// Defaults returns the configuration before any file, variable or flag.
func Defaults() *Config {
	return &Config{
		Server:   Server{Port: 5005},
		Log:      Log{Level: "info", Format: "text"},
		Auth:     Auth{Action: "Authenticate", JWT: JWT{Claim: "myxi"}},
		Webhooks: Webhooks{Timeout: 5 * time.Second},
		API:      API{MaxBatch: 1000, MaxBodyBytes: 1 << 20, PublishTimeout: 10 * time.Second},
	}
}

// Load reads the TOML file at path over the defaults (path "" reads
// none). A key the schema does not know, or a value of the wrong type, is
// an error naming the key (one line per problem).
func Load(path string) (*Config, error) {
	c := Defaults()
	if path == "" {
		return c, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	if err := c.decode(string(data)); err != nil {
		return nil, err
	}
	c.File = path
	return c, nil
}

// Parse reads TOML text over the defaults, as Load does a file.
func Parse(text string) (*Config, error) {
	c := Defaults()
	if err := c.decode(text); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) decode(text string) error {
	md, err := toml.Decode(text, c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return errors.New(describeParseError(pe))
		}
		return rephrase(err)
	}
	var errs []error
	unknown := map[string]bool{}
	for _, k := range md.Undecoded() {
		if insideUnknown(k, unknown) {
			continue // that table was reported
		}
		unknown[k.String()] = true
		errs = append(errs, fmt.Errorf("%s: unknown key%s", k, suggest(k)))
	}
	// The TOML library reads a bare number as nanoseconds; nobody means
	// that in a configuration file.
	for _, k := range md.Keys() {
		if durationKeys[k[len(k)-1]] && (md.Type(k...) == "Integer" || md.Type(k...) == "Float") {
			errs = append(errs, fmt.Errorf("%s: write durations as strings such as \"5s\", \"250ms\" or \"1m30s\" (a bare number would be nanoseconds)", k))
		}
	}
	return errors.Join(errs...)
}

func insideUnknown(k toml.Key, unknown map[string]bool) bool {
	for i := 1; i < len(k); i++ {
		if unknown[k[:i].String()] {
			return true
		}
	}
	return false
}

// durationKeys are the keys holding durations, wherever they are.
var durationKeys = map[string]bool{
	"drain_period": true, "reauthorize_interval": true, "write_timeout": true, "handshake_timeout": true,
	"ping_interval": true, "action_timeout": true, "publish_timeout": true, "leeway": true,
	"timeout": true, "cache_ttl": true,
}

var (
	typeErrorRE  = regexp.MustCompile(`^toml: line (\d+) \(last key "(.*)"\): incompatible types: TOML value has type (\w+); destination has type (.+)$`)
	tableErrorRE = regexp.MustCompile(`^toml: line (\d+) \(last key "(.*)"\): type mismatch for \S+: expected (\w+) but found (\w+)$`)
)

// rephrase turns the TOML library's type errors into "key: problem".
func rephrase(err error) error {
	m := typeErrorRE.FindStringSubmatch(err.Error())
	if m == nil {
		if m = tableErrorRE.FindStringSubmatch(err.Error()); m == nil {
			return err
		}
		m[3], m[4] = m[4], m[3]
	}
	want, got := m[4], m[3]
	switch {
	case strings.HasPrefix(got, "int"):
		got = "integer"
	case strings.HasPrefix(got, "float"):
		got = "float"
	case strings.HasPrefix(got, "map"):
		got = "table"
	case strings.HasPrefix(got, "[]"):
		got = "array"
	}
	switch {
	case strings.HasPrefix(want, "[]"), strings.HasPrefix(want, "slice"):
		want = "array"
	case want == "time.Duration":
		want = "duration string (such as \"5s\")"
	}
	return fmt.Errorf("%s: want %s, not %s (line %s)", m[2], article(want), article(got), m[1])
}

func article(noun string) string {
	if strings.ContainsRune("aeiou", rune(noun[0])) {
		return "an " + noun
	}
	return "a " + noun
}

// describeParseError phrases a TOML error with its line and the key.
func describeParseError(pe toml.ParseError) string {
	msg := pe.Message
	if strings.Contains(msg, "invalid duration") {
		msg += ` (write durations as strings such as "5s", "250ms" or "1m30s")`
	}
	if pe.LastKey != "" {
		return fmt.Sprintf("%s: %s (line %d)", pe.LastKey, msg, pe.Position.Line)
	}
	return fmt.Sprintf("line %d: %s", pe.Position.Line, msg)
}

// suggest proposes the known key closest to an unknown one.
func suggest(k toml.Key) string {
	if len(k) == 0 {
		return ""
	}
	parent, last := k[:len(k)-1], k[len(k)-1]
	known := knownKeys(parent)
	best, bestDist := "", 3
	for _, name := range known {
		if d := distance(last, name); d < bestDist {
			best, bestDist = name, d
		}
	}
	if best == "" {
		if len(known) > 0 {
			return " (known keys here: " + strings.Join(known, ", ") + ")"
		}
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// knownKeys lists the keys of the table at parent.
func knownKeys(parent toml.Key) []string {
	tables := map[string][]string{
		"":             {"server", "log", "broker", "limits", "api", "auth", "webhooks", "exchanges", "actions"},
		"server":       {"port", "bind", "allowed_origins", "trusted_proxies", "drain_period", "reauthorize_interval", "node_id", "metrics_addr"},
		"log":          {"level", "format"},
		"broker":       {"rabbitmq_urls"},
		"limits":       {"max_connections", "max_subscriptions", "max_frame_bytes", "actions_per_second", "action_burst", "send_queue_messages", "send_queue_bytes", "write_timeout", "handshake_timeout", "ping_interval", "action_timeout", "max_event_bytes"},
		"api":          {"keys", "max_batch", "max_body_bytes", "publish_timeout"},
		"auth":         {"action", "jwt", "webhook"},
		"auth.jwt":     {"secret", "public_key", "public_key_file", "algorithms", "issuer", "audience", "leeway", "require_exp", "claim"},
		"auth.webhook": {"url", "timeout", "forward_headers"},
		"webhooks":     {"secret", "timeout", "max_concurrent"},
	}
	switch {
	case len(parent) == 2 && parent[0] == "exchanges":
		return []string{"policy", "url", "timeout", "cache_ttl"}
	case len(parent) == 2 && parent[0] == "actions":
		return []string{"url", "timeout", "auth_required", "forward_headers"}
	}
	return tables[strings.Join(parent, ".")]
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// Set records that key (such as "server.port") was set by source (such
// as "-port" or "MYXI_PORT"), so that errors about it name the source.
func (c *Config) Set(key, source string) {
	if c.sources == nil {
		c.sources = map[string]string{}
	}
	c.sources[key] = source
}

// Name is how errors refer to key: with the variable or flag that set
// it, such as "auth.jwt.secret (MYXI_JWT_SECRET)".
func (c *Config) Name(key string) string {
	if src, ok := c.sources[key]; ok {
		return key + " (" + src + ")"
	}
	return key
}

// ExchangeNames returns the names of every exchange, sorted.
func (c *Config) ExchangeNames() []string {
	names := make([]string, 0, len(c.Exchanges)+len(c.PublicExchanges))
	for name := range c.Exchanges {
		names = append(names, name)
	}
	for _, name := range c.PublicExchanges {
		if _, dup := c.Exchanges[name]; !dup {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// AuthMethod returns "jwt", "webhook" or "" (no authentication).
func (c *Config) AuthMethod() string {
	switch {
	case c.Auth.JWT.Enabled():
		return "jwt"
	case c.Auth.Webhook.URL != "":
		return "webhook"
	}
	return ""
}
