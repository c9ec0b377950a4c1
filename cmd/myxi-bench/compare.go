package main

import (
	"fmt"
	"io"
)

// -floor-compare (issue 13): the same scenario against the floor server and
// then against Myxi, compared by server CPU per delivery. The floor is what
// the fan-out costs at the least on this machine, so the ratio says how
// much Myxi adds to it.

// floorTarget is the ratio issue 13 aims at for S1.
const floorTarget = 1.15

// cpuPerDeliveryUS is server CPU microseconds per delivery; 0 when nothing
// was delivered.
func cpuPerDeliveryUS(cpuS float64, deliveries int64) float64 {
	if deliveries <= 0 || cpuS < 0 {
		return 0
	}
	return cpuS * 1e6 / float64(deliveries)
}

// floorRatio is Myxi's server CPU per delivery over the floor's. It is not
// measurable (false) when either run delivered nothing or the floor's CPU
// stayed under one clock tick.
func floorRatio(myxiCPUS float64, myxiDeliveries int64, floorCPUS float64, floorDeliveries int64) (float64, bool) {
	m := cpuPerDeliveryUS(myxiCPUS, myxiDeliveries)
	f := cpuPerDeliveryUS(floorCPUS, floorDeliveries)
	if m <= 0 || f <= 0 {
		return 0, false
	}
	return m / f, true
}

// compareFloor is the result of a -floor-compare invocation: Myxi's run,
// with the floor's run inside it and the ratio. It passes when both runs
// passed.
func compareFloor(floor, server *result) *result {
	out := *server
	out.Failures = append([]string(nil), server.Failures...)
	out.Warnings = append([]string(nil), server.Warnings...)
	out.Floor = floor
	out.FloorServerCPUUSPerDelivery = floor.ServerCPUUSPerDelivery
	if ratio, ok := floorRatio(server.ServerCPUS, server.Received, floor.ServerCPUS, floor.Received); ok {
		out.FloorRatio = round3(ratio)
	} else {
		out.warn("the floor ratio is not measurable: a run delivered nothing or used less CPU than the clock resolution (10 ms); raise -conns, -rate or -duration")
	}
	if floor.Lost > 0 || server.Lost > 0 {
		out.warn("a run did not deliver everything within -drain (floor lost %d, server %d): its CPU window ended with work left, so the ratio compares unequal work", floor.Lost, server.Lost)
	}
	for _, f := range floor.Failures {
		out.fail("floor run: %s", f)
	}
	for _, w := range floor.Warnings {
		out.warn("floor run: %s", w)
	}
	out.Pass = len(out.Failures) == 0
	return &out
}

func writeCompare(w io.Writer, r *result) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	f := r.Floor
	name := r.Scenario
	if name == "" {
		name = "custom"
	}
	p("== myxi-bench: %s, floor vs server ==", name)
	line := func(label string, x *result) {
		p("%-10s %.2f s server CPU (%.2f cores) for %s deliveries: %.3f µs per delivery (%s per CPU-s); p99 %s",
			label, x.ServerCPUS, x.ServerCores, group(x.Received), x.ServerCPUUSPerDelivery, group(int64(x.DeliveriesPerCPU)), fmtMs(x.LatP99Ms))
	}
	line("floor", f)
	line("server", r)
	if r.FloorRatio > 0 {
		if r.Scenario == "S1" {
			p("ratio      server ÷ floor = %.3f (issue 13's target for S1: ≤ %.2f)", r.FloorRatio, floorTarget)
		} else {
			p("ratio      server ÷ floor = %.3f", r.FloorRatio)
		}
	} else {
		p("ratio      not measurable")
	}
	if f.OtherCores > noisyCores || r.OtherCores > noisyCores {
		p("warning    other processes took CPU during a run (floor %.2f, server %.2f cores): the ratio is noisy", f.OtherCores, r.OtherCores)
	}
	if r.Pass {
		p("verdict    PASS (both runs)")
	} else {
		p("verdict    FAIL")
	}
}

// checkFlood turns the flood's figures into warnings: the report states
// them, and the deliveries decide the verdict.
func checkFlood(r *result) {
	f := r.Flood
	if f.HealthyMissing > 0 {
		r.warn("flood: the healthy socket got no Pong for %d of %d Pings", f.HealthyMissing, f.HealthySent)
	}
	if f.HealthyOver200ms > 0 {
		r.warn("flood: %d of the healthy socket's Pongs took over 200 ms (p99 %.1f ms)", f.HealthyOver200ms, f.HealthyP99Ms)
	}
	if f.HealthyEnd != "" {
		r.warn("flood: the healthy socket ended early: %s", f.HealthyEnd)
	}
	if f.Closed < f.Flooders {
		r.warn("flood: the server closed %d of %d flooders", f.Closed, f.Flooders)
	}
}
