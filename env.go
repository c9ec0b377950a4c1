package myxi

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/myxi/myxi/internal/commalist"
	"github.com/myxi/myxi/internal/randid"
)

// Environment variables read by ConfigFromEnv.
const (
	EnvPort           = "MYXI_PORT"
	EnvPortLegacy     = "MIXI_PORT" // the spelling myxi 1.x's README used
	EnvPortGeneric    = "PORT"
	EnvBindAddress    = "MYXI_BIND_ADDRESS"
	EnvRabbitMQURL    = "RABBITMQ_URL" // read by the standalone server and the demo, not by ConfigFromEnv
	EnvAllowedOrigins = "MYXI_ALLOWED_ORIGINS"
	EnvTrustedProxies = "MYXI_TRUSTED_PROXIES"
	EnvDrainPeriod    = "MYXI_DRAIN_PERIOD"
	EnvNodeID         = "MYXI_NODE_ID"
)

// ConfigFromEnv returns a Config filled from the environment, the way
// myxi 1.x configured itself. It is the only place the library reads the
// environment; call it explicitly:
//
//   - listen port: MYXI_PORT, else MIXI_PORT, else PORT, else 5005;
//     address: MYXI_BIND_ADDRESS (default all interfaces);
//   - MYXI_ALLOWED_ORIGINS and MYXI_TRUSTED_PROXIES: comma-separated lists;
//   - MYXI_DRAIN_PERIOD: a Go duration such as "10s";
//   - MYXI_NODE_ID: this node's name (default random).
//
// Exchanges, actions, the logger and the broker are the caller's to set:
// the library does not link the RabbitMQ client unless the application
// does (the standalone server and the demo read RABBITMQ_URL themselves
// and pass a broker/rabbitmq broker; EnvRabbitMQURL names the variable).
func ConfigFromEnv(logger *slog.Logger) (Config, error) {
	return configFrom(os.Getenv, logger)
}

func configFrom(getenv func(string) string, logger *slog.Logger) (Config, error) {
	if logger == nil {
		logger = slog.Default()
	}
	cfg := Config{Logger: logger, NodeID: getenv(EnvNodeID)}
	if cfg.NodeID == "" {
		cfg.NodeID = randid.New()
	}
	port, from, err := PortFromEnv(getenv)
	if err != nil {
		return Config{}, err
	}
	if from == "" {
		port = 5005
	}
	cfg.Addr = net.JoinHostPort(strings.TrimSpace(getenv(EnvBindAddress)), strconv.Itoa(port))
	cfg.AllowedOrigins = commalist.Split(getenv(EnvAllowedOrigins))
	cfg.TrustedProxies = commalist.Split(getenv(EnvTrustedProxies))
	if v := getenv(EnvDrainPeriod); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return Config{}, fmt.Errorf("%s=%q: %w", EnvDrainPeriod, v, err)
		}
		cfg.DrainPeriod = d
	}
	return cfg, nil
}

// PortFromEnv returns the listen port the environment asks for and the
// variable that set it: MYXI_PORT, else MIXI_PORT (myxi 1.x's spelling),
// else PORT. With none set, variable is "". A value that is not a port
// (0-65535; 0 lets the system choose) is an error naming its variable.
func PortFromEnv(getenv func(string) string) (port int, variable string, err error) {
	for _, name := range []string{EnvPort, EnvPortLegacy, EnvPortGeneric} {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 65535 {
			return 0, name, fmt.Errorf("%s=%q: not a port number (0-65535)", name, v)
		}
		return n, name, nil
	}
	return 0, "", nil
}
