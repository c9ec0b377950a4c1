// Package hub is the node-local index from (exchange, routing key) to the
// sessions subscribed to it. It tells the broker when a key gains its
// first local subscriber (Bind) and loses its last (Unbind), so the node
// receives exactly the keys someone here wants.
//
// # Concurrency
//
// Topics live in shards, each behind its own RWMutex, so deliveries for
// different keys never wait on one lock. Within a topic, a mutex (bindMu)
// serializes the broker calls for that key so a Bind can never overtake an
// Unbind of the same key; it is held across the broker round trip, which
// blocks only other subscribers of that one key. Fan-out takes the topic's
// read lock and never blocks on a subscriber (subscribers' Deliver must
// not block). Lock order: bindMu, then shard mu, then subsMu.
package hub

import (
	"context"
	"hash/maphash"
	"sync"
)

// Binder is the part of the broker the hub drives.
type Binder interface {
	Bind(ctx context.Context, exchange, routingKey string) error
	Unbind(ctx context.Context, exchange, routingKey string) error
}

const shardCount = 64

// Hub indexes subscribers of type S (a pointer type in practice).
type Hub[S comparable] struct {
	binder Binder
	seed   maphash.Seed
	shards [shardCount]shard[S]
}

type key struct{ exchange, routingKey string }

type shard[S comparable] struct {
	mu     sync.RWMutex
	topics map[key]*topic[S]
}

type topic[S comparable] struct {
	bindMu sync.Mutex // held across broker calls for this key
	bound  bool       // guarded by bindMu
	refs   int        // guarded by the shard's mu: subscribers plus pending subscribes

	subsMu sync.RWMutex
	subs   []S         // guarded by subsMu
	index  map[S]int32 // position in subs, guarded by subsMu
}

// New returns an empty hub that binds through binder.
func New[S comparable](binder Binder) *Hub[S] {
	h := &Hub[S]{binder: binder, seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].topics = make(map[key]*topic[S])
	}
	return h
}

func (h *Hub[S]) shardFor(k key) *shard[S] {
	var m maphash.Hash
	m.SetSeed(h.seed)
	m.WriteString(k.exchange)
	m.WriteByte(0)
	m.WriteString(k.routingKey)
	return &h.shards[m.Sum64()%shardCount]
}

// Subscribe adds s to (exchange, routingKey), binding the key on the
// broker first when s is its first local subscriber. It returns once
// messages for the key reach this node, or the broker's error (s is then
// not subscribed). Subscribing s twice to one key is the caller's bug; the
// hub keeps one entry.
func (h *Hub[S]) Subscribe(ctx context.Context, exchange, routingKey string, s S) error {
	k := key{exchange, routingKey}
	sh := h.shardFor(k)
	sh.mu.Lock()
	t := sh.topics[k]
	if t == nil {
		t = &topic[S]{index: make(map[S]int32)}
		sh.topics[k] = t
	}
	t.refs++
	sh.mu.Unlock()

	t.bindMu.Lock()
	defer t.bindMu.Unlock()
	if !t.bound {
		if err := h.binder.Bind(ctx, exchange, routingKey); err != nil {
			sh.mu.Lock()
			t.refs--
			if t.refs == 0 {
				delete(sh.topics, k)
			}
			sh.mu.Unlock()
			return err
		}
		t.bound = true
	}
	t.subsMu.Lock()
	if _, dup := t.index[s]; dup {
		t.subsMu.Unlock()
		sh.mu.Lock()
		t.refs--
		sh.mu.Unlock()
		return nil
	}
	t.index[s] = int32(len(t.subs))
	t.subs = append(t.subs, s)
	t.subsMu.Unlock()
	return nil
}

// Unsubscribe removes s from (exchange, routingKey) and unbinds the key
// when s was its last local subscriber. It reports whether s was
// subscribed, and the broker's error from unbinding, if any (the binding
// is forgotten either way).
func (h *Hub[S]) Unsubscribe(ctx context.Context, exchange, routingKey string, s S) (bool, error) {
	k := key{exchange, routingKey}
	sh := h.shardFor(k)
	sh.mu.RLock()
	t := sh.topics[k]
	sh.mu.RUnlock()
	if t == nil {
		return false, nil
	}

	t.bindMu.Lock()
	defer t.bindMu.Unlock()
	if !t.remove(s) {
		return false, nil
	}
	sh.mu.Lock()
	t.refs--
	last := t.refs == 0
	sh.mu.Unlock()
	if !last {
		return true, nil
	}
	var err error
	if t.bound {
		err = h.binder.Unbind(ctx, exchange, routingKey)
		t.bound = false
	}
	sh.mu.Lock()
	// A subscriber that found this topic meanwhile holds a ref and will
	// bind it again once we release bindMu; otherwise the topic is gone.
	if t.refs == 0 && sh.topics[k] == t {
		delete(sh.topics, k)
	}
	sh.mu.Unlock()
	return true, err
}

func (t *topic[S]) remove(s S) bool {
	t.subsMu.Lock()
	defer t.subsMu.Unlock()
	i, ok := t.index[s]
	if !ok {
		return false
	}
	last := len(t.subs) - 1
	moved := t.subs[last]
	t.subs[i] = moved
	t.index[moved] = i
	var zero S
	t.subs[last] = zero
	t.subs = t.subs[:last]
	delete(t.index, s)
	return true
}

// Each calls fn for every subscriber of (exchange, routingKey) and returns
// how many there were. fn runs under the topic's read lock: it must not
// block nor call back into the hub.
func (h *Hub[S]) Each(exchange, routingKey string, fn func(S)) int {
	return h.All(exchange, routingKey, func(subs []S) {
		for _, s := range subs {
			fn(s)
		}
	})
}

// All calls fn once with the subscribers of (exchange, routingKey), if
// any, and returns how many there are. The slice is the hub's own and
// is valid only until fn returns; fn runs under the topic's read lock (it
// may hand parts of the slice to other goroutines and wait for them, but
// must not block on anything else nor call back into the hub).
func (h *Hub[S]) All(exchange, routingKey string, fn func([]S)) int {
	k := key{exchange, routingKey}
	sh := h.shardFor(k)
	sh.mu.RLock()
	t := sh.topics[k]
	sh.mu.RUnlock()
	if t == nil {
		return 0
	}
	t.subsMu.RLock()
	defer t.subsMu.RUnlock()
	if len(t.subs) > 0 {
		fn(t.subs)
	}
	return len(t.subs)
}

// Topics returns how many keys have at least one local subscriber or a
// subscribe in flight.
func (h *Hub[S]) Topics() int {
	n := 0
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		n += len(sh.topics)
		sh.mu.RUnlock()
	}
	return n
}
