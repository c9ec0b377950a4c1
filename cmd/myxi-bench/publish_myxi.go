package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/myxi/myxi/broker/rabbitmq"
)

// myxiPublisher (-publish amqp-myxi) publishes as a Go application using
// Myxi's publisher does: rabbitmq.Publisher.Push, which appends the event
// to the exchange's history when the exchange has one (its stream
// myxi.history.E exists), so that it is recorded and can be replayed, and
// publishes it live-only, as -publish amqp does, otherwise. Push returns
// only once RabbitMQ confirmed (on a history exchange: the record, then
// its live copy), so pushers goroutines push at once to keep the rate: the
// pacing loop hands each event over and goes on, as the AMQP publisher
// goes on without waiting for confirms. When every pusher is busy and the
// hand-over queue is full, publish waits, and the wait shows as publish
// lag. A body's send time is taken before the hand-over, so the latency
// the clients measure includes the queue and the confirms.
//
// publish and finish are called from one goroutine, as for every publisher.
type myxiPublisher struct {
	pub      *rabbitmq.Publisher
	url      string
	exchange string
	jobs     chan pushJob
	wg       sync.WaitGroup
	ctx      context.Context // ends the pushes in flight when finish gives up
	cancel   context.CancelFunc
	finished bool

	mu       sync.Mutex // guards failed and firstErr (written by the pushers)
	failed   []int64
	firstErr error

	recorded bool // the exchange had a history when finish looked
}

type pushJob struct {
	seq     int64
	key     string
	payload json.RawMessage
}

// pushTimeout bounds one Push (it has its own bounds on a history
// exchange; the live-only path waits for its confirm as long as ctx lets it).
const pushTimeout = 30 * time.Second

// maxPushers bounds -pushers.
const maxPushers = 1000

func newMyxiPublisher(ctx context.Context, url, exchange string, pushers int, liveCopy bool) (*myxiPublisher, error) {
	if pushers < 1 || pushers > maxPushers {
		return nil, fmt.Errorf("-pushers %d: must be between 1 and %d", pushers, maxPushers)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pub, err := rabbitmq.NewPublisher(cctx, rabbitmq.PublisherConfig{
		URLs:       []string{url},
		Name:       "myxi-bench publisher (amqp-myxi)",
		Logger:     slog.New(slog.DiscardHandler),
		NoLiveCopy: !liveCopy,
	})
	if err != nil {
		return nil, fmt.Errorf("-publish amqp-myxi: %w", err)
	}
	p := &myxiPublisher{pub: pub, url: url, exchange: exchange, jobs: make(chan pushJob, pushers)}
	// Not the caller's ctx: a run that times out still gets its finish.
	p.ctx, p.cancel = context.WithCancel(context.Background())
	for range pushers {
		p.wg.Add(1)
		go p.pusher()
	}
	return p, nil
}

func (p *myxiPublisher) pusher() {
	defer p.wg.Done()
	for j := range p.jobs {
		ctx, cancel := context.WithTimeout(p.ctx, pushTimeout)
		err := p.pub.Push(ctx, p.exchange, j.key, benchEventName, j.payload)
		cancel()
		if err != nil {
			p.mu.Lock()
			p.failed = append(p.failed, j.seq)
			if p.firstErr == nil {
				p.firstErr = err
			}
			p.mu.Unlock()
		}
	}
}

// benchEventName is the event name of the tool's bodies (payload.go).
const benchEventName = "Bench"

// benchPayload returns the payload object of a body made by appendBody,
// which is {"event":"Bench","payload":<object>}: Push takes the event name
// and the payload apart and builds the same body again.
func benchPayload(body []byte) ([]byte, error) {
	const head = `{"event":"` + benchEventName + `","payload":`
	// The shape only: Push checks that the payload is valid JSON.
	if !bytes.HasPrefix(body, []byte(head)) || len(body) < len(head)+3 || body[len(head)] != '{' || !bytes.HasSuffix(body, []byte("}}")) {
		return nil, fmt.Errorf("not a bench body: %.60q", body)
	}
	return body[len(head) : len(body)-1], nil
}

func (p *myxiPublisher) publish(ctx context.Context, seq int64, key string, body []byte) error {
	if p.finished {
		return errors.New("publish after finish")
	}
	payload, err := benchPayload(body)
	if err != nil {
		return err
	}
	// The caller reuses body: the pusher gets its own copy.
	j := pushJob{seq: seq, key: key, payload: bytes.Clone(payload)}
	select {
	case p.jobs <- j:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// finish waits for the pushes handed over; when ctx ends first, it ends
// those still in flight (they count as failed) and waits for them.
func (p *myxiPublisher) finish(ctx context.Context) ([]int64, error) {
	if !p.finished {
		p.finished = true
		close(p.jobs)
	}
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		p.cancel()
		<-done // every Push returns once its context ended
	}
	p.recorded = streamExists(p.url, rabbitmq.StreamName(p.exchange))
	p.mu.Lock()
	defer p.mu.Unlock()
	failed := p.failed
	p.failed = nil
	var err error
	if p.firstErr != nil {
		err = fmt.Errorf("%d pushes failed, first: %w", len(failed), p.firstErr)
	}
	return failed, err
}

// unroutable is unknown: Push does not say whether a server had the key
// bound (live-only publishes are not mandatory); loss still shows in the
// delivery count.
func (p *myxiPublisher) unroutable() int64 { return 0 }

func (p *myxiPublisher) close() {
	if !p.finished {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = p.finish(ctx)
		cancel()
	}
	p.cancel()
	_ = p.pub.Close()
}

// streamExists reports whether RabbitMQ at url has the queue (a history
// stream); false also when it cannot tell.
func streamExists(url, stream string) bool {
	conn, err := amqp.DialConfig(url, amqp.Config{
		Properties: amqp.Table{"connection_name": "myxi-bench history check"},
		Dial:       amqp.DefaultDial(3 * time.Second),
	})
	if err != nil {
		return false
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return false
	}
	defer ch.Close()
	// A 404 closes the channel, which is only this check's.
	_, err = ch.QueueDeclarePassive(stream, true, false, false, false, nil)
	return err == nil
}

// dropHistory deletes the history stream of -exchange on RabbitMQ after a
// run whose spawned server created it from the configuration the tool
// wrote (streams are durable: one left behind would turn the next run's
// plain exchange of the same name into a history exchange for the
// recording publisher). It is called once the server has stopped.
func dropHistory(cfg *config, sp *spawned, logf func(string, ...any)) {
	if sp == nil || !cfg.wantsHistory() || brokerOf(sp) != "rabbitmq" {
		return
	}
	stream := rabbitmq.StreamName(cfg.Exchange)
	conn, err := amqp.DialConfig(cfg.AMQP, amqp.Config{
		Properties: amqp.Table{"connection_name": "myxi-bench history cleanup"},
		Dial:       amqp.DefaultDial(5 * time.Second),
	})
	if err != nil {
		logf("warning: history stream %s not deleted: %v", stream, err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		logf("warning: history stream %s not deleted: %v", stream, err)
		return
	}
	defer ch.Close()
	if _, err := ch.QueueDelete(stream, false, false, false); err != nil {
		logf("warning: history stream %s not deleted: %v", stream, err)
		return
	}
	logf("deleted the history stream %s", stream)
}
