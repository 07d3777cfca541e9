package bench

import (
	"testing"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{7}, 7},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{5, 5, 1}, 5},
	}
	for _, tt := range tests {
		in := append([]float64(nil), tt.in...)
		if got := Median(in); got != tt.want {
			t.Errorf("Median(%v) = %v, want %v", tt.in, got, tt.want)
		}
		for i := range in {
			if in[i] != tt.in[i] {
				t.Errorf("Median reordered its input: %v", in)
			}
		}
	}
}

func TestRatio(t *testing.T) {
	ok := func(v float64) Stat { return Stat{Median: v, Runs: 3} }
	if r := Ratio(ok(3), ok(12)); r == nil || *r != 0.25 {
		t.Errorf("Ratio(3, 12) = %v, want 0.25", r)
	}
	for name, pair := range map[string][2]Stat{
		"failed a":  {{Runs: 0, Failed: 3}, ok(1)},
		"failed b":  {ok(1), {Runs: 0, Failed: 3}},
		"zero base": {ok(1), ok(0)},
	} {
		if r := Ratio(pair[0], pair[1]); r != nil {
			t.Errorf("%s: Ratio = %v, want nil", name, *r)
		}
	}
}

func TestCPUPerGbit(t *testing.T) {
	r := &Result{Gbps: 10, Gbit: 20, Wall: 2.1}
	if got := r.CPUPerGbit(4); got != 0.2 {
		t.Errorf("4 CPU s over 20 Gbit = %v, want 0.2", got)
	}
	if got := (&Result{Wall: 2}).CPUPerGbit(4); got != 0 {
		t.Errorf("nothing delivered: %v, want 0", got)
	}
}

func f64(v float64) *float64 { return &v }

// sampleRuns is two rounds of three systems: overlayd-udp's second UDP test
// failed, and host-gw's second setup failed.
func sampleRuns() []Trial {
	tests := func(tcp1, tcp4, kpps, loss, cpu float64, overlayd *float64) []Measurement {
		return []Measurement{
			{Test: TCP1, Result: &Result{Gbps: tcp1, Gbit: tcp1 * 10, Wall: 10.2, CPU: cpu, OverlaydCPU: overlayd}},
			{Test: TCP4, Result: &Result{Gbps: tcp4, Gbit: tcp4 * 10, Wall: 10.2, CPU: cpu, OverlaydCPU: overlayd}},
			{Test: UDP64, Result: &Result{Gbps: 0.1, Gbit: 1, Wall: 10.2, CPU: cpu, OverlaydCPU: overlayd,
				UDP: &UDPResult{Sent: 1000, Delivered: 900, PPS: kpps * 1e3, LossPct: loss}}},
		}
	}
	ovd2 := tests(2, 3, 150, 30, 20, f64(8))
	ovd2[2] = Measurement{Test: UDP64, Error: "iperf3: control socket has closed unexpectedly"}
	return []Trial{
		{Round: 1, System: "host-gw", Tests: tests(20, 24, 400, 10, 16, nil)},
		{Round: 1, System: Baseline, Tests: tests(10, 16, 300, 20, 18, nil)},
		{Round: 1, System: "overlayd-udp", Overlayd: true, Tests: tests(1, 2, 100, 40, 20, f64(6))},
		{Round: 2, System: "host-gw", SetupError: "topo: exit status 2"},
		{Round: 2, System: Baseline, Tests: tests(14, 20, 340, 10, 18, nil)},
		{Round: 2, System: "overlayd-udp", Overlayd: true, Tests: ovd2},
	}
}

