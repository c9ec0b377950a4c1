package myxi

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// fanoutChunk is the fewest subscribers worth handing to another
// goroutine: below it, waking a worker costs more than the writes.
const fanoutChunk = 512

// fanoutJob is one chunk of one event's subscribers, for a worker.
type fanoutJob struct {
	f     *frame
	conns []*conn
	batch *fanoutBatch
}

// fanoutBatch is what the delivering goroutine waits for: every chunk of
// its event done, so that the next event of any connection never
// overtakes this one.
type fanoutBatch struct {
	wg      sync.WaitGroup
	written atomic.Int64
}

// startFanout starts GOMAXPROCS-1 fan-out workers, so that an event with
// many subscribers is written from every core, each worker writing its
// chunk inline (transport.deliver). They end with the server's context.
func (s *Server) startFanout() {
	s.fanoutJobs = make(chan fanoutJob) // unbuffered: a send succeeds only to an idle worker
	for range runtime.GOMAXPROCS(0) - 1 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				select {
				case <-s.ctx.Done():
					return
				case j := <-s.fanoutJobs:
					j.batch.written.Add(int64(deliverAll(j.f, j.conns)))
					j.batch.wg.Done()
				}
			}
		}()
	}
}

// backlogGap: a delivery that starts within this long of the previous
// one's end found the next broker message already waiting.
const backlogGap = 100 * time.Microsecond

// backlogStreak back-to-back deliveries in a row mean the node is behind.
// One alone is a hiccup (a fan-out slowed by a busy machine) that inline
// writes catch up with by themselves: queueing it instead wakes a writer
// goroutine per connection, which costs more than the inline writes
// (S1 at 10 events/s: 7 µs per delivery became 10 µs, and p99 0.6 s,
// once one late event had tipped the node into queueing).
const backlogStreak = 3

// fanout hands f to conns and returns how many were written at once.
//
// While the node keeps up, each connection gets f with an inline write
// (transport.deliver), a long list split between the calling goroutine
// and idle workers. When deliveries keep coming back to back (a backlog), it
// only queues f to each connection instead: their writer goroutines then
// write on every core and put what has piled up for a client in one
// write (one frame for ?batch=1 clients), which inline writes never do.
func (s *Server) fanout(f *frame, conns []*conn) int {
	defer func() { s.lastFanoutEnd.Store(time.Now().UnixNano()) }()
	if s.behind(f.received) {
		for _, c := range conns {
			_ = c.enqueue(f)
		}
		return 0
	}
	parts := min(runtime.GOMAXPROCS(0), len(conns)/fanoutChunk)
	if parts < 2 || s.fanoutJobs == nil {
		return deliverAll(f, conns)
	}
	size := (len(conns) + parts - 1) / parts
	var batch fanoutBatch
	for i := size; i < len(conns); i += size {
		chunk := conns[i:min(i+size, len(conns))]
		batch.wg.Add(1)
		select {
		case s.fanoutJobs <- fanoutJob{f: f, conns: chunk, batch: &batch}:
		default: // every worker is busy (or gone): this goroutine does it
			batch.written.Add(int64(deliverAll(f, chunk)))
			batch.wg.Done()
		}
	}
	written := deliverAll(f, conns[:size])
	batch.wg.Wait()
	return written + int(batch.written.Load())
}

func deliverAll(f *frame, conns []*conn) int {
	written := 0
	for _, c := range conns {
		if c.deliver(f) {
			written++
		}
	}
	return written
}

// behind reports whether a delivery that started at start is the
// backlogStreak-th or later in a row to follow the previous fan-out too
// closely (see backlogGap).
func (s *Server) behind(start time.Time) bool {
	last := s.lastFanoutEnd.Load()
	if last == 0 || start.UnixNano()-last >= int64(backlogGap) {
		s.backToBack.Store(0)
		return false
	}
	return s.backToBack.Add(1) >= backlogStreak
}
