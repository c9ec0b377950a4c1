package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// config is everything one run needs; it is filled from the flags, with a
// scenario's values for the flags that were not given.
type config struct {
	Scenario string

	URL      string
	AMQP     string
	Exchange string
	Publish  string // "amqp" (to RabbitMQ), "amqp-myxi" (Myxi's Go publisher) or "http" (the server's publish API)
	Pushers  int    // -publish amqp-myxi: pushes in flight at most
	LiveCopy bool   // -publish amqp-myxi: the live copy of each record (PublisherConfig.NoLiveCopy off)

	// HistoryExchange: the spawned server's configuration gives -exchange
	// a history (always so with -storm).
	HistoryExchange bool

	Conns    int
	Keys     int
	Rate     float64 // events per second in total, round-robin over the keys
	Duration time.Duration
	Batch    bool
	Confirm  bool

	PayloadBytes int

	ConnectRate      float64 // connections per second; 0 = as fast as DialConcurrency allows
	DialConcurrency  int     // handshakes (connect + Welcome + Subscribed) in flight at once
	HandshakeTimeout time.Duration
	SourceIPs        int // 127.0.0.1 .. 127.0.0.N, round-robin
	ReadBuffer       int

	PID       int // server pid to sample; 0 = find the process listening on the -url port; -1 = none
	Spawn     string
	SpawnWait time.Duration
	SpawnLog  string

	Settle  time.Duration
	Drain   time.Duration
	Timeout time.Duration

	CPUProfile string // the tool's own CPU profile (pprof), for tuning the tool
	Median     string // summarize the RESULT lines of this file instead of running

	// The floor server (issue 13): -floor runs against it instead of Myxi,
	// -floor-compare runs against it and then against the -spawn server.
	Floor          bool
	FloorCompare   bool
	FloorPrefetch  int
	FloorMaxLength int
	FloorOverflow  string
	FloorAckEvery  int

	// Flood mode (issue 12): Flooders sockets send Pings as fast as they
	// can for FloodDuration while a healthy socket pings every FloodInterval.
	Flood          bool
	Flooders       int
	FloodDuration  time.Duration
	FloodInterval  time.Duration
	FloodMaxFrames int64

	// The reconnect storm (issue 14): Conns clients over Keys keys of a
	// history exchange note their positions and go away; Rate × Duration
	// events are pushed; they all come back at once with "since". Meanwhile
	// LiveConns clients on LiveKeys other keys get LiveRate events/s.
	Storm          bool
	LiveConns      int
	LiveKeys       int
	LiveRate       float64
	History        time.Duration // the spawned server's history for -exchange
	ReplayLimit    int           // the spawned server's history_replay_limit; 0: its default
	RecoverTimeout time.Duration // how long the reconnected clients may take to recover
	RecoverTarget  time.Duration // issue 14's target for the last recovery
	LiveP99Target  time.Duration // issue 14's target for the live p99 during the storm
}

// serverReplayLimit is Myxi's default history_replay_limit.
const serverReplayLimit = 1000

// scenario holds the values a -scenario name stands for. Flags given on the
// command line win over them.
type scenario struct {
	desc   string
	values map[string]string
}

var scenarios = map[string]scenario{
	"smoke": {"200 clients over 10 keys, 100 events/s for 5 s (the defaults)", map[string]string{}},
	"S1": {"broadcast: 10,000 subscribers of one key, 10 events/s for 20 s, batched frames", map[string]string{
		"conns": "10000", "keys": "1", "rate": "10", "duration": "20s", "batch": "true", "settle": "2s",
	}},
	"S1-nobatch": {"broadcast for 1.x clients: 10,000 subscribers of one key, 5 events/s for 20 s, one event per frame", map[string]string{
		"conns": "10000", "keys": "1", "rate": "5", "duration": "20s", "batch": "false", "settle": "2s",
	}},
	"S2": {"spread: 10,000 subscribers over 1,000 keys, 1,000 events/s for 20 s", map[string]string{
		"conns": "10000", "keys": "1000", "rate": "1000", "duration": "20s", "batch": "true", "settle": "2s",
	}},
	"idle": {"idle: 19,500 subscribed connections (over 1,000 keys), RSS after 10 s, no events", map[string]string{
		"conns": "19500", "keys": "1000", "rate": "0", "duration": "0s", "settle": "10s", "source-ips": "2",
	}},
	"storm": {"reconnect storm (issue 14): 2,000 clients over 200 keys of a history exchange go away, 100 events per key are pushed at 1,000/s, all reconnect at once with since; 200 live clients on 20 other keys get 100 events/s throughout", map[string]string{
		"storm": "true", "conns": "2000", "keys": "200", "rate": "1000", "duration": "20s", "publish": "http",
		"dial-concurrency": "2000", "settle": "1s",
	}},
}

