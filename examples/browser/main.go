// Command browser serves the README's browser page (index.html) beside a
// Myxi server mounted into the application's own echo server, so that
// the page loads the client from the same origin: <script src="/myxi.js">.
//
//	go run ./examples/browser            # http://localhost:8090/
//	curl -d '{"quantity": 7}' http://localhost:8090/widgets/42   # "save" widget 42: the page shows 7
//
// PORT (or MYXI_PORT) picks another port; RABBITMQ_URL uses RabbitMQ.
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/myxi/myxi"
)

//go:embed index.html
var page []byte

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger); err != nil {
		logger.Error("stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *slog.Logger) error {
	cfg, err := myxi.ConfigFromEnv(logger)
	if err != nil {
		return err
	}
	if _, from, _ := myxi.PortFromEnv(os.Getenv); from == "" {
		cfg.Addr = "localhost:8090"
	}
	cfg.Exchanges = map[string]myxi.AuthorizeFunc{"widgets": myxi.AuthenticatedOnly}
	cfg.Actions = map[string]myxi.ActionHandler{
		"Authenticate": func(ctx context.Context, s *myxi.Session, payload json.RawMessage) error {
			var p struct {
				SessionToken string `json:"session_token"`
			}
			if json.Unmarshal(payload, &p) != nil || p.SessionToken != "alice-token" {
				return &myxi.ClientError{Name: "InvalidSessionToken"}
			}
			s.SetUser("alice")
			return s.Send("Authenticated", map[string]string{"username": "alice"})
		},
		"SayHello": myxi.AuthRequired(func(ctx context.Context, s *myxi.Session, _ json.RawMessage) error {
			return s.Send("HelloThere", map[string]int64{"time": time.Now().Unix()})
		}),
	}
	srv, err := myxi.New(cfg)
	if err != nil {
		return err
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	srv.Mount(e) // WebSocket at / and /ws, /myxi.js, /healthz, /readyz
	e.GET("/", func(c echo.Context) error { return c.HTMLBlob(http.StatusOK, page) })
	// Saving a widget pushes its new quantity to the pages subscribed to it.
	e.POST("/widgets/:id", func(c echo.Context) error {
		var body struct {
			Quantity int `json:"quantity"`
		}
		if err := json.NewDecoder(c.Request().Body).Decode(&body); err != nil {
			return c.String(http.StatusBadRequest, "want {\"quantity\": N}\n")
		}
		if err := srv.Push(c.Request().Context(), "widgets", c.Param("id"), "WidgetQtyChanged", body); err != nil {
			return err
		}
		return c.NoContent(http.StatusNoContent)
	})

	if err := srv.Start(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		_ = srv.Shutdown(context.Background())
		return err
	}
	// Timeouts for plain requests; the WebSocket upgrader clears them from
	// the connections it takes over.
	hs := &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	logger.Info("open the page", "url", "http://"+ln.Addr().String()+"/")

	select {
	case <-ctx.Done():
	case err := <-served:
		_ = srv.Shutdown(context.Background())
		return err
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := hs.Shutdown(stopCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Warn("http shutdown", "err", err)
	}
	return srv.Shutdown(stopCtx)
}
