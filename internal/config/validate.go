package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/internal/protocol"
)

// builtinActions cannot be configured: the server has them.
var builtinActions = []string{
	protocol.ActionSubscribe, protocol.ActionUnsubscribe, protocol.ActionListSubscriptions, protocol.ActionPing,
}

// Validate checks the whole configuration and returns every problem, each
// naming its key (and the variable or flag that set it), joined.
func (c *Config) Validate() error {
	v := &validator{c: c}
	c.validateServer(v)
	c.validateLimits(v)
	c.validateAPI(v)
	c.validateAuth(v)
	c.validateExchanges(v)
	c.validateActions(v)
	slices.SortFunc(v.errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(v.errs...)
}

type validator struct {
	c    *Config
	errs []error
}

func (v *validator) add(key, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", v.c.Name(key), fmt.Sprintf(format, args...)))
}

func (v *validator) nonNegative(key string, d time.Duration) {
	if d < 0 {
		v.add(key, "%s is negative", d)
	}
}

// url checks a webhook URL; required says why it is needed.
func (v *validator) url(key, u, required string) {
	p, err := url.Parse(u)
	switch {
	case u == "":
		v.add(key, "%s", required)
	case err != nil:
		v.add(key, "%q is not a URL", u)
	case p.Scheme != "http" && p.Scheme != "https":
		v.add(key, "%q is not an http or https URL", u)
	case p.Host == "":
		v.add(key, "%q has no host", u)
	}
}

func (v *validator) headerNames(key string, names []string) {
	for _, h := range names {
		if h == "" || strings.ContainsFunc(h, func(r rune) bool {
			return r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r)
		}) {
			v.add(key, "%q is not a header name", h)
		}
	}
}

// quoteKey quotes a table name for error messages as TOML would need it.
func quoteKey(name string) string {
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return strconv.Quote(name)
		}
	}
	if name == "" {
		return `""`
	}
	return name
}

func (c *Config) validateServer(v *validator) {
	if c.Server.Port < 0 || c.Server.Port > 65535 {
		v.add("server.port", "%d is not a port number (0-65535)", c.Server.Port)
	}
	for _, o := range c.Server.AllowedOrigins {
		if strings.TrimSpace(o) == "" {
			v.add("server.allowed_origins", "empty entry")
		}
	}
	for _, p := range c.Server.TrustedProxies {
		if !validCIDR(p) {
			v.add("server.trusted_proxies", "%q is not an IP address or CIDR range", p)
		}
	}
	v.nonNegative("server.drain_period", c.Server.DrainPeriod)
	if a := c.Server.MetricsAddr; a != "" {
		if err := CheckListenAddr(a); err != nil {
			v.add("server.metrics_addr", "%q: %v", a, err)
		}
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		v.add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch strings.ToLower(c.Log.Format) {
	case "text", "json":
	default:
		v.add("log.format", "%q is not one of text, json", c.Log.Format)
	}
	for _, u := range c.Broker.RabbitMQURLs {
		if _, err := amqp.ParseURI(u); err != nil {
			v.add("broker.rabbitmq_urls", "%s is not an AMQP URL: %v", redactAMQP(u), err)
		}
	}
}

func validCIDR(s string) bool {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		_, _, err := net.ParseCIDR(s)
		return err == nil
	}
	return net.ParseIP(s) != nil
}

// redactAMQP hides the password of an AMQP URL.
func redactAMQP(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(an unparsable URL)"
	}
	if _, has := p.User.Password(); has {
		p.User = url.UserPassword(p.User.Username(), "xxxxx")
	}
	return strconv.Quote(p.String())
}

// limitKeys maps myxi.Limits' fields to this file's keys.
var limitKeys = map[string]string{
	"Limits.MaxFrameBytes":     "limits.max_frame_bytes",
	"Limits.MaxSubscriptions":  "limits.max_subscriptions",
	"Limits.ActionsPerSecond":  "limits.actions_per_second",
	"Limits.ActionBurst":       "limits.action_burst",
	"Limits.MaxConnections":    "limits.max_connections",
	"Limits.SendQueueMessages": "limits.send_queue_messages",
	"Limits.SendQueueBytes":    "limits.send_queue_bytes",
	"Limits.WriteTimeout":      "limits.write_timeout",
	"Limits.HandshakeTimeout":  "limits.handshake_timeout",
	"Limits.PingInterval":      "limits.ping_interval",
	"Limits.ActionTimeout":     "limits.action_timeout",
	"Limits.MaxEventBytes":     "limits.max_event_bytes",
	"Limits.ReplayLimit":       "limits.history_replay_limit",
}

