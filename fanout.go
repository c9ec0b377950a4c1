package myxi

import (
	"runtime"
	"sync"
	"sync/atomic"
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

// fanout hands f to conns, splitting a long list between the calling
// goroutine and idle workers, and returns how many were written at once.
func (s *Server) fanout(f *frame, conns []*conn) int {
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
