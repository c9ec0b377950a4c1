package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/auth/jwtauth"
	"github.com/myxi/myxi/auth/webhook"
	"github.com/myxi/myxi/broker/rabbitmq"
	"github.com/myxi/myxi/httpapi"
	"github.com/myxi/myxi/internal/config"
	"github.com/myxi/myxi/internal/randid"
)

// httpShutdownTimeout bounds the wait for HTTP requests in flight (API
// publishes) when the server stops; WebSockets are drained after it.
const httpShutdownTimeout = 5 * time.Second

// app is a configured server, ready to serve.
type app struct {
	cfg     *config.Config
	log     *slog.Logger
	srv     *myxi.Server
	handler http.Handler
	addr    string
	broker  string // "rabbitmq" or "embedded", for the log
	hooks   *webhook.Client
	api     bool
	drain   time.Duration
	http    httpTimeouts
}

// httpTimeouts are the public http.Server's. Without them an idle
// keep-alive connection, or one that trickles its request, holds a
// goroutine and its buffers for as long as the client likes.
type httpTimeouts struct {
	readHeader time.Duration // the request line and headers (the WebSocket handshake too)
	read       time.Duration // a whole request, body included (API publishes)
	write      time.Duration // a whole answer (an API publish waits for the broker's confirms)
	idle       time.Duration // a keep-alive connection between requests
}

// newHTTPServer returns the public server with its timeouts. ReadTimeout
// and WriteTimeout set deadlines on the connection that a hijacked
// WebSocket would inherit; the upgrader (gorilla/websocket) clears them
// when it takes the connection over, and the sessions have their own ping
// and write timeouts (TestIdleConnectionsClosed keeps a socket past them).
func newHTTPServer(h http.Handler, t httpTimeouts, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.readHeader,
		ReadTimeout:       t.read,
		WriteTimeout:      t.write,
		IdleTimeout:       t.idle,
		// The same cap as the upgrades' (myxi.Limits.MaxHeaderBytes'
		// default), for every route.
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
}

// build turns a validated configuration into a server. Errors name the
// configuration key they come from.
func build(cfg *config.Config, logger *slog.Logger) (*app, error) {
	nodeID := cfg.Server.NodeID
	if nodeID == "" {
		nodeID = randid.New()
	}
	mc := myxi.Config{
		Addr:                net.JoinHostPort(cfg.Server.Bind, strconv.Itoa(cfg.Server.Port)),
		Exchanges:           map[string]myxi.AuthorizeFunc{},
		Actions:             map[string]myxi.ActionHandler{},
		Logger:              logger,
		AllowedOrigins:      cfg.Server.AllowedOrigins,
		TrustedProxies:      cfg.Server.TrustedProxies,
		ReauthorizeInterval: cfg.Server.ReauthorizeInterval,
		DrainPeriod:         cfg.Server.DrainPeriod,
		NodeID:              nodeID,
		KeepHeaders:         keepHeaders(cfg),
		Limits:              cfg.Limits.Myxi(),
	}
	a := &app{cfg: cfg, log: logger, addr: mc.Addr, broker: "embedded", drain: cfg.Server.DrainPeriod}
	a.http = httpTimeouts{readHeader: cfg.Limits.HandshakeTimeout, read: 30 * time.Second, idle: 2 * time.Minute}
	if a.http.readHeader <= 0 {
		a.http.readHeader = 10 * time.Second // myxi's handshake default
	}
	// An API publish waits up to publish_timeout for the broker's
	// confirm; leave it room to answer 503 rather than cutting it off.
	a.http.write = max(cfg.API.PublishTimeout, 10*time.Second) + 30*time.Second
	if a.drain <= 0 {
		a.drain = 5 * time.Second // myxi's default
	}
	actionTimeout := cfg.Limits.ActionTimeout
	if actionTimeout <= 0 {
		actionTimeout = 10 * time.Second // myxi's default
	}

	// Webhooks share one client (one pool of connections to the app).
	if needsWebhooks(cfg) {
		a.hooks = webhook.New(webhook.Config{
			Secret:        cfg.Webhooks.Secret,
			Timeout:       cfg.Webhooks.Timeout,
			MaxConcurrent: cfg.Webhooks.MaxConcurrent,
			Logger:        logger,
		})
	}
	ok := false
	defer func() {
		if !ok && a.hooks != nil {
			a.hooks.Close()
		}
	}()

	var jwtAuth *jwtauth.Authenticator
	switch cfg.AuthMethod() {
	case "jwt":
		var err error
		if jwtAuth, err = newJWTAuth(cfg, logger, actionTimeout); err != nil {
			return nil, err
		}
		mc.Actions[cfg.Auth.Action] = jwtAuth.Authenticate
	case "webhook":
		w := cfg.Auth.Webhook
		h, err := a.hooks.AuthAction(cfg.Auth.Action, webhook.Endpoint{URL: w.URL, Timeout: w.Timeout, ForwardHeaders: w.ForwardHeaders})
		if err != nil {
			return nil, fmt.Errorf("auth.webhook: %w", err)
		}
		mc.Actions[cfg.Auth.Action] = h
	}

	for name, ex := range cfg.Exchanges {
		switch ex.Policy {
		case config.PolicyPublic:
			mc.Exchanges[name] = myxi.AllowAll
		case config.PolicyAuthenticated:
			mc.Exchanges[name] = myxi.AuthenticatedOnly
		case config.PolicyJWT:
			mc.Exchanges[name] = jwtAuth.Authorizer(name)
		case config.PolicyWebhook:
			f, err := a.hooks.Authorizer(name, webhook.Policy{URL: ex.URL, Timeout: ex.Timeout, CacheTTL: ex.CacheTTL})
			if err != nil {
				return nil, fmt.Errorf("exchanges.%s: %w", name, err)
			}
			mc.Exchanges[name] = f
		default:
			return nil, fmt.Errorf("exchanges.%s.policy: unknown policy %q", name, ex.Policy)
		}
	}
	for name, ex := range cfg.Exchanges {
		if ex.History > 0 {
			if mc.History == nil {
				mc.History = map[string]myxi.History{}
			}
			mc.History[name] = myxi.History{MaxAge: ex.History, MaxBytes: ex.HistoryMaxBytes}
		}
	}
	for _, name := range cfg.PublicExchanges {
		mc.Exchanges[name] = myxi.AllowAll
	}
	if len(mc.Exchanges) == 0 {
		logger.Warn("no exchanges defined: clients can connect but not subscribe (use [exchanges] in the config file, -exchanges or MYXI_EXCHANGES)")
	}

	for name, act := range cfg.Actions {
		h, err := a.hooks.Action(name, webhook.Endpoint{URL: act.URL, Timeout: act.Timeout, ForwardHeaders: act.ForwardHeaders})
		if err != nil {
			return nil, fmt.Errorf("actions.%s: %w", name, err)
		}
		if act.AuthRequired {
			h = myxi.AuthRequired(h)
		}
		mc.Actions[name] = h
	}

	if urls := cfg.Broker.RabbitMQURLs; len(urls) > 0 {
		b, err := rabbitmq.New(rabbitmq.Config{URLs: urls, ConnectionName: "myxi " + nodeID, Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Name("broker.rabbitmq_urls"), err)
		}
		mc.Broker = b
		a.broker = "rabbitmq"
		logger.Info("using rabbitmq", "connection_name", b.ConnectionName())
	} else {
		logger.Info("using the embedded broker (single node); set RABBITMQ_URL for RabbitMQ")
	}

	srv, err := myxi.New(mc)
	if err != nil {
		if mc.Broker != nil {
			_ = mc.Broker.Close()
		}
		return nil, err
	}
	a.srv = srv

	mux := http.NewServeMux()
	if len(cfg.API.Keys) > 0 {
		api, err := httpapi.New(httpapi.Config{
			Pusher:         srv,
			Keys:           cfg.API.Keys,
			Exchanges:      cfg.ExchangeNames(),
			MaxBatch:       cfg.API.MaxBatch,
			MaxBodyBytes:   cfg.API.MaxBodyBytes,
			PublishTimeout: cfg.API.PublishTimeout,
			Logger:         logger,
		})
		if err != nil {
			_ = srv.Shutdown(context.Background())
			return nil, fmt.Errorf("api: %w", err)
		}
		mux.Handle("/api/", api)
		a.api = true
	}
	// Metrics only on server.metrics_addr: on the public port they would
	// tell anyone the node's load and every action's name.
	mux.Handle("/metrics", http.NotFoundHandler())
	mux.Handle("/", srv.Handler())
	a.handler = mux
	ok = true
	return a, nil
}

func needsWebhooks(cfg *config.Config) bool {
	if cfg.AuthMethod() == "webhook" || len(cfg.Actions) > 0 {
		return true
	}
	for _, ex := range cfg.Exchanges {
		if ex.Policy == config.PolicyWebhook {
			return true
		}
	}
	return false
}

