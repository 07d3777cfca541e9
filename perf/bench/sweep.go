package bench

import (
	"fmt"
	"slices"
	"strconv"
)

// The sweeps of the published comparisons of flannel's backends: TCP
// throughput across TCP window sizes, and throughput across message sizes,
// UDP and TCP, from 64 bytes to what one packet of the container's MTU
// holds.
const (
	SweepWindow  = "tcp_window" // iperf3 -w, one TCP stream
	SweepUDPSize = "udp_size"   // iperf3 -u -b 0 -l
	SweepTCPSize = "tcp_size"   // iperf3 -l, one TCP stream
)

// SweepNames lists every sweep, in report order.
var SweepNames = []string{SweepWindow, SweepUDPSize, SweepTCPSize}

// sweepDef is one sweep: its points and the iperf3 flags of each.
type sweepDef struct {
	name   string
	title  string // of its chart and report section
	xLabel string
	// points are the parameters for a container MTU, ascending; quick
	// keeps fewer.
	points func(mtu int, quick bool) []int
	args   func(x int) []string
}

var sweepDefs = []sweepDef{
	{
		name:   SweepWindow,
		title:  "TCP throughput across TCP window sizes",
		xLabel: "TCP window (iperf3 -w)",
		points: func(_ int, quick bool) []int {
			if quick {
				return []int{32 << 10, 256 << 10, 4 << 20}
			}
			return []int{32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 4 << 20}
		},
		args: func(x int) []string { return []string{"-w", strconv.Itoa(x)} },
	},
	{
		name:   SweepUDPSize,
		title:  "UDP throughput across payload sizes",
		xLabel: "UDP payload bytes (iperf3 -u -b 0 -l)",
		points: func(mtu int, quick bool) []int { return sizes(mtu-28, quick) },
		args:   func(x int) []string { return []string{"-u", "-b", "0", "-l", strconv.Itoa(x)} },
	},
	{
		name:   SweepTCPSize,
		title:  "TCP throughput across message sizes",
		xLabel: "TCP message bytes (iperf3 -l)",
		points: func(mtu int, quick bool) []int { return sizes(mtu-40, quick) },
		args:   func(x int) []string { return []string{"-l", strconv.Itoa(x)} },
	},
}

// sizes are the message sizes from 64 bytes up to largest, the payload of
// one full packet: powers of four below it (of sixteen in quick mode),
// then largest itself.
func sizes(largest int, quick bool) []int {
	step := 4
	if quick {
		step = 16
	}
	var out []int
	for s := 64; s < largest; s *= step {
		out = append(out, s)
	}
	return append(out, largest)
}

func lookupSweep(name string) (sweepDef, error) {
	i := slices.IndexFunc(sweepDefs, func(d sweepDef) bool { return d.name == name })
	if i < 0 {
		return sweepDef{}, fmt.Errorf("unknown sweep %q: want some of %v, or none", name, SweepNames)
	}
	return sweepDefs[i], nil
}

// sweepWorkloads are the iperf3 tests of the named sweeps for a testbed
// whose containers have MTU mtu.
func sweepWorkloads(names []string, mtu int, quick bool) []workload {
	var out []workload
	for _, name := range names {
		d, err := lookupSweep(name)
		if err != nil {
			continue // checked by Options
		}
		for _, x := range d.points(mtu, quick) {
			out = append(out, workload{name: d.name + "/" + strconv.Itoa(x), args: d.args(x), sweep: d.name, x: x})
		}
	}
	return out
}

// SweepSummary is the medians of one system's points in one sweep.
type SweepSummary struct {
	Sweep  string       `json:"sweep"`
	System string       `json:"system"`
	Points []SweepPoint `json:"points"` // by X, ascending
	// Trials whose setup failed: with no points at all, the system failed
	// rather than was never measured (an interrupted run).
	SetupFailed int `json:"setup_failed,omitempty"`
}

// SweepPoint is the median throughput at one point of a sweep.
type SweepPoint struct {
	X    int  `json:"x"`
	Gbps Stat `json:"gbps"`
	// Delivered datagrams per second, for the UDP sweep.
	KPPS *Stat `json:"kpps,omitempty"`
}

// SummarizeSweeps takes the medians of every sweep point, per sweep (in
// SweepNames order) and system (in the order of systems). A sweep no run
// measured is left out; a system without points in a sweep that others
// have (its setup failed, or an interrupted run never reached it) has a
// summary without points.
func SummarizeSweeps(systems []string, runs []Trial) []SweepSummary {
	var out []SweepSummary
	for _, sweep := range SweepNames {
		var sums []SweepSummary
		measured := false
		for _, system := range systems {
			s := SweepSummary{Sweep: sweep, System: system}
			xs := map[int][]float64{}
			pps := map[int][]float64{}
			failed := map[int]int{}
			for _, r := range runs {
				if r.System != system {
					continue
				}
				if r.SetupError != "" {
					s.SetupFailed++
				}
				for _, m := range r.Tests {
					if m.Sweep != sweep {
						continue
					}
					measured = true
					if !m.OK() {
						failed[m.X]++
						if _, ok := xs[m.X]; !ok {
							xs[m.X] = nil // the point exists, without numbers
						}
						continue
					}
					xs[m.X] = append(xs[m.X], m.Result.Gbps)
					if m.Result.UDP != nil {
						pps[m.X] = append(pps[m.X], m.Result.UDP.PPS/1e3)
					}
				}
			}
			for _, x := range sortedKeys(xs) {
				p := SweepPoint{X: x, Gbps: Stat{Median: Median(xs[x]), Runs: len(xs[x]), Failed: failed[x]}}
				if sweep == SweepUDPSize {
					p.KPPS = &Stat{Median: Median(pps[x]), Runs: len(pps[x]), Failed: failed[x]}
				}
				s.Points = append(s.Points, p)
			}
			sums = append(sums, s)
		}
		if measured {
			out = append(out, sums...)
		}
	}
	return out
}

func sortedKeys[V any](m map[int]V) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// sweepOf finds the summaries of one sweep, in table order.
func (r *Results) sweepOf(name string) []SweepSummary {
	var out []SweepSummary
	for _, s := range r.Sweeps {
		if s.Sweep == name {
			out = append(out, s)
		}
	}
	return out
}

// formatBytes writes a window or message size as people do: 64, 1472,
// 32K, 4M.
func formatBytes(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + "M"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + "K"
	default:
		return strconv.Itoa(n)
	}
}
