// Package bench is `make bench`: it measures overlayd against the Linux
// kernel on the same emulated two-host topology (DESIGN.md §5-6) and
// reports medians and ratios to kernel VXLAN.
//
// Each [System] (host-gw routes, kernel VXLAN as flanneld programs it,
// overlayd's modes) gets a fresh topology per round: a container on host 1
// sends through its bridge, host routing and the system under test to a
// container on host 2. iperf3 measures single-stream TCP, four-stream TCP
// and the 64-byte UDP packet rate; overlayd-lab's own request/response tool
// (traffic.RR, as netperf's TCP_RR and UDP_RR) and a ping series measure
// latency: p50 and p99 round trips and transactions per second. /proc
// gives the CPU time spent, by the whole machine and by overlayd itself.
// Two sweeps follow the published comparisons of flannel's backends: TCP
// throughput across TCP window sizes, and throughput across UDP and TCP
// message sizes (sweep.go). Rounds interleave the systems so that drift on
// a shared machine hits them all alike.
//
// The underlay can be made less perfect than a veth (jumbo frames, netem
// delay and loss, a tbf rate cap), and flanneld itself can join the run
// from a binary the user has. The results are JSON, PNG charts drawn with
// gonum/plot (chart.go) and a Markdown report (markdown.go).
//
// The bench is a command, not a test: it needs root, takes minutes, and
// its numbers are only meaningful as ratios measured in the same run.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/overlayd/overlayd/perf/netns"
	"github.com/overlayd/overlayd/perf/topo"
)

// Options of a bench run.
type Options struct {
	Overlayd string        // the overlayd binary, for overlayd systems
	Systems  []string      // by name, in table order; empty: DefaultSystems
	Duration time.Duration // of each headline iperf3 and request/response test, whole seconds; 0: 10s (quick: 2s)
	Rounds   int           // rounds over all systems; 0: 3 (quick: 1)
	// Sweeps to run, by name (SweepNames); nil: all of them, empty: none.
	Sweeps []string
	// Of each sweep point, whole seconds; 0: 2s (quick: 1s).
	SweepDuration time.Duration
	// Quick is a newcomer's first try: one round, short tests, fewer
	// sweep points; explicit Duration, Rounds and SweepDuration still win.
	Quick bool
	// The emulated underlay: its MTU (0: 1500; 9000 for jumbo frames) and
	// added delay, loss and rate cap.
	UnderlayMTU int
	Shape       topo.Shape
	// Flanneld is a flanneld binary: with it the run adds flanneld's udp
	// and vxlan backends (FlanneldSystems) to the systems.
	Flanneld string
	Out      string    // the JSON results file; empty: DefaultOut(start)
	Keep     bool      // keep the work directory (logs) even on success
	Progress io.Writer // progress lines; nil: discarded
	// Lab is the overlayd-lab binary, whose `rr` subcommand runs the
	// request/response tests in the containers; empty: this program.
	Lab string
	// Command is the command line, for the report.
	Command string
}

func (o Options) withDefaults(start time.Time) (Options, error) {
	if len(o.Systems) == 0 {
		o.Systems = slices.Clone(DefaultSystems)
	}
	if o.Flanneld != "" {
		for _, name := range FlanneldSystems {
			if !slices.Contains(o.Systems, name) {
				o.Systems = append(o.Systems, name)
			}
		}
	}
	if o.Sweeps == nil {
		o.Sweeps = SweepNames
	}
	for _, name := range o.Sweeps {
		if _, err := lookupSweep(name); err != nil {
			return o, err
		}
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
		if o.Quick {
			o.Duration = 2 * time.Second
		}
	}
	if o.SweepDuration == 0 {
		o.SweepDuration = 2 * time.Second
		if o.Quick {
			o.SweepDuration = time.Second
		}
	}
	if o.Rounds == 0 {
		o.Rounds = 3
		if o.Quick {
			o.Rounds = 1
		}
	}
	if o.UnderlayMTU == 0 {
		o.UnderlayMTU = 1500
	}
	if o.Out == "" {
		o.Out = DefaultOut(start)
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Lab == "" {
		self, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("the request/response tests run this program's rr subcommand: %w", err)
		}
		o.Lab = self
	}
	for what, d := range map[string]time.Duration{"duration": o.Duration, "sweep duration": o.SweepDuration} {
		if d < time.Second || d%time.Second != 0 {
			return o, fmt.Errorf("%s %s: want whole seconds, at least 1s (iperf3 -t)", what, d)
		}
	}
	switch {
	case o.Rounds < 1:
		return o, fmt.Errorf("rounds %d: want at least 1", o.Rounds)
	case o.UnderlayMTU < 1280 || o.UnderlayMTU > 65535:
		// Below 1280 the overlays' MTUs leave too little for the tests.
		return o, fmt.Errorf("underlay MTU %d out of range [1280, 65535]", o.UnderlayMTU)
	}
	return o, nil
}

