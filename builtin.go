package myxi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/internal/history"
	"github.com/myxi/myxi/internal/protocol"
)

// subscriptionPayload is the payload of Subscribe and Unsubscribe. Fields
// stay raw: replies echo them exactly as the client sent them.
type subscriptionPayload struct {
	Exchange    json.RawMessage `json:"exchange"`
	RoutingKey  json.RawMessage `json:"routing_key"`
	RoutingKeys json.RawMessage `json:"routing_keys"`
	Since       json.RawMessage `json:"since"`
}

func decodeSubscriptionPayload(payload json.RawMessage) (subscriptionPayload, bool) {
	var p subscriptionPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return p, false
	}
	return p, true
}

// exchangeName reads the exchange field: ok is false when it is missing
// or not a string.
func exchangeName(raw json.RawMessage) (string, bool) {
	return protocol.String(raw)
}

// keyList returns the raw routing keys a payload names: routing_keys when
// present (a non-empty array), else routing_key. A malformed list gets a
// message for the client saying why.
func (p subscriptionPayload) keyList() ([]json.RawMessage, string) {
	if len(p.RoutingKeys) == 0 || string(p.RoutingKeys) == "null" {
		return []json.RawMessage{p.RoutingKey}, ""
	}
	var keys []json.RawMessage
	if p.RoutingKeys[0] != '[' || json.Unmarshal(p.RoutingKeys, &keys) != nil {
		return nil, "routing_keys: must be an array of strings"
	}
	if len(keys) == 0 {
		return nil, "routing_keys: must not be empty"
	}
	return keys, ""
}

func echoExchange(raw json.RawMessage) json.RawMessage { return protocol.EchoKey(raw) }

func (c *conn) subscribe(ctx context.Context, a protocol.Action) string {
	p, ok := decodeSubscriptionPayload(a.Payload)
	if !ok {
		c.sendError(a.Tag, protocol.ErrInvalidPayload, "payload: not a valid Subscribe payload", nil)
		return protocol.ErrInvalidPayload
	}
	exchange, ok := exchangeName(p.Exchange)
	if !ok {
		c.sendError(a.Tag, protocol.ErrInvalidExchange, "exchange: must be a string", map[string]any{"exchange": echoExchange(p.Exchange)})
		return protocol.ErrInvalidExchange
	}
	authorize := c.srv.cfg.Exchanges[exchange]
	if authorize == nil {
		c.sendError(a.Tag, protocol.ErrInvalidExchange, fmt.Sprintf("exchange: no exchange named %q on this server", truncateUTF8(exchange, 64)), map[string]any{"exchange": exchange})
		return protocol.ErrInvalidExchange
	}
	keys, msg := p.keyList()
	if msg != "" {
		c.sendError(a.Tag, protocol.ErrInvalidPayload, msg, map[string]any{"exchange": exchange})
		return protocol.ErrInvalidPayload
	}
	// "since" is checked on every exchange, and ignored on those without
	// history.
	since, err := parseSince(p.Since)
	if err == nil && since != nil && len(p.RoutingKeys) > 0 && string(p.RoutingKeys) != "null" {
		err = errors.New("since: allowed only with routing_key, not with routing_keys")
	}
	if err != nil {
		c.sendError(a.Tag, protocol.ErrInvalidPayload, err.Error(), map[string]any{"exchange": exchange, "routing_keys": echoKeys(keys)})
		return protocol.ErrInvalidPayload
	}
	idx := c.srv.histories[exchange]
	if idx == nil {
		since = nil
	}
	// Each key may cost a broker bind or an authorizer call (a webhook):
	// the whole action is charged up front, or refused whole.
	limit := c.srv.cfg.Limits.MaxSubscriptions
	if !c.chargeKeys(min(len(keys), limit)) {
		c.sendError(a.Tag, protocol.ErrRateLimited,
			fmt.Sprintf("subscribing to %d keys now is over the rate limit; nothing was subscribed, retry later", len(keys)),
			map[string]any{"exchange": exchange, "routing_keys": echoKeys(keys)})
		return protocol.ErrRateLimited
	}
	var refused []json.RawMessage
	for _, raw := range keys {
		if !c.subscribeOne(ctx, a.Tag, exchange, authorize, raw, idx, since) {
			refused = append(refused, protocol.EchoKey(raw))
		}
	}
	if len(refused) > 0 {
		c.sendError(a.Tag, protocol.ErrTooManySubscriptions,
			fmt.Sprintf("a session may hold %d subscriptions; %d keys were refused", limit, len(refused)),
			map[string]any{"exchange": exchange, "routing_keys": refused, "limit": limit})
		return protocol.ErrTooManySubscriptions
	}
	return "ok"
}

