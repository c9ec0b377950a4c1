package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/myxi/myxi"
)

// Policy configures the subscribe policy of one exchange decided by the
// application.
type Policy struct {
	// URL is the application's http or https URL.
	URL string
	// Timeout bounds the request. Default Config.Timeout.
	Timeout time.Duration
	// CacheTTL is how long an answer (allow or deny) for one routing key
	// and user is reused. Default 0: every check asks the application.
	CacheTTL time.Duration
	// MaxCacheEntries bounds the cache. Default 10000.
	MaxCacheEntries int
}

// Authorizer returns the subscribe policy of exchange, decided by the
// application.
//
// Request, POSTed to p.URL (also when subscriptions are checked again
// periodically):
//
//	{"exchange": "orders", "routing_key": "42", "user": "alice"}
//
// "user" is the session's user, null for an anonymous session. Answer
// (2xx):
//
//	{"allow": true}
//
// Answers are cached per exchange, routing key and user for p.CacheTTL;
// identical questions asked at the same time share one request. Anything
// but a 2xx answer with a boolean "allow" (a timeout, an error status, an
// unreachable application) denies the subscription (fail closed), is not
// cached, and is logged.
func (c *Client) Authorizer(exchange string, p Policy) (myxi.AuthorizeFunc, error) {
	if err := CheckURL(p.URL); err != nil {
		return nil, fmt.Errorf("webhook policy of %s: %w", exchange, err)
	}
	if p.CacheTTL < 0 {
		return nil, fmt.Errorf("webhook policy of %s: negative cache TTL", exchange)
	}
	if p.MaxCacheEntries <= 0 {
		p.MaxCacheEntries = 10000
	}
	pol := &policy{
		c:        c,
		exchange: exchange,
		cfg:      p,
		timeout:  c.timeout(p.Timeout),
		cache:    make(map[string]cached),
		inflight: make(map[string]*call),
	}
	return pol.authorize, nil
}

type policy struct {
	c        *Client
	exchange string
	cfg      Policy
	timeout  time.Duration

	mu       sync.Mutex
	cache    map[string]cached
	inflight map[string]*call
}

type cached struct {
	allow   bool
	expires time.Time
}

// call is one request in flight, shared by every identical question.
type call struct {
	done  chan struct{}
	allow bool
	err   error
}

type policyRequest struct {
	Exchange   string          `json:"exchange"`
	RoutingKey string          `json:"routing_key"`
	User       json.RawMessage `json:"user"`
}

type policyAnswer struct {
	Allow *bool `json:"allow"`
}

// authorize never returns an error: a failure denies (fail closed), also
// when subscriptions are checked again.
func (p *policy) authorize(ctx context.Context, s *myxi.Session, routingKey string) (bool, error) {
	user, err := json.Marshal(s.User())
	if err != nil {
		p.c.log.Error("webhook policy: cannot encode the session's user; denying", "exchange", p.exchange, "session", s.ID(), "err", err)
		return false, nil
	}
	key := routingKey + "\x00" + string(user)

	p.mu.Lock()
	if e, ok := p.cache[key]; ok {
		if p.c.now().Before(e.expires) {
			p.mu.Unlock()
			return e.allow, nil
		}
		delete(p.cache, key)
	}
	if cl, ok := p.inflight[key]; ok {
		p.mu.Unlock()
		select {
		case <-cl.done:
			return cl.err == nil && cl.allow, nil
		case <-ctx.Done():
			return false, nil
		}
	}
	cl := &call{done: make(chan struct{})}
	p.inflight[key] = cl
	p.mu.Unlock()

	// The request outlives this session (the sessions waiting for the same
	// answer must not fail because this one left), but not its deadline.
	reqCtx, cancel := context.WithoutCancel(ctx), context.CancelFunc(func() {})
	if deadline, ok := ctx.Deadline(); ok {
		reqCtx, cancel = context.WithDeadline(reqCtx, deadline)
	}
	cl.allow, cl.err = p.ask(reqCtx, routingKey, user)
	cancel()
	if cl.err != nil {
		p.c.log.Warn("webhook policy failed; denying the subscription", "exchange", p.exchange,
			"routing_key", routingKey, "session", s.ID(), "url", redactURL(p.cfg.URL), "err", cl.err)
	}

	p.mu.Lock()
	delete(p.inflight, key)
	if cl.err == nil && p.cfg.CacheTTL > 0 {
		p.store(key, cl.allow)
	}
	close(cl.done)
	p.mu.Unlock()
	return cl.err == nil && cl.allow, nil
}

func (p *policy) ask(ctx context.Context, routingKey string, user json.RawMessage) (bool, error) {
	var ans policyAnswer
	req := policyRequest{Exchange: p.exchange, RoutingKey: routingKey, User: user}
	if err := p.c.post(ctx, p.cfg.URL, p.timeout, req, &ans); err != nil {
		return false, err
	}
	if ans.Allow == nil {
		return false, errors.New(`answer has no boolean "allow"`)
	}
	return *ans.Allow, nil
}

// store caches an answer; p.mu must be held. A full cache first drops its
// expired entries, then, if still full, about a tenth of the others.
func (p *policy) store(key string, allow bool) {
	now := p.c.now()
	if len(p.cache) >= p.cfg.MaxCacheEntries {
		for k, e := range p.cache {
			if !now.Before(e.expires) {
				delete(p.cache, k)
			}
		}
		for k := range p.cache {
			if len(p.cache) < p.cfg.MaxCacheEntries*9/10 {
				break
			}
			delete(p.cache, k)
		}
	}
	p.cache[key] = cached{allow: allow, expires: now.Add(p.cfg.CacheTTL)}
}
