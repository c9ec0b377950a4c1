package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// noisyCores is how much CPU other processes may use during the publish
// phase before the report warns that the figures are disturbed.
const noisyCores = 0.25

// Exit codes.
const (
	exitPass    = 0
	exitFail    = 1 // the run finished and found loss, failed connections, ...
	exitSetup   = 2 // bad flags, no broker, no server, ...
	exitTimeout = 3 // the hard cap hit
)

// target is one server a run measures: the -spawn server (or the one
// already listening), or the floor server.
type target struct {
	name  string // "server" or "floor"
	floor bool
}

// targets is what this invocation measures, in order.
func (c *config) targets() []target {
	switch {
	case c.Floor:
		return []target{{name: "floor", floor: true}}
	case c.FloorCompare:
		return []target{{name: "floor", floor: true}, {name: "server"}}
	}
	return []target{{name: "server"}}
}

// run does one benchmark run (connect, settle, publish, drain, report), or
// with -floor-compare two: against the floor server, then against Myxi.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == floorSubcommand {
		return runFloorServer(args[1:], stderr)
	}
	cfg, err := parseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitPass
	}
	if err != nil {
		fmt.Fprintln(stderr, "myxi-bench:", err)
		return exitSetup
	}
	if cfg.Median != "" {
		return runMedian(cfg.Median, stdout, stderr)
	}
	t0 := time.Now()
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "[%6.1fs] "+format+"\n", append([]any{time.Since(t0).Seconds()}, a...)...)
	}

	soft, hard, err := raiseNoFile()
	if err != nil {
		logf("warning: %v", err)
	}
	logf("open files: soft limit %d (hard %d)", soft, hard)
	if need := cfg.Conns + cfg.floodSockets() + cfg.stormSockets() + fdReserve; uint64(need) > soft {
		fmt.Fprintf(stderr, "myxi-bench: -conns %d needs about %d open files, but this process may open %d (hard limit %d): lower -conns\n",
			cfg.Conns, need, soft, hard)
		return exitSetup
	}
	// The clients make little garbage; collect less often to leave the CPU to the server.
	debug.SetGCPercent(400)

	targets := cfg.targets()
	var current atomic.Pointer[spawned]
	// The hard cap: whatever hangs, the process ends shortly after -timeout
	// per target.
	watchdog := time.AfterFunc(time.Duration(len(targets))*cfg.Timeout+20*time.Second, func() {
		fmt.Fprintf(stderr, "myxi-bench: hard timeout (%d × %v + 20 s) reached, exiting\n", len(targets), cfg.Timeout)
		if sp := current.Load(); sp != nil {
			sp.stop(time.Second)
		}
		fmt.Fprintln(stdout, `RESULT {"pass":false,"failures":["hard timeout"]}`)
		os.Exit(exitTimeout)
	})
	defer watchdog.Stop()

	if cfg.Storm {
		r, err := runStorm(cfg, &current, logf)
		if err != nil {
			fmt.Fprintf(stderr, "myxi-bench: storm: %v\n", err)
			return exitSetup
		}
		writeStormReport(stdout, r)
		fmt.Fprintln(stdout, resultLine(r))
		if r.Pass {
			return exitPass
		}
		return exitFail
	}

	var results []*result
	for _, tg := range targets {
		if len(targets) > 1 {
			logf("=== run against the %s", tg.name)
		}
		r, publishing, err := runTarget(cfg, tg, &current, logf)
		if err != nil {
			fmt.Fprintf(stderr, "myxi-bench: %s: %v\n", tg.name, err)
			return exitSetup
		}
		writeReport(stdout, r, publishing)
		results = append(results, r)
	}
	final := results[0]
	if cfg.FloorCompare {
		final = compareFloor(results[0], results[1])
		writeCompare(stdout, final)
	}
	fmt.Fprintln(stdout, resultLine(final))
	if final.Pass {
		return exitPass
	}
	return exitFail
}