func scenarioNames() []string {
	names := make([]string, 0, len(scenarios))
	for n := range scenarios {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func defaultAMQP() string {
	if u := os.Getenv("RABBITMQ_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// parseConfig reads the flags. It returns flag.ErrHelp for -h.
func parseConfig(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("myxi-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Scenario, "scenario", "", "shorthand for a scenario of issue 5: "+strings.Join(scenarioNames(), ", ")+" (flags given override it)")
	fs.StringVar(&c.URL, "url", "ws://127.0.0.1:5005/", "server WebSocket URL (loopback only)")
	fs.StringVar(&c.AMQP, "amqp", defaultAMQP(), "RabbitMQ URL to publish through (loopback only; default $RABBITMQ_URL)")
	fs.StringVar(&c.Exchange, "exchange", "bench", "Myxi exchange (= RabbitMQ direct exchange) to subscribe to and publish on")
	fs.StringVar(&c.Publish, "publish", "amqp", "how events are published: amqp (to RabbitMQ, as an application does), amqp-myxi (Myxi's Go publisher, rabbitmq.Publisher: recorded on a history exchange) or http (POST /api/publish with MYXI_API_KEY)")
	fs.IntVar(&c.Pushers, "pushers", 64, "with -publish amqp-myxi: concurrent Push calls at most (each waits for its confirm)")
	fs.BoolVar(&c.LiveCopy, "live-copy", true, "with -publish amqp-myxi: also publish each record's live copy to the 1.x exchange (Myxi's default; false = PublisherConfig.NoLiveCopy)")
	fs.BoolVar(&c.HistoryExchange, "history-exchange", false, "with -spawn: the spawned server's configuration gives -exchange a history of -history (implied by -storm); publish with -publish amqp-myxi to record the events")
	fs.IntVar(&c.Conns, "conns", 200, "number of WebSocket clients")
	fs.IntVar(&c.Keys, "keys", 10, "routing keys k0..k{C-1}; clients are spread evenly over them (client i takes key i mod C)")
	fs.Float64Var(&c.Rate, "rate", 100, "events per second published in total, round-robin over the keys (0 = publish nothing)")
	fs.DurationVar(&c.Duration, "duration", 5*time.Second, "how long to publish")
	fs.BoolVar(&c.Batch, "batch", false, "clients connect with ?batch=1 (several events per frame, split on \\n)")
	fs.BoolVar(&c.Confirm, "confirm", false, "use publisher confirms; a nacked event is not expected at the clients and is reported")
	fs.IntVar(&c.PayloadBytes, "payload-bytes", 0, "pad each published body to at least this many bytes")
	fs.Float64Var(&c.ConnectRate, "connect-rate", 0, "connections opened per second at most (0 = no limit beyond -dial-concurrency)")
	fs.IntVar(&c.DialConcurrency, "dial-concurrency", 200, "connect+subscribe handshakes in flight at once")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", 20*time.Second, "limit for one client's connect + Welcome + Subscribed")
	fs.IntVar(&c.SourceIPs, "source-ips", 1, "loopback source addresses 127.0.0.1..127.0.0.N used round-robin (each gives ~28k ports)")
	fs.IntVar(&c.ReadBuffer, "read-buffer", 1024, "per-connection read buffer size in bytes")
	fs.IntVar(&c.PID, "pid", 0, "server pid to sample in /proc (0 = the process listening on the -url port, -1 = none)")
	fs.StringVar(&c.Spawn, "spawn", "", "shell command that starts the server; it gets RABBITMQ_URL=<-amqp> and MYXI_PORT=<-url port>, is sampled and stopped at the end")
	fs.DurationVar(&c.SpawnWait, "spawn-wait", 2*time.Minute, "how long the spawned server may take to listen (go run compiles first)")
	fs.StringVar(&c.SpawnLog, "spawn-log", "", "file for the spawned server's output (default: a file in the temp dir)")
	fs.DurationVar(&c.Settle, "settle", time.Second, "idle time after every client is subscribed, before the RSS sample and publishing")
	fs.DurationVar(&c.Drain, "drain", 10*time.Second, "how long to wait after the last publish for deliveries still in flight")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Minute, "hard cap on the whole run")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write the tool's own CPU profile to this file: of the publish phase, or of the connect phase when nothing is published (idle)")
	fs.StringVar(&c.Median, "median", "", "do not run: print the medians of the RESULT lines in this file (- for stdin)")
	fs.BoolVar(&c.Floor, "floor", false, "run against the floor server (a bare fan-out writer this tool spawns) instead of Myxi")
	fs.BoolVar(&c.FloorCompare, "floor-compare", false, "run the scenario against the floor server, then against the -spawn server, and report server CPU per delivery, Myxi ÷ floor")
	fs.IntVar(&c.FloorPrefetch, "floor-prefetch", defaultFloorPrefetch, "the floor's consumer prefetch (0 = unlimited)")
	fs.IntVar(&c.FloorMaxLength, "floor-max-length", defaultFloorMaxLength, "x-max-length of the floor's node queue (0 = unbounded)")
	fs.StringVar(&c.FloorOverflow, "floor-overflow", defaultFloorOverflow, "x-overflow of the floor's node queue")
	fs.IntVar(&c.FloorAckEvery, "floor-ack-every", 0, "the floor acknowledges (multiple=true) at least every N deliveries, and whenever it has caught up (0 = prefetch/2)")
	fs.BoolVar(&c.Flood, "flood", false, "while the scenario runs, -flooders sockets send Pings as fast as they can for -flood-duration; report a healthy socket's Ping->Pong latency and how the flooders were closed")
	fs.IntVar(&c.Flooders, "flooders", 1, "flooding sockets with -flood")
	fs.DurationVar(&c.FloodDuration, "flood-duration", 10*time.Second, "how long the flood lasts")
	fs.DurationVar(&c.FloodInterval, "flood-ping-interval", 50*time.Millisecond, "the healthy socket's Ping interval during the flood")
	fs.Int64Var(&c.FloodMaxFrames, "flood-max-frames", 5_000_000, "Pings one flooder sends at most")
	fs.BoolVar(&c.Storm, "storm", false, "reconnect storm: -conns clients over -keys keys of a history exchange subscribe, note their positions and close; -rate × -duration events are pushed; all reconnect at once with since and must recover exactly the missed events")
	fs.IntVar(&c.LiveConns, "live-conns", 200, "with -storm: live subscribers on keys of their own (live0..), measured during the storm")
	fs.IntVar(&c.LiveKeys, "live-keys", 20, "with -storm: routing keys of the live subscribers")
	fs.Float64Var(&c.LiveRate, "live-rate", 100, "with -storm: events/s to the live keys, from before the clients leave until the storm is over")
	fs.DurationVar(&c.History, "history", 10*time.Minute, "with -storm or -history-exchange, and -spawn: the history the spawned server's configuration gives -exchange")
	fs.IntVar(&c.ReplayLimit, "replay-limit", 0, "with -storm or -history-exchange, and -spawn: the spawned server's history_replay_limit (0: its default, 1000)")
	fs.DurationVar(&c.RecoverTimeout, "recover-timeout", 60*time.Second, "with -storm: how long the reconnected clients may take to recover; what has not arrived then is missing")
	fs.DurationVar(&c.RecoverTarget, "recover-target", 10*time.Second, "with -storm: the target for the time from the reconnect to the last recovery (a miss is a warning)")
	fs.DurationVar(&c.LiveP99Target, "live-p99-target", 50*time.Millisecond, "with -storm: the target for the live subscribers' p99 during the storm (a miss is a warning)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./cmd/myxi-bench [flags]\n\nscenarios:\n")
		for _, n := range scenarioNames() {
			fmt.Fprintf(fs.Output(), "  %-11s %s\n", n, scenarios[n].desc)
		}
		fmt.Fprintf(fs.Output(), "\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q (the -spawn command goes in one quoted argument)", fs.Args())
	}
	if c.Scenario != "" {
		sc, ok := scenarios[c.Scenario]
		if !ok {
			return nil, fmt.Errorf("unknown -scenario %q; known: %s", c.Scenario, strings.Join(scenarioNames(), ", "))
		}
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		for name, v := range sc.values {
			if given[name] {
				continue
			}
			if err := fs.Set(name, v); err != nil {
				return nil, fmt.Errorf("scenario %s: %v", c.Scenario, err)
			}
		}
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *config) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Conns < 1 {
		bad("-conns must be at least 1")
	}
	if c.Keys < 1 {
		bad("-keys must be at least 1")
	}
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		bad("-rate must be a number >= 0")
	}
	if c.Rate > 1e6 {
		bad("-rate %.0f is beyond what one publisher connection does; at most 1e6", c.Rate)
	}
	if c.Duration < 0 || c.Settle < 0 || c.Drain < 0 {
		bad("-duration, -settle and -drain must not be negative")
	}
	if c.Rate > 0 && c.Duration > 0 && c.totalEvents() == 0 {
		bad("-rate %.3g for %v publishes no event", c.Rate, c.Duration)
	}
	if c.totalEvents() > 100_000_000 {
		bad("-rate × -duration = %d events: too many for one run", c.totalEvents())
	}
	if c.ConnectRate < 0 {
		bad("-connect-rate must be >= 0")
	}
	if c.DialConcurrency < 1 {
		bad("-dial-concurrency must be at least 1")
	}
	if c.HandshakeTimeout <= 0 {
		bad("-handshake-timeout must be positive")
	}
	if c.SourceIPs < 1 || c.SourceIPs > 254 {
		bad("-source-ips must be between 1 and 254")
	}
	if c.ReadBuffer < 128 || c.ReadBuffer > 1<<20 {
		bad("-read-buffer must be between 128 and 1048576")
	}
	if c.PayloadBytes < 0 || c.PayloadBytes > 1<<20 {
		bad("-payload-bytes must be between 0 and 1048576")
	}
	if c.PID < -1 {
		bad("-pid must be a pid, 0 (find the listener) or -1 (none)")
	}
	if c.Spawn != "" && c.PID > 0 {
		bad("give -spawn or -pid, not both")
	}
	if c.Timeout <= 0 {
		bad("-timeout must be positive")
	}
	if c.Publish != "amqp" && c.Publish != "amqp-myxi" && c.Publish != "http" {
		bad("-publish must be amqp, amqp-myxi or http")
	}
	if c.Publish == "amqp-myxi" && (c.Pushers < 1 || c.Pushers > maxPushers) {
		bad("-pushers must be between 1 and %d", maxPushers)
	}
	if c.HistoryExchange {
		if c.Spawn == "" {
			bad("-history-exchange writes the spawned server's configuration: it needs -spawn")
		}
		if c.Floor || c.FloorCompare {
			bad("-history-exchange does not combine with -floor or -floor-compare (the floor server reads no history)")
		}
		if c.History < time.Second {
			bad("-history must be at least 1s (the server's minimum)")
		}
		if c.ReplayLimit < 0 {
			bad("-replay-limit must not be negative")
		}
	}
	if strings.TrimSpace(c.Exchange) == "" {
		bad("-exchange must not be empty")
	}
	if err := checkWSURL(c.URL, c.SourceIPs); err != nil {
		errs = append(errs, err)
	}
	if c.Rate > 0 && c.publishesAMQP() {
		if err := checkAMQPURL(c.AMQP); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Floor && c.FloorCompare {
		bad("give -floor or -floor-compare, not both")
	}
	if c.Floor && (c.Spawn != "" || c.PID > 0) {
		bad("-floor spawns the floor server itself: leave out -spawn and -pid")
	}
	if c.FloorCompare && c.Spawn == "" {
		bad("-floor-compare needs -spawn for the Myxi server (both servers take the -url port, one after the other)")
	}
	if c.Floor || c.FloorCompare {
		fc := c.floorConfig()
		if err := fc.validate(); err != nil {
			errs = append(errs, fmt.Errorf("floor server: %w", err))
		}
		if c.Publish != "amqp" {
			bad("the floor server only consumes from RabbitMQ: -publish must be amqp")
		}
	}
	if c.Flood {
		if c.Floor || c.FloorCompare {
			bad("-flood measures Myxi's answers to Pings, which the floor server does not give: not with -floor or -floor-compare")
		}
		if c.Flooders < 1 || c.Flooders > 100 {
			bad("-flooders must be between 1 and 100")
		}
		if c.FloodDuration <= 0 || c.FloodDuration > 5*time.Minute {
			bad("-flood-duration must be positive and at most 5m")
		}
		if c.FloodInterval < time.Millisecond || c.FloodInterval > 10*time.Second {
			bad("-flood-ping-interval must be between 1ms and 10s")
		}
		if c.FloodMaxFrames < 1 || c.FloodMaxFrames > 100_000_000 {
			bad("-flood-max-frames must be between 1 and 1e8")
		}
	}
	if c.Storm {
		errs = append(errs, c.validateStorm()...)
	}
	if need := c.Settle + c.Duration + c.Drain + c.stormWait(); need >= c.Timeout {
		bad("-timeout %v leaves no time to connect: settle+duration+drain is already %v", c.Timeout, need)
	}
	return errors.Join(errs...)
}

// validateStorm checks the -storm flags.
func (c *config) validateStorm() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Floor || c.FloorCompare || c.Flood {
		bad("-storm does not combine with -floor, -floor-compare or -flood")
	}
	if c.totalEvents() == 0 {
		bad("-storm needs events to recover: -rate and -duration must publish some")
	}
	if c.LiveConns < 0 || c.LiveConns > 100_000 {
		bad("-live-conns must be between 0 and 100000")
	}
	if c.LiveConns > 0 && (c.LiveKeys < 1 || c.LiveRate <= 0 || math.IsNaN(c.LiveRate) || math.IsInf(c.LiveRate, 0) || c.LiveRate > 1e5) {
		bad("with -live-conns, -live-keys must be at least 1 and -live-rate between 0 (excluded) and 1e5")
	}
	if c.History < time.Second {
		bad("-history must be at least 1s (the server's minimum)")
	}
	if c.ReplayLimit < 0 {
		bad("-replay-limit must not be negative")
	}
	limit := c.ReplayLimit
	if limit == 0 {
		limit = serverReplayLimit
	}
	if n := maxPerKey(c.totalEvents(), c.Keys); n > int64(limit) {
		bad("-storm pushes up to %d events per key, more than the replay limit %d: the server would answer recovered:false (raise -replay-limit or -keys)", n, limit)
	}
	if c.RecoverTimeout <= 0 || c.RecoverTarget <= 0 || c.LiveP99Target <= 0 {
		bad("-recover-timeout, -recover-target and -live-p99-target must be positive")
	}
	return errs
}

// stormWait is the extra time a -storm run may take: the recovery and the
// second connect.
func (c *config) stormWait() time.Duration {
	if !c.Storm {
		return 0
	}
	return c.RecoverTimeout + c.HandshakeTimeout
}

// stormSockets is how many sockets the storm's live subscribers add.
func (c *config) stormSockets() int {
	if !c.Storm {
		return 0
	}
	return c.LiveConns
}

// liveKeyName is the routing key of the storm's live key i.
func liveKeyName(i int) string { return fmt.Sprintf("live%d", i) }

// publishesAMQP: the tool publishes to RabbitMQ itself.
func (c *config) publishesAMQP() bool { return c.Publish == "amqp" || c.Publish == "amqp-myxi" }

// wantsHistory: the spawned server gets a configuration giving -exchange a
// history.
func (c *config) wantsHistory() bool { return c.Storm || c.HistoryExchange }

// historyTOML is the configuration file a spawned server gets for -storm
// and -history-exchange: -exchange is public and keeps a history.
func (c *config) historyTOML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by myxi-bench\n[exchanges.%s]\npolicy = \"public\"\nhistory = %q\n", strconv.Quote(c.Exchange), c.History.String())
	if c.ReplayLimit > 0 {
		fmt.Fprintf(&b, "\n[limits]\nhistory_replay_limit = %d\n", c.ReplayLimit)
	}
	return b.String()
}

