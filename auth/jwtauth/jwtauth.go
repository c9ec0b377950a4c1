// Package jwtauth authenticates Myxi sessions with JSON Web Tokens and
// authorizes their subscriptions from the token's claims, so that an
// application in any language only has to mint tokens.
//
// # Authenticate
//
// Authenticator.Authenticate is the action handler of
//
//	{"action": "Authenticate", "tag": 1, "payload": {"token": "<jwt>"}}
//
// It verifies the token's signature with the configured key, pinned to the
// algorithms that key can verify (so neither "none" nor an HMAC token
// signed with an RSA public key is ever accepted), checks exp and nbf (and
// iss and aud when configured), makes the token's subject the session's
// user and replies Authenticated {"username": <sub>}. A refused token gets
// Error {"error": "TokenExpired"} when it has expired and
// Error {"error": "InvalidToken"} otherwise; the session is left as it was.
//
// When the token expires, the session drops back to anonymous: the client
// is told with an untagged Error {"error": "TokenExpired"}, and its
// subscriptions are checked again, so the ones the anonymous session may
// not have end with Unsubscribed {"auto": true}. Authenticating again with
// a fresh token (before or after the expiry) replaces the old one and its
// expiry.
//
// # Subscribe grants
//
// Authorizer is the subscribe policy of an exchange whose subscribers the
// token names. The claims carry them under a configurable claim name
// ("myxi" by default): for each exchange, the routing keys the user may
// subscribe to, exact or with '*' standing for any run of characters:
//
//	{
//	  "sub": "alice",
//	  "exp": 1767225600,
//	  "myxi": {"subscribe": {"widgets": ["1", "2", "9*"], "news": ["*"]}}
//	}
//
// A session without a valid token, or whose token does not list the
// exchange, may subscribe to none of its keys.
package jwtauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/myxi/myxi"
)

// Names of the events and errors the client sees.
const (
	// EventAuthenticated answers a valid token: {"username": <sub>}.
	EventAuthenticated = "Authenticated"
	// ErrInvalidToken refuses a missing, malformed, tampered, wrongly
	// signed or not yet valid token.
	ErrInvalidToken = "InvalidToken"
	// ErrTokenExpired refuses an expired token, and is sent untagged when
	// the token of an authenticated session expires.
	ErrTokenExpired = "TokenExpired"
)

// MinSecretBytes is the shortest HMAC secret New accepts: anyone holding
// one token can guess a shorter secret offline, then mint any token.
const MinSecretBytes = 32

// DefaultClaim is the name of the claim holding Myxi's grants.
const DefaultClaim = "myxi"

// Config configures an Authenticator. Exactly one of Secret and PublicKey
// must be set.
type Config struct {
	// Secret verifies HMAC-signed tokens (HS256, HS384, HS512): at least
	// MinSecretBytes random bytes, as New refuses shorter ones.
	Secret []byte
	// PublicKey verifies tokens signed with the matching private key: an
	// *rsa.PublicKey (RS256/384/512, PS256/384/512), an *ecdsa.PublicKey
	// (ES256, ES384 or ES512, after its curve) or an ed25519.PublicKey
	// (EdDSA). ParsePublicKey reads one from PEM.
	PublicKey crypto.PublicKey
	// Algorithms restricts the accepted "alg" values further. Default:
	// every algorithm of the key's family, as listed above. An algorithm
	// that does not fit the key is a configuration error.
	Algorithms []string
	// Issuer, when set, must equal the token's "iss".
	Issuer string
	// Audience, when set, must be one of the token's "aud".
	Audience string
	// Leeway tolerates clock skew with the token issuer, for exp and nbf.
	// Default 0.
	Leeway time.Duration
	// RequireExpiry refuses tokens without "exp". Default false: such a
	// token never expires.
	RequireExpiry bool
	// Claim names the claim holding the grants. Default "myxi".
	Claim string
	// ReauthorizeTimeout bounds the re-check of a session's subscriptions
	// when its token expires. Default 10s.
	ReauthorizeTimeout time.Duration
	// Logger receives the reasons tokens are refused (at debug level) and
	// expiries. Default slog.Default().
	Logger *slog.Logger
}