func TestSummarize(t *testing.T) {
	sums := Summarize([]string{"host-gw", Baseline, "overlayd-udp"}, sampleRuns())
	if len(sums) != 3 || sums[0].System != "host-gw" || sums[1].System != Baseline || sums[2].System != "overlayd-udp" {
		t.Fatalf("summaries %+v: want one per system, in order", sums)
	}
	gw, kv, ovd := sums[0], sums[1], sums[2]

	// host-gw: one of two runs never set up.
	if gw.TCP1Gbps != (Stat{Median: 20, Runs: 1, Failed: 1}) {
		t.Errorf("host-gw TCP1 = %+v", gw.TCP1Gbps)
	}
	if gw.OverlaydCPUPerGbit != nil {
		t.Errorf("host-gw has an overlayd CPU figure: %+v", *gw.OverlaydCPUPerGbit)
	}
	// kernel-vxlan: the medians of two runs, and ratios of 1 to itself.
	if kv.TCP1Gbps != (Stat{Median: 12, Runs: 2}) || kv.UDP64KPPS != (Stat{Median: 320, Runs: 2}) || kv.UDP64Loss != (Stat{Median: 15, Runs: 2}) {
		t.Errorf("kernel-vxlan = %+v", kv)
	}
	if kv.TCP1Ratio == nil || *kv.TCP1Ratio != 1 {
		t.Errorf("kernel-vxlan TCP1 ratio = %v, want 1", kv.TCP1Ratio)
	}
	// CPU per Gbit of TCP1: 18 s / (10 Gbit/s × 10 s) and 18 / 140.
	if want := (0.18 + 18.0/140) / 2; !near(kv.CPUPerGbit.Median, want) {
		t.Errorf("kernel-vxlan CPU s/Gbit = %v, want %v", kv.CPUPerGbit.Median, want)
	}
	// overlayd-udp: the failed UDP test counts as failed, not as zero.
	if ovd.UDP64KPPS != (Stat{Median: 100, Runs: 1, Failed: 1}) {
		t.Errorf("overlayd-udp kpps = %+v", ovd.UDP64KPPS)
	}
	if ovd.UDP64Ratio == nil || !near(*ovd.UDP64Ratio, 100.0/320) {
		t.Errorf("overlayd-udp kpps ratio = %v, want 100/320", ovd.UDP64Ratio)
	}
	if ovd.TCP1Ratio == nil || !near(*ovd.TCP1Ratio, 1.5/12) {
		t.Errorf("overlayd-udp TCP1 ratio = %v, want 1.5/12", ovd.TCP1Ratio)
	}
	// overlayd's own CPU: 6 s / 10 Gbit and 8 s / 20 Gbit.
	if ovd.OverlaydCPUPerGbit == nil || !near(ovd.OverlaydCPUPerGbit.Median, (0.6+0.4)/2) {
		t.Errorf("overlayd CPU s/Gbit = %+v, want 0.5", ovd.OverlaydCPUPerGbit)
	}
}

func TestSummarizeWithoutBaseline(t *testing.T) {
	for _, s := range Summarize([]string{"host-gw", "overlayd-udp"}, sampleRuns()) {
		if s.TCP1Ratio != nil || s.TCP4Ratio != nil || s.UDP64Ratio != nil {
			t.Errorf("%s has ratios without a baseline in the run", s.System)
		}
	}
}

func TestSummarizeAllFailed(t *testing.T) {
	runs := []Trial{{Round: 1, System: "overlayd-vxlan", Overlayd: true, SetupError: "not supported"}}
	s := Summarize([]string{Baseline, "overlayd-vxlan"}, runs)[1]
	if s.TCP1Gbps.Runs != 0 || s.TCP1Gbps.Failed != 1 || s.TCP1Ratio != nil {
		t.Errorf("got %+v, want TCP1 failed in its one run and no ratio", s)
	}
	if o := s.OverlaydCPUPerGbit; o == nil || o.Runs != 0 || o.Failed != 1 {
		t.Errorf("overlayd CPU = %+v, want failed, not absent", o)
	}
	if row := rows([]Summary{s})[0]; row[len(row)-1] != "failed" {
		t.Errorf("table row %q: the overlayd CPU cell should read failed", row)
	}
}
