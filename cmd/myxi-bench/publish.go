package main

import (
	"context"
	"errors"
	"time"
)

// Publishing: the publish phase sends total events, paced at the rate, event
// seq to key seq mod keys, through a publisher.

// publisher is how events reach the server. amqpPublisher publishes to
// RabbitMQ exactly as an application does; myxiPublisher through Myxi's Go
// publisher (-publish amqp-myxi), which records on history exchanges;
// httpPublisher through a server's HTTP publish API (-publish http).
type publisher interface {
	// publish sends one event; an error means it did not reach the broker.
	// The body may be reused once publish returns.
	publish(ctx context.Context, seq int64, key string, body []byte) error
	// finish waits (bounded by ctx) for what is still unconfirmed and
	// returns the seqs the broker refused or never confirmed.
	finish(ctx context.Context) (failed []int64, err error)
	// unroutable is the number of events the broker returned as routed to
	// no queue (no server bound that key).
	unroutable() int64
	close()
}

func newPublisher(ctx context.Context, cfg *config) (publisher, error) {
	switch cfg.Publish {
	case "amqp":
		wait := time.Duration(0)
		if cfg.Spawn != "" {
			wait = 10 * time.Second
		}
		return newAMQPPublisher(ctx, cfg.AMQP, cfg.Exchange, cfg.Confirm, wait)
	case "amqp-myxi":
		return newMyxiPublisher(ctx, cfg.AMQP, cfg.Exchange, cfg.Pushers, cfg.LiveCopy)
	case "http":
		return newHTTPPublisher(cfg.URL, cfg.Exchange)
	}
	return nil, errors.New("unknown -publish " + cfg.Publish)
}

// publishResult is what the report says of the publish phase.
type publishResult struct {
	Planned    int64
	Sent       int64 // publish calls made
	Errors     int64 // publish calls that failed
	FirstError string
	Nacked     int64 // refused or unconfirmed (with -confirm)
	Unroutable int64
	OKPerKey   []int64 // events per key that reached the broker
	Start      time.Time
	LastSend   time.Duration // since Start
	End        time.Time
	Rate       float64 // achieved
	MaxLag     time.Duration
	Incomplete bool // stopped before Planned (deadline)
}

// runPublish publishes total events at rate over keys; it stops at the
// latest at deadline.
func runPublish(ctx context.Context, pub publisher, rate float64, total int64, keys, payloadBytes int, deadline time.Time) publishResult {
	res := publishResult{Planned: total, OKPerKey: make([]int64, keys)}
	names := make([]string, keys)
	for i := range names {
		names[i] = keyName(i)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	body := make([]byte, 0, 128+payloadBytes)
	res.Start = time.Now()
	var sent int64
	// Each pass sends what is due, then sleeps until the next event is due:
	// at most 2*total+1 passes, and never past the deadline.
	for sent < total && ctx.Err() == nil {
		due := dueCount(time.Since(res.Start), rate, total)
		for ; sent < due; sent++ {
			k := int(sent % int64(keys))
			now := time.Now()
			body = appendBody(body[:0], now.UnixNano(), sent, payloadBytes)
			if err := pub.publish(ctx, sent, names[k], body); err != nil {
				res.Errors++
				if res.FirstError == "" {
					res.FirstError = err.Error()
				}
			} else {
				res.OKPerKey[k]++
			}
			if lag := now.Sub(res.Start) - dueAt(sent, rate); lag > res.MaxLag {
				res.MaxLag = lag
			}
			res.LastSend = now.Sub(res.Start)
		}
		if sent >= total || !time.Now().Before(deadline) {
			break
		}
		wait := time.Until(res.Start.Add(dueAt(sent, rate)))
		if wait <= 0 {
			continue
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
		}
	}
	res.Sent = sent
	res.Incomplete = sent < total
	res.End = time.Now()
	res.Rate = achievedRate(sent, res.LastSend, rate)
	return res
}

// settlePublish collects confirms: a refused event is taken off its key's
// count, since no client can get it.
func settlePublish(ctx context.Context, pub publisher, res *publishResult, keys int) {
	failed, err := pub.finish(ctx)
	for _, seq := range failed {
		res.OKPerKey[seq%int64(keys)]--
		res.Nacked++
	}
	if err != nil && res.FirstError == "" {
		res.FirstError = err.Error()
	}
	res.Unroutable = pub.unroutable()
}