// validateLimits applies the library's own rules (myxi.Limits.Validate),
// naming this file's keys.
func (c *Config) validateLimits(v *validator) {
	err := c.Limits.Myxi().Validate()
	if err == nil {
		return
	}
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *myxi.FieldError
		if !errors.As(e, &fe) {
			v.errs = append(v.errs, e)
			continue
		}
		key, ok := limitKeys[fe.Field]
		if !ok {
			key = fe.Field
		}
		v.add(key, "%s (0 means the default)", fe.Problem)
	}
}

// MinJWTSecretBytes is the shortest HMAC secret accepted: a shorter one
// can be brute-forced offline from a single token.
const MinJWTSecretBytes = 32

func (c *Config) validateAPI(v *validator) {
	for i, k := range c.API.Keys {
		if strings.TrimSpace(k) == "" {
			v.add(fmt.Sprintf("api.keys[%d]", i), "empty key")
		}
	}
	if c.API.MaxBatch < 0 {
		v.add("api.max_batch", "%d is negative", c.API.MaxBatch)
	}
	if c.API.MaxBodyBytes < 0 {
		v.add("api.max_body_bytes", "%d is negative", c.API.MaxBodyBytes)
	}
	v.nonNegative("api.publish_timeout", c.API.PublishTimeout)
}

func (c *Config) validateAuth(v *validator) {
	a := c.Auth
	if a.JWT.Enabled() && a.Webhook.URL != "" {
		v.add("auth", "both auth.jwt and auth.webhook are configured; choose one")
	}
	switch {
	case a.Action == "":
		v.add("auth.action", "empty action name")
	case slices.Contains(builtinActions, a.Action):
		v.add("auth.action", "%q is a built-in action", a.Action)
	}
	j := a.JWT
	if j.Enabled() {
		keys := 0
		var set []string
		for _, k := range []struct {
			key, value string
		}{{"auth.jwt.secret", j.Secret}, {"auth.jwt.public_key", j.PublicKey}, {"auth.jwt.public_key_file", j.PublicKeyFile}} {
			if k.value != "" {
				keys++
				set = append(set, c.Name(k.key))
			}
		}
		if keys > 1 {
			v.add("auth.jwt", "%s are set at once; give exactly one key", strings.Join(set, " and "))
		}
		if j.Claim == "" {
			v.add("auth.jwt.claim", "empty claim name")
		}
		if j.Secret != "" && len(j.Secret) < MinJWTSecretBytes {
			v.add("auth.jwt.secret", "%d bytes is too short: an HMAC secret needs at least %d random bytes (such as the output of `openssl rand -hex 32`)", len(j.Secret), MinJWTSecretBytes)
		}
		v.nonNegative("auth.jwt.leeway", j.Leeway)
	} else {
		for key, set := range map[string]bool{
			"auth.jwt.algorithms":  len(j.Algorithms) > 0,
			"auth.jwt.issuer":      j.Issuer != "",
			"auth.jwt.audience":    j.Audience != "",
			"auth.jwt.leeway":      j.Leeway != 0,
			"auth.jwt.require_exp": j.RequireExp,
		} {
			if set {
				v.add(key, "set, but JWT authentication has no key (auth.jwt.secret, auth.jwt.public_key or auth.jwt.public_key_file)")
			}
		}
	}
	w := a.Webhook
	if w.URL != "" {
		v.url("auth.webhook.url", w.URL, "required")
		v.nonNegative("auth.webhook.timeout", w.Timeout)
		v.headerNames("auth.webhook.forward_headers", w.ForwardHeaders)
	} else if w.Timeout != 0 || len(w.ForwardHeaders) > 0 {
		v.add("auth.webhook.url", "required when auth.webhook is configured")
	}
	v.nonNegative("webhooks.timeout", c.Webhooks.Timeout)
	if c.Webhooks.MaxConcurrent < 0 {
		v.add("webhooks.max_concurrent", "%d is negative (0 means the default, 64)", c.Webhooks.MaxConcurrent)
	}
}

