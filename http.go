package myxi

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/broker/memory"
)

// Mount adds Myxi to an application's echo server: WebSocket upgrades at
// "/" (where myxi 1.x clients connect) and "/ws", the JavaScript client at
// "/myxi.js" and "/myxi.mjs", "/healthz" and "/readyz". Plain requests to
// "/" reach the application's own routes. Call Start before serving and
// Shutdown when done.
//
// Metrics are not served there (the port is public): serve MetricsHandler
// on a private address. The application's http.Server should set
// ReadHeaderTimeout and IdleTimeout (idle keep-alive connections cost a
// goroutine and buffers each until then; hijacked WebSockets are not
// affected) and MaxHeaderBytes (it applies before Limits.MaxHeaderBytes).
func (s *Server) Mount(e *echo.Echo) {
	e.Use(s.middleware)
}

// MetricsHandler serves the node's Prometheus metrics. Serve it on a
// private address (Config.MetricsAddr does that for ListenAndServe and
// Serve), not on the public WebSocket port.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{})
}

func (s *Server) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		p := r.URL.Path
		switch {
		case (p == "/" || p == "/ws") && websocket.IsWebSocketUpgrade(r):
			return s.handleUpgrade(c)
		case p == "/ws":
			return c.String(http.StatusUpgradeRequired, "This is a Myxi WebSocket endpoint: connect with a WebSocket client.\n")
		case p == "/healthz":
			return c.String(http.StatusOK, "ok\n")
		case p == "/readyz":
			if !s.Ready() {
				return c.String(http.StatusServiceUnavailable, s.readiness()+"\n")
			}
			return c.String(http.StatusOK, "ready\n")
		case isClientAsset(p):
			return serveClientAsset(c, p)
		}
		return next(c)
	}
}

func (s *Server) readiness() string {
	switch {
	case !s.started.Load():
		return "not started"
	case s.draining.Load():
		return "draining"
	case !s.broker.Ready():
		return "broker not connected"
	}
	return "ready"
}

// Handler returns an http.Handler serving Myxi alone: the endpoints of
// Mount plus a small status page at "/".
func (s *Server) Handler() http.Handler {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	s.Mount(e)
	e.GET("/", s.statusPage)
	return e
}

