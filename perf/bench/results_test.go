package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/topo"
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
// and its second UDP_RR failed, and host-gw's second setup failed. The
// latency tests take their round trips from rtt: µs at p50, ×3 at p99.
func sampleRuns() []Trial {
	tests := func(tcp1, tcp4, kpps, loss, cpu float64, overlayd *float64, rtt float64) []Measurement {
		lat := func(tps float64, lost int64) *LatencyResult {
			n := int64(tps * 10)
			if tps == 0 {
				n = 200 - lost
			}
			return &LatencyResult{Transactions: n, Lost: lost, TPS: tps,
				MeanUS: rtt * 1.2, MinUS: rtt / 2, P50US: rtt, P99US: rtt * 3, MaxUS: rtt * 10}
		}
		tcpRR := &Result{Latency: lat(1e6/rtt, 0), Wall: 10.1, CPU: cpu / 2, OverlaydCPU: overlayd}
		if overlayd != nil { // 4 sleeps, rtt/2 µs on a CPU and rtt/10 µs waiting per transaction
			n := float64(tcpRR.Latency.Transactions)
			tcpRR.Forwarders = &ThreadUse{OnCPU: n * rtt / 2 / 1e6, RunQueueWait: n * rtt / 10 / 1e6, Sleeps: uint64(4 * n), Involuntary: 9}
		}
		return []Measurement{
			{Test: TCP1, Result: &Result{Gbps: tcp1, Gbit: tcp1 * 10, Wall: 10.2, CPU: cpu, OverlaydCPU: overlayd}},
			{Test: TCP4, Result: &Result{Gbps: tcp4, Gbit: tcp4 * 10, Wall: 10.2, CPU: cpu, OverlaydCPU: overlayd}},
			{Test: UDP64, Result: &Result{Gbps: 0.1, Gbit: 1, Wall: 10.2, CPU: cpu, OverlaydCPU: overlayd,
				UDP: &UDPResult{Sent: 1000, Delivered: 900, PPS: kpps * 1e3, LossPct: loss}}},
			{Test: TCPRR, Result: tcpRR},
			{Test: UDPRR, Result: &Result{Latency: lat(1e6/rtt*0.9, 5), Wall: 10.1, CPU: cpu / 2, OverlaydCPU: overlayd}},
			{Test: Ping, Result: &Result{Latency: lat(0, 1), Wall: 2.1, CPU: 0.1, OverlaydCPU: overlayd}},
		}
	}
	ovd2 := tests(2, 3, 150, 30, 20, f64(8), 140)
	ovd2[2] = Measurement{Test: UDP64, Error: "iperf3: control socket has closed unexpectedly"}
	ovd2[4] = Measurement{Test: UDPRR, Error: "rr udp: no transaction answered in 10.0s (200 timed out)"}
	return []Trial{
		{Round: 1, System: "host-gw", Tests: tests(20, 24, 400, 10, 16, nil, 18)},
		{Round: 1, System: Baseline, Tests: tests(10, 16, 300, 20, 18, nil, 20)},
		{Round: 1, System: "overlayd-udp", Overlayd: true, Tests: tests(1, 2, 100, 40, 20, f64(6), 120)},
		{Round: 2, System: "host-gw", SetupError: "topo: exit status 2"},
		{Round: 2, System: Baseline, Tests: tests(14, 20, 340, 10, 18, nil, 24)},
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

	// Latency: medians of the runs' percentiles, and ratios where above 1
	// is slower. kernel-vxlan's p50 are 20 and 24 µs, overlayd's 120 and 140.
	if kv.TCPRRP50 != (Stat{Median: 22, Runs: 2}) || kv.TCPRRP99 != (Stat{Median: 66, Runs: 2}) {
		t.Errorf("kernel-vxlan TCP RR p50, p99 = %+v, %+v; want 22, 66", kv.TCPRRP50, kv.TCPRRP99)
	}
	if !near(kv.TCPRRTPS.Median, (1e6/20+1e6/24)/2) {
		t.Errorf("kernel-vxlan TCP RR tx/s = %v", kv.TCPRRTPS.Median)
	}
	if ovd.TCPRRP50Ratio == nil || !near(*ovd.TCPRRP50Ratio, 130.0/22) {
		t.Errorf("overlayd-udp TCP RR p50 ratio = %v, want 130/22", ovd.TCPRRP50Ratio)
	}
	if ovd.TCPRRP99Ratio == nil || !near(*ovd.TCPRRP99Ratio, 390.0/66) {
		t.Errorf("overlayd-udp TCP RR p99 ratio = %v, want 390/66", ovd.TCPRRP99Ratio)
	}
	// The failed UDP_RR counts as failed; the other run stands alone.
	if ovd.UDPRRP50 != (Stat{Median: 120, Runs: 1, Failed: 1}) || ovd.UDPRRP50Ratio == nil || !near(*ovd.UDPRRP50Ratio, 120.0/22) {
		t.Errorf("overlayd-udp UDP RR p50 = %+v, ratio %v; want 120 (1 failed), 120/22", ovd.UDPRRP50, ovd.UDPRRP50Ratio)
	}
	// 5 lost of 5 + 9×1e6/120×0.9... transactions.
	n := float64(int64(1e6 / 120.0 * 0.9 * 10))
	if !near(ovd.UDPRRLost.Median, 100*5/(n+5)) {
		t.Errorf("overlayd-udp UDP RR lost = %v%%, want %v", ovd.UDPRRLost.Median, 100*5/(n+5))
	}
	if !near(kv.PingMean.Median, 22*1.2) || kv.PingLostPct.Median != 0.5 || kv.PingMeanRatio == nil || *kv.PingMeanRatio != 1 {
		t.Errorf("kernel-vxlan ping = %+v, lost %+v, ratio %v; want mean 26.4 µs, 0.5%% lost, ratio 1", kv.PingMean, kv.PingLostPct, kv.PingMeanRatio)
	}
	// The forwarders' threads: overlayd-udp's per transaction, 60 and 70
	// µs on a CPU over 4 sleeps; none for kernel systems.
	if ovd.TCPRRFwdSleeps != (Stat{Median: 4, Runs: 2}) || !near(ovd.TCPRRFwdCPU.Median, 65) ||
		!near(ovd.TCPRRFwdCPUPerSleep.Median, 16.25) || !near(ovd.TCPRRFwdWait.Median, 13) {
		t.Errorf("overlayd-udp forwarders: sleeps %+v, CPU %+v, per sleep %+v, wait %+v; want 4, 65, 16.25, 13",
			ovd.TCPRRFwdSleeps, ovd.TCPRRFwdCPU, ovd.TCPRRFwdCPUPerSleep, ovd.TCPRRFwdWait)
	}
	for _, k := range []Summary{gw, kv} {
		if k.TCPRRFwdSleeps != (Stat{}) || k.TCPRRFwdCPU != (Stat{}) || k.TCPRRFwdCPUPerSleep != (Stat{}) || k.TCPRRFwdWait != (Stat{}) {
			t.Errorf("%s has forwarder figures: %+v, %+v, %+v, %+v", k.System, k.TCPRRFwdSleeps, k.TCPRRFwdCPU, k.TCPRRFwdCPUPerSleep, k.TCPRRFwdWait)
		}
	}
	if gw.TCPRRP50 != (Stat{Median: 18, Runs: 1, Failed: 1}) {
		t.Errorf("host-gw TCP RR p50 = %+v: the failed setup counts as failed", gw.TCPRRP50)
	}
}

// TestRecordedResults reads results files that real runs wrote: one from
// before the latency tests existed, whose latency figures must be absent,
// not failed, and one with them. Summarising their runs again gives the
// medians they hold, and their markdown tables are golden.
func TestRecordedResults(t *testing.T) {
	for _, tt := range []struct {
		file, golden string
		latency      bool
	}{
		{"results-before-latency.json", "table-before-latency.md.golden", false},
		{"results-latency.json", "table-latency.md.golden", true},
	} {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			var r Results
			if err := json.Unmarshal(data, &r); err != nil {
				t.Fatal(err)
			}
			if r.hasLatency() != tt.latency {
				t.Errorf("hasLatency = %v, want %v", r.hasLatency(), tt.latency)
			}
			again := Summarize(r.Systems, r.Runs)
			for i := range again {
				if i < len(r.Medians) && r.Medians[i].TCPRRCPU == (Stat{}) {
					again[i].TCPRRCPU = Stat{} // recorded before CPU per transaction was
				}
			}
			if !reflect.DeepEqual(again, r.Medians) {
				t.Errorf("summarising the runs again changed the medians:\n got %+v\nwant %+v", again, r.Medians)
			}
			var b bytes.Buffer
			if err := WriteMarkdown(&b, &r); err != nil {
				t.Fatal(err)
			}
			golden(t, tt.golden, b.Bytes())
		})
	}
}

