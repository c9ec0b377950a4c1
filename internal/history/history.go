// Package history is a node's in-memory index of one exchange's history:
// the tail of the records its broker feeds it (broker.HistoryFeed), kept
// within the exchange's bounds, and the local subscriptions to its keys.
//
// One lock joins replay and live delivery. Record appends a record and
// hands it to the live subscribers of its key under the lock; Subscribe
// decides a recovery and registers the subscription under the same lock.
// So no record can fall between a replay and the live stream that
// follows it, and none is sent twice (docs/history.md, "Why no gap and no
// duplicate").
//
// S is the subscriber (a session), F the encoded frame of a record,
// shared by every subscriber.
package history

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/myxi/myxi/broker"
)

// Hooks connect an index to the node. They are called with the index
// locked, so they must not block and must not call back into the index.
type Hooks[S comparable, F any] struct {
	// Encode turns a record into the frame subscribers get, and reports
	// its size in bytes; ok false drops it (an invalid body), although
	// its position still counts.
	Encode func(r broker.Record, epoch string) (frame F, size int, ok bool)
	// Deliver hands one frame to the live subscribers of its key.
	Deliver func(frame F, subs []S)
	// Lost is told the subscribers whose position became meaningless
	// (the history was reset: deleted and created again, or records may
	// have been lost); the node closes their sessions so that their
	// clients recover. They are no longer in the index.
	Lost func(subs []S)
}

// Config describes one index.
type Config[S comparable, F any] struct {
	Bounds broker.History
	// ReplayLimit is the most records one Subscribe replays; beyond it
	// the answer is "not recovered".
	ReplayLimit int
	Hooks       Hooks[S, F]
	// Now is the clock for the age bound; nil means time.Now.
	Now func() time.Time
}

// ErrUnavailable is returned by Subscribe while the history is not being
// read (the broker is down, the reader has not caught up yet).
var ErrUnavailable = errors.New("history unavailable")

// entryOverhead approximates an entry's memory beyond its frame: the
// entry itself and its key's slot, counted against Bounds.MaxBytes.
const entryOverhead = 56

// aheadWait bounds how long a Subscribe waits for this node's reader to
// reach a position another node has already delivered.
const aheadWait = 2 * time.Second

type entry[S comparable, F any] struct {
	off   int64
	at    int64 // receive time, unix nanoseconds
	size  int
	key   *keyLog[S, F]
	frame F
}

type keyLog[S comparable, F any] struct {
	name string
	seqs []uint64 // sequence numbers of this key's entries, oldest first
	live []S      // subscribers getting every new record
	pos  map[S]int
	// held are subscribers that are not live yet: replaying (their new
	// records wait in pending) or ahead of this node (records up to from
	// are skipped).
	held map[S]*holding[F]
}

type holding[F any] struct {
	from    int64
	ahead   bool // came with a position this node had not read yet
	pending []F
}

// Index is one exchange's history on this node. The zero value is not
// usable; call New.
type Index[S comparable, F any] struct {
	cfg Config[S, F]

	mu      sync.Mutex
	epoch   string
	live    bool
	down    bool // the broker was lost (Down), not yet live again
	fresh   bool // no record since the last Reset: the next one sets floor
	floor   int64
	last    int64
	entries []entry[S, F] // entries[i] has sequence number seq0+i
	seq0    uint64
	bytes   int64
	keys    map[string]*keyLog[S, F]
	// changed is closed when last or live changes, then forgotten; made
	// only by a waiter (see waitChan), so that a record costs no
	// allocation when nobody waits, which is nearly always.
	changed chan struct{}

	feedEpoch string // the epoch records are encoded with; feed goroutine only
}

// New returns an index that is not live: Subscribe waits until its
// broker feeds it a Reset and Live.
func New[S comparable, F any](cfg Config[S, F]) *Index[S, F] {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Index[S, F]{cfg: cfg, floor: -1, last: -1, fresh: true, keys: map[string]*keyLog[S, F]{}}
}

var _ broker.HistoryFeed = (*Index[int, int])(nil)

// signal wakes the waiters; x.mu must be held.
func (x *Index[S, F]) signal() {
	if x.changed != nil {
		close(x.changed)
		x.changed = nil
	}
}

// waitChan returns a channel closed at the next change; x.mu must be held.
func (x *Index[S, F]) waitChan() <-chan struct{} {
	if x.changed == nil {
		x.changed = make(chan struct{})
	}
	return x.changed
}

// Reset starts a new life of the history: every record is forgotten and
// every subscriber is handed to Hooks.Lost.
func (x *Index[S, F]) Reset(epoch string) {
	x.feedEpoch = epoch
	x.mu.Lock()
	var lost []S
	for name, k := range x.keys {
		lost = append(lost, k.live...)
		for s := range k.held {
			lost = append(lost, s)
		}
		delete(x.keys, name)
	}
	clear(x.entries)
	x.entries = x.entries[:0]
	x.bytes = 0
	x.epoch = epoch
	x.fresh = true
	x.floor, x.last = -1, -1
	x.signal()
	if len(lost) > 0 {
		x.cfg.Hooks.Lost(lost)
	}
	x.mu.Unlock()
}