var statusTemplate = template.Must(template.New("status").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Myxi</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#1f2933}
code{background:#f0f4f8;padding:.1rem .3rem;border-radius:4px}</style></head>
<body><h1>Myxi</h1>
<p>This is a Myxi WebSocket server ({{.Status}}). Connect a WebSocket client to <code>{{.WS}}</code>,
or load the JavaScript client from <a href="/myxi.js"><code>/myxi.js</code></a>.</p>
</body></html>`))

func (s *Server) statusPage(c echo.Context) error {
	scheme := "ws"
	if c.IsTLS() {
		scheme = "wss"
	}
	status := "ready"
	if !s.Ready() {
		status = "not ready"
	}
	// Only ready or not: the page is public, so it names no exchange and
	// no count.
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMETextHTMLCharsetUTF8)
	return statusTemplate.Execute(c.Response(), map[string]any{
		"Status": status,
		"WS":     scheme + "://" + c.Request().Host + "/",
	})
}

// ListenAndServe listens on Config.Addr and serves until ctx ends, then
// shuts down gracefully (Shutdown, bounded by the DrainPeriod plus 10s).
// It returns at once with the error when it cannot listen (a port in
// use); WaitReady returns that error too.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := listenNoKeepAlive.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		err = fmt.Errorf("myxi: listen on %s: %w", s.cfg.Addr, err)
		s.fail(err)
		return err
	}
	return s.Serve(ctx, ln)
}

// listenNoKeepAlive listens without TCP keep-alive probes: a WebSocket
// has its own (Limits.PingInterval, with the idle close) and a plain HTTP
// connection its idle timeout, and each accepted connection would cost
// four setsockopt(2) calls to turn the probes on.
var listenNoKeepAlive = net.ListenConfig{KeepAlive: -1}

// Timeouts of the http.Server of ListenAndServe and Serve. They bound
// plain HTTP requests and idle keep-alive connections; WebSockets,
// hijacked at the upgrade, have their own (Limits).
const (
	httpIdleTimeout  = 60 * time.Second
	httpReadTimeout  = 30 * time.Second
	httpWriteTimeout = 30 * time.Second
)

// Serve starts the server if needed and serves on ln until ctx ends, then
// shuts down gracefully. It closes ln. With Config.MetricsAddr set, it
// also serves /metrics there.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if err := s.Start(ctx); err != nil {
		_ = ln.Close()
		return err
	}
	stopMetrics, err := s.serveMetrics()
	if err != nil {
		_ = ln.Close()
		s.fail(err)
		_ = s.Shutdown(context.WithoutCancel(ctx))
		return err
	}
	defer stopMetrics()
	addr := ln.Addr()
	s.addr.Store(&addr)
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.cfg.Limits.HandshakeTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    s.cfg.Limits.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.log.Info("myxi listening", "addr", addr.String(), "broker", brokerName(s.broker), "exchanges", len(s.cfg.Exchanges))
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.DrainPeriod+10*time.Second)
	defer cancel()
	// Stop accepting first; hijacked WebSocket connections are not waited
	// for by http.Server and are drained by Shutdown below.
	s.draining.Store(true)
	_ = hs.Shutdown(stopCtx)
	err = s.Shutdown(stopCtx)
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		err = fmt.Errorf("myxi: serve: %w", serveErr)
		s.fail(err)
	}
	return err
}

// serveMetrics serves MetricsHandler on Config.MetricsAddr, if set, until
// the returned function is called.
func (s *Server) serveMetrics() (stop func(), err error) {
	if s.cfg.MetricsAddr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", s.cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("myxi: listen for metrics on %s: %w", s.cfg.MetricsAddr, err)
	}
	if !isLoopbackAddr(ln.Addr()) {
		s.log.Warn("metrics served on a non-loopback address: anyone who reaches it reads them", "metrics_addr", ln.Addr().String())
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.MetricsHandler())
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: httpIdleTimeout}
	go func() { _ = hs.Serve(ln) }()
	return func() { _ = hs.Close() }, nil
}

func isLoopbackAddr(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// brokerName names a broker for logs: "embedded", or what the broker
// calls itself.
func brokerName(b broker.Broker) string {
	if _, ok := b.(*memory.Broker); ok {
		return "embedded"
	}
	if n, ok := b.(interface{ Name() string }); ok {
		return n.Name()
	}
	return fmt.Sprintf("%T", b)
}

// newOriginChecker implements PROTOCOL.md's origin rule: no Origin header,
// the server's own host (any port), localhost, or an allowed pattern.
func newOriginChecker(allowed []string) func(r *http.Request) bool {
	return func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		if origin == "" {
			return true
		}
		u, err := url.Parse(origin)
		if err != nil || u.Host == "" {
			return false
		}
		host := u.Hostname()
		if strings.EqualFold(host, hostOnly(r.Host)) || isLocalhost(host) {
			return true
		}
		for _, pattern := range allowed {
			if originMatches(pattern, u) {
				return true
			}
		}
		return false
	}
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return strings.Trim(h, "[]")
	}
	return strings.Trim(hostport, "[]")
}

func isLocalhost(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// originMatches matches an origin against "*", a full origin pattern
// ("https://*.example.com") or a host pattern ("*.example.com",
// "app.example.com:8443").
func originMatches(pattern string, origin *url.URL) bool {
	pattern = strings.ToLower(strings.TrimSpace(pattern))
	if pattern == "*" {
		return true
	}
	subject := strings.ToLower(origin.Host)
	if strings.Contains(pattern, "://") {
		subject = strings.ToLower(origin.Scheme + "://" + origin.Host)
	} else if !strings.Contains(pattern, ":") {
		subject = strings.ToLower(origin.Hostname())
	}
	ok, err := path.Match(pattern, subject)
	return err == nil && ok
}

// newIPExtractor believes X-Forwarded-For only from trusted proxies.
func newIPExtractor(trusted []string) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		if n, err := parseCIDR(p); err == nil {
			opts = append(opts, echo.TrustIPRange(n))
		}
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}
