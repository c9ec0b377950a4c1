package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/broker/rabbitmq"
	"github.com/myxi/myxi/internal/config"
	"github.com/myxi/myxi/internal/protocol"
)

// EnvAPIURL is the default of push -api.
const EnvAPIURL = "MYXI_API_URL"

// maxPayloadBytes bounds a payload read from stdin.
const maxPayloadBytes = 16 << 20

// push publishes one event, through RabbitMQ (as myxi 1.x's push_event
// did) or through a running server's HTTP API.
func (c *cli) push(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("myxi push", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() { c.pushUsage(fs) }
	var (
		api       = fs.String("api", c.getenv(EnvAPIURL), "publish through the HTTP API of the server at this base URL (such as http://localhost:5005), with the key in MYXI_API_KEY [MYXI_API_URL]")
		rabbitURL = fs.String("rabbitmq", c.getenv(myxi.EnvRabbitMQURL), "RabbitMQ URL(s), comma-separated, when not using -api [RABBITMQ_URL]")
		timeout   = fs.Duration("timeout", 10*time.Second, "give up after this long")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 3 || fs.NArg() > 4 {
		fs.Usage()
		return fmt.Errorf("push: want EXCHANGE ROUTING_KEY EVENT [PAYLOAD] (flags go first), got %d arguments", fs.NArg())
	}
	exchange, routingKey, event := fs.Arg(0), fs.Arg(1), fs.Arg(2)
	if !protocol.ValidExchangeName(exchange) {
		return fmt.Errorf("push: %q is not a valid exchange name", exchange)
	}
	if len(routingKey) > protocol.MaxRoutingKeyBytes {
		return fmt.Errorf("push: routing key longer than %d bytes", protocol.MaxRoutingKeyBytes)
	}
	if event == "" {
		return errors.New("push: empty event name")
	}
	payload, err := c.readPayload(fs.Arg(3))
	if err != nil {
		return fmt.Errorf("push: payload: %w", err)
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if *api != "" {
		return c.pushHTTP(ctx, *api, exchange, routingKey, event, payload)
	}
	urls := rabbitmq.ParseURLs(*rabbitURL)
	if len(urls) == 0 {
		return errors.New("push: nowhere to publish: set RABBITMQ_URL (or -rabbitmq), or -api with MYXI_API_KEY to publish through a running server")
	}
	return c.pushAMQP(ctx, urls, exchange, routingKey, event, payload)
}

// readPayload returns the payload argument ("{}" when absent; "-" reads
// stdin), checked to be one JSON object.
func (c *cli) readPayload(arg string) (json.RawMessage, error) {
	data := []byte(arg)
	switch arg {
	case "":
		return json.RawMessage("{}"), nil
	case "-":
		var err error
		if data, err = io.ReadAll(io.LimitReader(c.stdin, maxPayloadBytes+1)); err != nil {
			return nil, fmt.Errorf("read stdin: %w", err)
		}
		if len(data) > maxPayloadBytes {
			return nil, fmt.Errorf("larger than %d bytes", maxPayloadBytes)
		}
	}
	data = bytes.TrimSpace(data)
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("%q is not a JSON object", abbreviate(string(data)))
	}
	return json.RawMessage(data), nil
}

func abbreviate(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}

func (c *cli) pushAMQP(ctx context.Context, urls []string, exchange, routingKey, event string, payload json.RawMessage) error {
	logger := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	pub, err := rabbitmq.NewPublisher(ctx, rabbitmq.PublisherConfig{URLs: urls, Name: "myxi push " + randomID(), Logger: logger})
	if err != nil {
		return fmt.Errorf("push: connect to RabbitMQ: %w", err)
	}
	defer pub.Close()
	if err := pub.Push(ctx, exchange, routingKey, event, payload); err != nil {
		return fmt.Errorf("push: %w", err)
	}
	return nil
}

func (c *cli) pushHTTP(ctx context.Context, base, exchange, routingKey, event string, payload json.RawMessage) error {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("push: -api %q: want the server's http(s) base URL, such as http://localhost:5005", base)
	}
	key := strings.TrimSpace(c.getenv(config.EnvAPIKey))
	if key == "" {
		return fmt.Errorf("push: -api needs the API key in %s", config.EnvAPIKey)
	}
	body, err := json.Marshal(map[string]any{
		"exchange": exchange, "routing_key": routingKey, "event": event, "payload": payload,
	})
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	endpoint := strings.TrimRight(base, "/") + "/api/publish"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var answer struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &answer) == nil && answer.Error != "" {
		return fmt.Errorf("push: %s answered HTTP %d %s: %s", endpoint, resp.StatusCode, answer.Error, answer.Message)
	}
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("push: %s answered HTTP 404: is the server's HTTP API on (an API key configured on the server)?", endpoint)
	}
	return fmt.Errorf("push: %s answered HTTP %d: %s", endpoint, resp.StatusCode, abbreviate(strings.TrimSpace(string(raw))))
}

func (c *cli) pushUsage(fs *flag.FlagSet) {
	w := c.stderr
	fmt.Fprint(w, `Usage: myxi push [flags] EXCHANGE ROUTING_KEY EVENT [PAYLOAD]

Pushes one event to every client subscribed to EXCHANGE and ROUTING_KEY, on
every Myxi node, and returns once it was taken: exit status 0 and no output
on success, 1 and a message on stderr otherwise.

  PAYLOAD   a JSON object (default {}); "-" reads it from stdin

By default it publishes through RabbitMQ (RABBITMQ_URL or -rabbitmq), to the
direct exchange EXCHANGE with ROUTING_KEY and the body
{"event": EVENT, "payload": PAYLOAD}, exactly as myxi 1.x's push_event did.
With -api it POSTs to the server's /api/publish instead, with
"Authorization: Bearer $MYXI_API_KEY" (the server's embedded broker is
reachable only this way).

Examples:
  RABBITMQ_URL=amqp://guest:guest@localhost:5672/ myxi push widgets 42 WidgetQtyChanged '{"quantity":5}'
  MYXI_API_KEY=s3cret myxi push -api http://localhost:5005 widgets 42 WidgetQtyChanged '{"quantity":5}'
  echo '{"quantity":5}' | myxi push widgets 42 WidgetQtyChanged -

Flags:
`)
	fs.PrintDefaults()
}
