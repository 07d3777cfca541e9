package bench

import (
	"fmt"
	"slices"
	"time"

	"github.com/overlayd/overlayd/perf/traffic"
)

// Baseline is the system every ratio is taken against, measured in the
// same run: the Linux kernel's VXLAN, programmed as flanneld does.
const Baseline = "kernel-vxlan"

// The workloads, by the names they have in the results.
const (
	TCP1  = "tcp1"  // one TCP stream
	TCP4  = "tcp4"  // four parallel TCP streams (-P 4)
	UDP64 = "udp64" // 64-byte UDP datagrams at unlimited rate (-u -l 64 -b 0)
	// Request/response of rrSize bytes, one transaction in flight, as
	// netperf's TCP_RR and UDP_RR (overlayd-lab rr).
	TCPRR = "tcp_rr"
	UDPRR = "udp_rr"
	// pingCount ICMP echoes, pingInterval apart: unlike the back-to-back
	// RR transactions, the path idles between them, so each echo also pays
	// for waking whatever went to sleep on the way (dear on a VM).
	Ping = "ping"
)

// The latency workloads' parameters.
const (
	rrSize       = 64
	pingCount    = 1000
	pingInterval = time.Millisecond
	pingTimeout  = time.Second
	pingSize     = 84 // ping(8)'s default: 56 bytes of data
)

// latencyWorkload describes the latency tests for the results and report.
var latencyWorkload = fmt.Sprintf("overlayd-lab rr request/response, %d B, one transaction in flight, UDP lost after %s; ping: %d × %d B, %s apart",
	rrSize, traffic.DefaultRRTimeout, pingCount, pingSize, pingInterval)

// workload is one test: an iperf3 run with its client flags besides -c,
// -p, -t and -J, a request/response run (rr: its protocol), or a ping
// series.
type workload struct {
	name string
	args []string
	rr   string // "tcp" or "udp"
	ping bool
	// A sweep point: its sweep and parameter; it runs for the sweep
	// duration.
	sweep string
	x     int
}

var workloads = []workload{
	{name: TCP1},
	{name: TCP4, args: []string{"-P", "4"}},
	{name: UDP64, args: []string{"-u", "-l", "64", "-b", "0"}},
	{name: TCPRR, rr: "tcp"},
	{name: UDPRR, rr: "udp"},
	{name: Ping, ping: true},
}

// Results is everything one bench run measured: the JSON file's schema.
type Results struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Machine  Machine   `json:"machine"`
	Iperf3   string    `json:"iperf3"` // iperf3's version
	// The latency tests; empty in results from before they existed.
	Latency  string    `json:"latency_workload,omitempty"`
	Duration float64   `json:"duration_s"` // of each test
	Rounds   int       `json:"rounds"`
	Systems  []string  `json:"systems"` // in table order
	Runs     []Trial   `json:"runs"`    // in the order they ran
	Medians  []Summary `json:"medians"` // one per system, in table order

	// The command line of the run; empty in results from before it was kept.
	Command string `json:"command,omitempty"`
	// The emulated underlay link; nil in results from before it could be
	// changed (a plain 1500-byte veth).
	Underlay *Underlay `json:"underlay,omitempty"`
	// Of each sweep point; 0 without sweeps.
	SweepDuration float64 `json:"sweep_duration_s,omitempty"`
	// Medians of every sweep point, per sweep and system, in table order.
	Sweeps []SweepSummary `json:"sweeps,omitempty"`
	// Why the run stopped early (Ctrl-C); the results are what it measured
	// until then.
	Interrupted string `json:"interrupted,omitempty"`
}

// Underlay is the emulated underlay link of a run.
type Underlay struct {
	MTU     int     `json:"mtu"`
	DelayUS int64   `json:"delay_us,omitempty"` // added one way, by each host
	LossPct float64 `json:"loss_pct,omitempty"` // of what each host sends
	RateBit int64   `json:"rate_bit_s,omitempty"`
}

// Machine describes where the bench ran.
type Machine struct {
	Kernel   string `json:"kernel"`
	CPUModel string `json:"cpu_model"`
	Cores    int    `json:"cores"`
}

