// Command server runs a standalone Myxi node.
//
//	go run ./server -exchanges widgets,bench
//
// Configuration comes from the environment (MYXI_PORT, MIXI_PORT, PORT,
// MYXI_BIND_ADDRESS, RABBITMQ_URL, MYXI_EXCHANGES, MYXI_ALLOWED_ORIGINS,
// MYXI_TRUSTED_PROXIES, MYXI_DRAIN_PERIOD, MYXI_LOG_LEVEL), and flags
// override it. Every exchange named is open to every client. SIGTERM or
// SIGINT drains the node and exits 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/broker/rabbitmq"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "myxi:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("myxi", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: myxi [flags]\n\nRuns a Myxi WebSocket server. Flags override the environment variables named in brackets.\n\n")
		fs.PrintDefaults()
	}
	var (
		port       = fs.String("port", "", "listen port [MYXI_PORT, MIXI_PORT, PORT] (default 5005)")
		bind       = fs.String("bind", "", "bind address [MYXI_BIND_ADDRESS] (default all interfaces)")
		exchanges  = fs.String("exchanges", os.Getenv("MYXI_EXCHANGES"), "comma-separated exchanges, open to every client [MYXI_EXCHANGES]")
		rabbitURL  = fs.String("rabbitmq", "", "RabbitMQ URL(s), comma-separated; empty: the embedded broker [RABBITMQ_URL]")
		origins    = fs.String("allowed-origins", "", "comma-separated extra browser origins, '*' wildcards [MYXI_ALLOWED_ORIGINS]")
		drain      = fs.Duration("drain", 0, "spread closing sessions over this period on shutdown [MYXI_DRAIN_PERIOD] (default 5s)")
		reauth     = fs.Duration("reauthorize", 0, "re-check subscriptions this often; negative: never (default 60s)")
		logLevel   = fs.String("log-level", envOr("MYXI_LOG_LEVEL", "info"), "debug, info, warn or error [MYXI_LOG_LEVEL]")
		logJSON    = fs.Bool("log-json", os.Getenv("MYXI_LOG_FORMAT") == "json", "log JSON lines instead of text [MYXI_LOG_FORMAT=json]")
		maxConns   = fs.Int("max-connections", 0, "refuse connections beyond this many (0: no limit)")
		maxSubs    = fs.Int("max-subscriptions", 0, "subscriptions per session (default 1000)")
		maxFrame   = fs.Int64("max-frame-bytes", 0, "largest client frame (default 65536)")
		actionRate = fs.Float64("actions-per-second", 0, "actions per second per session; negative: unlimited (default 50)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level %q: %w", *logLevel, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	var handler slog.Handler = slog.NewTextHandler(stderr, opts)
	if *logJSON {
		handler = slog.NewJSONHandler(stderr, opts)
	}
	logger := slog.New(handler)

	if *port != "" {
		os.Setenv(myxi.EnvPort, *port)
	}
	if *bind != "" {
		os.Setenv(myxi.EnvBindAddress, *bind)
	}
	if *rabbitURL != "" {
		os.Setenv(myxi.EnvRabbitMQURL, *rabbitURL)
	}
	if *origins != "" {
		os.Setenv(myxi.EnvAllowedOrigins, *origins)
	}
	cfg, err := myxi.ConfigFromEnv(logger)
	if err != nil {
		return err
	}
	cfg.Exchanges = map[string]myxi.AuthorizeFunc{}
	for _, name := range strings.Split(*exchanges, ",") {
		if name = strings.TrimSpace(name); name != "" {
			cfg.Exchanges[name] = myxi.AllowAll
		}
	}
	if len(cfg.Exchanges) == 0 {
		logger.Warn("no exchanges defined: clients can connect but not subscribe (use -exchanges or MYXI_EXCHANGES)")
	}
	if *drain != 0 {
		cfg.DrainPeriod = *drain
	}
	cfg.ReauthorizeInterval = *reauth
	cfg.Limits.MaxConnections = *maxConns
	cfg.Limits.MaxSubscriptions = *maxSubs
	cfg.Limits.MaxFrameBytes = *maxFrame
	cfg.Limits.ActionsPerSecond = *actionRate

	raiseOpenFileLimit(logger)
	srv, err := myxi.New(cfg)
	if err != nil {
		return err
	}
	if b, ok := cfg.Broker.(*rabbitmq.Broker); ok {
		logger.Info("using rabbitmq", "connection_name", b.ConnectionName())
	} else {
		logger.Info("using the embedded broker (single node); set RABBITMQ_URL for RabbitMQ")
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	started := time.Now()
	if err := srv.Serve(ctx, ln); err != nil {
		return err
	}
	logger.Info("stopped", "uptime", time.Since(started).Round(time.Second))
	return nil
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// raiseOpenFileLimit lifts the soft RLIMIT_NOFILE to the hard limit: each
// WebSocket is one open file.
func raiseOpenFileLimit(logger *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		logger.Warn("cannot read the open files limit", "err", err)
		return
	}
	if lim.Cur < lim.Max {
		old := lim.Cur
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			logger.Warn("cannot raise the open files limit", "err", err, "soft", old, "hard", lim.Max)
			return
		}
		logger.Info("raised the open files limit", "from", old, "to", lim.Max)
		return
	}
	logger.Info("open files limit", "limit", lim.Cur)
}