func TestSummarizeWithoutBaseline(t *testing.T) {
	for _, s := range Summarize([]string{"host-gw", "overlayd-udp"}, sampleRuns()) {
		if s.TCP1Ratio != nil || s.TCP4Ratio != nil || s.UDP64Ratio != nil || s.TCPRRP50Ratio != nil || s.PingMeanRatio != nil {
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

// A run whose forwarders never slept has no CPU per sleep (not +Inf, which
// JSON cannot hold); its other figures stand.
func TestForwardersThatNeverSlept(t *testing.T) {
	runs := []Trial{{Round: 1, System: "overlayd-udp", Overlayd: true, Tests: []Measurement{{Test: TCPRR, Result: &Result{
		Latency:    &LatencyResult{Transactions: 1000, TPS: 100, P50US: 50},
		Forwarders: &ThreadUse{OnCPU: 0.05},
	}}}}}
	s := Summarize([]string{"overlayd-udp"}, runs)[0]
	if s.TCPRRFwdCPUPerSleep.Runs != 0 || s.TCPRRFwdSleeps != (Stat{Median: 0, Runs: 1}) || !near(s.TCPRRFwdCPU.Median, 50) {
		t.Errorf("per sleep %+v, sleeps %+v, CPU %+v; want no per-sleep figure, 0 sleeps, 50 µs", s.TCPRRFwdCPUPerSleep, s.TCPRRFwdSleeps, s.TCPRRFwdCPU)
	}
	if _, err := json.Marshal(s); err != nil {
		t.Errorf("the summary does not marshal: %v", err)
	}
}

// fakeTestbed is a Testbed with the processes given, and nothing running.
type fakeTestbed struct{ overlayd, forwarders []int }

func (f fakeTestbed) Endpoints() (client, server *topo.Container) { return nil, nil }
func (f fakeTestbed) ContainerMTU() int                           { return 1450 }
func (f fakeTestbed) OverlaydPIDs() []int                         { return f.overlayd }
func (f fakeTestbed) ForwarderPIDs() []int                        { return f.forwarders }
func (f fakeTestbed) Teardown() error                             { return nil }

// A latency result carries the forwarders' threads only for a system that
// has forwarders, and overlayd's CPU only for overlayd.
func TestLatencyMeasuredForwarders(t *testing.T) {
	use := cpuUsage{Wall: time.Second, Machine: 1.5, Procs: 0.5, Forwarders: ThreadStats{OnCPU: 300 * time.Millisecond, Sleeps: 40}}
	l := &LatencyResult{Transactions: 10}
	kernel := latencyMeasured(fakeTestbed{}, l, use)
	if kernel.Forwarders != nil || kernel.OverlaydCPU != nil {
		t.Errorf("kernel system: forwarders %+v, overlayd CPU %v; want neither", kernel.Forwarders, kernel.OverlaydCPU)
	}
	flanneld := latencyMeasured(fakeTestbed{forwarders: []int{7}}, l, use)
	if flanneld.OverlaydCPU != nil || flanneld.Forwarders == nil || flanneld.Forwarders.Sleeps != 40 || !near(flanneld.Forwarders.OnCPU, 0.3) {
		t.Errorf("flanneld: overlayd CPU %v, forwarders %+v; want none and 40 sleeps, 0.3 s", flanneld.OverlaydCPU, flanneld.Forwarders)
	}
	ovd := latencyMeasured(fakeTestbed{overlayd: []int{7}, forwarders: []int{7}}, l, use)
	if ovd.OverlaydCPU == nil || *ovd.OverlaydCPU != 0.5 || ovd.Forwarders == nil {
		t.Errorf("overlayd: overlayd CPU %v, forwarders %+v", ovd.OverlaydCPU, ovd.Forwarders)
	}
}