// Live marks the history as caught up: Subscribe answers from now on.
func (x *Index[S, F]) Live() {
	x.mu.Lock()
	x.live, x.down = true, false
	x.signal()
	x.mu.Unlock()
}

// Down marks the history as not being read: Subscribe fails at once
// until the history is live again.
func (x *Index[S, F]) Down() {
	x.mu.Lock()
	x.live, x.down = false, true
	x.signal()
	x.mu.Unlock()
}

// Record appends one record and delivers it to its key's live
// subscribers.
func (x *Index[S, F]) Record(r broker.Record) {
	off := int64(r.Offset)
	var (
		frame F
		size  int
		ok    bool
	)
	if r.Body != nil {
		frame, size, ok = x.cfg.Hooks.Encode(r, x.feedEpoch)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if off <= x.last {
		return // a reader never goes back; a duplicate feed is ignored
	}
	if x.fresh {
		x.fresh = false
		x.floor = off - 1
	}
	x.last = off
	defer x.signal()
	if !ok {
		return
	}
	k := x.keys[r.RoutingKey]
	if k == nil {
		k = &keyLog[S, F]{name: r.RoutingKey}
		x.keys[r.RoutingKey] = k
	}
	seq := x.seq0 + uint64(len(x.entries))
	now := x.cfg.Now()
	x.entries = append(x.entries, entry[S, F]{off: off, at: now.UnixNano(), size: size + entryOverhead, key: k, frame: frame})
	k.seqs = append(k.seqs, seq)
	x.bytes += int64(size + entryOverhead)
	x.evict(now)
	var overflow []S
	for s, h := range k.held {
		switch {
		case off <= h.from:
		case h.ahead:
			// The reader has passed the position the subscriber came
			// with: from now on it is an ordinary live subscriber.
			delete(k.held, s)
			k.addLive(s)
		case len(h.pending) >= x.cfg.ReplayLimit:
			// Live records pile up faster than the replay drains: the
			// client recovers again rather than the node buffering
			// without bound.
			delete(k.held, s)
			overflow = append(overflow, s)
		default:
			h.pending = append(h.pending, frame)
		}
	}
	if len(k.live) > 0 {
		x.cfg.Hooks.Deliver(frame, k.live)
	}
	if len(overflow) > 0 {
		x.cfg.Hooks.Lost(overflow)
	}
}

// evict drops the oldest entries while the index is over its bounds. The
// newest entry always stays: a quiet history keeps its tail.
func (x *Index[S, F]) evict(now time.Time) {
	maxBytes := x.cfg.Bounds.MaxBytes
	oldest := now.Add(-x.cfg.Bounds.MaxAge).UnixNano()
	n := 0
	for n < len(x.entries)-1 {
		e := &x.entries[n]
		if (maxBytes <= 0 || x.bytes <= maxBytes) && (x.cfg.Bounds.MaxAge <= 0 || e.at >= oldest) {
			break
		}
		x.bytes -= int64(e.size)
		x.floor = e.off
		k := e.key
		k.seqs[0] = 0
		k.seqs = k.seqs[1:]
		if len(k.seqs) == 0 && len(k.live) == 0 && len(k.held) == 0 {
			delete(x.keys, k.name)
		}
		var zero entry[S, F]
		*e = zero
		n++
	}
	if n == 0 {
		return
	}
	x.seq0 += uint64(n)
	x.entries = x.entries[n:]
	// Move to a fresh array once most of it is dead, so memory follows
	// what is kept.
	if cap(x.entries) > 64 && len(x.entries) < cap(x.entries)/4 {
		x.entries = append(make([]entry[S, F], 0, 2*len(x.entries)), x.entries...)
	}
}

// Position is a place in the history.
type Position struct {
	Offset uint64
	Epoch  string
}

// Decision is a Subscribe's answer.
type Decision[F any] struct {
	Epoch string
	// Offset is where the key went live for the subscriber: every record
	// after it reaches it live (or through Drain), none at or before it.
	Offset uint64
	// Recovered is whether the records after since are replayed (only
	// meaningful for a Subscribe with since).
	Recovered bool
	// Replay holds the records of the key after since, oldest first; the
	// subscriber must send them, then call Drain until it reports live.
	Replay []F
}

// Subscribe registers s for key and answers it. With since, it decides
// whether the records after since can be replayed. reply is called with
// the index locked, before any record after the decision can reach s: it
// queues the Subscribed reply. When Replay is not empty, s is held (new
// records of key wait for it) until Drain turns it live.
//
// While the broker is down it returns ErrUnavailable at once (the client
// retries later); while the history is being read up to its tail, it
// waits within ctx, and returns ErrUnavailable when ctx ends first.
func (x *Index[S, F]) Subscribe(ctx context.Context, key string, s S, since *Position, reply func(Decision[F])) (Decision[F], error) {
	waitedAhead := false
	for {
		x.mu.Lock()
		if x.down {
			x.mu.Unlock()
			return Decision[F]{}, ErrUnavailable
		}
		if !x.live {
			ch := x.waitChan()
			x.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return Decision[F]{}, ErrUnavailable
			}
		}
		d := Decision[F]{Epoch: x.epoch, Offset: x.lastOffset()}
		k := x.key(key)
		switch {
		case since == nil:
			k.addLive(s)
		case since.Epoch != x.epoch:
			k.addLive(s)
		case int64(since.Offset) > x.last:
			if !waitedAhead {
				// Another node's reader is a little ahead of this one's.
				ch := x.waitChan()
				x.mu.Unlock()
				waitedAhead = x.waitFor(ctx, int64(since.Offset), ch)
				continue
			}
			// Still ahead: a bogus position, or a reader far behind. Go
			// live from it, so that nothing at or before it is sent.
			d.Offset = since.Offset
			k.held[s] = &holding[F]{from: int64(since.Offset), ahead: true}
		case int64(since.Offset) < x.floor:
			k.addLive(s)
		default:
			i := sort.Search(len(k.seqs), func(i int) bool {
				return x.entries[k.seqs[i]-x.seq0].off > int64(since.Offset)
			})
			if len(k.seqs)-i > x.cfg.ReplayLimit {
				k.addLive(s)
				break
			}
			d.Recovered = true
			for _, seq := range k.seqs[i:] {
				d.Replay = append(d.Replay, x.entries[seq-x.seq0].frame)
			}
			if len(d.Replay) == 0 {
				k.addLive(s)
			} else {
				k.held[s] = &holding[F]{from: x.last}
			}
		}
		reply(d)
		x.mu.Unlock()
		return d, nil
	}
}

