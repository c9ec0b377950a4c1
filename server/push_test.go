package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/myxi/myxi/internal/testutil"
)

// push runs `myxi push args...` with env and stdin.
func push(t *testing.T, env map[string]string, stdin string, args ...string) error {
	t.Helper()
	c, stdout, _ := newCLI(env)
	c.stdin = strings.NewReader(stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.run(ctx, append([]string{"push"}, args...))
	if out := stdout.String(); out != "" {
		t.Errorf("push printed %q on stdout; it should be silent", out)
	}
	return err
}

func TestPushThroughAPI(t *testing.T) {
	r := serve(t, map[string]string{"MYXI_API_KEY": "api-key"}, "-exchanges", "widgets")
	c := testutil.Dial(t, r.WS)
	c.Subscribe("widgets", "42")

	env := map[string]string{"MYXI_API_KEY": "api-key"}
	if err := push(t, env, "", "-api", r.HTTP, "widgets", "42", "WidgetQtyChanged", `{"quantity":5}`); err != nil {
		t.Fatal(err)
	}
	if ev := c.Expect("WidgetQtyChanged"); string(ev.Payload["quantity"]) != "5" || ev.MQ.RK != "42" {
		t.Fatalf("event: %s", ev.Raw)
	}
	// The payload from stdin; the URL from MYXI_API_URL.
	env["MYXI_API_URL"] = r.HTTP + "/"
	if err := push(t, env, `{"quantity": 6}`+"\n", "widgets", "42", "WidgetQtyChanged", "-"); err != nil {
		t.Fatal(err)
	}
	if ev := c.Expect("WidgetQtyChanged"); string(ev.Payload["quantity"]) != "6" {
		t.Fatalf("event: %s", ev.Raw)
	}
	// No payload: {}.
	if err := push(t, env, "", "widgets", "42", "Ping"); err != nil {
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
		"wrong key":        {map[string]string{"MYXI_API_KEY": "nope"}, []string{"-api", r.HTTP, "widgets", "1", "E"}, "HTTP 401 Unauthorized"},
		"no key":           {nil, []string{"-api", r.HTTP, "widgets", "1", "E"}, "needs the API key in MYXI_API_KEY"},
		"unknown exchange": {map[string]string{"MYXI_API_KEY": "api-key"}, []string{"-api", r.HTTP, "gadgets", "1", "E"}, "InvalidExchange"},
		"bad URL":          {map[string]string{"MYXI_API_KEY": "api-key"}, []string{"-api", "localhost:5005", "widgets", "1", "E"}, "want the server's http(s) base URL"},
	} {
		if err := push(t, tc.env, "", tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
}

func TestPushToServerWithoutAPI(t *testing.T) {
	r := serve(t, nil, "-exchanges", "widgets")
	err := push(t, map[string]string{"MYXI_API_KEY": "k"}, "", "-api", r.HTTP, "widgets", "1", "E")
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
	if err := push(t, map[string]string{"RABBITMQ_URL": url}, "", exchange, "42", "WidgetQtyChanged", `{"quantity":5}`); err != nil {
		t.Fatal(err)
	}
	ev := c.Expect("WidgetQtyChanged")
	if string(ev.Payload["quantity"]) != "5" || ev.MQ == nil || ev.MQ.E != exchange || ev.MQ.RK != "42" {
		t.Fatalf("event: %s", ev.Raw)
	}
	// -rabbitmq overrides RABBITMQ_URL.
	if err := push(t, map[string]string{"RABBITMQ_URL": "amqp://nobody:nothing@127.0.0.1:1/"}, "", "-rabbitmq", url, exchange, "42", "Again"); err != nil {
		t.Fatal(err)
	}
	c.Expect("Again")
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
		"nowhere to publish":   {nil, []string{"widgets", "42", "E"}, "set RABBITMQ_URL"},
		"RabbitMQ unreachable": {map[string]string{"RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/"}, []string{"-timeout", "300ms", "widgets", "42", "E"}, "connect to RabbitMQ"},
	} {
		if err := push(t, tc.env, "", tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
}
