package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
)

// The reconnect storm (issue 14, -storm / -scenario storm):
//  1. -live-conns clients subscribe to live0..live{L-1} and a live stream of
//     -live-rate events/s to those keys starts; it runs until the storm is over.
//  2. -conns storm clients subscribe to k0..k{C-1} of the same (history)
//     exchange and note their positions (Subscribed's epoch and offset).
//  3. They all close; -rate × -duration events are pushed to their keys.
//  4. They all reconnect at once, each subscribing with since its position;
//     each must get exactly the events of its key pushed while it was away,
//     in order, each once, all with o <= O2 (checkRecovery).
// Reported: the time from the reconnect to the last recovery, the live
// clients' latency while it lasts, and the server's (and RabbitMQ's) CPU.

type stormResult struct {
	History      string  `json:"history"`
	ReplayLimit  int     `json:"replay_limit"` // 0: the server's default
	Broker       string  `json:"broker"`       // embedded, rabbitmq or unknown
	EventsPerKey int64   `json:"events_per_key"`
	LiveConns    int     `json:"live_conns"`
	LiveKeys     int     `json:"live_keys"`
	LiveRate     float64 `json:"live_rate"`

	LiveSubscribed   int     `json:"live_subscribed"`
	LiveFailed       int     `json:"live_failed"`
	PositionsMissing int     `json:"positions_missing"` // Subscribed without epoch/offset
	PushS            float64 `json:"push_s"`
	PushServerCPUS   float64 `json:"push_server_cpu_s"`

	Reconnected     int           `json:"reconnected"`
	ReconnectFailed int           `json:"reconnect_failed"`
	ReconnectWhy    []reasonCount `json:"reconnect_fail_reasons,omitempty"`
	RecoveredTrue   int           `json:"recovered_true"`
	RecoveredFalse  int           `json:"recovered_false"`
	ClientsExact    int           `json:"clients_exact"` // recovered exactly their missed events
	ClientsBad      int           `json:"clients_bad"`
	FirstProblem    string        `json:"first_problem,omitempty"`
	LastSubscribedS float64       `json:"last_subscribed_s"`
	RecoverS        float64       `json:"recover_s"` // reconnect start -> last client recovered
	RecoverP50S     float64       `json:"recover_p50_s"`
	RecoverP99S     float64       `json:"recover_p99_s"`
	RecoverTargetS  float64       `json:"recover_target_s"`
	RecoverMet      bool          `json:"recover_target_met"`
	Dropped         int           `json:"dropped"` // reconnected sessions the server closed
	DropReasons     []reasonCount `json:"drop_reasons,omitempty"`

	ExpectedEvents int64 `json:"expected_events"`
	Replayed       int64 `json:"replayed"`
	Missing        int64 `json:"missing"`
	Dups           int64 `json:"dups"`
	Misordered     int64 `json:"misordered"`
	NotReplayed    int64 `json:"not_replayed"`
	Unexpected     int64 `json:"unexpected"`
	NoPosition     int64 `json:"no_position"`
	BelowSince     int64 `json:"below_since"`

	LivePublished    int64   `json:"live_published"`
	LivePublishErrs  int64   `json:"live_publish_errors"`
	LiveExpected     int64   `json:"live_expected"`
	LiveReceived     int64   `json:"live_received"`
	LiveLost         int64   `json:"live_lost"`
	LiveDups         int64   `json:"live_dups"`
	LiveStormN       int     `json:"live_storm_deliveries"`
	LiveStormP50Ms   float64 `json:"live_storm_p50_ms"`
	LiveStormP99Ms   float64 `json:"live_storm_p99_ms"`
	LiveStormMaxMs   float64 `json:"live_storm_max_ms"`
	LiveP99TargetMs  float64 `json:"live_p99_target_ms"`
	LiveP99Met       bool    `json:"live_p99_target_met"`
	LiveAllP99Ms     float64 `json:"live_all_p99_ms"`
	StormServerCPUS  float64 `json:"storm_server_cpu_s"`
	StormServerCores float64 `json:"storm_server_cores"`
	StormBrokerCPUS  float64 `json:"storm_broker_cpu_s"`
	StormBrokerCores float64 `json:"storm_broker_cores"`
	StormPhaseS      float64 `json:"storm_phase_s"`

	// The live publisher's calls during the storm: the latency above
	// includes them (a live event's clock starts before its publish).
	LivePublishStormP99Ms float64 `json:"live_publish_storm_p99_ms"`
	LivePublishStormMaxMs float64 `json:"live_publish_storm_max_ms"`

	liveOKPerKey []int64 // live events per key that reached the server
	liveFirstErr string
	liveCalls    []latSample
}