// runTarget measures one server. An error is a setup error: nothing was
// measured.
func runTarget(cfg *config, tg target, current *atomic.Pointer[spawned], logf func(string, ...any)) (*result, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()

	var env []string
	if cfg.HistoryExchange && !tg.floor {
		e, cleanup, err := historyEnv(cfg, logf)
		if err != nil {
			return nil, false, err
		}
		defer cleanup()
		env = e
	}
	pid, sp, err := serverUp(ctx, cfg, tg, current, logf, env)
	if !tg.floor {
		defer dropHistory(cfg, sp, logf) // after the server stopped
	}
	defer stopSpawned(sp, current)
	if err != nil {
		return nil, false, err
	}
	r := &result{
		Scenario: cfg.Scenario, Target: tg.name, URL: cfg.wsURL(), Exchange: cfg.Exchange,
		Conns: cfg.Conns, Keys: cfg.Keys, Rate: cfg.Rate, DurationS: secs(cfg.Duration),
		Batch: cfg.Batch, PayloadBytes: cfg.PayloadBytes, Confirm: cfg.Confirm,
		SourceIPs: cfg.SourceIPs, ConnectLimit: cfg.ConnectRate, SettleS: secs(cfg.Settle),
		ServerPID: pid, Publish: cfg.Publish, HistoryExchange: cfg.HistoryExchange && !tg.floor,
	}
	if pid > 0 {
		r.ServerName = processName(pid)
		logf("sampling server pid %d (%s)", pid, r.ServerName)
	}

	brokerPID := 0
	if cfg.totalEvents() > 0 && cfg.publishesAMQP() {
		if bu, err := url.Parse(cfg.AMQP); err == nil {
			bport := 5672
			if p := bu.Port(); p != "" {
				fmt.Sscan(p, &bport)
			}
			if brokerPID, err = findListenerPID(bport); err != nil {
				logf("RabbitMQ's CPU not sampled: %v", err)
			}
		}
	}
	r.BrokerPID = brokerPID
	sampleNow := func() sample { return takeSample(pid, brokerPID) }

	before := sampleNow()
	r.RSSBeforeKB = before.rssKB

	total := cfg.totalEvents()
	var pub publisher
	if total > 0 {
		if pub, err = newPublisher(ctx, cfg); err != nil {
			return nil, false, err
		}
		defer pub.close()
	}

	// Connect and subscribe every client.
	hist := &histogram{}
	fl := newFleet(cfg, hist)
	logf("connecting %d clients to %s", cfg.Conns, cfg.wsURL())
	var stopProfile func()
	if cfg.CPUProfile != "" && total == 0 { // nothing to publish: profile the connect phase
		if stopProfile, err = startCPUProfile(cfg.CPUProfile); err != nil {
			logf("warning: %v", err)
		}
	}
	c0 := sampleNow()
	cr := fl.open(ctx, cfg.ConnectRate, func(ok, failed, launched int) {
		logf("  subscribed %d, failed %d, launched %d of %d", ok, failed, launched, cfg.Conns)
	})
	c1 := sampleNow()
	if stopProfile != nil {
		stopProfile()
	}
	ccpu := cpuBetween(c0, c1)
	r.Connected, r.ConnectFailed, r.ConnectReasons, r.NoWelcome = cr.OK, cr.Failed+cfg.Conns-cr.Launched, cr.Reasons, cr.NoWelcome
	r.ConnectS = secs(cr.Elapsed)
	if cr.Elapsed > 0 {
		r.ConnectPerS = round3(float64(cr.OK) / cr.Elapsed.Seconds())
	}
	r.ConnectServerCPUS, r.ConnectToolCPUS = round3(ccpu.ServerCPU), round3(ccpu.ToolCPU)
	logf("connect phase: %d subscribed, %d failed in %.2f s", cr.OK, r.ConnectFailed, cr.Elapsed.Seconds())

	if cfg.Settle > 0 && ctx.Err() == nil {
		logf("settling %v", cfg.Settle)
		sleepCtx(ctx, cfg.Settle)
	}
	after := sampleNow()
	r.RSSAfterKB = after.rssKB
	if cr.OK > 0 && after.serverOK && before.serverOK {
		r.RSSPerConnKB = round3(float64(after.rssKB-before.rssKB) / float64(cr.OK))
	}

	// The flood starts with the publish phase and may outlast it.
	var fd *flood
	if cfg.Flood && ctx.Err() == nil {
		fd, err = openFlood(ctx, floodConfig{url: cfg.URL, dialer: fl.sh.dialers[0], flooders: cfg.Flooders,
			duration: cfg.FloodDuration, interval: cfg.FloodInterval, maxFrames: cfg.FloodMaxFrames, hsTimeout: cfg.HandshakeTimeout})
		if err != nil {
			r.fail("flood: %v", err)
		} else {
			logf("flooding with %d socket(s) for %v; a healthy socket pings every %v", cfg.Flooders, cfg.FloodDuration, cfg.FloodInterval)
			fd.run()
		}
	}

	// Publish, then wait for what is still in flight.
	publishing := total > 0 && cr.OK > 0 && ctx.Err() == nil
	var pr publishResult
	if publishing {
		grace := max(2*time.Second, cfg.Duration/10)
		logf("publishing %d events at %g/s over %d keys", total, cfg.Rate, cfg.Keys)
		if cfg.CPUProfile != "" {
			if stop, err := startCPUProfile(cfg.CPUProfile); err != nil {
				logf("warning: %v", err)
			} else {
				defer stop()
			}
		}
		p0 := sampleNow()
		pr = runPublish(ctx, pub, cfg.Rate, total, cfg.Keys, cfg.PayloadBytes, p0.at.Add(cfg.Duration+grace))
		drainCtx, drainCancel := context.WithDeadline(ctx, pr.End.Add(cfg.Drain))
		settlePublish(drainCtx, pub, &pr, cfg.Keys)
		if mp, ok := pub.(*myxiPublisher); ok {
			r.PublishRecorded = mp.recorded
			logf("the events were pushed with Myxi's publisher; %q has a history: %v", cfg.Exchange, mp.recorded)
		}
		expected := int64(0)
		for _, c := range fl.clients {
			if s := c.getState(); s == stLive || s == stEnded {
				expected += pr.OKPerKey[c.keyIdx]
			}
		}
		logf("published %d (errors %d); waiting up to %v for %d deliveries", pr.Sent, pr.Errors, cfg.Drain, expected)
		waitDeliveries(drainCtx, hist, uint64(expected), func(got uint64) {
			logf("  received %d of %d", got, expected)
		})
		drainCancel()
		p1 := sampleNow()
		pc := cpuBetween(p0, p1)
		r.PhaseS = secs(pc.Wall)
		r.ServerCPUS, r.ServerCores = round3(pc.ServerCPU), round3(pc.cores(pc.ServerCPU))
		r.ToolCPUS, r.ToolCores = round3(pc.ToolCPU), round3(pc.cores(pc.ToolCPU))
		r.BrokerCPUS, r.BrokerCores = round3(pc.BrokerCPU), round3(pc.cores(pc.BrokerCPU))
		r.MachineCores, r.MachineCoresAll = round3(pc.cores(pc.MachineCPU)), runtime.NumCPU()
		if pc.ServerOK && pc.MachineOK {
			// /proc/stat counts in ticks, the processes exactly: clamp the noise
			r.OtherCores = round3(max(0, pc.cores(pc.MachineCPU-pc.ServerCPU-pc.ToolCPU-pc.BrokerCPU)))
			if r.OtherCores > noisyCores {
				r.warn("other processes used %.2f cores during the publish phase: the figures are noisy, run again on a quiet machine", r.OtherCores)
			}
		}
		if !pc.ServerOK && pid > 0 {
			r.fail("server process could not be sampled after publishing (%s)", p1.serverErr)
		}
	}
	if fd != nil {
		logf("waiting for the flood to end")
		r.Flood = fd.wait()
		checkFlood(r)
	}
	final := sampleNow()
	r.RSSAfterPublishKB, r.RSSPeakKB = final.rssKB, final.hwmKB
	if st, err := readProcFile("/proc/self/status"); err == nil {
		r.ToolPeakRSSKB, _ = statusKB(st, "VmHWM")
	}

	// Close everything, then count.
	logf("closing %d clients", cfg.Conns)
	fl.closeAll()
	if !fl.wait(15 * time.Second) {
		r.warn("some client goroutines did not end within 15 s of closing")
	}
	aggregate(r, fl, &pr, publishing, hist)
	if sp != nil && !sp.alive() {
		r.fail("the spawned server exited during the run (see %s)", sp.logPath)
	}
	if ctx.Err() != nil {
		r.fail("-timeout %v reached before the run finished", cfg.Timeout)
	}
	r.Pass = len(r.Failures) == 0
	return r, publishing, nil
}