// Trial is one system measured once, on a testbed built for it.
type Trial struct {
	Round      int           `json:"round"` // from 1
	System     string        `json:"system"`
	Overlayd   bool          `json:"overlayd"`              // the system runs overlayd, whose own CPU time is measured
	SetupError string        `json:"setup_error,omitempty"` // then Tests is empty
	Tests      []Measurement `json:"tests,omitempty"`
	// Something the teardown could not remove; the numbers still stand.
	TeardownError string `json:"teardown_error,omitempty"`
}

// Measurement is one test of one run: either an Error or a Result, never
// a guessed number.
type Measurement struct {
	Test string `json:"test"` // TCP1, TCP4, UDP64, TCPRR, UDPRR, Ping or a sweep point
	// A sweep point's sweep and parameter (window or payload bytes).
	Sweep  string  `json:"sweep,omitempty"`
	X      int     `json:"x,omitempty"`
	Error  string  `json:"error,omitempty"`
	Result *Result `json:"result,omitempty"` // nil when the test failed
}

// OK reports whether the test produced numbers.
func (m Measurement) OK() bool { return m.Error == "" && m.Result != nil }

// Result is what a test that succeeded measured.
type Result struct {
	Gbps float64    `json:"gbps,omitempty"` // the receiver's rate (iperf3 tests)
	Gbit float64    `json:"gbit,omitempty"` // delivered: Gbps × the receiver's seconds
	UDP  *UDPResult `json:"udp,omitempty"`  // for iperf3's UDP test
	// For the request/response tests and ping.
	Latency *LatencyResult `json:"latency,omitempty"`

	// CPU time while the client ran (Wall seconds): the whole machine's
	// busy time, and overlayd's own, which is nil for kernel systems.
	Wall        float64  `json:"wall_s"`
	CPU         float64  `json:"cpu_s"`
	OverlaydCPU *float64 `json:"overlayd_cpu_s,omitempty"`
	// Forwarders is how the scheduler ran the forwarding processes'
	// threads in a latency test; nil for kernel systems and other tests.
	Forwarders *ThreadUse `json:"forwarders,omitempty"`
}

// ThreadUse is ThreadStats over a test, summed over every thread of the
// forwarders of both hosts.
type ThreadUse struct {
	OnCPU        float64 `json:"on_cpu_s"`
	RunQueueWait float64 `json:"run_queue_wait_s"`
	Sleeps       uint64  `json:"sleeps"`
	Involuntary  uint64  `json:"involuntary_switches"`
}

func threadUse(t ThreadStats) *ThreadUse {
	return &ThreadUse{
		OnCPU:        t.OnCPU.Seconds(),
		RunQueueWait: t.RunQueueWait.Seconds(),
		Sleeps:       t.Sleeps,
		Involuntary:  t.Involuntary,
	}
}

// UDPResult is the datagram count of a UDP test.
type UDPResult struct {
	Sent      int64   `json:"sent_packets"`      // by the client
	Delivered int64   `json:"delivered_packets"` // to the server
	PPS       float64 `json:"pps"`               // delivered per second
	LossPct   float64 `json:"loss_pct"`
	// ReceiverLossPct is the part of LossPct that the server's own socket
	// dropped, its buffer full: lost at the receiving application, not on
	// the way (absent from results before 2026-12-02's evening).
	ReceiverLossPct *float64 `json:"receiver_loss_pct,omitempty"`
}

// LatencyResult is what a request/response test or a ping series
// measured: the round trips of the transactions answered in time.
type LatencyResult struct {
	Transactions int64   `json:"transactions"`  // answered (ping: replies)
	Lost         int64   `json:"lost"`          // UDP requests or pings unanswered in time
	TPS          float64 `json:"tps,omitempty"` // transactions per second; 0 for ping, which waits between echoes
	MeanUS       float64 `json:"mean_us"`
	MinUS        float64 `json:"min_us"`
	P50US        float64 `json:"p50_us"`
	P99US        float64 `json:"p99_us"`
	MaxUS        float64 `json:"max_us"`
}

