// Package servertest starts a real Myxi server on a loopback port for the
// tests of the packages that plug into one (auth/jwtauth, auth/webhook,
// httpapi): the embedded broker, the given exchanges and actions, stopped
// and drained when the test ends.
package servertest

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/internal/testutil"
)

// Server is a running server.
type Server struct {
	Srv  *myxi.Server
	WS   string // ws://127.0.0.1:port/
	HTTP string // http://127.0.0.1:port
}

// Start runs a server with cfg (periodic reauthorization off and a short
// drain period unless cfg sets them) until the test ends, and waits until
// it is ready.
func Start(tb testing.TB, cfg myxi.Config) *Server {
	tb.Helper()
	s := Run(tb, cfg)
	WaitReady(tb, s.HTTP)
	return s
}

// Run is Start without the wait: for a server whose broker may not
// connect.
func Run(tb testing.TB, cfg myxi.Config) *Server {
	tb.Helper()
	if cfg.ReauthorizeInterval == 0 {
		cfg.ReauthorizeInterval = -1
	}
	if cfg.DrainPeriod == 0 {
		cfg.DrainPeriod = 50 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = testutil.Logger(tb)
	}
	srv, err := myxi.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("serve: %v", err)
		}
	})
	return &Server{Srv: srv, WS: "ws://" + ln.Addr().String() + "/", HTTP: "http://" + ln.Addr().String()}
}

// WaitReady polls base+"/readyz" until it answers 200, for 10s at most.
func WaitReady(tb testing.TB, base string) {
	tb.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("server at %s not ready after 10s (last: %v)", base, err)
		}
		time.Sleep(10 * time.Millisecond) // polling another goroutine's readiness over HTTP
	}
}