// serverUp spawns the server of tg (the floor, the -spawn command with
// env added to its environment) or finds the one listening, and returns
// the pid to sample (0: none). The spawned process comes back even with an
// error, for stopSpawned.
func serverUp(ctx context.Context, cfg *config, tg target, current *atomic.Pointer[spawned], logf func(string, ...any), env []string) (int, *spawned, error) {
	u, _ := url.Parse(cfg.URL)
	port, _ := urlPort(u)
	pid := 0
	var sp *spawned
	var err error
	spawn := func(what string, start func() (*spawned, error)) error {
		if portBusy(port) {
			return fmt.Errorf("port %d is already in use: stop that server or run without -spawn/-floor", port)
		}
		if sp, err = start(); err != nil {
			return err
		}
		current.Store(sp)
		logf("spawned %s (log: %s), waiting for port %d", what, sp.logPath, port)
		if pid, err = sp.waitReady(ctx, port, cfg.SpawnWait); err != nil {
			return err
		}
		return nil
	}
	switch {
	case tg.floor:
		logPath := cfg.SpawnLog
		if logPath != "" {
			logPath += ".floor"
		}
		if err := spawn("the floor server", func() (*spawned, error) { return spawnFloor(cfg.floorConfig(), port, logPath) }); err != nil {
			return 0, sp, err
		}
	case cfg.Spawn != "":
		if err := spawn(fmt.Sprintf("%q", cfg.Spawn), func() (*spawned, error) { return spawnServer(cfg.Spawn, cfg.AMQP, port, cfg.SpawnLog, env) }); err != nil {
			return 0, sp, err
		}
	case cfg.PID > 0:
		pid = cfg.PID
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return 0, nil, fmt.Errorf("-pid %d: no such process", pid)
		}
	case cfg.PID == 0:
		if pid, err = findListenerPID(port); err != nil {
			logf("warning: server not sampled: %v (give -pid or -spawn)", err)
			pid = 0
		}
	}
	return pid, sp, nil
}

