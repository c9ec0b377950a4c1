package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/myxi/myxi/internal/runpool"
)

// The fleet opens all clients (paced and bounded), waits until each is
// subscribed or has failed, and closes them at the end.

// ipBindAddressNoPort (IP_BIND_ADDRESS_NO_PORT, Linux 4.2+) lets a socket
// bound to a source address pick its port at connect time, so every source
// address has the whole ephemeral range towards the server.
const ipBindAddressNoPort = 24

type fleet struct {
	sh      *shared
	clients []*client
	wg      sync.WaitGroup
}

// connectResult is what the report says of the connect phase.
type connectResult struct {
	Launched, OK, Failed int
	Elapsed              time.Duration // first dial to last Subscribed (or failure)
	Reasons              []reasonCount // why clients failed, most common first
	NoWelcome            int
	TimedOut             bool // the run's deadline came first
}

type reasonCount struct {
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

type writePool struct{ p sync.Pool }

func (w *writePool) Get() any  { return w.p.Get() }
func (w *writePool) Put(v any) { w.p.Put(v) }

func newDialers(cfg *config) []*websocket.Dialer {
	wp := &writePool{} // write buffers only while a write is in progress
	mk := func(local net.IP) *websocket.Dialer {
		// No TCP keep-alive probes: four setsockopt(2) calls per client
		// that a load tool sharing the server's cores cannot spare.
		nd := &net.Dialer{Timeout: cfg.HandshakeTimeout, KeepAlive: -1}
		if local != nil {
			nd.LocalAddr = &net.TCPAddr{IP: local}
			nd.Control = func(network, address string, c syscall.RawConn) error {
				var serr error
				err := c.Control(func(fd uintptr) {
					serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
				})
				if err != nil {
					return err
				}
				return serr
			}
		}
		return &websocket.Dialer{
			NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return nd.DialContext(ctx, network, dialTarget(addr))
			},
			HandshakeTimeout: cfg.HandshakeTimeout,
			ReadBufferSize:   cfg.ReadBuffer,
			WriteBufferSize:  512, // clients only write one Subscribe
			WriteBufferPool:  wp,
		}
	}
	if cfg.SourceIPs <= 1 {
		return []*websocket.Dialer{mk(nil)}
	}
	var ds []*websocket.Dialer
	for _, ip := range sourceAddrs(cfg.SourceIPs) {
		ds = append(ds, mk(ip))
	}
	return ds
}

func newFleet(cfg *config, hist *histogram) *fleet {
	return newFleetOf(cfg, hist, fleetSpec{conns: cfg.Conns, keys: cfg.Keys,
		perKey: maxPerKey(cfg.totalEvents(), cfg.Keys), name: keyName})
}

// fleetSpec says which clients a fleet opens: conns clients over keys
// routing keys named by name, each getting at most perKey events.
type fleetSpec struct {
	conns, keys int
	perKey      int64
	name        func(int) string
	samples     bool // keep every delivery's send time and latency
}

func newFleetOf(cfg *config, hist *histogram, spec fleetSpec) *fleet {
	sh := &shared{
		url:        cfg.wsURL(),
		dialers:    newDialers(cfg),
		keys:       spec.keys,
		perKey:     spec.perKey,
		exchange:   cfg.Exchange,
		hsTimeout:  cfg.HandshakeTimeout,
		hist:       hist,
		samples:    spec.samples,
		handshakes: make(chan handshakeResult, spec.conns),
		sem:        make(chan struct{}, cfg.DialConcurrency),
	}
	sh.bufPool.New = func() any { b := make([]byte, 0, 4096); return &b }
	f := &fleet{sh: sh, clients: make([]*client, spec.conns)}
	for i := range f.clients {
		f.clients[i] = newNamedClient(i, spec.keys, cfg.Exchange, spec.name)
	}
	return f
}

// open starts every client, at most connectRate per second (0 = no limit)
// and sh.sem handshakes at once, and waits for every handshake to end.
// progress is called about every 2 s.
func (f *fleet) open(ctx context.Context, connectRate float64, progress func(ok, failed, launched int)) connectResult {
	setupCtx, endSetup := context.WithCancel(ctx)
	f.sh.setup = runpool.New(setupCtx, time.Second)
	defer func() {
		// Every handshake has reported: the pool's goroutines are done,
		// or about to return from their last one.
		endSetup()
		f.sh.setup.Wait()
	}()
	var res connectResult
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	ok, failed := 0, 0
	var last time.Time
	collect := func(r handshakeResult) {
		if r.ok {
			ok++
		} else {
			failed++
		}
		last = r.at
	}
launch:
	for i, c := range f.clients {
		if connectRate > 0 {
			if wait := time.Until(start.Add(dueAt(int64(i), connectRate))); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-ctx.Done():
					break launch
				}
			}
		}
		select {
		case f.sh.sem <- struct{}{}:
		case <-ctx.Done():
			break launch
		}
		res.Launched++
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			c.run(ctx, f.sh)
		}()
		// take results as they come so that progress stays current
		for drained := false; !drained; {
			select {
			case r := <-f.sh.handshakes:
				collect(r)
			default:
				drained = true
			}
		}
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for ok+failed < res.Launched {
		select {
		case r := <-f.sh.handshakes:
			collect(r)
		case <-tick.C:
			if progress != nil {
				progress(ok, failed, res.Launched)
			}
		case <-ctx.Done():
			res.TimedOut = true
			// each handshake has its own timeout; the clients still end
			f.closeAll()
			for ok+failed < res.Launched {
				collect(<-f.sh.handshakes)
			}
		}
	}
	res.OK, res.Failed = ok, failed
	if !last.IsZero() {
		res.Elapsed = last.Sub(start)
	}
	reasons := map[string]int{}
	for _, c := range f.clients[:res.Launched] {
		switch c.getState() {
		case stFailed:
			<-c.done // failReason is written before done closes
			reasons[c.failReason]++
		}
		if c.noWelcome {
			res.NoWelcome++
		}
	}
	res.Reasons = topReasons(reasons, 5)
	return res
}

// closeAll closes every connection (a normal close frame, then the socket),
// 64 at a time.
func (f *fleet) closeAll() { closeEach(f.clients) }

// closeEach closes every client's connection, 64 at a time, and returns
// once all are closed.
func closeEach[C interface{ closeConn() }](clients []C) {
	work := make(chan C)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				c.closeConn()
			}
		}()
	}
	for _, c := range clients {
		work <- c
	}
	close(work)
	wg.Wait()
}

// wait waits until every client goroutine has ended, at most d.
func (f *fleet) wait(d time.Duration) bool {
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func topReasons(m map[string]int, n int) []reasonCount {
	var out []reasonCount
	for r, c := range m {
		out = append(out, reasonCount{r, c})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Reason < out[j].Reason
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

func describeDialError(err error, resp *http.Response) string {
	if resp != nil {
		body := ""
		if resp.Body != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
			resp.Body.Close()
			body = string(b)
		}
		return fmt.Sprintf("HTTP %d %s", resp.StatusCode, body)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	if errors.Is(err, syscall.EADDRNOTAVAIL) {
		return "no free source port (EADDRNOTAVAIL): raise -source-ips"
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return "connection refused (is the server running?)"
	}
	if errors.Is(err, syscall.EMFILE) {
		return "too many open files (EMFILE)"
	}
	return err.Error()
}