// Authenticator verifies tokens for Myxi sessions. It is safe for
// concurrent use; one Authenticator serves every session of a server.
type Authenticator struct {
	cfg    Config
	key    any
	algs   []string
	parser *jwt.Parser
	log    *slog.Logger
	now    func() time.Time
}

// New checks cfg and returns an Authenticator.
func New(cfg Config) (*Authenticator, error) {
	var key any
	switch {
	case len(cfg.Secret) > 0 && cfg.PublicKey != nil:
		return nil, errors.New("jwtauth: both Secret and PublicKey are set; choose one")
	case len(cfg.Secret) > 0:
		if len(cfg.Secret) < MinSecretBytes {
			return nil, fmt.Errorf("jwtauth: the HMAC secret is %d bytes; use at least %d random bytes", len(cfg.Secret), MinSecretBytes)
		}
		key = cfg.Secret
	case cfg.PublicKey != nil:
		key = cfg.PublicKey
	default:
		return nil, errors.New("jwtauth: no key: set Secret (HMAC) or PublicKey (RSA, ECDSA or Ed25519)")
	}
	algs, err := Algorithms(key, cfg.Algorithms)
	if err != nil {
		return nil, fmt.Errorf("jwtauth: %w", err)
	}
	if cfg.Leeway < 0 {
		return nil, errors.New("jwtauth: negative Leeway")
	}
	if cfg.Claim == "" {
		cfg.Claim = DefaultClaim
	}
	if cfg.ReauthorizeTimeout <= 0 {
		cfg.ReauthorizeTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Authenticator{
		cfg:  cfg,
		key:  key,
		algs: algs,
		log:  cfg.Logger.With("component", "jwtauth"),
		now:  time.Now,
	}
	a.parser = a.newParser()
	return a, nil
}

func (a *Authenticator) newParser() *jwt.Parser {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(a.algs),
		jwt.WithLeeway(a.cfg.Leeway),
		jwt.WithTimeFunc(func() time.Time { return a.now() }),
	}
	if a.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(a.cfg.Issuer))
	}
	if a.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(a.cfg.Audience))
	}
	if a.cfg.RequireExpiry {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	return jwt.NewParser(opts...)
}

// Algorithms returns the "alg" values a key verifies: want, when given,
// after checking that each fits the key, else every algorithm of the
// key's family. key is a []byte HMAC secret or a public key.
func Algorithms(key any, want []string) ([]string, error) {
	fits, family := familyOf(key)
	if fits == nil {
		return nil, fmt.Errorf("unsupported key type %T (want an HMAC secret or an RSA, ECDSA or Ed25519 public key)", key)
	}
	if len(want) == 0 {
		var all []string
		for _, alg := range knownAlgorithms {
			if fits(alg) {
				all = append(all, alg)
			}
		}
		if len(all) == 0 {
			return nil, fmt.Errorf("no JWT algorithm fits %s", family)
		}
		return all, nil
	}
	for _, alg := range want {
		if !slices.Contains(knownAlgorithms, alg) {
			return nil, fmt.Errorf("algorithm %q is not supported (use one of %s)", alg, strings.Join(knownAlgorithms, ", "))
		}
		if !fits(alg) {
			return nil, fmt.Errorf("algorithm %q does not fit %s", alg, family)
		}
	}
	return slices.Clone(want), nil
}

var knownAlgorithms = []string{
	"HS256", "HS384", "HS512",
	"RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
	"EdDSA",
}