// Run measures every system opts.Rounds times, prints the table of medians
// to out and writes the results files: JSON, charts and a Markdown report.
// Every namespace and process it made is gone when it returns, also when
// ctx is cancelled (Ctrl-C), which ends the run early with what was
// measured so far written out. A failed setup or test is reported as
// failed in the results, not as an error; the error is for runs that could
// not start or were interrupted, and for leftovers that could not be
// removed.
func Run(ctx context.Context, opts Options, out io.Writer) (*Results, error) {
	start := time.Now()
	opts, err := opts.withDefaults(start)
	if err != nil {
		return nil, err
	}
	if err := netns.Available(); err != nil {
		return nil, fmt.Errorf("the bench builds network namespaces: %w (run it as root: sudo make bench)", err)
	}
	var chosen []System
	for _, name := range opts.Systems {
		s, err := LookupSystem(name)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(chosen, func(c System) bool { return c.Name() == name }) {
			return nil, fmt.Errorf("system %s listed twice", name)
		}
		if needsOverlayd(s) {
			if _, err := os.Stat(opts.Overlayd); err != nil {
				return nil, fmt.Errorf("%s needs the overlayd binary: %w", name, err)
			}
		}
		chosen = append(chosen, s)
	}
	say := func(format string, args ...any) { fmt.Fprintf(opts.Progress, format+"\n", args...) }
	if err := checkUnderlay(ctx, opts.UnderlayMTU, opts.Shape); err != nil {
		return nil, err
	}
	bin, err := ensureIperf3(ctx, say)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "overlayd-bench-")
	if err != nil {
		return nil, err
	}

	res := &Results{
		Started:  start.UTC(),
		Machine:  ReadMachine(),
		Iperf3:   iperf3Version(ctx, bin),
		Latency:  latencyWorkload,
		Duration: opts.Duration.Seconds(),
		Rounds:   opts.Rounds,
		Systems:  opts.Systems,
		Command:  opts.Command,
		Underlay: &Underlay{MTU: opts.UnderlayMTU, DelayUS: opts.Shape.Delay.Microseconds(), LossPct: opts.Shape.LossPct, RateBit: opts.Shape.RateBit},
	}
	if len(opts.Sweeps) > 0 {
		res.SweepDuration = opts.SweepDuration.Seconds()
	}
	b := &bencher{opts: opts, bin: bin, work: work, say: say}
	b.progress = newProgress(time.Now, opts.Rounds*len(chosen), b.nominal(b.plan(opts.UnderlayMTU))+nominalSetup)
	var leftovers []error
	for round := 1; round <= opts.Rounds && ctx.Err() == nil; round++ {
		for _, s := range chosen {
			run, keep, err := b.runOnce(ctx, round, s)
			if err != nil {
				leftovers = append(leftovers, err)
			}
			if keep {
				res.Runs = append(res.Runs, run)
			}
			if ctx.Err() != nil {
				res.Interrupted = fmt.Sprintf("interrupted in round %d of %d, during %s: the figures are of what was measured until then", round, opts.Rounds, s.Name())
				break
			}
		}
	}
	res.Finished = time.Now().UTC()
	res.Medians = Summarize(res.Systems, res.Runs)
	res.Sweeps = SummarizeSweeps(res.Systems, res.Runs)

	if err := WriteTable(out, res); err != nil {
		return res, err
	}
	files, err := WriteFiles(opts.Out, res)
	if err != nil {
		return res, err
	}
	fmt.Fprintf(out, "\nresults: %s\nreport:  %s\n", opts.Out, files.Report)
	for _, c := range files.Charts {
		fmt.Fprintf(out, "chart:   %s\n", c)
	}
	if opts.Keep || anyFailed(res.Runs) || res.Interrupted != "" {
		fmt.Fprintf(out, "logs: %s\n", work)
	} else {
		os.RemoveAll(work)
	}
	if res.Interrupted != "" {
		leftovers = append([]error{fmt.Errorf("%s (written to %s): %w", res.Interrupted, opts.Out, ctx.Err())}, leftovers...)
	}
	return res, errors.Join(leftovers...)
}