// floodSockets is how many sockets the flood adds to the clients.
func (c *config) floodSockets() int {
	if !c.Flood {
		return 0
	}
	return c.Flooders + 1
}

// floorConfig is the floor server's configuration for this run: it listens
// on the -url port of the loopback host.
func (c *config) floorConfig() *floorConfig {
	addr := "127.0.0.1:5005"
	if u, err := url.Parse(c.URL); err == nil {
		if p, err := urlPort(u); err == nil {
			host := u.Hostname()
			if host == "localhost" {
				host = "127.0.0.1"
			}
			addr = net.JoinHostPort(host, strconv.Itoa(p))
		}
	}
	return &floorConfig{Addr: addr, AMQP: c.AMQP, Exchange: c.Exchange, Prefetch: c.FloorPrefetch,
		MaxLength: c.FloorMaxLength, Overflow: c.FloorOverflow, AckEvery: c.FloorAckEvery}
}

// totalEvents is the number of events the run publishes.
func (c *config) totalEvents() int64 {
	return totalEvents(c.Rate, c.Duration)
}

// wsURL is the URL the clients dial: -url, with batch=1 added when asked.
func (c *config) wsURL() string {
	if !c.Batch {
		return c.URL
	}
	u, err := url.Parse(c.URL)
	if err != nil { // validated before; keep the input
		return c.URL
	}
	q := u.Query()
	q.Set("batch", "1")
	u.RawQuery = q.Encode()
	return u.String()
}

// keyName is the routing key of key index i.
func keyName(i int) string { return fmt.Sprintf("k%d", i) }

// maxPerKey is how many events one key can get at most in this run.
func maxPerKey(total int64, keys int) int64 {
	if keys < 1 {
		return 0
	}
	return (total + int64(keys) - 1) / int64(keys)
}
