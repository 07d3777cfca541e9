package bench

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func sampleResults() *Results {
	systems := []string{"host-gw", Baseline, "overlayd-udp"}
	runs := sampleRuns()
	return &Results{
		Started:  time.Date(2026, 11, 22, 1, 56, 10, 0, time.UTC),
		Finished: time.Date(2026, 11, 22, 2, 6, 10, 0, time.UTC),
		Machine:  Machine{Kernel: "6.18.44-fc-v669", CPUModel: "AMD EPYC", Cores: 2},
		Iperf3:   "iperf 3.12 (cJSON 1.7.15)",
		Latency:  latencyWorkload,
		Duration: 10,
		Rounds:   2,
		Systems:  systems,
		Runs:     runs,
		Medians:  Summarize(systems, runs),
	}
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it); got:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, sampleResults()); err != nil {
		t.Fatal(err)
	}
	golden(t, "table.golden", b.Bytes())
}

func TestWriteMarkdown(t *testing.T) {
	var b bytes.Buffer
	if err := WriteMarkdown(&b, sampleResults()); err != nil {
		t.Fatal(err)
	}
	golden(t, "table.md.golden", b.Bytes())
}

func TestCells(t *testing.T) {
	for _, tt := range []struct {
		s    Stat
		want string
	}{
		{Stat{Median: 12.345, Runs: 3}, "12.35"},
		{Stat{Median: 12.345, Runs: 2, Failed: 1}, "12.35*"},
		{Stat{Runs: 0, Failed: 3}, "failed"},
		{Stat{}, "-"}, // not measured
	} {
		if got := stat(tt.s, "%.2f"); got != tt.want {
			t.Errorf("stat(%+v) = %q, want %q", tt.s, got, tt.want)
		}
	}
	if got := ratio(nil); got != "-" {
		t.Errorf("ratio(nil) = %q, want -", got)
	}
	if got := ratio(f64(0.126)); got != "0.13" {
		t.Errorf("ratio(0.126) = %q, want 0.13", got)
	}
}

func TestWriteFiles(t *testing.T) {
	r := sampleResults()
	path := filepath.Join(t.TempDir(), "results", "bench-x.json")
	files, err := WriteFiles(path, r)
	if err != nil {
		t.Fatal(err)
	}
	md := files.Report
	if want := filepath.Join(filepath.Dir(path), "bench-x.md"); md != want {
		t.Errorf("markdown at %s, want %s", md, want)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, r) {
		t.Errorf("JSON round trip changed the results:\n got %+v\nwant %+v", back, *r)
	}
	if _, err := os.Stat(md); err != nil {
		t.Error(err)
	}
}

func TestDefaultOut(t *testing.T) {
	got := DefaultOut(time.Date(2026, 11, 22, 1, 2, 3, 0, time.FixedZone("x", 3600)))
	if want := filepath.Join("perf", "results", "bench-20261122T000203Z.json"); got != want {
		t.Errorf("DefaultOut = %s, want %s", got, want)
	}
}

func TestParseCPUInfo(t *testing.T) {
	in := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\n\n" +
		"processor\t: 1\nmodel name\t: AMD EPYC 9B14\n"
	model, cores := ParseCPUInfo([]byte(in))
	if model != "AMD EPYC 9B14" || cores != 2 {
		t.Errorf("got %q, %d; want AMD EPYC 9B14, 2", model, cores)
	}
}

// The progress line of a latency test says what the forwarders' threads
// did per transaction, when there are forwarders.
func TestDescribeLatency(t *testing.T) {
	l := &LatencyResult{Transactions: 1000, TPS: 100, P50US: 120, P99US: 300}
	kernel := describe(Measurement{Test: TCPRR, Result: &Result{Latency: l}})
	if kernel != "p50 120.0 µs, p99 300.0 µs, 100 transactions/s" {
		t.Errorf("kernel system: %q", kernel)
	}
	ovd := describe(Measurement{Test: TCPRR, Result: &Result{Latency: l, Forwarders: &ThreadUse{OnCPU: 0.08, Sleeps: 4100}}})
	if want := kernel + "; forwarders 4.1 sleeps, 80.0 CPU µs per transaction"; ovd != want {
		t.Errorf("overlayd: %q, want %q", ovd, want)
	}
}
