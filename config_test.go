package myxi

import (
	"net/http"
	"strings"
	"testing"
)

func TestNewValidatesConfig(t *testing.T) {
	_, err := New(Config{
		Exchanges:      map[string]AuthorizeFunc{"bad name": AllowAll, "amq.direct": AllowAll, "nil-authorizer": nil},
		Actions:        map[string]ActionHandler{"Subscribe": nil},
		TrustedProxies: []string{"not-an-ip"},
	})
	if err == nil {
		t.Fatal("New accepted an invalid config")
	}
	for _, want := range []string{`"bad name"`, `"amq.direct"`, `"nil-authorizer"`, "myxi.AllowAll", `"Subscribe": built in`, `"not-an-ip"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := map[string]string{"MIXI_PORT": "6000", "PORT": "7000", "MYXI_BIND_ADDRESS": "127.0.0.1", "MYXI_ALLOWED_ORIGINS": "a.example, *.b.example"}
	cfg, err := configFrom(func(k string) string { return env[k] }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:6000" || len(cfg.AllowedOrigins) != 2 || cfg.Broker != nil {
		t.Fatalf("got addr %q, origins %q, broker %v", cfg.Addr, cfg.AllowedOrigins, cfg.Broker)
	}
	env["MYXI_PORT"] = "5999"
	if cfg, _ = configFrom(func(k string) string { return env[k] }, nil); cfg.Addr != "127.0.0.1:5999" {
		t.Fatalf("MYXI_PORT must win: %q", cfg.Addr)
	}
	if cfg, _ = configFrom(func(string) string { return "" }, nil); cfg.Addr != ":5005" {
		t.Fatalf("default addr %q", cfg.Addr)
	}
	env["MYXI_PORT"] = "http"
	if _, err := configFrom(func(k string) string { return env[k] }, nil); err == nil || !strings.Contains(err.Error(), "MYXI_PORT") {
		t.Fatalf("a bad port must be an error naming the variable: %v", err)
	}
	env["MYXI_PORT"] = ""
	env["RABBITMQ_URL"] = "amqp://guest:guest@127.0.0.1:5672/"
	if cfg, err = configFrom(func(k string) string { return env[k] }, nil); err != nil || cfg.Broker != nil {
		t.Fatalf("ConfigFromEnv leaves the broker to the caller: %v %v", cfg.Broker, err)
	}
}

func TestOriginMatching(t *testing.T) {
	check := newOriginChecker([]string{"https://*.example.com", "app.test:8443"})
	cases := map[string]bool{
		"https://a.example.com": true,
		"http://a.example.com":  false,
		"https://app.test:8443": true,
		"https://app.test:9000": false,
		"http://localhost:1234": true,
		"http://[::1]:80":       true,
		"http://own.host:9999":  true, // the server's own host, any port
		"null":                  false,
		"https://evil.com":      false,
	}
	for origin, want := range cases {
		r := newRequest(origin)
		if got := check(r); got != want {
			t.Errorf("origin %s: %v, want %v", origin, got, want)
		}
	}
}

func newRequest(origin string) *http.Request {
	r, _ := http.NewRequest(http.MethodGet, "http://own.host:5005/", nil)
	r.Header.Set("Origin", origin)
	return r
}