// waitFor waits until the index has read offset, for at most aheadWait,
// and reports true (it gave the reader its chance).
func (x *Index[S, F]) waitFor(ctx context.Context, offset int64, ch <-chan struct{}) bool {
	deadline := time.NewTimer(aheadWait)
	defer deadline.Stop()
	for {
		select {
		case <-ch:
		case <-deadline.C:
			return true
		case <-ctx.Done():
			return true
		}
		x.mu.Lock()
		reached := x.last >= offset
		ch = x.waitChan()
		x.mu.Unlock()
		if reached {
			return true
		}
	}
}

func (x *Index[S, F]) lastOffset() uint64 {
	if x.last < 0 {
		return 0
	}
	return uint64(x.last)
}

func (x *Index[S, F]) key(name string) *keyLog[S, F] {
	k := x.keys[name]
	if k == nil {
		k = &keyLog[S, F]{name: name}
		x.keys[name] = k
	}
	if k.pos == nil {
		k.pos = map[S]int{}
		k.held = map[S]*holding[F]{}
	}
	return k
}

func (k *keyLog[S, F]) addLive(s S) {
	if _, ok := k.pos[s]; ok {
		return
	}
	k.pos[s] = len(k.live)
	k.live = append(k.live, s)
}

// Drain hands s the records of key that arrived while it was replaying,
// and reports live once there were none: s then gets new records through
// Hooks.Deliver. A subscriber that is not held (or was handed to
// Hooks.Lost) is reported live.
func (x *Index[S, F]) Drain(key string, s S) (pending []F, live bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := x.keys[key]
	if k == nil || k.held[s] == nil {
		return nil, true
	}
	h := k.held[s]
	if len(h.pending) > 0 {
		pending, h.pending = h.pending, nil
		return pending, false
	}
	if h.ahead {
		return nil, false // Record turns it live once the reader passes from
	}
	delete(k.held, s)
	k.addLive(s)
	return nil, true
}

// Unsubscribe removes s from key.
func (x *Index[S, F]) Unsubscribe(key string, s S) {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := x.keys[key]
	if k == nil {
		return
	}
	delete(k.held, s)
	if i, ok := k.pos[s]; ok {
		last := len(k.live) - 1
		moved := k.live[last]
		k.live[i] = moved
		k.pos[moved] = i
		var zero S
		k.live[last] = zero
		k.live = k.live[:last]
		delete(k.pos, s)
	}
	if len(k.seqs) == 0 && len(k.live) == 0 && len(k.held) == 0 {
		delete(x.keys, key)
	}
}

// Stats describe an index for metrics and tests.
type Stats struct {
	Epoch   string
	Live    bool
	Floor   int64 // every record after it is kept
	Last    int64 // the newest record read, -1 before the first
	Records int
	Bytes   int64
}

// Stats returns the index's current figures.
func (x *Index[S, F]) Stats() Stats {
	x.mu.Lock()
	defer x.mu.Unlock()
	return Stats{Epoch: x.epoch, Live: x.live, Floor: x.floor, Last: x.last, Records: len(x.entries), Bytes: x.bytes}
}
