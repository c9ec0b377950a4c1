// Command server runs a standalone Myxi node, for applications written in
// any language, and pushes events to one.
//
//	go run ./server -exchanges widgets,bench   # open exchanges, embedded broker
//	go run ./server -config myxi.toml          # exchanges and their policies, JWT or
//	                                           # webhook authentication, webhook actions,
//	                                           # the HTTP publish API: see myxi.example.toml
//	go run ./server -dev -exchanges widgets    # make run: an API key made up for the run,
//	                                           # and the curl and push lines that publish
//	MYXI_URL=http://localhost:5005 MYXI_API_KEY=... go run ./server push widgets 42 WidgetQtyChanged '{"quantity":5}'
//
// Configuration, lowest precedence first: built-in defaults, the TOML file
// (-config or MYXI_CONFIG), environment variables (MYXI_PORT, MIXI_PORT,
// PORT, MYXI_BIND_ADDRESS, RABBITMQ_URL, MYXI_EXCHANGES,
// MYXI_ALLOWED_ORIGINS, MYXI_TRUSTED_PROXIES, MYXI_DRAIN_PERIOD,
// MYXI_NODE_ID, MYXI_METRICS_ADDR, MYXI_LOG_LEVEL, MYXI_LOG_FORMAT, MYXI_API_KEY,
// MYXI_JWT_SECRET, MYXI_JWT_PUBLIC_KEY_FILE, MYXI_WEBHOOK_SECRET), then
// flags. An invalid configuration stops the server at start with errors
// naming each key and its problem. SIGTERM or SIGINT drains the node and
// exits 0. `go run ./server -h` and `go run ./server push -h` document
// everything; docs/any-language.md shows it at work.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
)

func main() {
	c := &cli{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin, getenv: os.Getenv}
	if err := c.run(context.Background(), os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		// Errors from the library already say "myxi:".
		fmt.Fprintln(os.Stderr, "myxi:", strings.TrimPrefix(err.Error(), "myxi: "))
		os.Exit(1)
	}
}

// cli is the command's environment, replaced in tests.
type cli struct {
	stdout, stderr io.Writer
	stdin          io.Reader
	getenv         func(string) string
	// onListen, when set, is called with the listening address once the
	// server accepts connections (tests listen on port 0).
	onListen func(net.Addr)
}

// run dispatches to a command: "push", or serving (the default, also
// spelt "serve").
func (c *cli) run(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "push":
			return c.push(ctx, args[1:])
		case "serve":
			return c.serve(ctx, args[1:])
		case "help":
			return c.serve(ctx, []string{"-h"})
		}
	}
	return c.serve(ctx, args)
}