// checkUnderlay builds and removes one shaped underlay before anything is
// measured, so that a kernel without netem or tbf stops the run at once
// with the reason instead of failing every row.
func checkUnderlay(ctx context.Context, mtu int, shape topo.Shape) error {
	if shape.IsZero() && mtu == 1500 {
		return nil
	}
	c, err := topo.New(ctx, topo.Options{Prefix: netns.Prefix("benchchk"), Hosts: 2, UnderlayMTU: mtu, Shape: shape})
	if err != nil {
		return fmt.Errorf("the underlay asked for (MTU %d, %s): %w", mtu, shape, err)
	}
	return c.Close()
}

type bencher struct {
	opts     Options
	bin      string // iperf3
	work     string
	say      func(format string, args ...any)
	progress *progress
}

// plan is every test of one trial on containers of MTU mtu: the headline
// workloads, then the sweeps' points.
func (b *bencher) plan(mtu int) []workload {
	return append(slices.Clone(workloads), sweepWorkloads(b.opts.Sweeps, mtu, b.opts.Quick)...)
}

// The nominal cost of a trial's parts, in seconds, for the estimate of the
// time left; the progress scales it by what the run has taken so far.
const (
	nominalSetup    = 5
	nominalOverhead = 1.5 // starting the server, connecting, exchanging results
)

func (b *bencher) nominal(plan []workload) float64 {
	var sum float64
	for _, w := range plan {
		sum += b.duration(w).Seconds() + nominalOverhead
	}
	return sum
}

// duration is how long a workload runs.
func (b *bencher) duration(w workload) time.Duration {
	switch {
	case w.ping:
		return pingCount * pingInterval
	case w.sweep != "":
		return b.opts.SweepDuration
	}
	return b.opts.Duration
}

