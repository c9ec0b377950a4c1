package myxi

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/time/rate"

	"github.com/myxi/myxi/broker"
	"github.com/myxi/myxi/internal/protocol"
)

// metrics are the node's Prometheus metrics, in a registry of their own so
// that several servers in one process (tests, embedding) do not collide.
type metrics struct {
	registry       *prometheus.Registry
	connections    prometheus.Gauge
	subscriptions  prometheus.Gauge
	bindings       prometheus.Gauge
	actions        *prometheus.CounterVec
	eventsIn       prometheus.Counter
	fanout         prometheus.Counter
	delivered      prometheus.Counter
	dropped        prometheus.Counter
	slowClients    prometheus.Counter
	badMessages    *prometheus.CounterVec
	badMessageLog  rate.Sometimes // paces the log lines of dropped broker messages
	pushed         prometheus.Counter
	pushErrors     prometheus.Counter
	refused        prometheus.Counter
	refusedOrigins prometheus.Counter
	authed         prometheus.Gauge
	latency        prometheus.Histogram
	historyRecords prometheus.Counter
	historyLost    prometheus.Counter
	recoveries     *prometheus.CounterVec
	replayed       prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		registry: prometheus.NewRegistry(),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "myxi_connections", Help: "Live WebSocket sessions on this node."}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "myxi_subscriptions", Help: "Subscriptions of the live sessions."}),
		bindings: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "myxi_broker_bindings", Help: "(exchange, routing key) pairs bound to this node on the broker."}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "myxi_actions_total", Help: "Client actions by name and outcome (ok or the error name)."},
			[]string{"action", "outcome"}),
		eventsIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "myxi_broker_events_total", Help: "Application events received from the broker."}),
		fanout: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "myxi_events_queued_total", Help: "Application events queued to sessions (one per subscriber)."}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "myxi_events_written_total", Help: "Events written to client sockets."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "myxi_events_dropped_total", Help: "Events dropped because a client's send queue was full."}),
		slowClients: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "myxi_slow_client_disconnects_total", Help: "Sessions closed (1008) for not reading fast enough."}),
		badMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "myxi_broker_bad_messages_total", Help: "Broker messages dropped at this node by reason: invalid_utf8, not_object, bad_event (missing, empty or not a string), bad_payload (an array or a scalar), too_large (over Limits.MaxEventBytes)."},
			[]string{"reason"}),
		badMessageLog: rate.Sometimes{Interval: time.Second},
		pushed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "myxi_pushes_total", Help: "Events pushed through this node's Push and confirmed by the broker."}),
		pushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "myxi_push_errors_total", Help: "Pushes through this node that the broker did not take."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "myxi_connections_refused_total", Help: "Upgrades refused at the connection limit."}),
		refusedOrigins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "myxi_origins_refused_total", Help: "WebSocket upgrades refused for their Origin (403)."}),
		authed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "myxi_sessions_authenticated", Help: "Live sessions with an authenticated user."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "myxi_delivery_latency_seconds",
			Help:    "Time from an event's arrival from the broker to its write to a client socket (sampled once per socket write).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		historyRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "myxi_history_records_total", Help: "Records this node read from the histories of history exchanges."}),
		historyLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "myxi_history_lost_sessions_total", Help: "Sessions closed with 1011 because their history was reset or their replay fell behind, so that their clients recover."}),
		recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "myxi_recoveries_total", Help: "Subscribes with since on history exchanges, by result: recovered, not_recovered."},
			[]string{"result"}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "myxi_replayed_events_total", Help: "Recorded events queued to clients by replays."}),
	}
}

func (m *metrics) register(s *Server) {
	m.recoveries.WithLabelValues("recovered")
	m.recoveries.WithLabelValues("not_recovered")
	for _, reason := range protocol.DropReasons {
		m.badMessages.WithLabelValues(reason) // every reason shows, at 0, before its first drop
	}
	m.registry.MustRegister(
		m.connections, m.subscriptions, m.bindings, m.actions, m.eventsIn, m.fanout, m.delivered,
		m.dropped, m.slowClients, m.badMessages, m.pushed, m.pushErrors, m.refused, m.refusedOrigins, m.authed, m.latency,
		m.historyRecords, m.historyLost, m.recoveries, m.replayed,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "myxi_broker_ready", Help: "1 when the broker is connected."},
			func() float64 {
				if s.broker.Ready() {
					return 1
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "myxi_broker_reconnects_total", Help: "Times the broker connection was re-established."},
			func() float64 {
				if r, ok := s.broker.(interface{ Connects() uint64 }); ok && r.Connects() > 1 {
					return float64(r.Connects() - 1)
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "myxi_broker_queue_dropped_total", Help: "Events the broker dropped from this node's queue because the node fell behind (its queue was full); 0 for brokers that cannot tell."},
			func() float64 {
				if r, ok := s.broker.(broker.StatsReporter); ok {
					return float64(r.Stats().Dropped)
				}
				return 0
			}),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
}

// actionLabel keeps the metric's label set bounded: unknown action names
// sent by clients are folded into one label.
func (s *Server) actionLabel(name string) string {
	if builtinActions[name] {
		return name
	}
	if _, ok := s.cfg.Actions[name]; ok {
		return name
	}
	return "(unknown)"
}
