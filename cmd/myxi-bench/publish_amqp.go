package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// amqpPublisher publishes as an application does: a persistent connection, a
// channel, basic.publish to the Myxi exchange with the routing key and a JSON
// body. It publishes with mandatory set, so an event that reaches no queue
// (the server has no binding for the key) comes back and is counted.
type amqpPublisher struct {
	conn     *amqp.Connection
	ch       *amqp.Channel
	exchange string
	confirm  bool
	pending  []pendingConfirm
	returned atomic.Int64
	retDone  chan struct{}
}

type pendingConfirm struct {
	seq int64
	dc  *amqp.DeferredConfirmation
}

// newAMQPPublisher connects; the exchange must exist, or appear within
// exchangeWait (a server just spawned may not have declared it yet).
func newAMQPPublisher(ctx context.Context, url, exchange string, confirm bool, exchangeWait time.Duration) (*amqpPublisher, error) {
	conn, err := amqp.DialConfig(url, amqp.Config{
		Properties: amqp.Table{"connection_name": "myxi-bench publisher"},
		Dial:       amqp.DefaultDial(5 * time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("connecting to RabbitMQ: %v", err)
	}
	p := &amqpPublisher{conn: conn, exchange: exchange, confirm: confirm, retDone: make(chan struct{})}
	// The server declares the exchange: check that it did, never declare it.
	if err := p.waitExchange(ctx, exchangeWait); err != nil {
		conn.Close()
		return nil, err
	}
	if p.ch, err = conn.Channel(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("opening a channel: %v", err)
	}
	if confirm {
		if err := p.ch.Confirm(false); err != nil {
			conn.Close()
			return nil, fmt.Errorf("confirm mode: %v", err)
		}
	}
	returns := p.ch.NotifyReturn(make(chan amqp.Return, 1024))
	go func() {
		defer close(p.retDone)
		for range returns {
			p.returned.Add(1)
		}
	}()
	return p, nil
}

// waitExchange checks (passively) that the exchange exists, for at most d.
func (p *amqpPublisher) waitExchange(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	var last error
	for attempt := 0; attempt < 100; attempt++ {
		ch, err := p.conn.Channel()
		if err != nil {
			return fmt.Errorf("opening a channel: %v", err)
		}
		last = ch.ExchangeDeclarePassive(p.exchange, "direct", false, false, false, false, nil)
		if last == nil {
			ch.Close()
			return nil
		}
		// (a failed passive declare closes the channel)
		if !time.Now().Add(200 * time.Millisecond).Before(deadline) {
			break
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fmt.Errorf("exchange %q does not exist on the broker (%v): is the server running with -exchanges %s?", p.exchange, last, p.exchange)
}

func (p *amqpPublisher) publish(ctx context.Context, seq int64, key string, body []byte) error {
	msg := amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Transient,
		Body:         body, // amqp091 writes it out before Publish returns
	}
	if !p.confirm {
		return p.ch.PublishWithContext(ctx, p.exchange, key, true, false, msg)
	}
	dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, p.exchange, key, true, false, msg)
	if err == nil {
		p.pending = append(p.pending, pendingConfirm{seq, dc})
	}
	return err
}

func (p *amqpPublisher) finish(ctx context.Context) ([]int64, error) {
	var failed []int64
	var firstErr error
	for _, pc := range p.pending {
		ack, err := pc.dc.WaitContext(ctx)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("waiting for confirms: %v", err)
		}
		if err != nil || !ack {
			failed = append(failed, pc.seq)
		}
	}
	p.pending = nil
	return failed, firstErr
}

func (p *amqpPublisher) unroutable() int64 { return p.returned.Load() }

func (p *amqpPublisher) close() {
	p.conn.Close() // closes the channel and so the returns listener
	select {
	case <-p.retDone:
	case <-time.After(2 * time.Second):
	}
}
