package rabbitmq

import "time"

// ackIdle is how long deliveries must pause before the pending ones are
// acknowledged. Acks only return credit (prefetch), so they can wait a
// little: acking whenever the channel is momentarily empty acked nearly
// every message one by one at 1,000 events a second.
const ackIdle = 50 * time.Millisecond

// ackBatcher acknowledges a consumer's deliveries in batches
// (multiple=true): once every `every` deliveries, and once deliveries
// have paused for ackIdle. One goroutine, the consumer's, uses it.
type ackBatcher struct {
	every   int
	send    func(last uint64, n int) // acknowledge up to last, n deliveries
	last    uint64
	pending int
	timer   *time.Timer
	armed   bool
}

func newAckBatcher(every int, send func(last uint64, n int)) *ackBatcher {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &ackBatcher{every: max(1, every), send: send, timer: t}
}

// add counts one delivery, acknowledging the batch when it is full.
func (a *ackBatcher) add(tag uint64) {
	a.last = tag
	if a.pending++; a.pending >= a.every {
		a.flush()
	}
}

// flush acknowledges what is pending.
func (a *ackBatcher) flush() {
	if a.armed {
		a.timer.Stop()
		a.armed = false
	}
	if a.pending == 0 {
		return
	}
	n := a.pending
	a.pending = 0
	a.send(a.last, n)
}

// idle returns a channel that fires once deliveries have paused for
// ackIdle with some pending, for the consumer's select while it waits;
// nil (never ready) when nothing is pending. The consumer calls flush
// when it fires.
func (a *ackBatcher) idle() <-chan time.Time {
	if a.pending == 0 {
		return nil
	}
	if !a.armed {
		a.timer.Reset(ackIdle)
		a.armed = true
	}
	return a.timer.C
}