// LostPct is the share of requests that went unanswered.
func (l *LatencyResult) LostPct() float64 {
	if l.Transactions+l.Lost == 0 {
		return 0
	}
	return 100 * float64(l.Lost) / float64(l.Transactions+l.Lost)
}

// CPUPerGbit is CPU seconds spent per gigabit delivered. It is 0 when
// nothing was delivered.
func (r *Result) CPUPerGbit(cpu float64) float64 {
	if r.Gbit <= 0 {
		return 0
	}
	return cpu / r.Gbit
}

// Stat is the median of a metric over the runs that measured it.
type Stat struct {
	Median float64 `json:"median"`
	Runs   int     `json:"runs"`   // runs that measured it; 0: it failed every time
	Failed int     `json:"failed"` // runs where it failed
}

// Summary is the medians of one system, as in the table. The CPU figures
// are those of the single-stream TCP test. Ratios to [Baseline] are nil when
// either side has no number.
type Summary struct {
	System string `json:"system"`

	TCP1Gbps  Stat `json:"tcp1_gbps"`
	TCP4Gbps  Stat `json:"tcp4_gbps"`
	UDP64KPPS Stat `json:"udp64_kpps"`
	UDP64Loss Stat `json:"udp64_loss_pct"`
	// UDP64RcvLoss is the part of UDP64Loss dropped at the receiving socket.
	UDP64RcvLoss Stat `json:"udp64_receiver_loss_pct"`
	CPUPerGbit   Stat `json:"cpu_s_per_gbit"`
	// Nil for systems without overlayd.
	OverlaydCPUPerGbit *Stat `json:"overlayd_cpu_s_per_gbit,omitempty"`

	TCP1Ratio  *float64 `json:"tcp1_vs_baseline,omitempty"`
	TCP4Ratio  *float64 `json:"tcp4_vs_baseline,omitempty"`
	UDP64Ratio *float64 `json:"udp64_vs_baseline,omitempty"`

	// Latency in µs: the medians over the runs of each run's percentiles.
	// Absent (zero) in results from before these tests existed.
	TCPRRP50 Stat `json:"tcp_rr_p50_us"`
	TCPRRP99 Stat `json:"tcp_rr_p99_us"`
	TCPRRTPS Stat `json:"tcp_rr_tps"`
	// TCPRRCPU is the machine's CPU time per TCP_RR transaction, in µs,
	// polling in idle included: what the latency costs.
	TCPRRCPU    Stat `json:"tcp_rr_cpu_us_per_tx"`
	UDPRRP50    Stat `json:"udp_rr_p50_us"`
	UDPRRP99    Stat `json:"udp_rr_p99_us"`
	UDPRRTPS    Stat `json:"udp_rr_tps"`
	UDPRRLost   Stat `json:"udp_rr_lost_pct"`
	PingMean    Stat `json:"ping_mean_us"`
	PingP50     Stat `json:"ping_p50_us"`
	PingP99     Stat `json:"ping_p99_us"`
	PingLostPct Stat `json:"ping_lost_pct"`

	// The forwarders' threads per TCP_RR transaction, both hosts: how
	// often they slept (each sleep ends in a wake-up), their CPU time in
	// µs, that time per sleep (what a hop costs once woken), and their
	// wait in run queues in µs. Unmeasured (zero) for kernel systems and
	// in results from before 2026-12-04's evening.
	TCPRRFwdSleeps      Stat `json:"tcp_rr_forwarder_sleeps_per_tx"`
	TCPRRFwdCPU         Stat `json:"tcp_rr_forwarder_cpu_us_per_tx"`
	TCPRRFwdCPUPerSleep Stat `json:"tcp_rr_forwarder_cpu_us_per_sleep"`
	TCPRRFwdWait        Stat `json:"tcp_rr_forwarder_wait_us_per_tx"`

	// Latency ratios to the baseline: above 1 is slower.
	TCPRRP50Ratio *float64 `json:"tcp_rr_p50_vs_baseline,omitempty"`
	TCPRRP99Ratio *float64 `json:"tcp_rr_p99_vs_baseline,omitempty"`
	UDPRRP50Ratio *float64 `json:"udp_rr_p50_vs_baseline,omitempty"`
	UDPRRP99Ratio *float64 `json:"udp_rr_p99_vs_baseline,omitempty"`
	PingMeanRatio *float64 `json:"ping_mean_vs_baseline,omitempty"`
}

