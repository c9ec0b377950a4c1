package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/myxi/myxi/internal/commalist"
	"github.com/myxi/myxi/internal/config"
	"github.com/myxi/myxi/internal/randid"
)

// serve runs the server until SIGINT or SIGTERM (or ctx ends), then
// drains it.
func (c *cli) serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("myxi", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() { c.serveUsage(fs) }
	var (
		configPath = fs.String("config", c.getenv(config.EnvConfig), "TOML configuration file (see server/myxi.example.toml) [MYXI_CONFIG]")
		_          = fs.String("port", "", "listen port; 0: any free port [MYXI_PORT, MIXI_PORT, PORT] (default 5005)")
		_          = fs.String("bind", "", "bind address [MYXI_BIND_ADDRESS] (default all interfaces)")
		_          = fs.String("exchanges", "", "comma-separated exchanges open to every client, added to the file's [MYXI_EXCHANGES]")
		_          = fs.String("rabbitmq", "", "RabbitMQ URL(s), comma-separated; empty: the embedded broker [RABBITMQ_URL]")
		_          = fs.String("allowed-origins", "", "comma-separated extra browser origins, '*' wildcards [MYXI_ALLOWED_ORIGINS]")
		_          = fs.Duration("drain", 0, "spread closing sessions over this period on shutdown [MYXI_DRAIN_PERIOD] (default 5s)")
		_          = fs.Duration("reauthorize", 0, "re-check subscriptions this often; negative: never (default 60s)")
		_          = fs.String("log-level", "", "debug, info, warn or error [MYXI_LOG_LEVEL] (default info)")
		_          = fs.Bool("log-json", false, "log JSON lines instead of text [MYXI_LOG_FORMAT=json]")
		_          = fs.Int("max-connections", 0, "refuse connections beyond this many (0: no limit)")
		_          = fs.Int("max-subscriptions", 0, "subscriptions per session (default 1000)")
		_          = fs.Int64("max-frame-bytes", 0, "largest client frame (default 65536)")
		_          = fs.Float64("actions-per-second", 0, "actions per second per session; negative: unlimited (default 50)")
		_          = fs.String("metrics-addr", "", "serve Prometheus metrics (/metrics) on this address, e.g. 127.0.0.1:9090; keep it private [MYXI_METRICS_ADDR] (default: none)")
		pprofAddr  = fs.String("pprof", "", "serve Go profiles (net/http/pprof) on this address, e.g. 127.0.0.1:6060; keep it private")
		dev        = fs.Bool("dev", false, "development: without an API key, make one up for this run, and print how to publish (curl and push lines)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (the commands are serve and push; see -h)", fs.Arg(0))
	}

	cfg, err := config.Load(*configPath)
	if err != nil {
		return configError(err, *configPath)
	}
	if err := cfg.ApplyEnv(c.getenv); err != nil {
		return configError(err, *configPath)
	}
	if err := applyFlags(cfg, fs); err != nil {
		return configError(err, *configPath)
	}
	generatedKey := ""
	if *dev && len(cfg.API.Keys) == 0 {
		generatedKey = randid.New() + randid.New()
		cfg.API.Keys = []string{generatedKey}
		cfg.Set("api.keys", "-dev")
	}
	if err := cfg.Validate(); err != nil {
		return configError(err, *configPath)
	}

	logger := newLogger(cfg.Log, c.stderr)
	for _, w := range cfg.Warnings() {
		logger.Warn("RISKY SETTING: " + w)
	}
	if *pprofAddr != "" && !config.IsLoopback(*pprofAddr) {
		logger.Warn(fmt.Sprintf("RISKY SETTING: -pprof %q is not a loopback address: anyone who can reach it reads this process's memory profiles and command line; use 127.0.0.1:PORT", *pprofAddr))
	}
	a, err := build(cfg, logger)
	if err != nil {
		return configError(err, *configPath)
	}
	raiseOpenFileLimit(logger)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *pprofAddr != "" {
		if err := servePprof(ctx, *pprofAddr, logger); err != nil {
			return err
		}
	}
	onListen := c.onListen
	if *dev {
		onListen = func(addr net.Addr) {
			c.printHowToPublish(cfg, addr, generatedKey)
			if c.onListen != nil {
				c.onListen(addr)
			}
		}
	}
	started := time.Now()
	if err := a.serve(ctx, onListen); err != nil {
		return err
	}
	logger.Info("stopped", "uptime", time.Since(started).Round(time.Second))
	return nil
}

