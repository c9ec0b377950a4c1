package jwtauth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/auth/jwtauth"
	"github.com/myxi/myxi/internal/servertest"
	"github.com/myxi/myxi/internal/testutil"
)

func TestMain(m *testing.M) {
	// Millisecond exp claims, so that expiry tests take a second rather
	// than up to two. Set before any test runs; production parses whole
	// seconds, which changes nothing else.
	jwt.TimePrecision = time.Millisecond
	goleak.VerifyTestMain(m)
}

var secret = []byte("0123456789abcdef0123456789abcdef")

// sign mints a token; claims get "sub": "alice" unless they set it.
func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	if _, ok := claims["sub"]; !ok {
		claims["sub"] = "alice"
	}
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func at(d time.Duration) *jwt.NumericDate { return jwt.NewNumericDate(time.Now().Add(d)) }

func grants(exchanges map[string][]string) map[string]any {
	return map[string]any{"subscribe": exchanges}
}

// start runs a server with a.Authenticate, the "widgets" exchange under
// the jwt policy, "members" for authenticated sessions, "news" for all,
// and Whoami, which answers the session's user.
func start(t *testing.T, cfg jwtauth.Config) *servertest.Server {
	t.Helper()
	cfg.Logger = testutil.Logger(t)
	a, err := jwtauth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return servertest.Start(t, myxi.Config{
		Exchanges: map[string]myxi.AuthorizeFunc{
			"widgets": a.Authorizer("widgets"),
			"gadgets": a.Authorizer("gadgets"),
			"members": myxi.AuthenticatedOnly,
			"news":    myxi.AllowAll,
		},
		Actions: map[string]myxi.ActionHandler{
			"Authenticate": a.Authenticate,
			"Whoami": myxi.AuthRequired(func(_ context.Context, s *myxi.Session, _ json.RawMessage) error {
				return s.Send("You", map[string]any{"user": s.User()})
			}),
		},
	})
}

func authenticate(c *testutil.Client, token any) testutil.Event {
	c.Send("Authenticate", "auth", map[string]any{"token": token})
	return c.Next()
}

func expectAuthenticated(t *testing.T, c *testutil.Client, token string, user string) {
	t.Helper()
	ev := authenticate(c, token)
	if ev.Event != "Authenticated" || ev.Str("username") != user || string(ev.Tag) != `"auth"` {
		t.Fatalf("got %s, want Authenticated {username: %s} tagged auth", ev.Raw, user)
	}
}

func subscriptions(t *testing.T, c *testutil.Client) map[string][]string {
	t.Helper()
	c.Send("ListSubscriptions", nil, nil)
	ev := c.Expect("YourSubscriptions")
	var subs map[string][]string
	if err := json.Unmarshal(ev.Payload["subscriptions"], &subs); err != nil {
		t.Fatal(err)
	}
	return subs
}

func TestAuthenticateAndGrants(t *testing.T) {
	ts := start(t, jwtauth.Config{Secret: secret})
	c := testutil.Dial(t, ts.WS)

	// Anonymous: the jwt exchange refuses everything.
	c.Send("Subscribe", "s0", map[string]any{"exchange": "widgets", "routing_key": "1"})
	c.ExpectError("SubscriptionDenied")

	token := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{
		"exp":  at(time.Hour),
		"myxi": grants(map[string][]string{"widgets": {"1", "2", "9*"}}),
	})
	expectAuthenticated(t, c, token, "alice")
	c.Send("Whoami", "w", nil)
	if ev := c.Expect("You"); ev.Str("user") != "alice" {
		t.Fatalf("user: %s", ev.Raw)
	}

	for key, allowed := range map[any]bool{
		"1": true, "2": true, "9": true, "90": true, "9abc": true, 91: true,
		"3": false, "19": false, "": false, "1 ": false, 21: false,
	} {
		c.Send("Subscribe", "s", map[string]any{"exchange": "widgets", "routing_key": key})
		ev := c.Next()
		if got := ev.Event == "Subscribed"; got != allowed {
			t.Errorf("widgets/%v: %s, want allowed=%v", key, ev.Raw, allowed)
		}
	}
	// An exchange the token does not list.
	c.Send("Subscribe", "g", map[string]any{"exchange": "gadgets", "routing_key": "1"})
	c.ExpectError("SubscriptionDenied")
	c.Subscribe("members", "x")

	// Events reach what was granted.
	if err := ts.Srv.Push(context.Background(), "widgets", "9abc", "Changed", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	if ev := c.Expect("Changed"); ev.MQ == nil || ev.MQ.RK != "9abc" {
		t.Fatalf("event: %s", ev.Raw)
	}
}

