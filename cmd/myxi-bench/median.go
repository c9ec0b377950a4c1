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
	"server_cores", "deliveries_per_server_cpu_s", "tool_cores", "broker_cores", "machine_cores", "other_cores",
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
			if f, ok := v.(float64); ok {
				vals[k] = append(vals[k], f)
			}
		}
	}
	med := map[string]float64{}
	for k, xs := range vals {
		med[k] = round3(medianOf(xs))
	}
	return med, passed
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
	for _, k := range medianFields {
		var xs []string
		for _, m := range runs {
			xs = append(xs, fmt.Sprint(m[k]))
		}
		fmt.Fprintf(stdout, "  %-28s median %-12v runs %s\n", k, med[k], strings.Join(xs, " "))
	}
	b, _ := json.Marshal(map[string]any{"runs": len(runs), "passed": passed, "median": med})
	fmt.Fprintf(stdout, "MEDIAN %s\n", b)
	if passed != len(runs) {
		return exitFail
	}
	return exitPass
}