// familyOf returns which algorithms key can verify, and a description of
// the key for error messages.
func familyOf(key any) (fits func(alg string) bool, family string) {
	switch k := key.(type) {
	case []byte:
		return func(alg string) bool { return strings.HasPrefix(alg, "HS") }, "an HMAC secret"
	case *rsa.PublicKey:
		return func(alg string) bool {
			return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
		}, "an RSA public key"
	case *ecdsa.PublicKey:
		want := ""
		switch k.Curve.Params().BitSize {
		case 256:
			want = "ES256"
		case 384:
			want = "ES384"
		case 521:
			want = "ES512"
		}
		return func(alg string) bool { return alg == want }, "an ECDSA " + k.Curve.Params().Name + " public key (ES256 is P-256, ES384 P-384, ES512 P-521)"
	case ed25519.PublicKey:
		return func(alg string) bool { return alg == "EdDSA" }, "an Ed25519 public key"
	}
	return nil, ""
}

// keyFor is the jwt.Keyfunc: the parser has already checked the "alg"
// against the pinned list; checking the method's type again costs nothing
// and guards against a signing method registered under a known name.
func (a *Authenticator) keyFor(t *jwt.Token) (any, error) {
	ok := false
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		_, ok = a.key.([]byte)
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		_, ok = a.key.(*rsa.PublicKey)
	case *jwt.SigningMethodECDSA:
		_, ok = a.key.(*ecdsa.PublicKey)
	case *jwt.SigningMethodEd25519:
		_, ok = a.key.(ed25519.PublicKey)
	}
	if !ok {
		return nil, fmt.Errorf("signing method %s does not fit the configured key", t.Method.Alg())
	}
	return a.key, nil
}

// verify checks a token's signature and claims and returns them; the
// error wraps jwt.ErrTokenExpired for an expired token.
func (a *Authenticator) verify(token string) (*claims, error) {
	c := &claims{claimName: a.cfg.Claim}
	if _, err := a.parser.ParseWithClaims(token, c, a.keyFor); err != nil {
		return nil, err
	}
	if c.Subject == "" {
		return nil, errors.New(`token has no subject ("sub")`)
	}
	return c, nil
}

// Authenticate is the action handler of Authenticate {"token": "<jwt>"}.
// See the package documentation.
func (a *Authenticator) Authenticate(ctx context.Context, s *myxi.Session, payload json.RawMessage) error {
	var p struct {
		Token json.RawMessage `json:"token"`
	}
	var token string
	if err := json.Unmarshal(payload, &p); err != nil || json.Unmarshal(p.Token, &token) != nil || token == "" {
		a.log.Debug("token refused", "session", s.ID(), "error", ErrInvalidToken, "reason", `no "token" string in the payload`)
		return &myxi.ClientError{Name: ErrInvalidToken}
	}
	c, err := a.verify(token)
	if err != nil {
		name := ErrInvalidToken
		if errors.Is(err, jwt.ErrTokenExpired) { // only checked once the signature is valid
			name = ErrTokenExpired
		}
		a.log.Debug("token refused", "session", s.ID(), "error", name, "reason", err)
		return &myxi.ClientError{Name: name}
	}

	var expires time.Time
	if exp, _ := c.GetExpirationTime(); exp != nil {
		expires = exp.Add(a.cfg.Leeway)
	}
	st := a.stateOf(s, true)
	wasAuthenticated := s.Authenticated()

	st.mu.Lock()
	st.gen++
	if st.timer != nil {
		st.timer.Stop()
		st.timer = nil
	}
	st.subject, st.grants, st.expires = c.Subject, c.grants, expires
	s.SetUser(c.Subject)
	if !expires.IsZero() && !st.closed {
		gen := st.gen
		st.timer = time.AfterFunc(expires.Sub(a.now()), func() { a.expire(s, st, gen) })
	}
	st.mu.Unlock()

	if err := s.Send(EventAuthenticated, map[string]string{"username": c.Subject}); err != nil {
		return nil // the session is ending
	}
	if wasAuthenticated {
		// Another identity or other grants: what the old token allowed may
		// not be allowed any more.
		s.Reauthorize(ctx)
	}
	return nil
}

