package bench

import (
	"slices"
	"time"
)

// Baseline is the system every ratio is taken against, measured in the
// same run: the Linux kernel's VXLAN, programmed as flanneld does.
const Baseline = "kernel-vxlan"

// The workloads, by the names they have in the results.
const (
	TCP1  = "tcp1"  // one TCP stream
	TCP4  = "tcp4"  // four parallel TCP streams (-P 4)
	UDP64 = "udp64" // 64-byte UDP datagrams at unlimited rate (-u -l 64 -b 0)
)

// workload is one iperf3 test: its name and its client flags besides
// -c, -p, -t and -J.
type workload struct {
	name string
	args []string
}

var workloads = []workload{
	{TCP1, nil},
	{TCP4, []string{"-P", "4"}},
	{UDP64, []string{"-u", "-l", "64", "-b", "0"}},
}

// Results is everything one bench run measured: the JSON file's schema.
type Results struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Machine  Machine   `json:"machine"`
	Iperf3   string    `json:"iperf3"`     // iperf3's version
	Duration float64   `json:"duration_s"` // of each test
	Rounds   int       `json:"rounds"`
	Systems  []string  `json:"systems"` // in table order
	Runs     []Trial   `json:"runs"`    // in the order they ran
	Medians  []Summary `json:"medians"` // one per system, in table order
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

// Measurement is one iperf3 test of one run: either an Error or a Result,
// never a guessed number.
type Measurement struct {
	Test   string  `json:"test"` // TCP1, TCP4 or UDP64
	Error  string  `json:"error,omitempty"`
	Result *Result `json:"result,omitempty"` // nil when the test failed
}

// OK reports whether the test produced numbers.
func (m Measurement) OK() bool { return m.Error == "" && m.Result != nil }

// Result is what a test that succeeded measured.
type Result struct {
	Gbps float64    `json:"gbps"`          // the receiver's rate
	Gbit float64    `json:"gbit"`          // delivered: Gbps × the receiver's seconds
	UDP  *UDPResult `json:"udp,omitempty"` // for UDP tests

	// CPU time while the client ran (Wall seconds): the whole machine's
	// busy time, and overlayd's own, which is nil for kernel systems.
	Wall        float64  `json:"wall_s"`
	CPU         float64  `json:"cpu_s"`
	OverlaydCPU *float64 `json:"overlayd_cpu_s,omitempty"`
}

// UDPResult is the datagram count of a UDP test.
type UDPResult struct {
	Sent      int64   `json:"sent_packets"`      // by the client
	Delivered int64   `json:"delivered_packets"` // to the server
	PPS       float64 `json:"pps"`               // delivered per second
	LossPct   float64 `json:"loss_pct"`
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

	TCP1Gbps   Stat `json:"tcp1_gbps"`
	TCP4Gbps   Stat `json:"tcp4_gbps"`
	UDP64KPPS  Stat `json:"udp64_kpps"`
	UDP64Loss  Stat `json:"udp64_loss_pct"`
	CPUPerGbit Stat `json:"cpu_s_per_gbit"`
	// Nil for systems without overlayd.
	OverlaydCPUPerGbit *Stat `json:"overlayd_cpu_s_per_gbit,omitempty"`

	TCP1Ratio  *float64 `json:"tcp1_vs_baseline,omitempty"`
	TCP4Ratio  *float64 `json:"tcp4_vs_baseline,omitempty"`
	UDP64Ratio *float64 `json:"udp64_vs_baseline,omitempty"`
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
		}
	}
	return out
}

func summarize(system string, runs []Trial) Summary {
	s := Summary{System: system}
	// metric collects value from every run's test; a run whose setup or
	// test failed counts as a failure, one where value has no number
	// (ok false) does not count at all.
	metric := func(test string, value func(*Result) (v float64, ok bool)) Stat {
		var vals []float64
		failed := 0
		for _, r := range runs {
			m, found := r.test(test)
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
	s.UDP64KPPS = metric(UDP64, func(r *Result) (float64, bool) {
		if r.UDP == nil {
			return 0, false
		}
		return r.UDP.PPS / 1e3, true
	})
	s.UDP64Loss = metric(UDP64, func(r *Result) (float64, bool) {
		if r.UDP == nil {
			return 0, false
		}
		return r.UDP.LossPct, true
	})
	s.CPUPerGbit = metric(TCP1, func(r *Result) (float64, bool) {
		return r.CPUPerGbit(r.CPU), r.Gbit > 0
	})
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