// chargeKeys takes n tokens from the session's key bucket, or none.
func (c *conn) chargeKeys(n int) bool {
	return c.keys == nil || n == 0 || c.keys.AllowN(time.Now(), n)
}

func echoKeys(keys []json.RawMessage) []json.RawMessage {
	out := make([]json.RawMessage, len(keys))
	for i, k := range keys {
		out[i] = protocol.EchoKey(k)
	}
	return out
}

// rateLimitedKeys is the detail of a RateLimited reply to a Subscribe or
// Unsubscribe refused whole: its exchange and keys, as sent.
func rateLimitedKeys(payload json.RawMessage) map[string]any {
	p, ok := decodeSubscriptionPayload(payload)
	if !ok {
		return nil
	}
	keys, msg := p.keyList()
	if msg != "" {
		return map[string]any{"exchange": echoExchange(p.Exchange)}
	}
	return map[string]any{"exchange": echoExchange(p.Exchange), "routing_keys": echoKeys(keys)}
}

// subscribeOne subscribes the session to one key and replies, except
// when the session is at its subscription limit: it then reports false
// and the caller refuses all such keys in one reply.
func (c *conn) subscribeOne(ctx context.Context, tag json.RawMessage, exchange string, authorize AuthorizeFunc, raw json.RawMessage, idx *historyIndex, since *history.Position) bool {
	echo := protocol.EchoKey(raw)
	details := func() map[string]any { return map[string]any{"exchange": exchange, "routing_key": echo} }
	key, err := protocol.RoutingKey(raw)
	if err != nil {
		c.sendError(tag, protocol.ErrInvalidPayload, "routing_key: must be a string, a number or null", details())
		return true
	}
	if len(key) > protocol.MaxRoutingKeyBytes {
		c.sendError(tag, protocol.ErrInvalidRoutingKey, fmt.Sprintf("routing_key: longer than %d bytes", protocol.MaxRoutingKeyBytes), details())
		return true
	}

	c.subMu.Lock()
	defer c.subMu.Unlock()
	if c.subsClosed {
		return true
	}
	if _, dup := c.subs[exchange][key]; dup {
		c.sendError(tag, protocol.ErrAlreadySubscribed, "routing_key: this session is already subscribed to it", details())
		return true
	}
	if c.nsubs >= c.srv.cfg.Limits.MaxSubscriptions {
		return false
	}
	allowed, err := c.authorize(ctx, authorize, tag, key)
	if err != nil {
		c.reportError(tag, "authorize "+exchange, err)
		return true
	}
	if !allowed {
		c.sendError(tag, protocol.ErrSubscriptionDenied, "the exchange's authorizer refused this key to this session", details())
		return true
	}
	if err := c.srv.hub.Subscribe(ctx, exchange, key, c); err != nil {
		if !errors.Is(err, broker.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
			c.logger().Error("subscribe failed", "exchange", exchange, "routing_key", key, "err", err)
		}
		c.sendError(tag, protocol.ErrBrokerUnavailable, "the broker is unreachable right now; retry later", details())
		return true
	}
	if idx != nil {
		// Registered before the session's own map, so that a concurrent
		// reset's 1011 finds it; on failure it was never registered.
		if !c.subscribeHistory(ctx, idx, tag, exchange, echo, key, since) {
			c.srv.unsubscribeHub(ctx, c, exchange, key)
			c.sendError(tag, protocol.ErrBrokerUnavailable, "the history of this exchange is not being read right now; retry later with the same position", details())
			return true
		}
	}
	if c.subs == nil {
		c.subs = make(map[string]map[string]json.RawMessage)
	}
	if c.subs[exchange] == nil {
		c.subs[exchange] = make(map[string]json.RawMessage)
	}
	c.subs[exchange][key] = slices.Clone(echo)
	c.nsubs++
	c.srv.metrics.subscriptions.Inc()
	if idx == nil {
		_ = c.sendEvent(protocol.EventSubscribed, tag, details())
	}
	return true
}