// runOnce measures one system on a fresh testbed and tears it down. keep
// is false for a trial interrupted before it measured anything. The error
// is only for a teardown that left something behind.
func (b *bencher) runOnce(ctx context.Context, round int, s System) (_ Trial, keep bool, _ error) {
	run := Trial{Round: round, System: s.Name(), Overlayd: needsOverlayd(s) && !isFlanneld(s)}
	trial := b.progress.startTrial()
	defer trial.done()
	line := func(format string, args ...any) {
		b.say("round %d/%d  %-14s %s  [%s]", round, b.opts.Rounds, s.Name(), fmt.Sprintf(format, args...), b.progress.status())
	}
	dir := filepath.Join(b.work, fmt.Sprintf("r%d-%s", round, s.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		run.SetupError = err.Error()
		return run, true, nil
	}
	line("setting up")
	tb, err := s.Setup(ctx, Env{
		Prefix:      netns.Prefix("bench"),
		WorkDir:     dir,
		Overlayd:    b.opts.Overlayd,
		Flanneld:    b.opts.Flanneld,
		UnderlayMTU: b.opts.UnderlayMTU,
		Shape:       b.opts.Shape,
		Logf:        func(string, ...any) {},
	})
	if err != nil {
		if ctx.Err() != nil {
			return run, false, nil
		}
		run.SetupError = err.Error()
		line("setup failed: %v", err)
		return run, true, nil
	}
	plan := b.plan(tb.ContainerMTU())
	trial.planned(nominalSetup, b.nominal(plan))
	for _, w := range plan {
		if ctx.Err() != nil {
			break
		}
		m := b.measure(ctx, tb, w, filepath.Join(dir, strings.ReplaceAll(w.name, "/", "-")))
		if ctx.Err() != nil {
			break // interrupted: not a result
		}
		trial.add(b.duration(w).Seconds() + nominalOverhead)
		line("%-16s %s", w.name, describe(m))
		run.Tests = append(run.Tests, m)
	}
	keep = len(run.Tests) > 0
	if err := tb.Teardown(); err != nil {
		run.TeardownError = err.Error()
		return run, keep, fmt.Errorf("%s round %d: teardown: %w", s.Name(), round, err)
	}
	return run, keep, nil
}

// measure runs one workload and turns its report into a Measurement; a
// failure becomes the measurement's Error.
func (b *bencher) measure(ctx context.Context, tb Testbed, w workload, logs string) Measurement {
	switch {
	case w.rr != "":
		return b.measureRR(ctx, tb, w, logs)
	case w.ping:
		return b.measurePing(ctx, tb, w)
	}
	m := Measurement{Test: w.name, Sweep: w.sweep, X: w.x}
	rep, use, err := iperfRun{bin: b.bin, tb: tb, w: w, duration: b.duration(w), logs: logs}.run(ctx)
	if err != nil {
		m.Error = err.Error()
		return m
	}
	r := &Result{Gbps: rep.Gbps, Gbit: float64(rep.Bytes) * 8 / 1e9, Wall: use.Wall.Seconds(), CPU: use.Machine}
	if rep.Protocol == "UDP" {
		rcv := rep.ReceiverLossPct()
		r.UDP = &UDPResult{Sent: rep.SentPackets, Delivered: rep.DeliveredPackets, PPS: rep.PPS(), LossPct: rep.LossPct(), ReceiverLossPct: &rcv}
	}
	if len(tb.OverlaydPIDs()) > 0 {
		r.OverlaydCPU = &use.Procs
	}
	m.Result = r
	return m
}

func (b *bencher) measureRR(ctx context.Context, tb Testbed, w workload, logs string) Measurement {
	m := Measurement{Test: w.name}
	res, use, err := rrRun{lab: b.opts.Lab, tb: tb, proto: w.rr, duration: b.opts.Duration, logs: logs}.run(ctx)
	if err != nil {
		m.Error = err.Error()
		return m
	}
	m.Result = latencyMeasured(tb, latencyOf(res.RTT, res.Timeouts, res.TPS), use)
	return m
}

func (b *bencher) measurePing(ctx context.Context, tb Testbed, w workload) Measurement {
	m := Measurement{Test: w.name}
	st, use, err := pingRun(ctx, tb)
	if err != nil {
		m.Error = err.Error()
		return m
	}
	m.Result = latencyMeasured(tb, latencyOf(st.RTT, st.Sent-st.Received, 0), use)
	return m
}

func latencyMeasured(tb Testbed, l *LatencyResult, use cpuUsage) *Result {
	r := &Result{Latency: l, Wall: use.Wall.Seconds(), CPU: use.Machine}
	if len(tb.OverlaydPIDs()) > 0 {
		r.OverlaydCPU = &use.Procs
	}
	if len(tb.ForwarderPIDs()) > 0 {
		r.Forwarders = threadUse(use.Forwarders)
	}
	return r
}

// describe is a progress line's account of a measurement.
func describe(m Measurement) string {
	switch r := m.Result; {
	case !m.OK():
		return "failed: " + m.Error
	case r.Latency != nil:
		l := r.Latency
		s := fmt.Sprintf("p50 %.1f µs, p99 %.1f µs", l.P50US, l.P99US)
		if l.TPS > 0 {
			s += fmt.Sprintf(", %.0f transactions/s", l.TPS)
		}
		if l.Lost > 0 {
			s += fmt.Sprintf(", %d lost", l.Lost)
		}
		if f := r.Forwarders; f != nil && l.Transactions > 0 {
			tx := float64(l.Transactions)
			s += fmt.Sprintf("; forwarders %.1f sleeps, %.1f CPU µs per transaction", float64(f.Sleeps)/tx, f.OnCPU/tx*1e6)
		}
		return s
	case r.UDP != nil:
		s := fmt.Sprintf("%.0f kpps delivered, %.1f%% lost", r.UDP.PPS/1e3, r.UDP.LossPct)
		if r.UDP.ReceiverLossPct != nil {
			s += fmt.Sprintf(" (%.1f%% at the receiving socket)", *r.UDP.ReceiverLossPct)
		}
		return s + fmt.Sprintf(", %.1f CPU s", r.CPU)
	default:
		return fmt.Sprintf("%.2f Gbit/s, %.1f CPU s", r.Gbps, r.CPU)
	}
}

func anyFailed(runs []Trial) bool {
	for _, r := range runs {
		if r.SetupError != "" {
			return true
		}
		for _, m := range r.Tests {
			if !m.OK() {
				return true
			}
		}
	}
	return false
}