// expire makes the session anonymous once its token has expired, unless
// it authenticated again since (gen moved on).
func (a *Authenticator) expire(s *myxi.Session, st *sessionState, gen uint64) {
	st.mu.Lock()
	if st.gen != gen || st.closed {
		st.mu.Unlock()
		return
	}
	subject := st.subject
	st.gen++
	st.timer = nil
	st.subject, st.grants, st.expires = "", nil, time.Time{}
	s.ClearUser()
	st.mu.Unlock()

	a.log.Debug("token expired", "session", s.ID(), "user", subject)
	if err := s.Notify("Error", map[string]string{"error": ErrTokenExpired}); err != nil {
		return // the session is ending
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ReauthorizeTimeout)
	defer cancel()
	s.Reauthorize(ctx)
}

// Authorizer returns the subscribe policy of exchange: a session may
// subscribe to the keys its valid token grants for that exchange.
func (a *Authenticator) Authorizer(exchange string) myxi.AuthorizeFunc {
	return func(_ context.Context, s *myxi.Session, routingKey string) (bool, error) {
		st := a.stateOf(s, false)
		if st == nil {
			return false, nil
		}
		st.mu.Lock()
		subject, grants, expires := st.subject, st.grants, st.expires
		st.mu.Unlock()
		if subject == "" || s.User() != subject {
			return false, nil // anonymous, or another part of the application changed the user
		}
		if !expires.IsZero() && !a.now().Before(expires) {
			return false, nil // expired; the expiry timer is on its way
		}
		return grants.allow(exchange, routingKey), nil
	}
}

// sessionState is what the Authenticator keeps per session, in the
// session's key/value store.
type sessionState struct {
	mu      sync.Mutex
	gen     uint64 // bumped by every authentication and expiry
	timer   *time.Timer
	subject string
	grants  grants
	expires time.Time // zero: never
	closed  bool
}

// stateKey is the session store key, namespaced so that it does not
// collide with the application's own keys.
const stateKey = "github.com/myxi/myxi/auth/jwtauth.state"

// stateOf returns the session's state, creating it (only from the
// session's own action, so never concurrently) when create is set.
func (a *Authenticator) stateOf(s *myxi.Session, create bool) *sessionState {
	if v, ok := s.Get(stateKey); ok {
		if st, ok := v.(*sessionState); ok {
			return st
		}
	}
	if !create {
		return nil
	}
	st := &sessionState{}
	s.Set(stateKey, st)
	s.OnClose(func() {
		st.mu.Lock()
		st.closed = true
		st.gen++
		if st.timer != nil {
			st.timer.Stop()
			st.timer = nil
		}
		st.mu.Unlock()
	})
	return st
}

// claims are the registered claims plus the grants, read from the claim
// named claimName.
type claims struct {
	jwt.RegisteredClaims
	claimName string
	grants    grants
}

func (c *claims) UnmarshalJSON(data []byte) error {
	if err := json.Unmarshal(data, &c.RegisteredClaims); err != nil {
		return err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		return err
	}
	raw, ok := all[c.claimName]
	if !ok || string(raw) == "null" {
		return nil
	}
	var m struct {
		Subscribe map[string][]string `json:"subscribe"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf(`claim %q: want {"subscribe": {"<exchange>": ["<routing key pattern>", ...]}}: %w`, c.claimName, err)
	}
	c.grants = m.Subscribe
	return nil
}

// grants maps exchanges to the routing key patterns a token allows.
type grants map[string][]string

func (g grants) allow(exchange, key string) bool {
	for _, pattern := range g[exchange] {
		if Match(pattern, key) {
			return true
		}
	}
	return false
}

// Match reports whether key matches pattern, in which '*' stands for any
// run of characters (including none) and every other character for
// itself. "*" matches every key, including the empty key of a
// subscription to the whole exchange.
func Match(pattern, key string) bool {
	// Iterative wildcard matching: on a mismatch, retry from the last '*'
	// with it swallowing one more character. O(len(pattern)*len(key)).
	p, k := 0, 0
	star, mark := -1, 0
	for k < len(key) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, k
			p++
		case p < len(pattern) && pattern[p] == key[k]:
			p++
			k++
		case star >= 0:
			p = star + 1
			mark++
			k = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