// stopSpawned stops what serverUp spawned (nothing when sp is nil).
func stopSpawned(sp *spawned, current *atomic.Pointer[spawned]) {
	if sp != nil {
		sp.stop(10 * time.Second)
		current.CompareAndSwap(sp, nil)
	}
}

// aggregate adds up the clients' counters into r and sets the failures.
func aggregate(r *result, fl *fleet, pr *publishResult, publishing bool, hist *histogram) {
	drops := map[string]int{}
	var lastRecv int64
	for _, c := range fl.clients {
		select {
		case <-c.done:
		default:
			continue // still running (see the warning): its counters are not ours to read
		}
		st := c.getState()
		if st != stLive && st != stEnded {
			continue
		}
		if c.endReason != "" {
			r.Dropped++
			drops[c.endReason]++
		}
		r.Received += c.distinct
		r.Dups += c.dups
		r.WrongKey += c.wrongKey
		r.OutOfRange += c.outOfRange
		r.Unparsable += c.unparsable
		r.ErrorEvents += c.errorEvents
		r.Frames += c.frames
		if r.FirstErrorEvent == "" {
			r.FirstErrorEvent = c.firstError
		}
		lastRecv = max(lastRecv, c.lastRecvNs)
		if publishing {
			exp := pr.OKPerKey[c.keyIdx]
			r.Expected += exp
			r.Lost += max(0, exp-c.distinct)
		}
	}
	r.DropReasons = topReasons(drops, 5)

	if publishing {
		r.Published = pr.Sent
		r.PublishErrors, r.PublishFirstErr, r.Nacked, r.Unroutable = pr.Errors, pr.FirstError, pr.Nacked, pr.Unroutable
		r.PublishRate = round3(pr.Rate)
		r.PublishMaxLagMs = round3(float64(pr.MaxLag) / 1e6)
		if r.Expected > 0 {
			r.LossPct = round3(100 * float64(r.Lost) / float64(r.Expected))
		}
		if lastRecv > 0 {
			window := time.Duration(lastRecv - pr.Start.UnixNano())
			r.WindowS = secs(window)
			r.DrainS = secs(window - pr.LastSend)
			if window > 0 {
				r.DeliveriesPerS = round3(float64(r.Received) / window.Seconds())
			}
		}
		if r.Frames > 0 {
			r.EventsPerFrame = round3(float64(r.Received+r.Dups) / float64(r.Frames))
		}
		ls := hist.summary()
		r.LatP50Ms, r.LatP90Ms, r.LatP99Ms = ms(ls.P50), ms(ls.P90), ms(ls.P99)
		r.LatP999Ms, r.LatMaxMs, r.LatMeanMs = ms(ls.P999), ms(ls.Max), ms(ls.Mean)
		if r.ServerCPUS > 0 {
			r.DeliveriesPerCPU = round3(float64(r.Received) / r.ServerCPUS)
		}
		r.ServerCPUUSPerDelivery = round3(cpuPerDeliveryUS(r.ServerCPUS, r.Received))
	}

	if r.ConnectFailed > 0 {
		r.fail("%d of %d connections failed", r.ConnectFailed, r.Conns)
	}
	if r.Dropped > 0 {
		r.fail("%d connections were closed during the run", r.Dropped)
	}
	if publishing {
		if pr.Incomplete {
			r.fail("published only %d of %d events in time", pr.Sent, pr.Planned)
		}
		if r.PublishErrors > 0 {
			r.fail("%d publish errors", r.PublishErrors)
		}
		if r.Nacked > 0 {
			r.fail("%d events nacked or unconfirmed by the broker", r.Nacked)
		}
		if r.Lost > 0 {
			r.fail("lost %d of %d deliveries", r.Lost, r.Expected)
		}
		if r.Expected == 0 {
			r.fail("no delivery was expected: nothing was measured")
		}
	}
	if r.Dups > 0 {
		r.fail("%d duplicate deliveries", r.Dups)
	}
	if r.WrongKey > 0 {
		r.fail("%d events reached a client of another key", r.WrongKey)
	}
	if r.Unparsable > 0 || r.OutOfRange > 0 {
		r.fail("%d Bench events without t/seq, %d with a seq out of range", r.Unparsable, r.OutOfRange)
	}
	if r.NoWelcome > 0 {
		r.warn("%d clients got another event before Welcome", r.NoWelcome)
	}
	if r.ErrorEvents > 0 {
		r.warn("the server sent %d Error events to subscribed clients", r.ErrorEvents)
	}
	if r.Unroutable > 0 {
		r.warn("the broker returned %d events as unroutable (no queue bound to their key)", r.Unroutable)
	}
}

// waitDeliveries waits until the histogram holds want deliveries or ctx ends,
// polling every 10 ms and calling progress about every 2 s.
func waitDeliveries(ctx context.Context, hist *histogram, want uint64, progress func(uint64)) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	lastLog := time.Now()
	for hist.count() < want {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if now.Sub(lastLog) >= 2*time.Second {
				lastLog = now
				progress(hist.count())
			}
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
