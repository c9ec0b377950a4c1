package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/broker/rabbitmq"
	"github.com/myxi/myxi/internal/commalist"
)

// Environment variables that override the file. Those of myxi 1.x and of
// ConfigFromEnv keep their meaning.
const (
	EnvConfig           = "MYXI_CONFIG" // the file to read (-config)
	EnvExchanges        = "MYXI_EXCHANGES"
	EnvLogLevel         = "MYXI_LOG_LEVEL"
	EnvLogFormat        = "MYXI_LOG_FORMAT"
	EnvAPIKey           = "MYXI_API_KEY"
	EnvJWTSecret        = "MYXI_JWT_SECRET"
	EnvJWTPublicKeyFile = "MYXI_JWT_PUBLIC_KEY_FILE"
	EnvWebhookSecret    = "MYXI_WEBHOOK_SECRET"
	EnvMetricsAddr      = "MYXI_METRICS_ADDR"
)

// EnvVar describes one environment variable for -h.
type EnvVar struct {
	Name, Key, Help string
}

// EnvVars lists every variable ApplyEnv reads, in the order it applies
// them.
var EnvVars = []EnvVar{
	{myxi.EnvPort + ", " + myxi.EnvPortLegacy + ", " + myxi.EnvPortGeneric, "server.port", "listen port (the first one set)"},
	{myxi.EnvBindAddress, "server.bind", "bind address"},
	{myxi.EnvAllowedOrigins, "server.allowed_origins", "comma-separated extra browser origins"},
	{myxi.EnvTrustedProxies, "server.trusted_proxies", "comma-separated proxy addresses or CIDR ranges"},
	{myxi.EnvDrainPeriod, "server.drain_period", "a duration such as 10s"},
	{myxi.EnvNodeID, "server.node_id", "this node's name"},
	{EnvMetricsAddr, "server.metrics_addr", "serve Prometheus metrics on this address, such as 127.0.0.1:9090"},
	{EnvLogLevel, "log.level", "debug, info, warn or error"},
	{EnvLogFormat, "log.format", "text or json"},
	{myxi.EnvRabbitMQURL, "broker.rabbitmq_urls", "comma-separated AMQP URLs; unset: the embedded broker"},
	{EnvExchanges, "exchanges", "comma-separated exchanges open to everyone, added to the file's"},
	{EnvAPIKey, "api.keys", "the HTTP API key (replaces the file's keys)"},
	{EnvJWTSecret, "auth.jwt.secret", "HMAC secret: turns on JWT authentication"},
	{EnvJWTPublicKeyFile, "auth.jwt.public_key_file", "PEM public key (RSA, ECDSA, Ed25519): turns on JWT authentication"},
	{EnvWebhookSecret, "webhooks.secret", `sent to the application as "Authorization: Bearer <secret>"`},
}

// ApplyEnv overrides the configuration with the environment, read through
// getenv (os.Getenv in the server). A value that cannot be parsed is an
// error naming the variable.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	port, from, err := myxi.PortFromEnv(getenv)
	if err != nil {
		return err
	}
	if from != "" {
		c.Server.Port = port
		c.Set("server.port", from)
	}
	str := func(name, key string, dst *string) {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			*dst = v
			c.Set(key, name)
		}
	}
	list := func(name, key string, dst *[]string) {
		if v := getenv(name); strings.TrimSpace(v) != "" {
			*dst = commalist.Split(v)
			c.Set(key, name)
		}
	}
	str(myxi.EnvBindAddress, "server.bind", &c.Server.Bind)
	list(myxi.EnvAllowedOrigins, "server.allowed_origins", &c.Server.AllowedOrigins)
	list(myxi.EnvTrustedProxies, "server.trusted_proxies", &c.Server.TrustedProxies)
	if v := strings.TrimSpace(getenv(myxi.EnvDrainPeriod)); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%s=%q: not a duration (such as 10s): %w", myxi.EnvDrainPeriod, v, err)
		}
		c.Server.DrainPeriod = d
		c.Set("server.drain_period", myxi.EnvDrainPeriod)
	}
	str(myxi.EnvNodeID, "server.node_id", &c.Server.NodeID)
	str(EnvMetricsAddr, "server.metrics_addr", &c.Server.MetricsAddr)
	str(EnvLogLevel, "log.level", &c.Log.Level)
	str(EnvLogFormat, "log.format", &c.Log.Format)
	if v := getenv(myxi.EnvRabbitMQURL); strings.TrimSpace(v) != "" {
		c.Broker.RabbitMQURLs = rabbitmq.ParseURLs(v)
		c.Set("broker.rabbitmq_urls", myxi.EnvRabbitMQURL)
	}
	c.PublicExchanges = append(c.PublicExchanges, commalist.Split(getenv(EnvExchanges))...)
	if v := strings.TrimSpace(getenv(EnvAPIKey)); v != "" {
		c.API.Keys = []string{v}
		c.Set("api.keys", EnvAPIKey)
	}
	// Secrets are taken as they are: spaces may be part of them.
	if v := getenv(EnvJWTSecret); v != "" {
		c.Auth.JWT.Secret = v
		c.Set("auth.jwt.secret", EnvJWTSecret)
	}
	str(EnvJWTPublicKeyFile, "auth.jwt.public_key_file", &c.Auth.JWT.PublicKeyFile)
	if v := getenv(EnvWebhookSecret); v != "" {
		c.Webhooks.Secret = v
		c.Set("webhooks.secret", EnvWebhookSecret)
	}
	return nil
}

// ParsePort parses a listen port (0 lets the system choose one).
func ParsePort(v string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 || n > 65535 {
		return 0, fmt.Errorf("not a port number (0-65535)")
	}
	return n, nil
}
