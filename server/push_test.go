package main

import (
	"context"
	neturl "net/url"
	"strings"
	"testing"
	"time"

	"github.com/myxi/myxi/internal/testutil"
)

// push runs `myxi push args...` with env and stdin.
func push(t *testing.T, env map[string]string, stdin string, args ...string) error {
	t.Helper()
	_, err := pushStderr(t, env, stdin, args...)
	return err
}

// pushStderr is push, also returning what it wrote on stderr.
func pushStderr(t *testing.T, env map[string]string, stdin string, args ...string) (string, error) {
	t.Helper()
	c, stdout, stderr := newCLI(env)
	c.stdin = strings.NewReader(stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.run(ctx, append([]string{"push"}, args...))
	if out := stdout.String(); out != "" {
		t.Errorf("push printed %q on stdout; it should be silent", out)
	}
	return stderr.String(), err
}

func TestPushThroughAPI(t *testing.T) {
	r := serve(t, map[string]string{"MYXI_API_KEY": "api-key"}, "-exchanges", "widgets")
	c := testutil.Dial(t, r.WS)
	c.Subscribe("widgets", "42")

	env := map[string]string{"MYXI_API_KEY": "api-key"}
	if err := push(t, env, "", "-url", r.HTTP, "widgets", "42", "WidgetQtyChanged", `{"quantity":5}`); err != nil {
		t.Fatal(err)
	}
	if ev := c.Expect("WidgetQtyChanged"); string(ev.Payload["quantity"]) != "5" || ev.MQ.RK != "42" {
		t.Fatalf("event: %s", ev.Raw)
	}
	// The payload from stdin; the URL from MYXI_URL. RABBITMQ_URL set as
	// well does not matter: the server's URL comes first.
	env["MYXI_URL"] = r.HTTP + "/"
	env["RABBITMQ_URL"] = "amqp://guest:guest@127.0.0.1:1/"
	if err := push(t, env, `{"quantity": 6}`+"\n", "widgets", "42", "WidgetQtyChanged", "-"); err != nil {
		t.Fatal(err)
	}
	if ev := c.Expect("WidgetQtyChanged"); string(ev.Payload["quantity"]) != "6" {
		t.Fatalf("event: %s", ev.Raw)
	}
	// No payload: {}. The older spellings, MYXI_API_URL and -api, still work.
	if err := push(t, map[string]string{"MYXI_API_KEY": "api-key", "MYXI_API_URL": r.HTTP}, "", "widgets", "42", "Ping"); err != nil {
		t.Fatal(err)
	}
	c.Expect("Ping")
	if err := push(t, map[string]string{"MYXI_API_KEY": "api-key"}, "", "-api", r.HTTP, "widgets", "42", "Ping"); err != nil {
		t.Fatal(err)
	}
	if ev := c.Expect("Ping"); string(ev.Raw) != `{"event":"Ping","tag":null,"payload":{},"mq":{"e":"widgets","rk":"42"}}` {
		t.Fatalf("event: %s", ev.Raw)
	}

	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
		want string
	}{
		"wrong key":        {map[string]string{"MYXI_API_KEY": "nope"}, []string{"-url", r.HTTP, "widgets", "1", "E"}, "HTTP 401 Unauthorized"},
		"no key":           {nil, []string{"-url", r.HTTP, "widgets", "1", "E"}, "needs the server's API key in MYXI_API_KEY"},
		"unknown exchange": {map[string]string{"MYXI_API_KEY": "api-key"}, []string{"-url", r.HTTP, "gadgets", "1", "E"}, "InvalidExchange"},
		"bad URL":          {map[string]string{"MYXI_API_KEY": "api-key"}, []string{"-url", "localhost:5005", "widgets", "1", "E"}, "want the server's http(s) base URL"},
	} {
		if err := push(t, tc.env, "", tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
}

func TestPushToServerWithoutAPI(t *testing.T) {
	r := serve(t, nil, "-exchanges", "widgets")
	err := push(t, map[string]string{"MYXI_API_KEY": "k"}, "", "-url", r.HTTP, "widgets", "1", "E")
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("%v, want a 404 explained", err)
	}
}

func TestPushThroughRabbitMQ(t *testing.T) {
	url := testutil.RabbitMQURL(t)
	exchange := testutil.UniqueName("myxi-push")
	testutil.DeleteExchangesOnCleanup(t, url, exchange)
	r := serve(t, nil, "-rabbitmq", url, "-exchanges", exchange)
	c := testutil.Dial(t, r.WS)
	c.Subscribe(exchange, "42")
	stderr, err := pushStderr(t, map[string]string{"RABBITMQ_URL": url}, "", exchange, "42", "WidgetQtyChanged", `{"quantity":5}`)
	if err != nil || stderr != "" {
		t.Fatalf("%v; stderr: %q", err, stderr)
	}
	ev := c.Expect("WidgetQtyChanged")
	if string(ev.Payload["quantity"]) != "5" || ev.MQ == nil || ev.MQ.E != exchange || ev.MQ.RK != "42" {
		t.Fatalf("event: %s", ev.Raw)
	}
	// -rabbitmq overrides RABBITMQ_URL, and MYXI_URL too (a flag beats
	// the environment).
	env := map[string]string{"RABBITMQ_URL": "amqp://nobody:nothing@127.0.0.1:1/", "MYXI_URL": "http://127.0.0.1:1"}
	if err := push(t, env, "", "-rabbitmq", url, exchange, "42", "Again"); err != nil {
		t.Fatal(err)
	}
	c.Expect("Again")

	// Nobody subscribed to key 43: RabbitMQ returns the mandatory event,
	// and push warns, yet succeeds (the event was taken and confirmed).
	stderr, err = pushStderr(t, map[string]string{"RABBITMQ_URL": url}, "", exchange, "43", "Lost")
	if err != nil || !strings.Contains(stderr, "warning: the event reached no queue") || !strings.Contains(stderr, exchange+"/43") ||
		!strings.Contains(stderr, "MYXI_URL") {
		t.Fatalf("unroutable push: %v; stderr: %q", err, stderr)
	}
}

// TestPushToEmbeddedBrokerWarns: with RABBITMQ_URL set, a push meant for a
// server on its embedded broker reaches no queue; push says so instead of
// succeeding silently.
func TestPushToEmbeddedBrokerWarns(t *testing.T) {
	url := testutil.RabbitMQURL(t)
	exchange := testutil.UniqueName("myxi-push-embedded")
	testutil.DeleteExchangesOnCleanup(t, url, exchange)
	r := serve(t, nil, "-exchanges", exchange)
	c := testutil.Dial(t, r.WS)
	c.Subscribe(exchange, "42")
	stderr, err := pushStderr(t, map[string]string{"RABBITMQ_URL": url}, "", exchange, "42", "E")
	if err != nil || !strings.Contains(stderr, "reached no queue") {
		t.Fatalf("%v; stderr: %q", err, stderr)
	}
}

func TestPushErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
		want string
	}{
		"too few arguments":    {nil, []string{"widgets", "42"}, "want EXCHANGE ROUTING_KEY EVENT [PAYLOAD]"},
		"too many arguments":   {nil, []string{"widgets", "42", "E", "{}", "-api", "x"}, "got 6 arguments"},
		"payload not JSON":     {nil, []string{"widgets", "42", "E", "quantity=5"}, `payload: "quantity=5" is not a JSON object`},
		"payload not object":   {nil, []string{"widgets", "42", "E", "[5]"}, "is not a JSON object"},
		"bad exchange":         {nil, []string{"amq.direct", "42", "E"}, "not a valid exchange name"},
		"empty event":          {nil, []string{"widgets", "42", ""}, "empty event name"},
		"nowhere to publish":   {nil, []string{"widgets", "42", "E"}, "set MYXI_URL (or -url) to a server's base URL, such as http://localhost:5005, with its key in MYXI_API_KEY, or set RABBITMQ_URL (or -rabbitmq)"},
		"RabbitMQ unreachable": {map[string]string{"RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/"}, []string{"-timeout", "300ms", "widgets", "42", "E"}, "connect to RabbitMQ: amqp://guest:xxxxx@127.0.0.1:1/: dial tcp 127.0.0.1:1"},
		"unknown host":         {map[string]string{"RABBITMQ_URL": "amqp://guest:guest@no-such-host.invalid:5672/"}, []string{"widgets", "42", "E"}, "no such host"},
		"server unreachable":   {map[string]string{"MYXI_URL": "http://127.0.0.1:1", "MYXI_API_KEY": "k"}, []string{"widgets", "42", "E"}, "connection refused"},
	} {
		started := time.Now()
		err := push(t, tc.env, "", tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
		// The cause is reported as soon as it is met, not after -timeout.
		if took := time.Since(started); took > 5*time.Second {
			t.Errorf("%s: took %v", name, took)
		}
	}
}

// TestPushWrongPassword: the broker's answer is kept, with one prefix.
func TestPushWrongPassword(t *testing.T) {
	good := testutil.RabbitMQURL(t)
	u, err := neturl.Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	u.User = neturl.UserPassword("guest", "wrong-password")
	err = push(t, map[string]string{"RABBITMQ_URL": u.String()}, "", "widgets", "42", "E")
	if err == nil || !strings.Contains(err.Error(), "username or password not allowed") || strings.Contains(err.Error(), "wrong-password") ||
		strings.Count(err.Error(), "push:") != 1 {
		t.Fatalf("%v", err)
	}
}