// authorize runs an authorizer, turning a panic into an error.
func (c *conn) authorize(ctx context.Context, authorize AuthorizeFunc, tag json.RawMessage, key string) (allowed bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panicError{r}
		}
	}()
	return authorize(ctx, c.session(tag), key)
}

type panicError struct{ value any }

func (p panicError) Error() string { return "panic in authorizer" }

type unsubscribedPayload struct {
	Exchange     json.RawMessage `json:"exchange"`
	ExchangeName json.RawMessage `json:"exchange_name"`
	RoutingKey   json.RawMessage `json:"routing_key"`
	Auto         bool            `json:"auto"`
}

func (c *conn) sendUnsubscribed(tag json.RawMessage, exchange, routingKey json.RawMessage, auto bool) {
	_ = c.sendEvent(protocol.EventUnsubscribed, tag, unsubscribedPayload{
		Exchange: exchange, ExchangeName: exchange, RoutingKey: routingKey, Auto: auto,
	})
}

func (c *conn) unsubscribe(ctx context.Context, a protocol.Action) string {
	p, ok := decodeSubscriptionPayload(a.Payload)
	if !ok {
		c.sendError(a.Tag, protocol.ErrInvalidPayload, "payload: not a valid Unsubscribe payload", nil)
		return protocol.ErrInvalidPayload
	}
	if len(bytes.TrimSpace(p.Exchange)) == 0 || string(p.Exchange) == "null" {
		return c.unsubscribeAll(ctx, a.Tag, nil)
	}
	exchange, ok := exchangeName(p.Exchange)
	if !ok {
		c.sendError(a.Tag, protocol.ErrInvalidExchange, "exchange: must be a string", map[string]any{"exchange": echoExchange(p.Exchange)})
		return protocol.ErrInvalidExchange
	}
	exchangeJSON, _ := json.Marshal(exchange)
	if len(p.RoutingKey) == 0 && len(p.RoutingKeys) == 0 {
		return c.unsubscribeAll(ctx, a.Tag, &exchange)
	}
	keys, msg := p.keyList()
	if msg != "" {
		c.sendError(a.Tag, protocol.ErrInvalidPayload, msg, map[string]any{"exchange": exchange})
		return protocol.ErrInvalidPayload
	}
	if !c.chargeKeys(min(len(keys), c.srv.cfg.Limits.MaxSubscriptions)) {
		c.sendError(a.Tag, protocol.ErrRateLimited,
			fmt.Sprintf("unsubscribing from %d keys now is over the rate limit; nothing was unsubscribed, retry later", len(keys)),
			map[string]any{"exchange": exchange, "routing_keys": echoKeys(keys)})
		return protocol.ErrRateLimited
	}
	for _, raw := range keys {
		key, err := protocol.RoutingKey(raw)
		if err != nil {
			c.sendError(a.Tag, protocol.ErrInvalidPayload, "routing_key: must be a string, a number or null",
				map[string]any{"exchange": exchange, "routing_key": protocol.EchoKey(raw)})
			continue
		}
		c.subMu.Lock()
		c.dropSubscription(ctx, exchange, key)
		c.subMu.Unlock()
		// Idempotent, as in 1.x: the reply comes whether or not it was
		// subscribed.
		c.sendUnsubscribed(a.Tag, exchangeJSON, protocol.EchoKey(raw), false)
	}
	return "ok"
}

