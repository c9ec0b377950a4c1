package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func TestMedianOf(t *testing.T) {
	if medianOf([]float64{3, 1, 2}) != 2 || medianOf([]float64{4, 1, 3, 2}) != 2.5 || medianOf(nil) != 0 {
		t.Fatal("medianOf")
	}
}

func TestMediansOfResultLines(t *testing.T) {
	in := `noise
RESULT {"scenario":"S1","pass":true,"conns":100,"lat_p99_ms":10,"server_cores":0.5}
[  1.0s] progress
RESULT {"scenario":"S1","pass":true,"conns":100,"lat_p99_ms":30,"server_cores":0.7}
RESULT {"scenario":"S1","pass":false,"conns":100,"lat_p99_ms":20,"server_cores":0.9}
`
	runs, err := readResults(strings.NewReader(in))
	if err != nil || len(runs) != 3 {
		t.Fatalf("%d runs, %v", len(runs), err)
	}
	med, passed := medians(runs)
	if passed != 2 || med["lat_p99_ms"] != 20 || med["server_cores"] != 0.7 || med["conns"] != 100 {
		t.Fatalf("medians %v, passed %d", med, passed)
	}
	if _, err := readResults(strings.NewReader("RESULT {bad\n")); err == nil {
		t.Fatal("bad RESULT line accepted")
	}
	var out bytes.Buffer
	path := t.TempDir() + "/r.txt"
	if err := writeFile(path, in); err != nil {
		t.Fatal(err)
	}
	if code := runMedian(path, &out, &out); code != exitFail || !strings.Contains(out.String(), `MEDIAN {"median":{`) {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }
