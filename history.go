package myxi

// History and recovery on the node: one internal/history index per
// history exchange, fed by the broker (broker.Historian), and the replay
// of a Subscribe with "since" (docs/history.md).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/internal/history"
	"github.com/myxi/myxi/internal/protocol"
)

// maxEpochBytes is the longest epoch the contract allows.
const maxEpochBytes = 64

// maxOffset is 2^53: offsets stay exact in a JavaScript number.
const maxOffset = 1 << 53

type historyIndex = history.Index[*conn, *frame]

// newHistory makes the index of one history exchange.
func (s *Server) newHistory(exchange string, bounds History) *historyIndex {
	maxEvent := int(s.cfg.Limits.MaxEventBytes)
	return history.New(history.Config[*conn, *frame]{
		Bounds:      bounds,
		ReplayLimit: s.cfg.Limits.ReplayLimit,
		Hooks: history.Hooks[*conn, *frame]{
			Encode: func(r broker.Record, epoch string) (*frame, int, bool) {
				data, err := protocol.RecordEvent(exchange, r.RoutingKey, r.Body, maxEvent, protocol.Position{Offset: r.Offset, Epoch: epoch})
				if err != nil {
					s.badMessage(exchange, r.RoutingKey, len(r.Body), err)
					return nil, 0, false
				}
				f := newFrame(data)
				f.shared, f.received = true, time.Now()
				s.metrics.historyRecords.Inc()
				return f, len(f.wire), true
			},
			Deliver: s.broadcast,
			Lost: func(conns []*conn) {
				s.metrics.historyLost.Add(float64(len(conns)))
				for _, c := range conns {
					// The client recovers from its last position on
					// another connection, and learns there whether that
					// is still possible.
					c.closeWith(closeInternal, "history reset: recover from your last position")
				}
			},
		},
	})
}

// startHistories hands each history exchange's index to the broker.
func (s *Server) startHistories(ctx context.Context) error {
	if len(s.histories) == 0 {
		return nil
	}
	historian, ok := s.broker.(broker.Historian)
	if !ok {
		return fmt.Errorf("history is configured for %d exchanges, but the broker (%T) keeps no history", len(s.histories), s.broker)
	}
	for name, idx := range s.histories {
		if err := historian.StartHistory(ctx, name, s.cfg.History[name], idx); err != nil {
			return fmt.Errorf("start the history of %q: %w", name, err)
		}
	}
	return nil
}

// since is a Subscribe's "since": nil when absent or null. A malformed
// one is an error whose text is the client's message.
func parseSince(raw json.RawMessage) (*history.Position, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var p struct {
		Offset json.RawMessage `json:"offset"`
		Epoch  json.RawMessage `json:"epoch"`
	}
	if raw[0] != '{' || json.Unmarshal(raw, &p) != nil {
		return nil, errors.New(`since: must be an object {"offset": integer, "epoch": string}`)
	}
	// Digits only: json.Number would also take a quoted number.
	off, err := strconv.ParseInt(string(p.Offset), 10, 64)
	if err != nil || off < 0 || off >= maxOffset {
		return nil, errors.New("since.offset: must be an integer from 0 to 2^53-1")
	}
	epoch, ok := protocol.String(p.Epoch)
	if !ok || epoch == "" || len(epoch) > maxEpochBytes {
		return nil, fmt.Errorf("since.epoch: must be a non-empty string of at most %d bytes", maxEpochBytes)
	}
	return &history.Position{Offset: uint64(off), Epoch: epoch}, nil
}

// subscribedPayload is Subscribed's payload; the position keys appear on
// history exchanges only.
type subscribedPayload struct {
	Exchange   string          `json:"exchange"`
	RoutingKey json.RawMessage `json:"routing_key"`
	Recovered  *bool           `json:"recovered,omitempty"`
	Epoch      string          `json:"epoch,omitempty"`
	Offset     *uint64         `json:"offset,omitempty"`
}

// subscribeHistory registers c for key of a history exchange, answers
// Subscribed with the key's position, and replays what since asks for.
// It reports false (and has replied BrokerUnavailable) when the history
// is not being read.
func (c *conn) subscribeHistory(ctx context.Context, idx *historyIndex, tag json.RawMessage, exchange string, echo json.RawMessage, key string, since *history.Position) bool {
	d, err := idx.Subscribe(ctx, key, c, since, func(d history.Decision[*frame]) {
		p := subscribedPayload{Exchange: exchange, RoutingKey: echo, Epoch: d.Epoch, Offset: &d.Offset}
		if since != nil {
			p.Recovered = &d.Recovered
		}
		_ = c.sendEvent(protocol.EventSubscribed, tag, p)
	})
	if err != nil {
		return false
	}
	if since != nil {
		result := "recovered"
		if !d.Recovered {
			result = "not_recovered"
		}
		c.srv.metrics.recoveries.WithLabelValues(result).Inc()
	}
	if len(d.Replay) > 0 {
		c.replay(idx, key, d.Replay)
	}
	return true
}

// replay sends a recovering subscription's records, then those that
// arrived meanwhile, until the index turns it live. It runs inside the
// Subscribe, which the session's reader waits for, so the session's next
// action waits for it.
// It keeps at most half of the send queue for replayed frames: the rest
// is live traffic's headroom, so a replay never makes a client look too
// slow (1008), and a client that reads slowly just recovers slowly.
func (c *conn) replay(idx *historyIndex, key string, frames []*frame) {
	if c.drained == nil {
		c.drained = make(chan struct{}, 1)
	}
	c.replaying.Store(true)
	defer c.replaying.Store(false)
	for {
		for len(frames) > 0 {
			if c.closing.Load() {
				return
			}
			if !c.queue.pushBelowHalf(frames[0]) {
				select {
				case <-c.drained:
				case <-c.ctx.Done():
					return
				}
				c.extendReadDeadline() // reading waits for the replay
				continue
			}
			c.kick()
			c.srv.metrics.replayed.Inc()
			frames = frames[1:]
		}
		pending, live := idx.Drain(key, c)
		if live {
			return
		}
		frames = pending
	}
}
