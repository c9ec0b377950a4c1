// Package runpool runs a function on one of a few long-lived goroutines
// and waits for it to return.
//
// A session's reader goroutine spends nearly all its life blocked in a
// read with a shallow stack, and now and then runs an action (JSON
// decoding, an authorizer, application code) that needs a deep one. Run
// on the reader, every action grows the reader's stack, copying it at
// each doubling, and the grown stack then stays with the idle session
// until the garbage collector halves it, one halving per cycle. With
// 19,500 sessions that connect and subscribe, the copying took a fifth of
// the node's CPU, and the grown stacks over a quarter of its memory once
// the sessions were idle. Run through a Pool, the deep stacks belong to
// the few goroutines that run actions at any one time.
package runpool

import (
	"context"
	"sync"
	"time"
)

// Pool runs functions on reusable goroutines. Its zero value is not
// usable: create one with New.
type Pool struct {
	ctx  context.Context
	idle time.Duration
	jobs chan *job // unbuffered: a send succeeds only when a worker waits
	wg   sync.WaitGroup
}

type job struct {
	fn       func()
	done     chan struct{}
	panicked any
}

// New returns a Pool whose goroutines end after idle without work, or
// when ctx ends (each after the function it is running returns).
func New(ctx context.Context, idle time.Duration) *Pool {
	return &Pool{ctx: ctx, idle: idle, jobs: make(chan *job)}
}

// Run runs fn on a pooled goroutine, or on a new one when none is free,
// and returns when fn returns. A panic in fn is raised again by Run, on
// the caller's goroutine, as though fn had run there. Run may be called
// concurrently, and after the Pool's context has ended (fn then runs on a
// goroutine that ends with it).
func (p *Pool) Run(fn func()) {
	j := &job{fn: fn, done: make(chan struct{})}
	select {
	case p.jobs <- j:
	default:
		p.wg.Add(1)
		go p.work(j)
	}
	<-j.done
	if j.panicked != nil {
		panic(j.panicked)
	}
}

// Wait waits until every goroutine of the Pool has ended: call it after
// the Pool's context has ended and the last Run has returned.
func (p *Pool) Wait() { p.wg.Wait() }

// work runs j, then every job handed to it until it has waited idle
// without one or the Pool's context ends.
func (p *Pool) work(j *job) {
	defer p.wg.Done()
	timer := time.NewTimer(p.idle)
	defer timer.Stop()
	for {
		j.run()
		timer.Reset(p.idle)
		select {
		case j = <-p.jobs:
		case <-timer.C:
			return
		case <-p.ctx.Done():
			return
		}
	}
}

func (j *job) run() {
	defer close(j.done)
	defer func() { j.panicked = recover() }()
	j.fn()
}
