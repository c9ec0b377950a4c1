package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func env(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

func TestExampleFile(t *testing.T) {
	const path = "../../server/myxi.example.toml"
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// As shipped, the jwt exchanges need a key, which the example leaves
	// to MYXI_JWT_SECRET; the error says so.
	err = c.Validate()
	if err == nil || !strings.Contains(err.Error(), `exchanges.widgets.policy: "jwt" needs JWT authentication`) {
		t.Fatalf("example without a key: %v", err)
	}
	if err := c.ApplyEnv(env(map[string]string{EnvJWTSecret: "0123456789abcdef0123456789abcdef", EnvAPIKey: " k "})); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("example with MYXI_JWT_SECRET: %v", err)
	}
	if c.Server.Port != 5005 || c.Exchanges["orders"].CacheTTL != 30*time.Second || c.Exchanges["widgets"].Policy != PolicyJWT ||
		c.Actions["SayHello"].URL == "" || c.AuthMethod() != "jwt" || !slices.Equal(c.API.Keys, []string{"k"}) ||
		c.Limits.ActionTimeout != 10*time.Second || c.Server.ReauthorizeInterval != time.Minute ||
		c.Exchanges["widgets"].History != 10*time.Minute || c.Limits.ReplayLimit != 1000 {
		t.Fatalf("example decoded as %+v", c)
	}
	if got := strings.Join(c.ExchangeNames(), ","); got != "chat,news,orders,widgets" {
		t.Fatalf("exchanges: %s", got)
	}
}

// TestExampleFileIsComplete: every key of the schema appears in the
// example (commented out or not), so the example documents them all.
func TestExampleFileIsComplete(t *testing.T) {
	data, err := os.ReadFile("../../server/myxi.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, table := range []string{"server", "log", "broker", "limits", "api", "auth", "auth.jwt", "auth.webhook", "webhooks"} {
		if !strings.Contains(text, "["+table+"]") {
			t.Errorf("table [%s] missing", table)
		}
		for _, key := range knownKeys(strings.Split(table, ".")) {
			if key == "jwt" || key == "webhook" {
				continue
			}
			if !strings.Contains(text, key+" = ") {
				t.Errorf("key %s.%s missing from the example", table, key)
			}
		}
	}
	for _, key := range append(knownKeys([]string{"exchanges", "x"}), knownKeys([]string{"actions", "x"})...) {
		if !strings.Contains(text, key+" = ") {
			t.Errorf("key %s missing from the example", key)
		}
	}
}

func TestDefaults(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ApplyEnv(env(nil)); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if c.Server.Port != 5005 || c.AuthMethod() != "" || len(c.API.Keys) != 0 || c.Auth.Action != "Authenticate" {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestDecodeErrorsNameTheKey(t *testing.T) {
	for name, tc := range map[string]struct{ text, want string }{
		"unknown key":          {"[limits]\nmax_conections = 5\n", `limits.max_conections: unknown key (did you mean "max_connections"?)`},
		"unknown table":        {"[sever]\nport = 1\n", `sever: unknown key (did you mean "server"?)`},
		"unknown exchange key": {"[exchanges.orders]\npolicy = \"webhook\"\nurl = \"http://x\"\ncache = \"1s\"\n", `exchanges.orders.cache: unknown key (known keys here: policy, url, timeout, cache_ttl)`},
		"wrong type":           {"[server]\nport = \"abc\"\n", "server.port"},
		"bad duration":         {"[server]\ndrain_period = \"5 seconds\"\n", "server.drain_period"},
		"bare number duration": {"[exchanges.x]\ntimeout = 5\n", `exchanges.x.timeout: write durations as strings`},
		"table expected":       {"[auth]\njwt = 3\n", "auth.jwt: want a table, not an integer"},
		"unknown table once":   {"[foo]\nbar = 1\n[foo.baz]\nx = 1\n", "foo: unknown key"},
		"syntax":               {"[server\nport = 1\n", "to end table name"},
	} {
		_, err := Parse(tc.text)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
}

func TestValidationErrorsNameTheKey(t *testing.T) {
	for name, tc := range map[string]struct {
		text string
		env  map[string]string
		want string
	}{
		"port":                       {"[server]\nport = 70000", nil, "server.port: 70000 is not a port number"},
		"proxy":                      {"[server]\ntrusted_proxies = [\"10.0.0.0/33\"]", nil, `server.trusted_proxies: "10.0.0.0/33" is not an IP address`},
		"log level":                  {"[log]\nlevel = \"loud\"", nil, `log.level: "loud" is not one of`},
		"rabbitmq url":               {"[broker]\nrabbitmq_urls = [\"http://guest:secret@x/\"]", nil, `broker.rabbitmq_urls: "http://guest:xxxxx@x/" is not an AMQP URL`},
		"negative limit":             {"[limits]\nsend_queue_bytes = -1", nil, "limits.send_queue_bytes: -1 is negative"},
		"negative duration":          {"[limits]\nwrite_timeout = \"-1s\"", nil, "limits.write_timeout: -1s is below the minimum of 1ms"},
		"empty api key":              {"[api]\nkeys = [\"\"]", nil, "api.keys[0]: empty key"},
		"policy missing":             {"[exchanges.news]", nil, "exchanges.news.policy: required"},
		"policy unknown":             {"[exchanges.news]\npolicy = \"open\"", nil, `exchanges.news.policy: "open" is not one of public, authenticated, jwt, webhook`},
		"exchange name":              {"[exchanges.\"a b\"]\npolicy = \"public\"", nil, `exchanges."a b": not a valid exchange name`},
		"webhook url":                {"[exchanges.orders]\npolicy = \"webhook\"", nil, "exchanges.orders.url: required"},
		"webhook url scheme":         {"[exchanges.orders]\npolicy = \"webhook\"\nurl = \"ftp://x/y\"", nil, `exchanges.orders.url: "ftp://x/y" is not an http or https URL`},
		"url on public":              {"[exchanges.news]\npolicy = \"public\"\nurl = \"http://x\"", nil, `exchanges.news.url: only for policy "webhook"`},
		"jwt without key":            {"[exchanges.w]\npolicy = \"jwt\"", nil, `exchanges.w.policy: "jwt" needs JWT authentication`},
		"jwt with webhook auth":      {"[auth.webhook]\nurl = \"http://app/auth\"\n[exchanges.w]\npolicy = \"jwt\"", nil, `exchanges.w.policy: "jwt" needs JWT authentication`},
		"authenticated without auth": {"[exchanges.w]\npolicy = \"authenticated\"", nil, `exchanges.w.policy: "authenticated" needs authentication`},
		"two auth methods":           {"[auth.webhook]\nurl = \"http://app/auth\"", map[string]string{EnvJWTSecret: "s"}, "auth: both auth.jwt and auth.webhook are configured"},
		"two jwt keys":               {"[auth.jwt]\npublic_key_file = \"/k.pem\"", map[string]string{EnvJWTSecret: "s"}, "auth.jwt: auth.jwt.secret (MYXI_JWT_SECRET) and auth.jwt.public_key_file are set at once"},
		"jwt option without key":     {"[auth.jwt]\nissuer = \"me\"", nil, "auth.jwt.issuer: set, but JWT authentication has no key"},
		"auth webhook partial":       {"[auth.webhook]\ntimeout = \"1s\"", nil, "auth.webhook.url: required"},
		"forward header":             {"[auth.webhook]\nurl = \"http://a/b\"\nforward_headers = [\"Bad Header\"]", nil, `auth.webhook.forward_headers: "Bad Header" is not a header name`},
		"builtin action":             {"[actions.Subscribe]\nurl = \"http://a/b\"", nil, `actions.Subscribe: "Subscribe" is a built-in action`},
		"action url":                 {"[actions.Hello]\ntimeout = \"1s\"", nil, "actions.Hello.url: required"},
		"action is auth":             {"[actions.Authenticate]\nurl = \"http://a/b\"", map[string]string{EnvJWTSecret: "s"}, "actions.Authenticate: \"Authenticate\" is the authentication action"},
		"auth action builtin":        {"[auth]\naction = \"Ping\"", nil, `auth.action: "Ping" is a built-in action`},
		"public exchange conflict":   {"[exchanges.w]\npolicy = \"webhook\"\nurl = \"http://a/b\"", map[string]string{EnvExchanges: "w"}, `exchanges.w: named by MYXI_EXCHANGES or -exchanges (open to everyone) but its policy in the file is "webhook"`},
		"public exchange name":       {"", map[string]string{EnvExchanges: "ok,amq.x"}, `exchanges: "amq.x" (from MYXI_EXCHANGES or -exchanges) is not a valid exchange name`},
		"history negative":           {"[exchanges.n]\npolicy = \"public\"\nhistory = \"-1m\"", nil, `exchanges.n.history: -1m0s is negative`},
		"history too short":          {"[exchanges.n]\npolicy = \"public\"\nhistory = \"10ms\"", nil, `exchanges.n.history: 10ms is below the minimum of 1s`},
		"history bytes alone":        {"[exchanges.n]\npolicy = \"public\"\nhistory_max_bytes = 10", nil, `exchanges.n.history_max_bytes: only with history`},
		"history bytes negative":     {"[exchanges.n]\npolicy = \"public\"\nhistory = \"1m\"\nhistory_max_bytes = -1", nil, `exchanges.n.history_max_bytes: -1 is negative`},
		"replay limit":               {"[limits]\nhistory_replay_limit = -1", nil, "limits.history_replay_limit: -1 is negative"},
	} {
		c, err := Parse(tc.text)
		if err != nil {
			t.Errorf("%s: parse: %v", name, err)
			continue
		}
		if err := c.ApplyEnv(env(tc.env)); err != nil {
			t.Errorf("%s: env: %v", name, err)
			continue
		}
		err = c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
}

func TestEveryProblemReported(t *testing.T) {
	c, err := Parse("[server]\nport = -1\n[log]\nformat = \"xml\"\n[exchanges.a]\npolicy = \"nope\"")
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Fatalf("want three problems, one per line: %v", err)
	}
}

func TestEnvOverrides(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "myxi.toml")
	if err := os.WriteFile(path, []byte(`
[server]
port = 6000
allowed_origins = ["https://file.example.com"]
[api]
keys = ["from-file"]
[broker]
rabbitmq_urls = ["amqp://file/"]
[exchanges.news]
policy = "public"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	err = c.ApplyEnv(env(map[string]string{
		"MIXI_PORT":            "7000", // the 1.x spelling
		"PORT":                 "8000", // lower precedence than MIXI_PORT
		"MYXI_BIND_ADDRESS":    "127.0.0.1",
		"MYXI_ALLOWED_ORIGINS": "https://a.example.com, *.b.example.com",
		"MYXI_DRAIN_PERIOD":    "2s",
		"RABBITMQ_URL":         "amqp://one/,amqp://two/",
		"MYXI_EXCHANGES":       "news, bench",
		"MYXI_API_KEY":         "from-env",
		"MYXI_LOG_LEVEL":       "debug",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Server.Port != 7000 || c.Server.Bind != "127.0.0.1" || c.Server.DrainPeriod != 2*time.Second ||
		!slices.Equal(c.Server.AllowedOrigins, []string{"https://a.example.com", "*.b.example.com"}) ||
		!slices.Equal(c.Broker.RabbitMQURLs, []string{"amqp://one/", "amqp://two/"}) ||
		!slices.Equal(c.API.Keys, []string{"from-env"}) || c.Log.Level != "debug" {
		t.Fatalf("overridden: %+v", c)
	}
	if got := strings.Join(c.ExchangeNames(), ","); got != "bench,news" {
		t.Fatalf("exchanges: %s", got)
	}
	if c.Name("server.port") != "server.port (MIXI_PORT)" {
		t.Fatalf("source: %s", c.Name("server.port"))
	}

	for vars, want := range map[string]string{
		"MYXI_PORT=abc":       `MYXI_PORT="abc": not a port number`,
		"MYXI_DRAIN_PERIOD=5": `MYXI_DRAIN_PERIOD="5": not a duration`,
	} {
		name, value, _ := strings.Cut(vars, "=")
		err := Defaults().ApplyEnv(env(map[string]string{name: value}))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", vars, err, want)
		}
	}
}

// TestRiskySettings: settings that weaken a server are refused with an
// error naming the key (and the variable that set it), or logged as
// warnings.
func TestRiskySettings(t *testing.T) {
	for name, tc := range map[string]struct {
		text string
		env  map[string]string
		want string
	}{
		"short secret from env":  {"", map[string]string{EnvJWTSecret: "jwt-secret"}, "auth.jwt.secret (MYXI_JWT_SECRET): 10 bytes is too short: an HMAC secret needs at least 32"},
		"short secret from file": {"[auth.jwt]\nsecret = \"0123456789abcdef0123456789abcde\"", nil, "auth.jwt.secret: 31 bytes is too short"},
		"tiny frames":            {"[limits]\nmax_frame_bytes = 1023", nil, "limits.max_frame_bytes: 1023 is below the minimum of 1024"},
		"metrics addr":           {"[server]\nmetrics_addr = \"9090\"", nil, `server.metrics_addr: "9090": not a host:port address`},
		"metrics port":           {"", map[string]string{EnvMetricsAddr: "127.0.0.1:http"}, `server.metrics_addr (MYXI_METRICS_ADDR): "127.0.0.1:http": port "http"`},
		"webhook cap":            {"[webhooks]\nmax_concurrent = -1", nil, "webhooks.max_concurrent: -1 is negative"},
	} {
		c, err := Parse(tc.text)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := c.ApplyEnv(env(tc.env)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}

	// The boundaries are accepted.
	c, err := Parse("[limits]\nmax_frame_bytes = 1024\n[auth.jwt]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[webhooks]\nmax_concurrent = 8")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("boundaries: %v", err)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Fatalf("warnings without risky settings: %q", w)
	}

	c = Defaults()
	if err := c.ApplyEnv(env(map[string]string{"MYXI_ALLOWED_ORIGINS": "https://a.example.com,*", EnvMetricsAddr: ":9090"})); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	w := strings.Join(c.Warnings(), "\n")
	for _, want := range []string{`server.allowed_origins (MYXI_ALLOWED_ORIGINS) contains "*": a page on ANY website`, `server.metrics_addr (MYXI_METRICS_ADDR) is ":9090", not a loopback address`} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings %q lack %q", w, want)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9090": true, "[::1]:9090": true, "localhost:6060": true, "127.0.0.2:1": true,
		":9090": false, "0.0.0.0:9090": false, "10.0.0.1:9090": false, "metrics.example.com:9090": false, "[::]:1": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
