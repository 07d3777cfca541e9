package bench

import (
	"reflect"
	"slices"
	"testing"
)

func TestSizes(t *testing.T) {
	for _, tt := range []struct {
		largest int
		quick   bool
		want    []int
	}{
		{1472, false, []int{64, 256, 1024, 1472}},
		{1422, true, []int{64, 1024, 1422}},
		{8972, false, []int{64, 256, 1024, 4096, 8972}},
		{1024, false, []int{64, 256, 1024}}, // largest is not repeated
	} {
		if got := sizes(tt.largest, tt.quick); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("sizes(%d, %v) = %v, want %v", tt.largest, tt.quick, got, tt.want)
		}
	}
}

func TestSweepWorkloads(t *testing.T) {
	ws := sweepWorkloads([]string{SweepWindow, SweepUDPSize}, 1450, false)
	var names []string
	for _, w := range ws {
		names = append(names, w.name)
	}
	want := []string{
		"tcp_window/32768", "tcp_window/65536", "tcp_window/131072", "tcp_window/262144", "tcp_window/524288", "tcp_window/1048576", "tcp_window/4194304",
		"udp_size/64", "udp_size/256", "udp_size/1024", "udp_size/1422",
	}
	if !slices.Equal(names, want) {
		t.Errorf("workloads %v, want %v", names, want)
	}
	last := ws[len(ws)-1]
	if last.sweep != SweepUDPSize || last.x != 1422 || !slices.Equal(last.args, []string{"-u", "-b", "0", "-l", "1422"}) {
		t.Errorf("last workload %+v: want UDP of 1422 bytes at unlimited rate", last)
	}
	if tcp := sweepWorkloads([]string{SweepTCPSize}, 1500, true); tcp[len(tcp)-1].x != 1460 {
		t.Errorf("TCP size sweep ends at %d, want the MSS of a 1500 MTU, 1460", tcp[len(tcp)-1].x)
	}
}

func TestSummarizeSweeps(t *testing.T) {
	point := func(sweep string, x int, gbps float64) Measurement {
		return Measurement{Test: sweep, Sweep: sweep, X: x, Result: &Result{Gbps: gbps}}
	}
	failed := Measurement{Test: "tcp_window/32768", Sweep: SweepWindow, X: 32768, Error: "iperf3: boom"}
	runs := []Trial{
		{Round: 1, System: Baseline, Tests: []Measurement{point(SweepWindow, 32768, 1), point(SweepWindow, 65536, 2), {Test: TCP1, Result: &Result{Gbps: 9}}}},
		{Round: 1, System: "flanneld-udp", SetupError: "no flanneld binary"},
		{Round: 2, System: Baseline, Tests: []Measurement{failed, point(SweepWindow, 65536, 4)}},
		{Round: 3, System: Baseline, Tests: []Measurement{point(SweepWindow, 32768, 3), point(SweepWindow, 65536, 3)}},
	}
	got := SummarizeSweeps([]string{Baseline, "flanneld-udp", "overlayd-udp"}, runs)
	want := []SweepSummary{
		{Sweep: SweepWindow, System: Baseline, Points: []SweepPoint{
			{X: 32768, Gbps: Stat{Median: 2, Runs: 2, Failed: 1}},
			{X: 65536, Gbps: Stat{Median: 3, Runs: 3}},
		}},
		{Sweep: SweepWindow, System: "flanneld-udp", SetupFailed: 1},
		{Sweep: SweepWindow, System: "overlayd-udp"}, // never reached
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	// The headline medians ignore the sweep points.
	if s := Summarize([]string{Baseline}, runs)[0]; s.TCP1Gbps != (Stat{Median: 9, Runs: 1}) {
		t.Errorf("TCP1 = %+v, want the one tcp1 run", s.TCP1Gbps)
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int]string{64: "64", 1472: "1472", 32 << 10: "32K", 1 << 20: "1M", 4 << 20: "4M", 1536: "1536"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestOptionsQuickAndSweeps(t *testing.T) {
	o, err := Options{Quick: true, Flanneld: "/opt/flanneld", Lab: "lab"}.withDefaults(sampleResults().Started)
	if err != nil {
		t.Fatal(err)
	}
	if o.Rounds != 1 || o.Duration.Seconds() != 2 || o.SweepDuration.Seconds() != 1 || o.UnderlayMTU != 1500 {
		t.Errorf("quick: %d rounds, %s, %s per point, MTU %d; want 1, 2s, 1s, 1500", o.Rounds, o.Duration, o.SweepDuration, o.UnderlayMTU)
	}
	if want := append(slices.Clone(DefaultSystems), FlanneldSystems...); !slices.Equal(o.Systems, want) {
		t.Errorf("systems %v, want the defaults and flanneld's %v", o.Systems, want)
	}
	if !slices.Equal(o.Sweeps, SweepNames) {
		t.Errorf("sweeps %v, want all", o.Sweeps)
	}
	o, err = Options{Sweeps: []string{}, Rounds: 5, Lab: "lab"}.withDefaults(sampleResults().Started)
	if err != nil || len(o.Sweeps) != 0 || o.Rounds != 5 || o.Duration.Seconds() != 10 {
		t.Errorf("explicit options: %+v, %v", o, err)
	}
	for _, bad := range []Options{{Sweeps: []string{"bogus"}}, {SweepDuration: 1500 * 1e6}, {UnderlayMTU: 576}} {
		bad.Lab = "lab"
		if _, err := bad.withDefaults(sampleResults().Started); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