func TestWildcardGrantsEverything(t *testing.T) {
	ts := start(t, jwtauth.Config{Secret: secret})
	c := testutil.Dial(t, ts.WS)
	expectAuthenticated(t, c, sign(t, jwt.SigningMethodHS512, secret, jwt.MapClaims{
		"myxi": grants(map[string][]string{"widgets": {"*"}}),
	}), "alice")
	c.Subscribe("widgets", "anything")
	c.Subscribe("widgets", nil) // the whole exchange, key ""
}

func TestRefusedTokens(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	valid := func() jwt.MapClaims {
		return jwt.MapClaims{"exp": at(time.Hour), "myxi": grants(map[string][]string{"widgets": {"*"}})}
	}
	hs := func(claims jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, secret, claims) }
	with := func(extra jwt.MapClaims) jwt.MapClaims {
		c := valid()
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	good := hs(valid())
	parts := strings.Split(good, ".")

	// The payload of a valid token, rewritten to grant more: the
	// signature no longer matches.
	forged := func() string {
		body, _ := json.Marshal(with(jwt.MapClaims{"sub": "mallory"}))
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(body) + "." + parts[2]
	}()
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid())
	header := func(h string) string { return base64.RawURLEncoding.EncodeToString([]byte(h)) }
	noneWithSig := header(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + "." + parts[2]
	noneCapital := header(`{"alg":"None","typ":"JWT"}`) + "." + parts[1] + "."

	hmacCases := []struct {
		name  string
		token any
		want  string
	}{
		{"expired", hs(with(jwt.MapClaims{"exp": at(-time.Minute)})), "TokenExpired"},
		{"not yet valid", hs(with(jwt.MapClaims{"nbf": at(time.Hour)})), "InvalidToken"},
		{"tampered payload", forged, "InvalidToken"},
		{"tampered signature", parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2])), "InvalidToken"},
		{"other secret", sign(t, jwt.SigningMethodHS256, []byte("another secret, another secret!!"), valid()), "InvalidToken"},
		{"alg none", none, "InvalidToken"},
		{"alg none, with a signature", noneWithSig, "InvalidToken"},
		{"alg None", noneCapital, "InvalidToken"},
		{"RS256 on an HMAC server", sign(t, jwt.SigningMethodRS256, rsaKey, valid()), "InvalidToken"},
		{"no subject", hs(with(jwt.MapClaims{"sub": ""})), "InvalidToken"},
		{"grants of the wrong shape", hs(with(jwt.MapClaims{"myxi": map[string]any{"subscribe": map[string]any{"widgets": "1"}}})), "InvalidToken"},
		{"missing token", nil, "InvalidToken"},
		{"empty token", "", "InvalidToken"},
		{"token not a string", 42, "InvalidToken"},
		{"garbage", "not.a.jwt", "InvalidToken"},
		{"expired and tampered", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"alice","exp":1}`)) + "." + parts[2], "InvalidToken"},
	}
	t.Run("hmac", func(t *testing.T) {
		ts := start(t, jwtauth.Config{Secret: secret})
		c := testutil.Dial(t, ts.WS)
		for _, tc := range hmacCases {
			if tc.token == nil {
				c.Send("Authenticate", "auth", map[string]any{})
			} else {
				c.Send("Authenticate", "auth", map[string]any{"token": tc.token})
			}
			ev := c.Next()
			if ev.Event != "Error" || ev.Str("error") != tc.want || string(ev.Tag) != `"auth"` {
				t.Errorf("%s: got %s, want Error %s tagged auth", tc.name, ev.Raw, tc.want)
			}
		}
		// Still anonymous after all that.
		c.Send("Whoami", "w", nil)
		c.ExpectError("AuthRequired")
		c.Send("Subscribe", "s", map[string]any{"exchange": "widgets", "routing_key": "1"})
		c.ExpectError("SubscriptionDenied")
	})

	t.Run("rsa", func(t *testing.T) {
		pub, err := jwtauth.ParsePublicKey(pubPEM)
		if err != nil {
			t.Fatal(err)
		}
		ts := start(t, jwtauth.Config{PublicKey: pub})
		c := testutil.Dial(t, ts.WS)
		// HMAC-vs-RSA confusion: an HS256 token whose "secret" is the
		// server's public key, which anyone can read.
		confused := sign(t, jwt.SigningMethodHS256, pubPEM, valid())
		confusedDER := sign(t, jwt.SigningMethodHS256, pubDER, valid())
		for name, token := range map[string]string{
			"HS256 signed with the public key PEM": confused,
			"HS256 signed with the public key DER": confusedDER,
			"alg none":                             none,
			"HS256 with the test secret":           good,
		} {
			if ev := authenticate(c, token); ev.Event != "Error" || ev.Str("error") != "InvalidToken" {
				t.Errorf("%s: got %s, want Error InvalidToken", name, ev.Raw)
			}
		}
		expectAuthenticated(t, c, sign(t, jwt.SigningMethodRS256, rsaKey, valid()), "alice")
		c.Subscribe("widgets", "1")
	})
}

func TestIssuerAndAudience(t *testing.T) {
	ts := start(t, jwtauth.Config{Secret: secret, Issuer: "https://app.example.com", Audience: "myxi"})
	c := testutil.Dial(t, ts.WS)
	for name, claims := range map[string]jwt.MapClaims{
		"no issuer":      {"aud": "myxi"},
		"wrong issuer":   {"iss": "https://evil.example.com", "aud": "myxi"},
		"no audience":    {"iss": "https://app.example.com"},
		"wrong audience": {"iss": "https://app.example.com", "aud": []string{"other"}},
	} {
		if ev := authenticate(c, sign(t, jwt.SigningMethodHS256, secret, claims)); ev.Str("error") != "InvalidToken" {
			t.Errorf("%s: got %s, want InvalidToken", name, ev.Raw)
		}
	}
	expectAuthenticated(t, c, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{
		"iss": "https://app.example.com", "aud": []string{"other", "myxi"},
	}), "alice")
}

func TestRequireExpiry(t *testing.T) {
	ts := start(t, jwtauth.Config{Secret: secret, RequireExpiry: true})
	c := testutil.Dial(t, ts.WS)
	if ev := authenticate(c, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{})); ev.Str("error") != "InvalidToken" {
		t.Fatalf("no exp: %s", ev.Raw)
	}
	expectAuthenticated(t, c, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": at(time.Hour)}), "alice")
}

func TestPublicKeyAlgorithms(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	cases := []struct {
		name   string
		pub    any
		method jwt.SigningMethod
		priv   any
	}{
		{"RS256", &rsaKey.PublicKey, jwt.SigningMethodRS256, rsaKey},
		{"PS384", &rsaKey.PublicKey, jwt.SigningMethodPS384, rsaKey},
		{"ES256", &p256.PublicKey, jwt.SigningMethodES256, p256},
		{"ES384", &p384.PublicKey, jwt.SigningMethodES384, p384},
		{"EdDSA", edPub, jwt.SigningMethodEdDSA, edPriv},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			der, err := x509.MarshalPKIXPublicKey(tc.pub)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := jwtauth.ParsePublicKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
			if err != nil {
				t.Fatal(err)
			}
			ts := start(t, jwtauth.Config{PublicKey: pub})
			c := testutil.Dial(t, ts.WS)
			expectAuthenticated(t, c, sign(t, tc.method, tc.priv, jwt.MapClaims{"sub": "bob"}), "bob")
		})
	}
	// An ES256 server refuses an ES384 token (a key of another curve).
	t.Run("ES384 token on a P-256 key", func(t *testing.T) {
		ts := start(t, jwtauth.Config{PublicKey: &p256.PublicKey})
		c := testutil.Dial(t, ts.WS)
		if ev := authenticate(c, sign(t, jwt.SigningMethodES384, p384, jwt.MapClaims{})); ev.Str("error") != "InvalidToken" {
			t.Fatalf("got %s", ev.Raw)
		}
	})
}

// TestExpiry: when the token expires, the client is told, the session is
// anonymous again, and the subscriptions it no longer may have end.
func TestExpiry(t *testing.T) {
	ts := start(t, jwtauth.Config{Secret: secret})
	c := testutil.Dial(t, ts.WS)
	expectAuthenticated(t, c, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{
		"exp":  at(1500 * time.Millisecond),
		"myxi": grants(map[string][]string{"widgets": {"1"}}),
	}), "alice")
	c.Subscribe("widgets", "1")
	c.Subscribe("members", "x")
	c.Subscribe("news", "y")

	ev, err := c.NextWithin(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Event != "Error" || ev.Str("error") != "TokenExpired" || string(ev.Tag) != "null" {
		t.Fatalf("got %s, want an untagged Error TokenExpired", ev.Raw)
	}
	gone := map[string]bool{}
	for range 2 {
		ev := c.Expect("Unsubscribed")
		if string(ev.Payload["auto"]) != "true" {
			t.Fatalf("not auto: %s", ev.Raw)
		}
		gone[ev.Str("exchange")+"/"+ev.Str("routing_key")] = true
	}
	if !gone["widgets/1"] || !gone["members/x"] {
		t.Fatalf("removed %v, want widgets/1 and members/x", gone)
	}
	if subs := subscriptions(t, c); len(subs) != 1 || len(subs["news"]) != 1 {
		t.Fatalf("left: %v, want news/y only", subs)
	}
	c.Send("Whoami", "w", nil)
	c.ExpectError("AuthRequired")

	// A fresh token works again.
	expectAuthenticated(t, c, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{
		"exp":  at(time.Hour),
		"myxi": grants(map[string][]string{"widgets": {"1"}}),
	}), "alice")
	c.Subscribe("widgets", "1")
}

// TestReauthenticate: a fresh token replaces the old one, whose expiry no
// longer applies; another identity loses what it may not have.
func TestReauthenticate(t *testing.T) {
	ts := start(t, jwtauth.Config{Secret: secret})
	c := testutil.Dial(t, ts.WS)
	shortLived := time.Now().Add(700 * time.Millisecond)
	expectAuthenticated(t, c, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{
		"exp":  jwt.NewNumericDate(shortLived),
		"myxi": grants(map[string][]string{"widgets": {"1", "2"}}),
	}), "alice")
	c.Subscribe("widgets", "1")
	c.Subscribe("widgets", "2")
	expectAuthenticated(t, c, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{
		"exp":  at(time.Hour),
		"myxi": grants(map[string][]string{"widgets": {"1", "2"}}),
	}), "alice")

	// Nothing may happen when the first token's time comes: there is no
	// event to wait for, so wait past it.
	time.Sleep(time.Until(shortLived) + 500*time.Millisecond)
	c.Send("Ping", "p", nil)
	if ev := c.Next(); ev.Event != "Pong" {
		t.Fatalf("got %s, want Pong (the replaced token's expiry fired?)", ev.Raw)
	}

	// Another user, with fewer grants: widgets/2 goes.
	c.Send("Authenticate", "auth", map[string]any{"token": sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{
		"sub": "bob", "myxi": grants(map[string][]string{"widgets": {"1"}}),
	})})
	if ev := c.Expect("Authenticated"); ev.Str("username") != "bob" {
		t.Fatalf("got %s", ev.Raw)
	}
	ev := c.Expect("Unsubscribed")
	if ev.Str("routing_key") != "2" || string(ev.Payload["auto"]) != "true" {
		t.Fatalf("got %s, want Unsubscribed widgets/2 auto", ev.Raw)
	}
	if subs := subscriptions(t, c); strings.Join(subs["widgets"], ",") != "1" {
		t.Fatalf("left: %v", subs)
	}
}

// TestExpiryWhileClosing: sessions that end with a pending expiry leave
// nothing behind (goleak checks the timers' goroutines at the end).
func TestExpiryWhileClosing(t *testing.T) {
	ts := start(t, jwtauth.Config{Secret: secret})
	var wg sync.WaitGroup
	for i := range 10 {
		c := testutil.Dial(t, ts.WS)
		expectAuthenticated(t, c, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{
			"exp": at(time.Duration(100+i*20) * time.Millisecond),
		}), "alice")
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Conn.Close()
		}()
	}
	wg.Wait()
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, key string
		want         bool
	}{
		{"1", "1", true}, {"1", "10", false}, {"1", "", false},
		{"*", "", true}, {"*", "anything", true},
		{"9*", "9", true}, {"9*", "99", true}, {"9*", "19", false},
		{"*9", "19", true}, {"*9", "91", false},
		{"a*b*c", "abc", true}, {"a*b*c", "aXbYc", true}, {"a*b*c", "aXbY", false},
		{"a*b*c", "abcbc", true}, {"**", "x", true}, {"user.*.orders", "user.42.orders", true},
		{"user.*.orders", "user.42.orders.x", false}, {"", "", true}, {"", "x", false},
	} {
		if got := jwtauth.Match(tc.pattern, tc.key); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.key, got, tc.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	for name, tc := range map[string]struct {
		cfg  jwtauth.Config
		want string
	}{
		"no key":                {jwtauth.Config{}, "no key"},
		"two keys":              {jwtauth.Config{Secret: secret, PublicKey: &rsaKey.PublicKey}, "both"},
		"RS256 with a secret":   {jwtauth.Config{Secret: secret, Algorithms: []string{"RS256"}}, `"RS256" does not fit an HMAC secret`},
		"HS256 with an RSA key": {jwtauth.Config{PublicKey: &rsaKey.PublicKey, Algorithms: []string{"HS256"}}, "does not fit an RSA public key"},
		"none":                  {jwtauth.Config{Secret: secret, Algorithms: []string{"none"}}, "not supported"},
		"P-224":                 {jwtauth.Config{PublicKey: &p224.PublicKey}, "no JWT algorithm fits"},
		"negative leeway":       {jwtauth.Config{Secret: secret, Leeway: -time.Second}, "negative"},
		"1-byte secret":         {jwtauth.Config{Secret: []byte("s")}, "the HMAC secret is 1 bytes; use at least 32"},
		"31-byte secret":        {jwtauth.Config{Secret: secret[:31]}, "the HMAC secret is 31 bytes"},
	} {
		_, err := jwtauth.New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
	algs, err := jwtauth.Algorithms(&rsaKey.PublicKey, nil)
	if err != nil || strings.Join(algs, ",") != "RS256,RS384,RS512,PS256,PS384,PS512" {
		t.Fatalf("RSA algorithms: %v %v", algs, err)
	}
}

func TestParsePublicKey(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pkix1, _ := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuer"}, NotAfter: time.Now().Add(time.Hour)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rsaKey.PublicKey, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	privDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	enc := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }

	for name, data := range map[string][]byte{
		"PKIX":        enc("PUBLIC KEY", pkix1),
		"PKCS1":       enc("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)),
		"certificate": enc("CERTIFICATE", certDER),
	} {
		if _, err := jwtauth.ParsePublicKey(data); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"private key": {enc("PRIVATE KEY", privDER), "public key only"},
		"not PEM":     {[]byte("hello"), "no PEM block"},
		"bad DER":     {enc("PUBLIC KEY", []byte{1, 2, 3}), "parse PUBLIC KEY"},
		"other block": {enc("DH PARAMETERS", []byte{1}), "not a public key"},
	} {
		if _, err := jwtauth.ParsePublicKey(tc.data); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
}