// unsubscribeAll removes every subscription (of one exchange when exchange
// is not nil), one reply per key removed, or one reply when none was.
func (c *conn) unsubscribeAll(ctx context.Context, tag json.RawMessage, exchange *string) string {
	type removed struct {
		exchange json.RawMessage
		key      json.RawMessage
	}
	var gone []removed
	c.subMu.Lock()
	n := c.nsubs
	if exchange != nil {
		n = len(c.subs[*exchange])
	}
	if !c.chargeKeys(n) {
		c.subMu.Unlock()
		details := map[string]any{"exchange": protocol.Null}
		if exchange != nil {
			details["exchange"] = *exchange
		}
		c.sendError(tag, protocol.ErrRateLimited,
			fmt.Sprintf("unsubscribing from %d keys now is over the rate limit; nothing was unsubscribed, retry later", n), details)
		return protocol.ErrRateLimited
	}
	for ex, keys := range c.subs {
		if exchange != nil && ex != *exchange {
			continue
		}
		exJSON, _ := json.Marshal(ex)
		for key, echo := range keys {
			gone = append(gone, removed{exJSON, echo})
			c.dropSubscription(ctx, ex, key)
		}
	}
	c.subMu.Unlock()
	for _, r := range gone {
		c.sendUnsubscribed(tag, r.exchange, r.key, false)
	}
	if len(gone) == 0 {
		exJSON := protocol.Null
		if exchange != nil {
			exJSON, _ = json.Marshal(*exchange)
		}
		c.sendUnsubscribed(tag, exJSON, protocol.Null, false)
	}
	return "ok"
}

// dropSubscription removes one subscription; c.subMu must be held. It
// returns the key as the client sent it, or nil when not subscribed.
func (c *conn) dropSubscription(ctx context.Context, exchange, key string) json.RawMessage {
	echo, ok := c.subs[exchange][key]
	if !ok {
		return nil
	}
	delete(c.subs[exchange], key)
	if len(c.subs[exchange]) == 0 {
		delete(c.subs, exchange)
	}
	c.nsubs--
	c.srv.unsubscribeHub(ctx, c, exchange, key)
	return echo
}

func (c *conn) listSubscriptions(a protocol.Action) {
	c.subMu.Lock()
	list := make(map[string][]string, len(c.subs))
	for ex, keys := range c.subs {
		names := make([]string, 0, len(keys))
		for key := range keys {
			names = append(names, key)
		}
		slices.Sort(names)
		list[ex] = names
	}
	c.subMu.Unlock()
	_ = c.sendEvent(protocol.EventYourSubscriptions, a.Tag, map[string]any{"subscriptions": list})
}

// reauthorize checks every subscription again and removes the refused
// ones, telling the client Unsubscribed {auto: true}. An authorizer error
// keeps the subscription (fail open for a transient fault, logged).
func (c *conn) reauthorize(ctx context.Context) {
	type sub struct{ exchange, key string }
	c.subMu.Lock()
	var all []sub
	for ex, keys := range c.subs {
		for key := range keys {
			all = append(all, sub{ex, key})
		}
	}
	c.subMu.Unlock()
	for _, s := range all {
		authorize := c.srv.cfg.Exchanges[s.exchange]
		allowed, err := c.authorize(ctx, authorize, nil, s.key)
		if err != nil {
			c.logger().Warn("reauthorization failed; keeping the subscription", "exchange", s.exchange, "routing_key", s.key, "err", err)
			continue
		}
		if allowed {
			continue
		}
		c.subMu.Lock()
		echo := c.dropSubscription(ctx, s.exchange, s.key)
		c.subMu.Unlock()
		if echo != nil {
			exJSON, _ := json.Marshal(s.exchange)
			c.sendUnsubscribed(nil, exJSON, echo, true)
		}
	}
}
