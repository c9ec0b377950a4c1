package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/internal/randid"

	"github.com/myxi/myxi/broker/rabbitmq"
	"github.com/myxi/myxi/internal/config"
	"github.com/myxi/myxi/internal/protocol"
)

// Where push publishes: a server's HTTP API (MYXI_URL, or -url) or
// RabbitMQ (RABBITMQ_URL, or -rabbitmq).
const (
	EnvURL = "MYXI_URL"
	// EnvAPIURL is the older name of MYXI_URL, still read.
	EnvAPIURL = "MYXI_API_URL"
)

// maxPayloadBytes bounds a payload read from stdin.
const maxPayloadBytes = 16 << 20

// push publishes one event, through a running server's HTTP API or
// through RabbitMQ (as myxi 1.x's push_event did).
func (c *cli) push(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("myxi push", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() { c.pushUsage(fs) }
	var target string
	// Both write target; -url last, as registering sets its default.
	fs.StringVar(&target, "api", "", "the same as -url")
	fs.StringVar(&target, "url", cmp.Or(c.getenv(EnvURL), c.getenv(EnvAPIURL)), "publish through the HTTP API of the server at this base URL (such as http://localhost:5005), with the key in MYXI_API_KEY [MYXI_URL]")
	var (
		rabbitURL = fs.String("rabbitmq", c.getenv(myxi.EnvRabbitMQURL), "RabbitMQ URL(s), comma-separated, when not publishing through -url [RABBITMQ_URL]")
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

	// A flag given on the command line beats the environment: -rabbitmq
	// alone publishes through RabbitMQ even with MYXI_URL set.
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if given["rabbitmq"] && !given["url"] && !given["api"] {
		target = ""
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if target != "" {
		return c.pushHTTP(ctx, target, exchange, routingKey, event, payload)
	}
	urls := rabbitmq.ParseURLs(*rabbitURL)
	if len(urls) == 0 {
		return errors.New("push: nowhere to publish: set MYXI_URL (or -url) to a server's base URL, such as http://localhost:5005, " +
			"with its key in MYXI_API_KEY, or set RABBITMQ_URL (or -rabbitmq) to publish through RabbitMQ")
	}
	body, err := protocol.PushBody(event, payload)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	return c.pushAMQP(ctx, urls, exchange, routingKey, body)
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

// pushAMQP publishes body as myxi 1.x's push_event did (declaring the
// direct exchange as it did), mandatory and confirmed: RabbitMQ returns an
// event that no queue takes, which means that no Myxi node on this broker
// has a client subscribed to that key right now (or that the server uses
// its embedded broker): push says so on stderr, and still succeeds.
func (c *cli) pushAMQP(ctx context.Context, urls []string, exchange, routingKey string, body []byte) error {
	conn, err := dialAMQP(ctx, urls)
	if err != nil {
		return fmt.Errorf("push: connect to RabbitMQ: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("push: open a RabbitMQ channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("push: turn on publisher confirms: %w", err)
	}
	// amqp091 delivers a returned message before the confirm of the same
	// publish (both come from its one reader), so once confirmed, a return
	// is already in this buffered channel.
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeDirect, false, false, false, false, nil); err != nil {
		return fmt.Errorf("push: declare exchange %q as myxi 1.x does (direct, non-durable, not auto-deleted; "+
			"does one of that name exist with other settings?): %w", exchange, err)
	}
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, routingKey, true, false, amqp.Publishing{
		ContentType: "application/json",
		Body:        body,
	})
	if err != nil {
		return fmt.Errorf("push: publish to %s/%s: %w", exchange, routingKey, err)
	}
	acked, err := dc.WaitContext(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("push: publish to %s/%s: waiting for RabbitMQ's confirm: %w", exchange, routingKey, err)
	case !acked:
		return fmt.Errorf("push: publish to %s/%s: RabbitMQ did not take the event (negative confirm)", exchange, routingKey)
	}
	select {
	case r := <-returns:
		fmt.Fprintf(c.stderr, "myxi push: warning: the event reached no queue (RabbitMQ: %d %s): no Myxi node on this RabbitMQ "+
			"has a client subscribed to %s/%s right now, so nobody received it. A server on the embedded broker "+
			"is reached only through its HTTP API: use -url (MYXI_URL) with MYXI_API_KEY.\n",
			r.ReplyCode, r.ReplyText, exchange, routingKey)
	default:
	}
	return nil
}

// dialAMQP connects to the first of urls that answers, within ctx. The
// errors say why each failed (refused, no such host, wrong password).
func dialAMQP(ctx context.Context, urls []string) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName("myxi push " + randid.New())
	var errs []error
	for _, u := range urls {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		timeout := 10 * time.Second
		if deadline, ok := ctx.Deadline(); ok {
			timeout = time.Until(deadline)
		}
		conn, err := amqp.DialConfig(u, amqp.Config{Properties: props, Dial: amqp.DefaultDial(timeout)})
		if err == nil {
			return conn, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", redactURL(u), err))
	}
	return nil, errors.Join(errs...)
}

// redactURL hides the password of a URL for messages.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(an unparsable URL)"
	}
	if _, has := p.User.Password(); has {
		p.User = url.UserPassword(p.User.Username(), "xxxxx")
	}
	return p.String()
}

func (c *cli) pushHTTP(ctx context.Context, base, exchange, routingKey, event string, payload json.RawMessage) error {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("push: -url %q: want the server's http(s) base URL, such as http://localhost:5005", base)
	}
	key := strings.TrimSpace(c.getenv(config.EnvAPIKey))
	if key == "" {
		return fmt.Errorf("push: publishing through %s needs the server's API key in %s", base, config.EnvAPIKey)
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

Where it publishes, first match wins:
  -url or MYXI_URL          POST to that server's /api/publish, with
                            "Authorization: Bearer $MYXI_API_KEY" (a server on
                            its embedded broker is reachable only this way)
  -rabbitmq or RABBITMQ_URL publish to RabbitMQ: the direct exchange EXCHANGE,
                            ROUTING_KEY, the body {"event": EVENT, "payload":
                            PAYLOAD}, exactly as myxi 1.x's push_event did. When
                            no queue takes the event (no client subscribed to
                            that key on any node), it warns on stderr.
A flag beats the environment: -rabbitmq alone ignores MYXI_URL.

Examples:
  MYXI_URL=http://localhost:5005 MYXI_API_KEY=s3cret myxi push widgets 42 WidgetQtyChanged '{"quantity":5}'
  RABBITMQ_URL=amqp://guest:guest@localhost:5672/ myxi push widgets 42 WidgetQtyChanged '{"quantity":5}'
  echo '{"quantity":5}' | myxi push -url http://localhost:5005 widgets 42 WidgetQtyChanged -

Flags:
`)
	fs.PrintDefaults()
}