// hasLatency reports whether the latency tests were part of the run: not
// in results from before they existed.
func (r *Results) hasLatency() bool {
	if r.Latency != "" {
		return true
	}
	for _, t := range r.Runs {
		for _, m := range t.Tests {
			if m.Test == TCPRR || m.Test == UDPRR || m.Test == Ping {
				return true
			}
		}
	}
	return false
}

// Summarize takes the medians of every system's runs, in the order of
// systems, and their ratios to the baseline if it is among them.
func Summarize(systems []string, runs []Trial) []Summary {
	out := make([]Summary, 0, len(systems))
	for _, name := range systems {
		var mine []Trial
		for _, r := range runs {
			if r.System == name {
				mine = append(mine, r)
			}
		}
		out = append(out, summarize(name, mine))
	}
	var base *Summary
	for i := range out {
		if out[i].System == Baseline {
			base = &out[i]
		}
	}
	if base != nil {
		for i := range out {
			s := &out[i]
			s.TCP1Ratio = Ratio(s.TCP1Gbps, base.TCP1Gbps)
			s.TCP4Ratio = Ratio(s.TCP4Gbps, base.TCP4Gbps)
			s.UDP64Ratio = Ratio(s.UDP64KPPS, base.UDP64KPPS)
			s.TCPRRP50Ratio = Ratio(s.TCPRRP50, base.TCPRRP50)
			s.TCPRRP99Ratio = Ratio(s.TCPRRP99, base.TCPRRP99)
			s.UDPRRP50Ratio = Ratio(s.UDPRRP50, base.UDPRRP50)
			s.UDPRRP99Ratio = Ratio(s.UDPRRP99, base.UDPRRP99)
			s.PingMeanRatio = Ratio(s.PingMean, base.PingMean)
		}
	}
	return out
}