// liveOK is how many live events reached the server for live key k.
func (st *stormResult) liveOK(k int) int64 {
	if k < len(st.liveOKPerKey) {
		return st.liveOKPerKey[k]
	}
	return 0
}

// liveStream publishes to the live keys at a steady rate until halted
// (or max events), event seq to live key seq mod keys.
type liveStream struct {
	pub          publisher
	rate         float64
	keys         int
	payloadBytes int
	max          int64
	stop, done   chan struct{}

	// read after done
	sent, errors int64
	firstErr     string
	okPerKey     []int64
	calls        []latSample // each publish call: when, and how long it took
}

func startLiveStream(ctx context.Context, pub publisher, rate float64, keys, payloadBytes int, max int64) *liveStream {
	l := &liveStream{pub: pub, rate: rate, keys: keys, payloadBytes: payloadBytes, max: max,
		stop: make(chan struct{}), done: make(chan struct{}), okPerKey: make([]int64, keys)}
	go l.run(ctx)
	return l
}

func (l *liveStream) run(ctx context.Context) {
	defer close(l.done)
	names := make([]string, l.keys)
	for i := range names {
		names[i] = liveKeyName(i)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	body := make([]byte, 0, 128+l.payloadBytes)
	start := time.Now()
	for l.sent < l.max {
		for due := dueCount(time.Since(start), l.rate, l.max); l.sent < due; l.sent++ {
			k := int(l.sent % int64(l.keys))
			t := time.Now()
			body = appendBody(body[:0], t.UnixNano(), l.sent, l.payloadBytes)
			err := l.pub.publish(ctx, l.sent, names[k], body)
			l.calls = append(l.calls, latSample{sentNs: t.UnixNano(), latNs: int64(time.Since(t))})
			if err != nil {
				l.errors++
				if l.firstErr == "" {
					l.firstErr = err.Error()
				}
			} else {
				l.okPerKey[k]++
			}
		}
		if l.sent >= l.max {
			return
		}
		timer.Reset(max(0, time.Until(start.Add(dueAt(l.sent, l.rate)))))
		select {
		case <-timer.C:
		case <-l.stop:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (l *liveStream) halt() {
	close(l.stop)
	<-l.done
}

// historyEnv prepares what a spawned server needs for the storm and
// -history-exchange: a configuration file giving -exchange a history (MYXI_CONFIG; a -config in
// the command wins) and, for -publish http, an API key when none is set.
// The returned cleanup removes the file.
func historyEnv(cfg *config, logf func(string, ...any)) ([]string, func(), error) {
	if cfg.Spawn == "" {
		logf("not spawning: the server at %s must keep a history for exchange %q", cfg.URL, cfg.Exchange)
		return nil, func() {}, nil
	}
	f, err := os.CreateTemp("", "myxi-bench-history-*.toml")
	if err != nil {
		return nil, nil, fmt.Errorf("writing the server's configuration: %w", err)
	}
	cleanup := func() { os.Remove(f.Name()) }
	if _, err := f.WriteString(cfg.historyTOML()); err != nil {
		f.Close()
		cleanup()
		return nil, nil, fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	logf("the spawned server gets MYXI_CONFIG=%s (exchange %q, history %v)", f.Name(), cfg.Exchange, cfg.History)
	env := []string{"MYXI_CONFIG=" + f.Name()}
	if cfg.Publish == "http" && os.Getenv("MYXI_API_KEY") == "" {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("making an API key: %w", err)
		}
		// The publisher reads the variable; the spawned server inherits it.
		if err := os.Setenv("MYXI_API_KEY", hex.EncodeToString(b)); err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("setting MYXI_API_KEY: %w", err)
		}
		logf("MYXI_API_KEY not set: made one up for this run")
	}
	return env, cleanup, nil
}

// brokerOf tells from a spawned server's log which broker it uses.
func brokerOf(sp *spawned) string {
	if sp == nil {
		return "unknown"
	}
	b, err := os.ReadFile(sp.logPath)
	if err != nil {
		return "unknown"
	}
	switch {
	case strings.Contains(string(b), "using rabbitmq"):
		return "rabbitmq"
	case strings.Contains(string(b), "using the embedded broker"):
		return "embedded"
	}
	return "unknown"
}

// runStorm does the storm. An error is a setup error: nothing was measured.
func runStorm(cfg *config, current *atomic.Pointer[spawned], logf func(string, ...any)) (*result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	env, cleanup, err := historyEnv(cfg, logf)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	pid, sp, err := serverUp(ctx, cfg, target{name: "server"}, current, logf, env)
	defer dropHistory(cfg, sp, logf) // after the server stopped
	defer stopSpawned(sp, current)
	if err != nil {
		return nil, err
	}
	st := &stormResult{History: cfg.History.String(), ReplayLimit: cfg.ReplayLimit, Broker: brokerOf(sp),
		EventsPerKey: maxPerKey(cfg.totalEvents(), cfg.Keys), LiveConns: cfg.LiveConns, LiveKeys: cfg.LiveKeys, LiveRate: cfg.LiveRate,
		RecoverTargetS: secs(cfg.RecoverTarget), LiveP99TargetMs: ms(float64(cfg.LiveP99Target))}
	if cfg.Spawn == "" {
		st.History = "set by the server"
	}
	r := &result{
		Scenario: cfg.Scenario, Target: "server", URL: cfg.wsURL(), Exchange: cfg.Exchange,
		Conns: cfg.Conns, Keys: cfg.Keys, Rate: cfg.Rate, DurationS: secs(cfg.Duration),
		Batch: cfg.Batch, PayloadBytes: cfg.PayloadBytes, SourceIPs: cfg.SourceIPs, SettleS: secs(cfg.Settle),
		ServerPID: pid, Storm: st, Publish: cfg.Publish, HistoryExchange: cfg.Spawn != "",
	}
	if r.Scenario == "" {
		r.Scenario = "storm"
	}
	if pid > 0 {
		r.ServerName = processName(pid)
		logf("sampling server pid %d (%s); broker: %s", pid, r.ServerName, st.Broker)
	}
	// RabbitMQ's CPU counts when the server uses it (or the tool publishes to it).
	if st.Broker == "rabbitmq" || (st.Broker == "unknown" && cfg.publishesAMQP()) {
		if bu, err := url.Parse(cfg.AMQP); err == nil {
			bport := 5672
			if p := bu.Port(); p != "" {
				fmt.Sscan(p, &bport)
			}
			if r.BrokerPID, err = findListenerPID(bport); err != nil {
				logf("RabbitMQ's CPU not sampled: %v", err)
			}
		}
	}
	if cfg.Publish == "amqp" {
		logf("warning: -publish amqp publishes straight to the exchange: such events are live-only and never replayed (docs/PROTOCOL.md); -publish amqp-myxi records them")
	}
	sampleNow := func() sample { return takeSample(pid, r.BrokerPID) }
	r.RSSBeforeKB = sampleNow().rssKB

	pub, err := newPublisher(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer pub.close()

	// 1. The live subscribers and their stream.
	hist := &histogram{}
	liveMax := totalEvents(cfg.LiveRate, cfg.Timeout)
	var live *fleet
	var ls *liveStream
	if cfg.LiveConns > 0 {
		livePub, err := newPublisher(ctx, cfg)
		if err != nil {
			return nil, err
		}
		defer livePub.close()
		live = newFleetOf(cfg, hist, fleetSpec{conns: cfg.LiveConns, keys: cfg.LiveKeys,
			perKey: maxPerKey(liveMax, cfg.LiveKeys), name: liveKeyName, samples: true})
		logf("connecting %d live clients over %d keys", cfg.LiveConns, cfg.LiveKeys)
		lr := live.open(ctx, cfg.ConnectRate, func(ok, failed, launched int) {
			logf("  live: subscribed %d, failed %d, launched %d of %d", ok, failed, launched, cfg.LiveConns)
		})
		st.LiveSubscribed, st.LiveFailed = lr.OK, lr.Failed+cfg.LiveConns-lr.Launched
		if st.LiveFailed > 0 {
			r.fail("%d of %d live clients failed to subscribe (%v)", st.LiveFailed, cfg.LiveConns, lr.Reasons)
		}
		ls = startLiveStream(ctx, livePub, cfg.LiveRate, cfg.LiveKeys, cfg.PayloadBytes, liveMax)
		logf("live stream: %g events/s over %d keys", cfg.LiveRate, cfg.LiveKeys)
	}
	stopLive := func() {
		if ls != nil {
			ls.halt() // its figures are ours once it has stopped
			// A publisher that pushes in the background (amqp-myxi) says
			// only now which events did not reach the broker.
			fctx, fc := context.WithTimeout(ctx, cfg.Drain)
			failed, err := ls.pub.finish(fctx)
			fc()
			for _, seq := range failed {
				ls.okPerKey[seq%int64(ls.keys)]--
				ls.errors++
			}
			if err != nil && ls.firstErr == "" {
				ls.firstErr = err.Error()
			}
			st.LivePublished, st.LivePublishErrs, st.liveFirstErr, st.liveOKPerKey, st.liveCalls = ls.sent, ls.errors, ls.firstErr, ls.okPerKey, ls.calls
			ls = nil
		}
	}
	defer stopLive()

	// 2. The storm clients subscribe and note their positions.
	sf := newStormFleet(cfg)
	logf("connecting %d storm clients over %d keys", cfg.Conns, cfg.Keys)
	t0 := time.Now()
	launched := sf.start(ctx)
	ok, failed, last := sf.collect(ctx, launched, time.Now().Add(cfg.Timeout), func(ok, failed int) {
		logf("  storm: subscribed %d, failed %d of %d", ok, failed, cfg.Conns)
	})
	r.Connected, r.ConnectFailed = ok, cfg.Conns-ok
	if !last.IsZero() {
		r.ConnectS = secs(last.Sub(t0))
	}
	logf("storm clients: %d subscribed, %d failed in %.2f s", ok, failed, r.ConnectS)
	if cfg.Settle > 0 {
		sleepCtx(ctx, cfg.Settle)
	}
	// 3. They go away.
	logf("closing the %d storm clients", cfg.Conns)
	if !sf.closeAll(15 * time.Second) {
		r.fail("storm sessions did not end within 15 s of closing")
	}
	reasons := map[string]int{}
	for _, c := range sf.clients {
		if c.failure != "" {
			reasons[c.failure]++
		}
		if c.subAt.IsZero() {
			continue
		}
		if !c.hasPos {
			st.PositionsMissing++
		}
	}
	r.ConnectReasons = topReasons(reasons, 5)
	if r.ConnectFailed > 0 {
		r.fail("%d of %d storm clients failed to subscribe", r.ConnectFailed, cfg.Conns)
	}
	if st.PositionsMissing > 0 {
		r.fail("%d Subscribed carried no position (epoch, offset): does the server keep a history for %q?", st.PositionsMissing, cfg.Exchange)
	}
	if len(r.Failures) > 0 || ctx.Err() != nil {
		return finishStorm(ctx, cfg, r, sp, live, nil, hist, nil, stopLive, sampleNow, logf), nil
	}

	// 4. Push while they are away.
	total := cfg.totalEvents()
	logf("pushing %d events at %g/s over %d keys while the storm clients are away", total, cfg.Rate, cfg.Keys)
	p0 := sampleNow()
	pr := runPublish(ctx, pub, cfg.Rate, total, cfg.Keys, cfg.PayloadBytes, time.Now().Add(cfg.Duration+max(2*time.Second, cfg.Duration/10)))
	settlePublish(ctx, pub, &pr, cfg.Keys)
	p1 := sampleNow()
	pc := cpuBetween(p0, p1)
	st.PushS, st.PushServerCPUS = secs(pc.Wall), round3(pc.ServerCPU)
	r.Published, r.PublishErrors, r.PublishFirstErr, r.Nacked = pr.Sent, pr.Errors, pr.FirstError, pr.Nacked
	r.PublishRate, r.PublishMaxLagMs = round3(pr.Rate), round3(float64(pr.MaxLag)/1e6)
	logf("pushed %d (errors %d) in %.2f s", pr.Sent, pr.Errors, pc.Wall.Seconds())
	if pr.Incomplete {
		r.fail("pushed only %d of %d events in time", pr.Sent, pr.Planned)
	}
	if pr.Errors > 0 || pr.Nacked > 0 {
		r.fail("%d push errors, %d nacked (first: %s)", pr.Errors, pr.Nacked, pr.FirstError)
	}

	// 5. The storm: everyone back at once, with since.
	for _, c := range sf.clients {
		pos := c.pos
		c.since = &pos
		if exp := stormExpected(c.keyIdx, cfg.Keys, pr.Sent); len(exp) > 0 {
			c.lastSeq = exp[len(exp)-1]
		}
	}
	logf("reconnecting %d clients at once with since", cfg.Conns)
	s0 := sampleNow()
	stormStart := time.Now()
	launched = sf.start(ctx)
	ok, failed, last = sf.collect(ctx, launched, stormStart.Add(cfg.RecoverTimeout), func(ok, failed int) {
		logf("  recovered %d, failed %d of %d", ok, failed, cfg.Conns)
	})
	stormEnd := time.Now()
	if ok == cfg.Conns && !last.IsZero() {
		stormEnd = last
	}
	s1 := sampleNow()
	sc := cpuBetween(s0, s1)
	st.StormPhaseS = secs(sc.Wall)
	st.StormServerCPUS, st.StormServerCores = round3(sc.ServerCPU), round3(sc.cores(sc.ServerCPU))
	st.StormBrokerCPUS, st.StormBrokerCores = round3(sc.BrokerCPU), round3(sc.cores(sc.BrokerCPU))
	r.ServerCPUS, r.ServerCores = st.StormServerCPUS, st.StormServerCores
	r.BrokerCPUS, r.BrokerCores = st.StormBrokerCPUS, st.StormBrokerCores
	r.ToolCPUS, r.ToolCores = round3(sc.ToolCPU), round3(sc.cores(sc.ToolCPU))
	r.MachineCores, r.MachineCoresAll = round3(sc.cores(sc.MachineCPU)), runtime.NumCPU()
	if sc.ServerOK && sc.MachineOK {
		r.OtherCores = round3(max(0, sc.cores(sc.MachineCPU-sc.ServerCPU-sc.ToolCPU-sc.BrokerCPU)))
		if r.OtherCores > noisyCores {
			r.warn("other processes used %.2f cores during the storm: the figures are noisy, run again on a quiet machine", r.OtherCores)
		}
	}
	logf("storm: %d recovered, %d failed, after %.2f s", ok, failed, time.Since(stormStart).Seconds())
	return finishStorm(ctx, cfg, r, sp, live, sf, hist, &stormWindow{start: stormStart, end: stormEnd, sent: pr.Sent}, stopLive, sampleNow, logf), nil
}

// stormWindow is the storm's time span and how many events were pushed.
type stormWindow struct {
	start, end time.Time
	sent       int64
}

// finishStorm stops the live stream, waits for its deliveries, closes
// everything and judges the run; sf and w are nil when the run stopped
// before the storm.
func finishStorm(ctx context.Context, cfg *config, r *result, sp *spawned, live *fleet, sf *stormFleet, hist *histogram,
	w *stormWindow, stopLive func(), sampleNow func() sample, logf func(string, ...any)) *result {
	st := r.Storm
	stopLive()
	if live != nil {
		expected := int64(0)
		for _, c := range live.clients {
			if s := c.getState(); s == stLive || s == stEnded {
				expected += st.liveOK(c.keyIdx)
			}
		}
		drainCtx, dc := context.WithTimeout(ctx, cfg.Drain)
		waitDeliveries(drainCtx, hist, uint64(expected), func(got uint64) { logf("  live: received %d of %d", got, expected) })
		dc()
	}
	final := sampleNow()
	r.RSSAfterPublishKB, r.RSSPeakKB = final.rssKB, final.hwmKB
	if self, err := readProcFile("/proc/self/status"); err == nil {
		r.ToolPeakRSSKB, _ = statusKB(self, "VmHWM")
	}
	logf("closing everything")
	if sf != nil && !sf.closeAll(15*time.Second) {
		r.warn("some storm sessions did not end within 15 s of closing")
	}
	if live != nil {
		live.closeAll()
		if !live.wait(15 * time.Second) {
			r.warn("some live client goroutines did not end within 15 s of closing")
		}
		judgeLive(r, live, w)
	}
	if sf != nil && w != nil {
		judgeStorm(cfg, r, sf, w)
	}
	if sp != nil && !sp.alive() {
		r.fail("the spawned server exited during the run (see %s)", sp.logPath)
	}
	if ctx.Err() != nil {
		r.fail("-timeout %v reached before the run finished", cfg.Timeout)
	}
	r.Pass = len(r.Failures) == 0
	return r
}

// judgeStorm checks every storm client's recovery and sums it up.
func judgeStorm(cfg *config, r *result, sf *stormFleet, w *stormWindow) {
	st := r.Storm
	why, drops := map[string]int{}, map[string]int{}
	var recoverTimes []time.Duration
	var lastSub time.Duration
	for _, c := range sf.clients {
		expected := stormExpected(c.keyIdx, cfg.Keys, w.sent)
		st.ExpectedEvents += int64(len(expected))
		if c.subAt.IsZero() {
			st.ReconnectFailed++
			why[c.failure]++
			st.Missing += int64(len(expected))
			st.ClientsBad++
			if st.FirstProblem == "" {
				st.FirstProblem = fmt.Sprintf("client %d (key %s): %s", c.idx, c.key, c.failure)
			}
			continue
		}
		st.Reconnected++
		lastSub = max(lastSub, c.subAt.Sub(w.start))
		if c.recovered {
			st.RecoveredTrue++
		} else {
			st.RecoveredFalse++
		}
		if c.endReason != "" {
			st.Dropped++
			drops[c.endReason]++
		}
		rc := checkRecovery(recoveryInput{since: *c.since, recovered: c.recovered, epoch: c.epoch, upTo: c.upTo,
			expected: expected, events: c.events})
		st.Replayed += rc.Replayed
		st.Missing += rc.Missing
		st.Dups += rc.Dups
		st.Misordered += rc.Misordered
		st.NotReplayed += rc.NotReplayed
		st.Unexpected += rc.Unexpected
		st.NoPosition += rc.NoPosition
		st.BelowSince += rc.BelowSince
		if !rc.ok() {
			st.ClientsBad++
			if st.FirstProblem == "" {
				st.FirstProblem = fmt.Sprintf("client %d (key %s): %s", c.idx, c.key, rc.Problem)
			}
			continue
		}
		st.ClientsExact++
		if !c.doneAt.IsZero() {
			recoverTimes = append(recoverTimes, c.doneAt.Sub(w.start))
		}
	}
	st.ReconnectWhy, st.DropReasons = topReasons(why, 5), topReasons(drops, 5)
	st.LastSubscribedS = secs(lastSub)
	p50, p99, mx := rttPercentiles(recoverTimes)
	st.RecoverP50S, st.RecoverP99S = secs(p50), secs(p99)
	if st.ClientsExact == cfg.Conns {
		st.RecoverS = secs(mx)
		st.RecoverMet = mx <= cfg.RecoverTarget
		if !st.RecoverMet {
			r.warn("the last client recovered %.2f s after the reconnect began: over the target of %v", mx.Seconds(), cfg.RecoverTarget)
		}
	}
	if st.ReconnectFailed > 0 {
		r.fail("%d of %d storm clients failed to reconnect and subscribe", st.ReconnectFailed, cfg.Conns)
	}
	if st.ClientsBad > 0 {
		r.fail("%d of %d storm clients did not recover exactly their missed events (missing %d, dups %d, out of order %d, not replayed %d, unexpected %d, without position %d, at or below since %d, recovered:false %d); first: %s",
			st.ClientsBad, cfg.Conns, st.Missing, st.Dups, st.Misordered, st.NotReplayed, st.Unexpected, st.NoPosition, st.BelowSince, st.RecoveredFalse, st.FirstProblem)
	}
	if st.Dropped > 0 {
		r.warn("the server closed %d reconnected storm sessions (%v)", st.Dropped, st.DropReasons)
	}
}

// judgeLive counts the live clients' deliveries and their latency during
// the storm (events sent between the reconnect and the last recovery).
func judgeLive(r *result, live *fleet, w *stormWindow) {
	st := r.Storm
	var all, during []time.Duration
	drops := map[string]int{}
	for _, c := range live.clients {
		select {
		case <-c.done:
		default:
			continue // still running (see the warning)
		}
		if s := c.getState(); s != stLive && s != stEnded {
			continue
		}
		if c.endReason != "" {
			r.Dropped++
			drops[c.endReason]++
		}
		exp := st.liveOK(c.keyIdx)
		st.LiveExpected += exp
		st.LiveReceived += c.distinct
		st.LiveLost += max(0, exp-c.distinct)
		st.LiveDups += c.dups
		r.WrongKey += c.wrongKey
		r.Unparsable += c.unparsable
		r.OutOfRange += c.outOfRange
		r.ErrorEvents += c.errorEvents
		if r.FirstErrorEvent == "" {
			r.FirstErrorEvent = c.firstError
		}
		for _, s := range c.samples {
			d := time.Duration(s.latNs)
			all = append(all, d)
			if w != nil && s.sentNs >= w.start.UnixNano() && s.sentNs <= w.end.UnixNano() {
				during = append(during, d)
			}
		}
	}
	r.DropReasons = topReasons(drops, 5)
	var calls []time.Duration
	for _, s := range st.liveCalls {
		if w != nil && s.sentNs >= w.start.UnixNano() && s.sentNs <= w.end.UnixNano() {
			calls = append(calls, time.Duration(s.latNs))
		}
	}
	_, cp99, cmax := rttPercentiles(calls)
	st.LivePublishStormP99Ms, st.LivePublishStormMaxMs = ms(float64(cp99)), ms(float64(cmax))
	_, p99all, _ := rttPercentiles(all)
	st.LiveAllP99Ms = ms(float64(p99all))
	p50, p99, mx := rttPercentiles(during)
	st.LiveStormN = len(during)
	st.LiveStormP50Ms, st.LiveStormP99Ms, st.LiveStormMaxMs = ms(float64(p50)), ms(float64(p99)), ms(float64(mx))
	r.LatP50Ms, r.LatP99Ms, r.LatMaxMs = st.LiveStormP50Ms, st.LiveStormP99Ms, st.LiveStormMaxMs
	if w != nil {
		st.LiveP99Met = len(during) > 0 && time.Duration(p99) <= time.Duration(st.LiveP99TargetMs*1e6)
		switch {
		case len(during) == 0:
			r.warn("no live event was sent during the storm: its latency is not measured (raise -live-rate)")
		case !st.LiveP99Met:
			r.warn("live p99 during the storm %.1f ms: over the target of %g ms", ms(float64(p99)), st.LiveP99TargetMs)
		}
	}
	if st.LiveLost > 0 {
		r.fail("live clients lost %d of %d deliveries", st.LiveLost, st.LiveExpected)
	}
	if st.LiveDups > 0 {
		r.fail("live clients got %d duplicate deliveries", st.LiveDups)
	}
	if r.Dropped > 0 {
		r.fail("%d live connections were closed during the run (%v)", r.Dropped, r.DropReasons)
	}
	if r.WrongKey > 0 || r.Unparsable > 0 || r.OutOfRange > 0 {
		r.fail("live clients: %d events of another key, %d unparsable, %d out of range", r.WrongKey, r.Unparsable, r.OutOfRange)
	}
	if st.LivePublishErrs > 0 {
		r.fail("%d live publish errors (first: %s)", st.LivePublishErrs, st.liveFirstErr)
	}
}

func writeStormReport(w io.Writer, r *result) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	st := r.Storm
	met := func(b bool) string {
		if b {
			return "met"
		}
		return "MISSED"
	}
	p("== myxi-bench: %s (reconnect storm) ==", r.Scenario)
	limit := "the server's default"
	if st.ReplayLimit > 0 {
		limit = fmt.Sprint(st.ReplayLimit)
	}
	p("target     %s  exchange %q (history %s, replay limit %s); broker %s", r.URL, r.Exchange, st.History, limit, st.Broker)
	p("setup      %s storm clients over %s keys, %d events per key pushed at %g/s while they are away; %s live clients over %d keys at %g events/s",
		group(int64(r.Conns)), group(int64(r.Keys)), st.EventsPerKey, r.Rate, group(int64(st.LiveConns)), st.LiveKeys, st.LiveRate)
	if r.ServerPID > 0 {
		p("server     pid %d (%s), RSS before connecting %s", r.ServerPID, r.ServerName, fmtKB(r.RSSBeforeKB))
	} else {
		p("server     not sampled (no pid)")
	}
	p("subscribe  storm %s subscribed, %s failed in %.2f s, %d without a position; live %s subscribed, %d failed",
		group(int64(r.Connected)), group(int64(r.ConnectFailed)), r.ConnectS, st.PositionsMissing, group(int64(st.LiveSubscribed)), st.LiveFailed)
	for _, rc := range r.ConnectReasons {
		p("           %d× %s", rc.Count, rc.Reason)
	}
	if r.Published > 0 {
		p("away       %s events pushed in %.2f s (%.1f/s), errors %d, max lag %.1f ms; server CPU %.2f s",
			group(r.Published), st.PushS, r.PublishRate, r.PublishErrors, r.PublishMaxLagMs, st.PushServerCPUS)
		if r.PublishFirstErr != "" {
			p("           first error: %s", r.PublishFirstErr)
		}
	}
	if st.Reconnected+st.ReconnectFailed > 0 {
		p("reconnect  %s back with since, %d failed; recovered:true %s, recovered:false %d; last Subscribed %.2f s after the reconnect began",
			group(int64(st.Reconnected)), st.ReconnectFailed, group(int64(st.RecoveredTrue)), st.RecoveredFalse, st.LastSubscribedS)
		for _, rc := range st.ReconnectWhy {
			p("           %d× %s", rc.Count, rc.Reason)
		}
		p("recovery   %s of %s clients recovered exactly their missed events: %s of %s replayed; missing %d, dups %d, out of order %d, not replayed %d, unexpected %d, without position %d, at or below since %d",
			group(int64(st.ClientsExact)), group(int64(r.Conns)), group(st.Replayed), group(st.ExpectedEvents), st.Missing, st.Dups, st.Misordered, st.NotReplayed, st.Unexpected, st.NoPosition, st.BelowSince)
		if st.ClientsExact == r.Conns {
			p("           the last client recovered %.2f s after the reconnect began (target %gs: %s); per client p50 %.2f s, p99 %.2f s",
				st.RecoverS, st.RecoverTargetS, met(st.RecoverMet), st.RecoverP50S, st.RecoverP99S)
		}
		if st.FirstProblem != "" {
			p("           first problem: %s", st.FirstProblem)
		}
	}
	if st.LiveConns > 0 {
		p("live       during the storm: %s deliveries, p50 %s  p99 %s  max %s (target p99 < %g ms: %s); whole run p99 %s",
			group(int64(st.LiveStormN)), fmtMs(st.LiveStormP50Ms), fmtMs(st.LiveStormP99Ms), fmtMs(st.LiveStormMaxMs), st.LiveP99TargetMs, met(st.LiveP99Met), fmtMs(st.LiveAllP99Ms))
		p("           %s events published (errors %d; publish calls during the storm p99 %s, max %s); deliveries expected %s, received %s, lost %d, dups %d",
			group(st.LivePublished), st.LivePublishErrs, fmtMs(st.LivePublishStormP99Ms), fmtMs(st.LivePublishStormMaxMs), group(st.LiveExpected), group(st.LiveReceived), st.LiveLost, st.LiveDups)
	}
	if st.StormPhaseS > 0 {
		cpu := "server not sampled"
		if r.ServerPID > 0 {
			cpu = fmt.Sprintf("server %.2f s = %.2f cores", st.StormServerCPUS, st.StormServerCores)
		}
		broker := "RabbitMQ not sampled"
		if r.BrokerPID > 0 {
			broker = fmt.Sprintf("RabbitMQ (pid %d, %s) %.2f s = %.2f cores", r.BrokerPID, processName(r.BrokerPID), st.StormBrokerCPUS, st.StormBrokerCores)
		}
		p("cpu        storm %.2f s wall: %s; tool %.2f s = %.2f cores; %s", st.StormPhaseS, cpu, r.ToolCPUS, r.ToolCores, broker)
		p("           machine %.2f of %d cores busy (the rest: %.2f)", r.MachineCores, r.MachineCoresAll, r.OtherCores)
	}
	if r.ServerPID > 0 {
		p("memory     server RSS at the end %s (peak %s)", fmtKB(r.RSSAfterPublishKB), fmtKB(r.RSSPeakKB))
	}
	if r.FirstErrorEvent != "" {
		p("server sent an error event: %s", r.FirstErrorEvent)
	}
	for _, w := range r.Warnings {
		p("warning    %s", w)
	}
	if r.Pass {
		p("verdict    PASS")
	} else {
		p("verdict    FAIL: %s", strings.Join(r.Failures, "; "))
	}
}