// newJWTAuth reads the key and builds the authenticator; errors name the
// configuration key at fault.
func newJWTAuth(cfg *config.Config, logger *slog.Logger, actionTimeout time.Duration) (*jwtauth.Authenticator, error) {
	j := cfg.Auth.JWT
	jc := jwtauth.Config{
		Issuer:             j.Issuer,
		Audience:           j.Audience,
		Leeway:             j.Leeway,
		RequireExpiry:      j.RequireExp,
		Claim:              j.Claim,
		ReauthorizeTimeout: actionTimeout,
		Logger:             logger,
	}
	var key any
	switch {
	case j.Secret != "":
		jc.Secret = []byte(j.Secret)
		key = jc.Secret
		if len(j.Secret) < 32 {
			logger.Warn("the JWT secret is shorter than 32 bytes: use a long random secret", "key", cfg.Name("auth.jwt.secret"))
		}
	case j.PublicKey != "":
		pk, err := jwtauth.ParsePublicKey([]byte(j.PublicKey))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Name("auth.jwt.public_key"), err)
		}
		jc.PublicKey, key = pk, pk
	default:
		data, err := os.ReadFile(j.PublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Name("auth.jwt.public_key_file"), err)
		}
		pk, err := jwtauth.ParsePublicKey(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", cfg.Name("auth.jwt.public_key_file"), j.PublicKeyFile, err)
		}
		jc.PublicKey, key = pk, pk
	}
	algs, err := jwtauth.Algorithms(key, j.Algorithms)
	if err != nil {
		return nil, fmt.Errorf("auth.jwt.algorithms: %w", err)
	}
	jc.Algorithms = algs
	a, err := jwtauth.New(jc)
	if err != nil {
		return nil, fmt.Errorf("auth.jwt: %w", err)
	}
	return a, nil
}

// serve starts the server, listens, and serves until ctx ends; then it
// stops accepting, lets API requests in flight finish, and drains the
// sessions (close code 1001 over the drain period) before closing the
// broker.
func (a *app) serve(ctx context.Context, onListen func(net.Addr)) error {
	defer func() {
		if a.hooks != nil {
			a.hooks.Close()
		}
	}()
	if err := a.srv.Start(ctx); err != nil {
		_ = a.srv.Shutdown(context.WithoutCancel(ctx))
		return err
	}
	// No TCP keep-alive probes (four setsockopt(2) calls per accepted
	// connection): WebSockets have Myxi's pings, HTTP its idle timeout.
	ln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(ctx, "tcp", a.addr)
	if err != nil {
		_ = a.srv.Shutdown(context.WithoutCancel(ctx))
		return fmt.Errorf("listen on %s: %w", a.addr, err)
	}
	if addr := a.cfg.Server.MetricsAddr; addr != "" {
		stopMetrics, err := serveMetrics(addr, a.srv.MetricsHandler(), a.log)
		if err != nil {
			_ = ln.Close()
			_ = a.srv.Shutdown(context.WithoutCancel(ctx))
			return fmt.Errorf("%s: %w", a.cfg.Name("server.metrics_addr"), err)
		}
		defer stopMetrics()
	}
	hs := newHTTPServer(a.handler, a.http, a.log)
	auth := a.cfg.AuthMethod()
	if auth == "" {
		auth = "none"
	}
	attrs := []any{"addr", ln.Addr().String(), "broker", a.broker,
		"exchanges", len(a.cfg.ExchangeNames()), "auth", auth, "http_api", a.api}
	if a.cfg.File != "" {
		attrs = append(attrs, "config", a.cfg.File)
	}
	a.log.Info("myxi listening", attrs...)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	if onListen != nil {
		onListen(ln.Addr())
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	a.log.Info("shutting down", "sessions", a.srv.Sessions(), "drain_period", a.drain)
	// Stop accepting first. Hijacked WebSockets are not waited for by
	// http.Server; API publishes in flight are, briefly.
	httpCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpShutdownTimeout)
	if err := hs.Shutdown(httpCtx); err != nil {
		a.log.Warn("HTTP requests still running at shutdown; closing them", "err", err)
		_ = hs.Close()
	}
	cancel()
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.drain+10*time.Second)
	defer cancel()
	err = a.srv.Shutdown(drainCtx)
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", serveErr)
	}
	return err
}

// serveMetrics serves h at addr/metrics until the returned function is
// called.
func serveMetrics(addr string, h http.Handler, logger *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	go func() { _ = hs.Serve(ln) }()
	logger.Info("serving metrics", "addr", ln.Addr().String(), "path", "/metrics")
	return func() { _ = hs.Close() }, nil
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

// keepHeaders is what a session keeps of its handshake: the library's
// defaults plus every header a webhook forwards.
func keepHeaders(cfg *config.Config) []string {
	keep := []string{"Cookie", "User-Agent", "Authorization"}
	add := func(names []string) {
		for _, n := range names {
			if !slices.ContainsFunc(keep, func(k string) bool { return strings.EqualFold(k, n) }) {
				keep = append(keep, n)
			}
		}
	}
	add(cfg.Auth.Webhook.ForwardHeaders)
	for _, act := range cfg.Actions {
		add(act.ForwardHeaders)
	}
	return keep
}