func summarize(system string, runs []Trial) Summary {
	s := Summary{System: system}
	// metric collects value from every run's test; a run whose setup or
	// test failed counts as a failure, one where value has no number
	// (ok false) does not count at all, nor does one that ran other tests
	// but not this one (results from before it existed).
	metric := func(test string, value func(*Result) (v float64, ok bool)) Stat {
		var vals []float64
		failed := 0
		for _, r := range runs {
			m, found := r.test(test)
			if !found && len(r.Tests) > 0 {
				continue
			}
			if !found || !m.OK() {
				failed++
				continue
			}
			if v, ok := value(m.Result); ok {
				vals = append(vals, v)
			}
		}
		return Stat{Median: Median(vals), Runs: len(vals), Failed: failed}
	}
	gbps := func(r *Result) (float64, bool) { return r.Gbps, true }
	s.TCP1Gbps = metric(TCP1, gbps)
	s.TCP4Gbps = metric(TCP4, gbps)
	udp := func(value func(*UDPResult) (float64, bool)) Stat {
		return metric(UDP64, func(r *Result) (float64, bool) {
			if r.UDP == nil {
				return 0, false
			}
			return value(r.UDP)
		})
	}
	s.UDP64KPPS = udp(func(u *UDPResult) (float64, bool) { return u.PPS / 1e3, true })
	s.UDP64Loss = udp(func(u *UDPResult) (float64, bool) { return u.LossPct, true })
	s.UDP64RcvLoss = udp(func(u *UDPResult) (float64, bool) {
		if u.ReceiverLossPct == nil {
			return 0, false
		}
		return *u.ReceiverLossPct, true
	})
	if s.UDP64RcvLoss.Runs == 0 {
		s.UDP64RcvLoss = Stat{} // not measured (results from before it was), rather than failed
	}
	s.CPUPerGbit = metric(TCP1, func(r *Result) (float64, bool) {
		return r.CPUPerGbit(r.CPU), r.Gbit > 0
	})
	latency := func(test string, value func(*LatencyResult) float64) Stat {
		return metric(test, func(r *Result) (float64, bool) {
			if r.Latency == nil || r.Latency.Transactions == 0 {
				return 0, false
			}
			return value(r.Latency), true
		})
	}
	p50 := func(l *LatencyResult) float64 { return l.P50US }
	p99 := func(l *LatencyResult) float64 { return l.P99US }
	tps := func(l *LatencyResult) float64 { return l.TPS }
	lost := func(l *LatencyResult) float64 { return l.LostPct() }
	s.TCPRRP50, s.TCPRRP99, s.TCPRRTPS = latency(TCPRR, p50), latency(TCPRR, p99), latency(TCPRR, tps)
	s.UDPRRP50, s.UDPRRP99, s.UDPRRTPS = latency(UDPRR, p50), latency(UDPRR, p99), latency(UDPRR, tps)
	s.UDPRRLost = latency(UDPRR, lost)
	s.TCPRRCPU = metric(TCPRR, func(r *Result) (float64, bool) {
		if r.Latency == nil || r.Latency.Transactions == 0 {
			return 0, false
		}
		return r.CPU / float64(r.Latency.Transactions) * 1e6, true
	})
	forwarders := func(value func(f *ThreadUse, tx float64) (float64, bool)) Stat {
		return metric(TCPRR, func(r *Result) (float64, bool) {
			if r.Forwarders == nil || r.Latency == nil || r.Latency.Transactions == 0 {
				return 0, false
			}
			return value(r.Forwarders, float64(r.Latency.Transactions))
		})
	}
	s.TCPRRFwdSleeps = forwarders(func(f *ThreadUse, tx float64) (float64, bool) { return float64(f.Sleeps) / tx, true })
	s.TCPRRFwdCPU = forwarders(func(f *ThreadUse, tx float64) (float64, bool) { return f.OnCPU / tx * 1e6, true })
	s.TCPRRFwdCPUPerSleep = forwarders(func(f *ThreadUse, _ float64) (float64, bool) {
		return f.OnCPU / float64(f.Sleeps) * 1e6, f.Sleeps > 0
	})
	s.TCPRRFwdWait = forwarders(func(f *ThreadUse, tx float64) (float64, bool) { return f.RunQueueWait / tx * 1e6, true })
	if s.TCPRRFwdSleeps.Runs == 0 {
		// No forwarders (a kernel system), or all its runs failed, which
		// the latency table shows.
		s.TCPRRFwdSleeps, s.TCPRRFwdCPU, s.TCPRRFwdCPUPerSleep, s.TCPRRFwdWait = Stat{}, Stat{}, Stat{}, Stat{}
	}
	s.PingMean = latency(Ping, func(l *LatencyResult) float64 { return l.MeanUS })
	s.PingP50, s.PingP99, s.PingLostPct = latency(Ping, p50), latency(Ping, p99), latency(Ping, lost)
	if hasOverlayd(runs) {
		st := metric(TCP1, func(r *Result) (float64, bool) {
			if r.OverlaydCPU == nil || r.Gbit <= 0 {
				return 0, false
			}
			return r.CPUPerGbit(*r.OverlaydCPU), true
		})
		s.OverlaydCPUPerGbit = &st
	}
	return s
}

// hasOverlayd reports whether the runs are of a system that runs overlayd.
func hasOverlayd(runs []Trial) bool {
	return slices.ContainsFunc(runs, func(r Trial) bool { return r.Overlayd })
}

// test finds the measurement of one workload.
func (r Trial) test(name string) (Measurement, bool) {
	for _, m := range r.Tests {
		if m.Test == name {
			return m, true
		}
	}
	return Measurement{}, false
}

// Median is the middle value of vals, or the mean of the two middle ones;
// 0 for none. vals is not modified.
func Median(vals []float64) float64 {
	if len(vals) == 0 {
		return 0
	}
	s := slices.Clone(vals)
	slices.Sort(s)
	mid := len(s) / 2
	if len(s)%2 == 1 {
		return s[mid]
	}
	return (s[mid-1] + s[mid]) / 2
}

// Ratio is a / b, or nil when either has no value or b is 0.
func Ratio(a, b Stat) *float64 {
	if a.Runs == 0 || b.Runs == 0 || b.Median == 0 {
		return nil
	}
	r := a.Median / b.Median
	return &r
}
