package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// result is the run's outcome: printed for people by writeReport, and as one
// JSON line prefixed "RESULT " for scripts.
type result struct {
	Scenario     string   `json:"scenario"`
	Target       string   `json:"target"` // "server" or "floor"
	Pass         bool     `json:"pass"`
	Failures     []string `json:"failures"`
	Warnings     []string `json:"warnings"`
	URL          string   `json:"url"`
	Exchange     string   `json:"exchange"`
	Conns        int      `json:"conns"`
	Keys         int      `json:"keys"`
	Rate         float64  `json:"rate"`
	DurationS    float64  `json:"duration_s"`
	Batch        bool     `json:"batch"`
	PayloadBytes int      `json:"payload_bytes"`
	Confirm      bool     `json:"confirm"`
	SourceIPs    int      `json:"source_ips"`
	ConnectLimit float64  `json:"connect_rate_limit"`
	SettleS      float64  `json:"settle_s"`

	Connected      int           `json:"connected"`
	ConnectFailed  int           `json:"connect_failed"`
	ConnectReasons []reasonCount `json:"connect_fail_reasons,omitempty"`
	ConnectS       float64       `json:"connect_s"`
	ConnectPerS    float64       `json:"connect_per_s"`
	NoWelcome      int           `json:"no_welcome"`
	Dropped        int           `json:"dropped_conns"`
	DropReasons    []reasonCount `json:"drop_reasons,omitempty"`

	Publish         string  `json:"publish,omitempty"` // -publish
	HistoryExchange bool    `json:"history_exchange,omitempty"`
	PublishRecorded bool    `json:"publish_recorded,omitempty"` // amqp-myxi: the exchange had a history, so the events were recorded
	Published       int64   `json:"published"`
	PublishErrors   int64   `json:"publish_errors"`
	PublishFirstErr string  `json:"publish_first_error,omitempty"`
	Nacked          int64   `json:"nacked"`
	Unroutable      int64   `json:"unroutable"`
	PublishRate     float64 `json:"publish_rate"`
	PublishMaxLagMs float64 `json:"publish_max_lag_ms"`

	Expected        int64   `json:"expected"`
	Received        int64   `json:"received"`
	Lost            int64   `json:"lost"`
	LossPct         float64 `json:"loss_pct"`
	Dups            int64   `json:"dups"`
	WrongKey        int64   `json:"wrong_key"`
	OutOfRange      int64   `json:"out_of_range"`
	Unparsable      int64   `json:"unparsable"`
	ErrorEvents     int64   `json:"error_events"`
	FirstErrorEvent string  `json:"first_error_event,omitempty"`
	Frames          int64   `json:"frames"`
	DeliveriesPerS  float64 `json:"deliveries_per_s"`
	WindowS         float64 `json:"delivery_window_s"`
	DrainS          float64 `json:"drain_s"`

	LatP50Ms  float64 `json:"lat_p50_ms"`
	LatP90Ms  float64 `json:"lat_p90_ms"`
	LatP99Ms  float64 `json:"lat_p99_ms"`
	LatP999Ms float64 `json:"lat_p999_ms"`
	LatMaxMs  float64 `json:"lat_max_ms"`
	LatMeanMs float64 `json:"lat_mean_ms"`

	ServerPID         int     `json:"server_pid"`
	ServerName        string  `json:"server_name,omitempty"`
	RSSBeforeKB       int64   `json:"rss_before_kb"`
	RSSAfterKB        int64   `json:"rss_after_settle_kb"`
	RSSPerConnKB      float64 `json:"rss_per_conn_kb"`
	RSSAfterPublishKB int64   `json:"rss_after_publish_kb"`
	RSSPeakKB         int64   `json:"rss_peak_kb"`

	PhaseS           float64 `json:"phase_s"` // publish phase wall (publish + drain)
	ServerCPUS       float64 `json:"server_cpu_s"`
	ServerCores      float64 `json:"server_cores"`
	DeliveriesPerCPU float64 `json:"deliveries_per_server_cpu_s"`
	// ServerCPUUSPerDelivery is server CPU microseconds per delivery.
	ServerCPUUSPerDelivery float64 `json:"server_cpu_us_per_delivery"`
	ToolCPUS               float64 `json:"tool_cpu_s"`
	ToolCores              float64 `json:"tool_cores"`
	BrokerPID              int     `json:"broker_pid"`
	BrokerCPUS             float64 `json:"broker_cpu_s"`
	BrokerCores            float64 `json:"broker_cores"`
	MachineCores           float64 `json:"machine_cores"` // busy cores of the whole machine
	MachineCoresAll        int     `json:"machine_cores_total"`
	OtherCores             float64 `json:"other_cores"` // machine - server - tool - broker, at least 0
	EventsPerFrame         float64 `json:"events_per_frame"`

	ConnectServerCPUS float64 `json:"connect_server_cpu_s"`
	ConnectToolCPUS   float64 `json:"connect_tool_cpu_s"`
	ToolPeakRSSKB     int64   `json:"tool_peak_rss_kb"`

	// -floor-compare: the floor's run, its CPU per delivery and Myxi's
	// over it (0 when not measurable).
	Floor                       *result `json:"floor,omitempty"`
	FloorServerCPUUSPerDelivery float64 `json:"floor_server_cpu_us_per_delivery,omitempty"`
	FloorRatio                  float64 `json:"floor_ratio,omitempty"`

	Flood *floodResult `json:"flood,omitempty"`
	Storm *stormResult `json:"storm,omitempty"`
}