// applyFlags overrides the configuration with the flags given on the
// command line (only those: a flag left out keeps the file's or the
// environment's value).
func applyFlags(cfg *config.Config, fs *flag.FlagSet) error {
	var errs []error
	fs.Visit(func(f *flag.Flag) {
		value := f.Value.String()
		name := "-" + f.Name
		set := func(key string) { cfg.Set(key, name) }
		switch f.Name {
		case "port":
			port, err := config.ParsePort(value)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %q: %w", name, value, err))
				return
			}
			cfg.Server.Port = port
			set("server.port")
		case "bind":
			cfg.Server.Bind = value
			set("server.bind")
		case "exchanges":
			// Replaces MYXI_EXCHANGES, the only other source of these.
			cfg.PublicExchanges = commalist.Split(value)
		case "rabbitmq":
			cfg.Broker.RabbitMQURLs = commalist.Split(value)
			set("broker.rabbitmq_urls")
		case "allowed-origins":
			cfg.Server.AllowedOrigins = commalist.Split(value)
			set("server.allowed_origins")
		case "drain":
			cfg.Server.DrainPeriod = f.Value.(flag.Getter).Get().(time.Duration)
			set("server.drain_period")
		case "reauthorize":
			cfg.Server.ReauthorizeInterval = f.Value.(flag.Getter).Get().(time.Duration)
			set("server.reauthorize_interval")
		case "log-level":
			cfg.Log.Level = value
			set("log.level")
		case "log-json":
			if b, _ := strconv.ParseBool(value); b {
				cfg.Log.Format = "json"
			} else {
				cfg.Log.Format = "text"
			}
			set("log.format")
		case "max-connections":
			cfg.Limits.MaxConnections = f.Value.(flag.Getter).Get().(int)
			set("limits.max_connections")
		case "max-subscriptions":
			cfg.Limits.MaxSubscriptions = f.Value.(flag.Getter).Get().(int)
			set("limits.max_subscriptions")
		case "max-frame-bytes":
			cfg.Limits.MaxFrameBytes = f.Value.(flag.Getter).Get().(int64)
			set("limits.max_frame_bytes")
		case "actions-per-second":
			cfg.Limits.ActionsPerSecond = f.Value.(flag.Getter).Get().(float64)
			set("limits.actions_per_second")
		case "metrics-addr":
			cfg.Server.MetricsAddr = value
			set("server.metrics_addr")
		}
	})
	return errors.Join(errs...)
}

// configError presents configuration problems one per line.
func configError(err error, path string) error {
	where := "invalid configuration"
	if path != "" {
		where += " (" + path + ")"
	}
	lines := strings.Split(err.Error(), "\n")
	return fmt.Errorf("%s:\n  %s", where, strings.Join(lines, "\n  "))
}

