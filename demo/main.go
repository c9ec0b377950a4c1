// Command demo is the widgets demo of the myxi 1.x README, built on Myxi
// the way an application would: a page with live widget quantities, an
// exchange whose authorizer reads the widgets from SQLite, the
// Authenticate and SayHello actions, and a push after every saved change.
//
//	go run ./demo                      # http://localhost:8080, embedded broker
//	RABBITMQ_URL=amqp://guest:guest@localhost:5672/ PORT=8081 go run ./demo
//
// Several nodes started with the same RABBITMQ_URL (on different ports)
// share the widgets database file and each other's pushes.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/broker/rabbitmq"
)

const defaultPort = "8080"

func main() {
	defaultDB := cmp.Or(os.Getenv("MYXI_DEMO_DB"), filepath.Join(os.TempDir(), "myxi-demo.db"))
	dbPath := flag.String("db", defaultDB, "SQLite file of the widgets, shared by the nodes on this machine (env MYXI_DEMO_DB)")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger, *dbPath); err != nil {
		logger.Error("demo stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *slog.Logger, dbPath string) error {
	store, err := OpenStore(ctx, dbPath)
	if err != nil {
		return err
	}
	defer store.Close()

	// The library reads the environment only here (MYXI_PORT / PORT, the
	// origins, the node id); RABBITMQ_URL, when set, picks RabbitMQ.
	cfg, err := myxi.ConfigFromEnv(logger)
	if err != nil {
		return err
	}
	if urls := rabbitmq.ParseURLs(os.Getenv(myxi.EnvRabbitMQURL)); len(urls) > 0 {
		b, err := rabbitmq.New(rabbitmq.Config{URLs: urls, ConnectionName: "myxi " + cfg.NodeID, Logger: logger})
		if err != nil {
			return fmt.Errorf("%s: %w", myxi.EnvRabbitMQURL, err)
		}
		cfg.Broker = b
	}
	if _, from, _ := myxi.PortFromEnv(os.Getenv); from == "" { // a bad value already failed ConfigFromEnv
		cfg.Addr = net.JoinHostPort(os.Getenv(myxi.EnvBindAddress), defaultPort) // the demo's port, not Myxi's 5005
	}
	cfg.Exchanges = exchanges(store)
	cfg.Actions = actions(store)
	cfg.History = history(cfg.Broker)
	srv, err := myxi.New(cfg)
	if err != nil {
		return err
	}
	store.AfterSave(pushQuantity(srv))

	// Myxi mounted into the application's own echo server: the page and
	// the API are the demo's routes; WebSocket upgrades at "/" and "/ws",
	// /myxi.js, /healthz and /readyz are Myxi's.
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Use(middleware.Recover())
	srv.Mount(e)
	routes(e, store, nodeInfo{NodeID: cfg.NodeID, Broker: brokerLabel()}, logger)

	if err := srv.Start(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		_ = srv.Shutdown(context.Background())
		return err
	}
	// Timeouts, so that idle keep-alive connections and slow clients do not
	// hold goroutines for ever. Read and write deadlines are set on the
	// connection; the WebSocket upgrader clears them from the connections
	// it takes over (sessions have their own ping and write timeouts).
	hs := newHTTPServer(e)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	printWelcome(ctx, os.Stdout, store, ln.Addr(), dbPath, cfg.NodeID)

	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err := <-served:
		_ = srv.Shutdown(context.Background())
		return err
	}
	// Stop accepting first; http.Server does not wait for hijacked
	// WebSocket connections: srv.Shutdown drains those (close 1001, spread
	// over the drain period so clients do not all return at once).
	stopCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := hs.Shutdown(stopCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Warn("http shutdown", "err", err)
	}
	return srv.Shutdown(stopCtx)
}

// history gives the widgets exchange a history, so that a page that was
// offline gets the changes it missed replayed when it comes back. b is the
// configured broker, nil for the embedded one. Both brokers shipped with
// Myxi keep history (in memory; in a RabbitMQ stream). myxi.New refuses
// History with a broker that keeps none, so such a broker gets none: its
// pages reload the quantities after every reconnect instead.
func history(b broker.Broker) map[string]myxi.History {
	if _, ok := b.(broker.Historian); b != nil && !ok {
		return nil
	}
	return map[string]myxi.History{widgetsExchange: {MaxAge: historyMaxAge}}
}

// historyMaxAge: a page offline for longer reloads the quantities instead
// (so does one that missed more than the replay limit, 1000 events).
const historyMaxAge = 10 * time.Minute

// newHTTPServer returns the demo's HTTP server with its timeouts.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
}

// brokerLabel names the broker for people: RabbitMQ's host, never its
// password.
func brokerLabel() string {
	urls := rabbitmq.ParseURLs(os.Getenv(myxi.EnvRabbitMQURL))
	if len(urls) == 0 {
		return "embedded broker (single node)"
	}
	if u, err := url.Parse(urls[0]); err == nil {
		return "RabbitMQ at " + u.Host
	}
	return "RabbitMQ"
}

// printWelcome tells the person who started the demo where to go and how
// to sign in.
func printWelcome(ctx context.Context, w io.Writer, store *Store, addr net.Addr, dbPath, nodeID string) {
	port := addr.(*net.TCPAddr).Port
	base := fmt.Sprintf("http://localhost:%d", port)
	fmt.Fprintf(w, "\nMyxi widgets demo (node %s, %s)\n", nodeID, brokerLabel())
	fmt.Fprintf(w, "  Open %s/ in a browser (and in a second window to see changes live).\n", base)
	fmt.Fprintf(w, "  Widgets database: %s\n\n", dbPath)
	fmt.Fprintf(w, "  Sign in with one of these session tokens:\n")
	widgets, _ := store.Widgets(ctx)
	for _, u := range seedUsers {
		var ids []string
		for _, wd := range widgets {
			if wd.VisibleTo(u.User) {
				ids = append(ids, fmt.Sprint(wd.ID))
			}
		}
		fmt.Fprintf(w, "    %-6s %-12s sees widgets %s\n", u.Username, u.Token, strings.Join(ids, ", "))
	}
	fmt.Fprintf(w, "\n  Change a quantity from a script:\n")
	fmt.Fprintf(w, "    curl -H 'Authorization: Bearer alice-token' -d '{\"delta\": 1}' -H 'Content-Type: application/json' %s/api/widgets/1\n\n", base)
}
