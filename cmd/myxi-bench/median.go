package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
)

// -median FILE: the issue compares medians of at least 3 runs. This reads
// the RESULT lines of several runs (a file, or - for stdin) and prints the
// median of every numeric field, as a table and as one line "MEDIAN {json}".

// medianFields are shown in the table, in this order (all numeric fields are
// in the MEDIAN line).
var medianFields = []string{
	"connected", "connect_failed", "connect_s", "rss_per_conn_kb",
	"expected", "received", "lost", "deliveries_per_s",
	"lat_p50_ms", "lat_p90_ms", "lat_p99_ms", "lat_max_ms",
	"server_cores", "deliveries_per_server_cpu_s", "server_cpu_us_per_delivery",
	"tool_cores", "broker_cores", "machine_cores", "other_cores",
}

// optionalMedianFields are shown when some run has them: -floor-compare and
// -flood runs. Nested objects are flattened one level ("floor.x").
var optionalMedianFields = []string{
	"floor.server_cpu_us_per_delivery", "floor.server_cores", "floor.lat_p99_ms", "floor.other_cores", "floor_ratio",
	"flood.sent_per_s", "flood.closed", "flood.first_close_after_s",
	"flood.healthy_p50_ms", "flood.healthy_p99_ms", "flood.healthy_max_ms", "flood.healthy_missing",
	"flood.healthy_during_flood", "flood.healthy_during_flood_p99_ms",
}

// readResults parses the RESULT lines of r.
func readResults(r io.Reader) ([]map[string]any, error) {
	var out []map[string]any
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	for sc.Scan() {
		js, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "RESULT ")
		if !ok {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(js), &m); err != nil {
			return nil, fmt.Errorf("RESULT line %d: %v", len(out)+1, err)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// medianOf is the median of xs (the mean of the middle two for an even count).
func medianOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// medians returns the median of every numeric field, and how many runs passed.
func medians(runs []map[string]any) (map[string]float64, int) {
	vals := map[string][]float64{}
	passed := 0
	for _, m := range runs {
		if p, _ := m["pass"].(bool); p {
			passed++
		}
		for k, v := range m {
			switch v := v.(type) {
			case float64:
				vals[k] = append(vals[k], v)
			case map[string]any:
				for k2, v2 := range v {
					if f, ok := v2.(float64); ok {
						vals[k+"."+k2] = append(vals[k+"."+k2], f)
					}
				}
			}
		}
	}
	med := map[string]float64{}
	for k, xs := range vals {
		med[k] = round3(medianOf(xs))
	}
	return med, passed
}

// field is m[k], or for "a.b" the field b of the object m["a"] (nil when
// absent).
func field(m map[string]any, k string) any {
	if v, ok := m[k]; ok {
		return v
	}
	outer, inner, ok := strings.Cut(k, ".")
	if !ok {
		return nil
	}
	if o, ok := m[outer].(map[string]any); ok {
		return o[inner]
	}
	return nil
}

func runMedian(path string, stdout, stderr io.Writer) int {
	in := io.Reader(os.Stdin)
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintln(stderr, "myxi-bench:", err)
			return exitSetup
		}
		defer f.Close()
		in = f
	}
	runs, err := readResults(in)
	if err != nil {
		fmt.Fprintln(stderr, "myxi-bench:", err)
		return exitSetup
	}
	if len(runs) == 0 {
		fmt.Fprintln(stderr, "myxi-bench: no RESULT lines in", path)
		return exitSetup
	}
	med, passed := medians(runs)
	scen := map[string]bool{}
	for _, m := range runs {
		s, _ := m["scenario"].(string)
		scen[fmt.Sprintf("%s conns=%v keys=%v rate=%v batch=%v", s, m["conns"], m["keys"], m["rate"], m["batch"])] = true
	}
	var setups []string
	for s := range scen {
		setups = append(setups, s)
	}
	sort.Strings(setups)
	fmt.Fprintf(stdout, "%d runs, %d passed; setups: %s\n", len(runs), passed, strings.Join(setups, " | "))
	if len(setups) > 1 {
		fmt.Fprintln(stdout, "warning: the runs differ in setup; their medians mix them")
	}
	fields := slices.Clone(medianFields)
	for _, k := range optionalMedianFields {
		if _, ok := med[k]; ok {
			fields = append(fields, k)
		}
	}
	for _, k := range fields {
		var xs []string
		for _, m := range runs {
			xs = append(xs, fmt.Sprint(field(m, k)))
		}
		fmt.Fprintf(stdout, "  %-34s median %-12v runs %s\n", k, med[k], strings.Join(xs, " "))
	}
	b, _ := json.Marshal(map[string]any{"runs": len(runs), "passed": passed, "median": med})
	fmt.Fprintf(stdout, "MEDIAN %s\n", b)
	if passed != len(runs) {
		return exitFail
	}
	return exitPass
}
