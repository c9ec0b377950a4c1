package main

import (
	"bytes"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

func TestCPUPerDeliveryAndRatio(t *testing.T) {
	if got := cpuPerDeliveryUS(5, 1_000_000); got != 5 {
		t.Fatalf("5 s for 1e6 deliveries: %v µs", got)
	}
	if cpuPerDeliveryUS(5, 0) != 0 || cpuPerDeliveryUS(-1, 10) != 0 {
		t.Fatal("no deliveries or negative CPU must give 0")
	}
	// Myxi 9 s for 2e6, floor 6 s for 2.4e6: 4.5 µs ÷ 2.5 µs = 1.8
	r, ok := floorRatio(9, 2_000_000, 6, 2_400_000)
	if !ok || math.Abs(r-1.8) > 1e-12 {
		t.Fatalf("ratio %v %v, want 1.8", r, ok)
	}
	for _, c := range [][4]float64{{9, 2e6, 0, 2e6}, {0, 2e6, 6, 2e6}, {9, 0, 6, 2e6}, {9, 2e6, 6, 0}} {
		if r, ok := floorRatio(c[0], int64(c[1]), c[2], int64(c[3])); ok || r != 0 {
			t.Errorf("%v: ratio %v %v, want not measurable", c, r, ok)
		}
	}
}

func TestCompareFloor(t *testing.T) {
	floor := &result{Target: "floor", Pass: true, ServerCPUS: 6, Received: 2_000_000, ServerCPUUSPerDelivery: 3,
		Warnings: []string{"noisy"}}
	server := &result{Target: "server", Pass: true, ServerCPUS: 7.2, Received: 2_000_000, ServerCPUUSPerDelivery: 3.6}
	out := compareFloor(floor, server)
	if !out.Pass || out.FloorRatio != 1.2 || out.FloorServerCPUUSPerDelivery != 3 || out.Floor != floor || out.Target != "server" {
		t.Fatalf("compare: %+v", out)
	}
	if len(out.Warnings) != 1 || out.Warnings[0] != "floor run: noisy" || len(server.Warnings) != 0 {
		t.Fatalf("warnings %q (server's own %q)", out.Warnings, server.Warnings)
	}
	var b bytes.Buffer
	writeCompare(&b, out)
	if !strings.Contains(b.String(), "server ÷ floor = 1.200") || !strings.Contains(b.String(), "PASS") ||
		strings.Contains(b.String(), "target") {
		t.Fatalf("report (no scenario: no target named):\n%s", b.String())
	}
	// The 1.15 bound is named for S1 only.
	for _, scenario := range []string{"S1", "S2"} {
		out.Scenario = scenario
		b.Reset()
		writeCompare(&b, out)
		if named := strings.Contains(b.String(), "target for S1: ≤ 1.15"); named != (scenario == "S1") {
			t.Fatalf("%s report names the S1 target: %v\n%s", scenario, named, b.String())
		}
	}
	out.Scenario = ""
	line := resultLine(out)
	if !strings.Contains(line, `"floor_ratio":1.2`) || !strings.Contains(line, `"floor":{`) {
		t.Fatalf("RESULT: %s", line)
	}

	// a failed floor run fails the comparison; an unmeasurable ratio warns
	floor.Pass, floor.Failures, floor.ServerCPUS, floor.Lost = false, []string{"lost 3 of 10 deliveries"}, 0, 3
	out = compareFloor(floor, server)
	if out.Pass || out.FloorRatio != 0 || len(out.Failures) != 1 || out.Failures[0] != "floor run: lost 3 of 10 deliveries" {
		t.Fatalf("failed floor: %+v", out)
	}
	if w := strings.Join(out.Warnings, "|"); !strings.Contains(w, "not measurable") || !strings.Contains(w, "floor lost 3, server 0") {
		t.Fatalf("warnings %q", out.Warnings)
	}
	if strings.Contains(resultLine(out), "floor_ratio") {
		t.Fatal("an unmeasurable ratio is in the RESULT line")
	}
}

func TestMedianOfComparisons(t *testing.T) {
	in := `RESULT {"pass":true,"conns":10,"floor_ratio":1.5,"server_cpu_us_per_delivery":4.5,"floor":{"server_cpu_us_per_delivery":3,"pass":true}}
RESULT {"pass":true,"conns":10,"floor_ratio":1.1,"server_cpu_us_per_delivery":3.3,"floor":{"server_cpu_us_per_delivery":3}}
RESULT {"pass":true,"conns":10,"floor_ratio":1.3,"server_cpu_us_per_delivery":4.0,"floor":{"server_cpu_us_per_delivery":3.1},"flood":{"healthy_p99_ms":12}}
`
	runs, err := readResults(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	med, _ := medians(runs)
	if med["floor_ratio"] != 1.3 || med["floor.server_cpu_us_per_delivery"] != 3 || med["server_cpu_us_per_delivery"] != 4 || med["flood.healthy_p99_ms"] != 12 {
		t.Fatalf("medians %v", med)
	}
	path := t.TempDir() + "/r.txt"
	if err := writeFile(path, in); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if code := runMedian(path, &out, &out); code != exitPass {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
	rows := map[string]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[1] == "median" {
			rows[f[0]] = strings.Join(f[2:], " ")
		}
	}
	for k, want := range map[string]string{
		"floor_ratio":                      "1.3 runs 1.5 1.1 1.3",
		"floor.server_cpu_us_per_delivery": "3 runs 3 3 3.1",
		"flood.healthy_p99_ms":             "12 runs <nil> <nil> 12",
	} {
		if rows[k] != want {
			t.Errorf("row %s: %q, want %q\n%s", k, rows[k], want, out.String())
		}
	}
}

func TestFloorAndFloodFlags(t *testing.T) {
	c, err := parseConfig([]string{"-scenario", "S1", "-floor-compare", "-spawn", "/tmp/myxi -exchanges bench", "-url", "ws://localhost:5006/"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	fc := c.floorConfig()
	if !c.FloorCompare || c.Conns != 10000 || fc.Addr != "127.0.0.1:5006" || fc.Prefetch != 1024 || fc.MaxLength != 100000 ||
		fc.Overflow != "drop-head" || fc.Exchange != "bench" {
		t.Fatalf("S1 -floor-compare: %+v floor %+v", c, fc)
	}
	if tg := c.targets(); len(tg) != 2 || !tg[0].floor || tg[1].floor {
		t.Fatalf("targets %+v", tg)
	}
	c, err = parseConfig([]string{"-floor", "-floor-prefetch", "64", "-floor-ack-every", "8", "-floor-max-length", "0", "-floor-overflow", "reject-publish"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if fc := c.floorConfig(); fc.Prefetch != 64 || fc.ackEvery() != 8 || fc.MaxLength != 0 || fc.Overflow != "reject-publish" || len(c.targets()) != 1 || !c.targets()[0].floor {
		t.Fatalf("-floor: %+v", fc)
	}
	c, err = parseConfig([]string{"-flood", "-flooders", "3", "-flood-duration", "2s", "-flood-ping-interval", "10ms"}, io.Discard)
	if err != nil || c.floodSockets() != 4 || c.FloodDuration != 2*time.Second || c.FloodInterval != 10*time.Millisecond {
		t.Fatalf("-flood: %+v %v", c, err)
	}
	if c, _ := parseConfig(nil, io.Discard); c.floodSockets() != 0 || c.Flooders != 1 || c.FloodDuration != 10*time.Second || c.FloodInterval != 50*time.Millisecond {
		t.Fatalf("flood defaults: %+v", c)
	}
	for name, args := range map[string][]string{
		"both floors":         {"-floor", "-floor-compare", "-spawn", "x"},
		"compare, no spawn":   {"-floor-compare"},
		"floor with spawn":    {"-floor", "-spawn", "x"},
		"floor with pid":      {"-floor", "-pid", "12"},
		"floor over http":     {"-floor", "-publish", "http"},
		"floor ack > fetch":   {"-floor", "-floor-prefetch", "10", "-floor-ack-every", "20"},
		"floor overflow":      {"-floor", "-floor-overflow", "x"},
		"flood with floor":    {"-flood", "-floor"},
		"flood with compare":  {"-flood", "-floor-compare", "-spawn", "x"},
		"no flooders":         {"-flood", "-flooders", "0"},
		"too many flooders":   {"-flood", "-flooders", "101"},
		"flood forever":       {"-flood", "-flood-duration", "1h"},
		"ping interval":       {"-flood", "-flood-ping-interval", "0s"},
		"flood frames":        {"-flood", "-flood-max-frames", "0"},
		"floor on a public":   {"-floor", "-url", "ws://10.0.0.1:5005/"},
		"floor, remote amqp":  {"-floor", "-amqp", "amqp://guest:guest@10.0.0.1:5672/"},
		"floor negative qlen": {"-floor", "-floor-max-length", "-1"},
	} {
		if _, err := parseConfig(args, io.Discard); err == nil {
			t.Errorf("%s: %v accepted", name, args)
		}
	}
}

func TestRTTPercentilesAndPingCount(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	p50, p99, mx := rttPercentiles(ds)
	if p50 != 50*time.Millisecond || p99 != 99*time.Millisecond || mx != 100*time.Millisecond {
		t.Fatalf("p50 %v p99 %v max %v", p50, p99, mx)
	}
	if ds[0] != 100*time.Millisecond {
		t.Fatal("rttPercentiles sorted its input")
	}
	if a, b, c := rttPercentiles(nil); a != 0 || b != 0 || c != 0 {
		t.Fatal("empty")
	}
	if p50, p99, _ := rttPercentiles([]time.Duration{7}); p50 != 7 || p99 != 7 {
		t.Fatal("one value")
	}
	for _, c := range []struct {
		d, i time.Duration
		want int
	}{{10 * time.Second, 50 * time.Millisecond, 201}, {time.Second, time.Second, 2}, {time.Hour, time.Millisecond, 100_000}, {time.Second, 0, 1}} {
		if got := pingCount(c.d, c.i); got != c.want {
			t.Errorf("pingCount(%v, %v) = %d, want %d", c.d, c.i, got, c.want)
		}
	}
}