func newLogger(l config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(l.Level)) // validated
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(l.Format, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func (c *cli) serveUsage(fs *flag.FlagSet) {
	w := c.stderr
	fmt.Fprint(w, `Usage:
  myxi [serve] [flags]                                   run a Myxi WebSocket server
  myxi push [flags] EXCHANGE ROUTING_KEY EVENT [PAYLOAD]  push an event (see: myxi push -h)

Runs a Myxi WebSocket server (the myxi 1.x protocol) for applications in
any language. Configuration, lowest precedence first: built-in defaults, the
TOML file (-config; every key is documented in server/myxi.example.toml),
environment variables, flags. An invalid configuration stops the server at
start, naming each key and its problem.

Flags (each overrides the variable in brackets):
`)
	fs.PrintDefaults()
	fmt.Fprint(w, "\nEnvironment variables (they override the file's key in brackets):\n")
	fmt.Fprintf(w, "  %s\n      %s\n", config.EnvConfig, "the configuration file, as -config")
	for _, v := range config.EnvVars {
		fmt.Fprintf(w, "  %s\n      %s [%s]\n", v.Name, v.Help, v.Key)
	}
	fmt.Fprint(w, `
HTTP endpoints (one port):
  GET / and /ws (WebSocket upgrade)   the Myxi socket; a plain GET / is a status page
  GET /myxi.js, /myxi.mjs             the JavaScript client
  GET /healthz, /readyz               liveness, readiness
  GET /metrics                        Prometheus metrics: only on -metrics-addr, never on this port
  POST /api/publish                   {"exchange", "routing_key", "event", "payload"}
  POST /api/publish/batch             {"events": [{...}, ...]}
      The publish API answers only with an API key configured (MYXI_API_KEY or
      api.keys; else 404), sent as "Authorization: Bearer <key>" (401 when
      missing or wrong); it answers 200 {"published": n} once the broker took
      the events.

Authentication (the Authenticate action), when configured:
  JWT (MYXI_JWT_SECRET, or [auth.jwt]): {"token": "<jwt>"} -> Authenticated
      {"username": <sub>}, or Error InvalidToken / TokenExpired.
  Webhook ([auth.webhook]): the application's URL decides.

SIGTERM or SIGINT stops accepting connections, closes the sessions with code
1001 over the drain period, and exits 0. Docs: docs/any-language.md.
`)
}

// servePprof serves the Go runtime's profiles until ctx ends, for
// profiling under the load tool (go tool pprof http://ADDR/debug/pprof/profile).
func servePprof(ctx context.Context, addr string, logger *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("-pprof %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// No WriteTimeout: a CPU profile or a trace streams for as long as it
	// was asked (?seconds=30), and pprof refuses durations over it.
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	go func() { _ = hs.Serve(ln) }()
	go func() {
		<-ctx.Done()
		_ = hs.Close()
	}()
	logger.Info("serving Go profiles", "addr", ln.Addr().String())
	return nil
}

// printHowToPublish tells the person who ran `make run` (-dev) how to
// publish to this server, with lines to paste. A key taken from the
// configuration is not printed: the lines read it from $MYXI_API_KEY.
func (c *cli) printHowToPublish(cfg *config.Config, addr net.Addr, generatedKey string) {
	host := "localhost"
	if h, _, err := net.SplitHostPort(addr.String()); err == nil && !net.ParseIP(h).IsUnspecified() && !config.IsLoopback(addr.String()) {
		host = h
	}
	base := "http://" + net.JoinHostPort(host, strconv.Itoa(addr.(*net.TCPAddr).Port))
	key, keyNote := generatedKey, "made up for this run (-dev)"
	if key == "" {
		key, keyNote = "$MYXI_API_KEY", "from your configuration"
	}
	exchange := "widgets"
	if names := cfg.ExchangeNames(); len(names) > 0 && !slices.Contains(names, exchange) {
		exchange = names[0]
	}
	w := c.stdout
	fmt.Fprintf(w, "\nMyxi is listening on %s (WebSocket: ws://%s/; the JavaScript client: %s/myxi.js).\n", base, strings.TrimPrefix(base, "http://"), base)
	if len(cfg.ExchangeNames()) == 0 {
		fmt.Fprintf(w, "  No exchanges: add some with -exchanges widgets (or MYXI_EXCHANGES) to publish.\n\n")
		return
	}
	fmt.Fprintf(w, "  Exchanges: %s. API key: %s (%s).\n\n", strings.Join(cfg.ExchangeNames(), ", "), key, keyNote)
	body := fmt.Sprintf(`{"exchange":"%s","routing_key":"42","event":"WidgetQtyChanged","payload":{"quantity":5}}`, exchange)
	fmt.Fprintf(w, "  Publish with curl:\n    curl -H \"Authorization: Bearer %s\" -H 'Content-Type: application/json' -d '%s' %s/api/publish\n\n", key, body, base)
	env := "MYXI_URL=" + base
	if generatedKey != "" {
		env += " MYXI_API_KEY=" + generatedKey
	}
	fmt.Fprintf(w, "  Or with the push command:\n    %s go run ./server push %s 42 WidgetQtyChanged '{\"quantity\":5}'\n\n", env, exchange)
}