func (c *Config) validateExchanges(v *validator) {
	method := c.AuthMethod()
	for name, ex := range c.Exchanges {
		key := "exchanges." + quoteKey(name)
		if !protocol.ValidExchangeName(name) {
			v.add(key, "not a valid exchange name (1-255 bytes of letters, digits, '-', '_', '.', ':'; not starting with \"amq.\")")
		}
		switch ex.Policy {
		case "":
			v.add(key+".policy", "required: one of %s", strings.Join(policies, ", "))
		case PolicyPublic:
		case PolicyAuthenticated:
			if method == "" {
				v.add(key+".policy", `"authenticated" needs authentication: configure auth.jwt or auth.webhook (or set MYXI_JWT_SECRET)`)
			}
		case PolicyJWT:
			if method != "jwt" {
				v.add(key+".policy", `"jwt" needs JWT authentication: set auth.jwt.secret (or MYXI_JWT_SECRET) or auth.jwt.public_key_file`)
			}
		case PolicyWebhook:
			v.url(key+".url", ex.URL, `required for policy "webhook"`)
			v.nonNegative(key+".timeout", ex.Timeout)
			v.nonNegative(key+".cache_ttl", ex.CacheTTL)
		default:
			v.add(key+".policy", "%q is not one of %s", ex.Policy, strings.Join(policies, ", "))
		}
		switch {
		case ex.History < 0:
			v.add(key+".history", "%v is negative (\"0s\" means no history)", ex.History)
		case ex.History > 0 && ex.History < time.Second:
			v.add(key+".history", "%v is below the minimum of 1s", ex.History)
		case ex.History == 0 && ex.HistoryMaxBytes != 0:
			v.add(key+".history_max_bytes", "only with history (this exchange has none)")
		}
		if ex.HistoryMaxBytes < 0 {
			v.add(key+".history_max_bytes", "%d is negative (0 means the default, 64 MiB)", ex.HistoryMaxBytes)
		}
		if ex.Policy != PolicyWebhook && ex.Policy != "" {
			for field, set := range map[string]bool{"url": ex.URL != "", "timeout": ex.Timeout != 0, "cache_ttl": ex.CacheTTL != 0} {
				if set {
					v.add(key+"."+field, "only for policy %q (this exchange's policy is %q)", PolicyWebhook, ex.Policy)
				}
			}
		}
	}
	for _, name := range c.PublicExchanges {
		if !protocol.ValidExchangeName(name) {
			v.add("exchanges", "%q (from %s or -exchanges) is not a valid exchange name", name, EnvExchanges)
			continue
		}
		if ex, ok := c.Exchanges[name]; ok && ex.Policy != PolicyPublic {
			v.add("exchanges."+quoteKey(name), "named by %s or -exchanges (open to everyone) but its policy in the file is %q; name it in one place", EnvExchanges, ex.Policy)
		}
	}
}

func (c *Config) validateActions(v *validator) {
	for name, a := range c.Actions {
		key := "actions." + quoteKey(name)
		switch {
		case name == "":
			v.add(key, "empty action name")
		case slices.Contains(builtinActions, name):
			v.add(key, "%q is a built-in action and cannot be replaced", name)
		case name == c.Auth.Action && c.AuthMethod() != "":
			v.add(key, "%q is the authentication action (auth.action); rename one", name)
		}
		v.url(key+".url", a.URL, "required: the application's URL the action is forwarded to")
		v.nonNegative(key+".timeout", a.Timeout)
		v.headerNames(key+".forward_headers", a.ForwardHeaders)
	}
}

// CheckListenAddr checks a "host:port" listen address (the host may be
// empty: every interface).
func CheckListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("not a host:port address (such as 127.0.0.1:9090): %w", err)
	}
	if _, err := ParsePort(port); err != nil {
		return fmt.Errorf("port %q: %w", port, err)
	}
	return nil
}

// IsLoopback reports whether the listen address addr ("host:port") can be
// reached only from this machine. An empty host listens on every
// interface; a host name other than localhost may resolve to anything.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// Warnings lists the settings that are valid but risky, each naming its
// key (and the variable or flag that set it). The server logs them at
// start.
func (c *Config) Warnings() []string {
	var out []string
	for _, o := range c.Server.AllowedOrigins {
		if o = strings.TrimSpace(o); o == "*" || o == "*://*" {
			out = append(out, fmt.Sprintf("%s contains %q: a page on ANY website can open sockets to this server in its visitors' browsers, with their cookies; list your sites' origins instead", c.Name("server.allowed_origins"), o))
			break
		}
	}
	if a := c.Server.MetricsAddr; a != "" && !IsLoopback(a) {
		out = append(out, fmt.Sprintf("%s is %q, not a loopback address: anyone who can reach it reads the metrics; keep it on 127.0.0.1 or behind a firewall", c.Name("server.metrics_addr"), a))
	}
	return out
}