func (r *result) fail(format string, a ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, a...))
}
func (r *result) warn(format string, a ...any) {
	r.Warnings = append(r.Warnings, fmt.Sprintf(format, a...))
}

func ms(ns float64) float64 { return round3(ns / 1e6) }

func round3(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return math.Round(f*1000) / 1000
}

// fmtKB prints a size given in kB.
func fmtKB(kb int64) string {
	switch {
	case kb >= 1<<20:
		return fmt.Sprintf("%.2f GiB", float64(kb)/(1<<20))
	case kb >= 1<<10:
		return fmt.Sprintf("%.1f MiB", float64(kb)/(1<<10))
	}
	return fmt.Sprintf("%d KiB", kb)
}

// fmtMs prints a latency given in ms with sensible precision.
func fmtMs(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2f s", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.3f ms", v)
}

// group prints n with thousands separators.
func group(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func writeReport(w io.Writer, r *result, publishing bool) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	name := r.Scenario
	if name == "" {
		name = "custom"
	}
	if r.Target == "floor" {
		name += " (floor server)"
	}
	p("== myxi-bench: %s ==", name)
	hist := ""
	if r.HistoryExchange {
		hist = " (history configured)"
	}
	p("target     %s  exchange %q%s", r.URL, r.Exchange, hist)
	events := "no events"
	if publishing || r.Rate > 0 {
		events = fmt.Sprintf("%g events/s for %gs (payload >= %d B, confirm=%v)", r.Rate, r.DurationS, r.PayloadBytes, r.Confirm)
	}
	p("setup      %s clients over %s keys; %s; batch=%v; source IPs %d",
		group(int64(r.Conns)), group(int64(r.Keys)), events, r.Batch, r.SourceIPs)
	if r.ServerPID > 0 {
		p("server     pid %d (%s), RSS before connecting %s", r.ServerPID, r.ServerName, fmtKB(r.RSSBeforeKB))
	} else {
		p("server     not sampled (no pid)")
	}
	limit := "no limit"
	if r.ConnectLimit > 0 {
		limit = fmt.Sprintf("limit %g/s", r.ConnectLimit)
	}
	p("connect    %s subscribed, %s failed in %.2f s (%.0f/s, %s); server CPU %.2f s, tool CPU %.2f s",
		group(int64(r.Connected)), group(int64(r.ConnectFailed)), r.ConnectS, r.ConnectPerS, limit, r.ConnectServerCPUS, r.ConnectToolCPUS)
	for _, rc := range r.ConnectReasons {
		p("           %d× %s", rc.Count, rc.Reason)
	}
	if r.ServerPID > 0 {
		p("memory     RSS after connect + %gs settle %s: %.1f KiB per connection", r.SettleS, fmtKB(r.RSSAfterKB), r.RSSPerConnKB)
	}
	if publishing {
		p("publish    %s events in %.2f s (%.1f/s achieved), errors %d, nacked %d, unroutable %d, max lag %.1f ms",
			group(r.Published), r.WindowS-r.DrainS, r.PublishRate, r.PublishErrors, r.Nacked, r.Unroutable, r.PublishMaxLagMs)
		if r.PublishFirstErr != "" {
			p("           first error: %s", r.PublishFirstErr)
		}
		if r.Publish == "amqp-myxi" {
			how := "published live-only (the exchange has no history)"
			if r.PublishRecorded {
				how = "recorded (appended to the exchange's history)"
			}
			p("           with Myxi's Go publisher: %s", how)
		}
		p("deliveries expected %s, received %s, lost %s (%.4f%%); dups %d, wrong key %d, unparsable %d, error events %d",
			group(r.Expected), group(r.Received), group(r.Lost), r.LossPct, r.Dups, r.WrongKey, r.Unparsable, r.ErrorEvents)
		p("           %s deliveries/s over %.2f s (drain %.3f s after the last publish); %s frames, %.2f events per frame",
			group(int64(r.DeliveriesPerS)), r.WindowS, r.DrainS, group(r.Frames), r.EventsPerFrame)
		p("latency    p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (mean %s)",
			fmtMs(r.LatP50Ms), fmtMs(r.LatP90Ms), fmtMs(r.LatP99Ms), fmtMs(r.LatP999Ms), fmtMs(r.LatMaxMs), fmtMs(r.LatMeanMs))
		if r.ServerPID > 0 {
			p("cpu        publish phase %.2f s wall: server %.2f s = %.2f cores -> %s deliveries per server CPU-s (%.3f µs per delivery)",
				r.PhaseS, r.ServerCPUS, r.ServerCores, group(int64(r.DeliveriesPerCPU)), r.ServerCPUUSPerDelivery)
		} else {
			p("cpu        publish phase %.2f s wall", r.PhaseS)
		}
		broker := "RabbitMQ not sampled"
		if r.BrokerPID > 0 {
			broker = fmt.Sprintf("RabbitMQ (pid %d) %.2f s = %.2f cores", r.BrokerPID, r.BrokerCPUS, r.BrokerCores)
		}
		p("           tool %.2f s = %.2f cores; %s", r.ToolCPUS, r.ToolCores, broker)
		p("           machine %.2f of %d cores busy (the rest: %.2f)", r.MachineCores, r.MachineCoresAll, r.OtherCores)
		if r.ServerPID > 0 {
			p("           server RSS after publishing %s (peak %s)", fmtKB(r.RSSAfterPublishKB), fmtKB(r.RSSPeakKB))
		}
	}
	if f := r.Flood; f != nil {
		p("flood      %d flooder(s) for %gs: %s Pings sent (%s/s); replies %s (Pong %s, RateLimited %s)",
			f.Flooders, f.DurationS, group(f.Sent), group(int64(f.SentPerS)), group(f.Replies), group(f.Pongs), group(f.RateLimited))
		for i, o := range f.PerFlooder {
			if o.CloseCode != 0 {
				p("           flooder %d: closed by the server after %.2f s with %d %q; sent %s Pings in %.2f s (%s/s)",
					i+1, o.ClosedAfter, o.CloseCode, o.CloseText, group(o.Sent), o.SendingS, group(int64(o.SentPerS)))
			} else {
				p("           flooder %d: not closed by the server; %s; sent %s Pings in %.2f s (%s/s)",
					i+1, o.End, group(o.Sent), o.SendingS, group(int64(o.SentPerS)))
			}
		}
		p("healthy    %d Pings, %d answered (%d missing, %d RateLimited): Pong p50 %s  p99 %s  max %s; %d over 200 ms",
			f.HealthySent, f.HealthyAnswered, f.HealthyMissing, f.HealthyLimited, fmtMs(f.HealthyP50Ms), fmtMs(f.HealthyP99Ms), fmtMs(f.HealthyMaxMs), f.HealthyOver200ms)
		p("           while a flooder was sending: %d Pongs, p99 %s  max %s", f.HealthyDuringN, fmtMs(f.HealthyDuringP99Ms), fmtMs(f.HealthyDuringMaxMs))
	}
	if r.ToolPeakRSSKB > 0 {
		p("tool       peak RSS %s", fmtKB(r.ToolPeakRSSKB))
	}
	if r.Dropped > 0 {
		p("dropped    %d connections closed during the run:", r.Dropped)
		for _, rc := range r.DropReasons {
			p("           %d× %s", rc.Count, rc.Reason)
		}
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

// resultLine is the one-line machine-readable summary.
func resultLine(r *result) string {
	if r.Failures == nil {
		r.Failures = []string{}
	}
	if r.Warnings == nil {
		r.Warnings = []string{}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Sprintf(`RESULT {"pass":false,"failures":[%q]}`, err.Error())
	}
	return "RESULT " + string(b)
}

func secs(d time.Duration) float64 { return round3(d.Seconds()) }
