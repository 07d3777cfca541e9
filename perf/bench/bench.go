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
// Rounds interleave the systems so that drift on a shared machine hits them
// all alike.
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
	"time"

	"github.com/overlayd/overlayd/perf/netns"
)

// Options of a bench run.
type Options struct {
	Overlayd string        // the overlayd binary, for overlayd systems
	Systems  []string      // by name, in table order; empty: DefaultSystems
	Duration time.Duration // of each iperf3 and request/response test, whole seconds; 0: 10s
	Rounds   int           // rounds over all systems; 0: 3
	Out      string        // the JSON results file; empty: DefaultOut(start)
	Keep     bool          // keep the work directory (logs) even on success
	Progress io.Writer     // progress lines; nil: discarded
	// Lab is the overlayd-lab binary, whose `rr` subcommand runs the
	// request/response tests in the containers; empty: this program.
	Lab string
}

func (o Options) withDefaults(start time.Time) (Options, error) {
	if len(o.Systems) == 0 {
		o.Systems = DefaultSystems
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.Rounds == 0 {
		o.Rounds = 3
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
	switch {
	case o.Duration < time.Second || o.Duration%time.Second != 0:
		return o, fmt.Errorf("duration %s: want whole seconds, at least 1s (iperf3 -t)", o.Duration)
	case o.Rounds < 1:
		return o, fmt.Errorf("rounds %d: want at least 1", o.Rounds)
	}
	return o, nil
}

// Run measures every system opts.Rounds times, prints the table of medians
// to out and writes the results files. Every namespace and process it made
// is gone when it returns, also when ctx is cancelled (Ctrl-C). A failed
// setup or test is reported as failed in the results, not as an error; the
// error is for runs that could not complete, and for leftovers that could
// not be removed.
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
		if _, ok := s.(overlaydSystem); ok {
			if _, err := os.Stat(opts.Overlayd); err != nil {
				return nil, fmt.Errorf("%s needs the overlayd binary: %w", name, err)
			}
		}
		chosen = append(chosen, s)
	}
	say := func(format string, args ...any) { fmt.Fprintf(opts.Progress, format+"\n", args...) }
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
	}
	b := &bencher{opts: opts, bin: bin, work: work, say: say}
	var leftovers []error
	for round := 1; round <= opts.Rounds && ctx.Err() == nil; round++ {
		for _, s := range chosen {
			run, err := b.runOnce(ctx, round, s)
			if err != nil {
				leftovers = append(leftovers, err)
			}
			if ctx.Err() != nil {
				break
			}
			res.Runs = append(res.Runs, run)
		}
	}
	if err := ctx.Err(); err != nil {
		say("interrupted: nothing written; logs in %s", work)
		return nil, errors.Join(append([]error{err}, leftovers...)...)
	}
	res.Finished = time.Now().UTC()
	res.Medians = Summarize(res.Systems, res.Runs)

	if err := WriteTable(out, res); err != nil {
		return res, err
	}
	md, err := WriteFiles(opts.Out, res)
	if err != nil {
		return res, err
	}
	fmt.Fprintf(out, "\nresults: %s\nmarkdown: %s\n", opts.Out, md)
	if opts.Keep || anyFailed(res.Runs) {
		fmt.Fprintf(out, "logs: %s\n", work)
	} else {
		os.RemoveAll(work)
	}
	return res, errors.Join(leftovers...)
}

type bencher struct {
	opts Options
	bin  string // iperf3
	work string
	say  func(format string, args ...any)
}

// runOnce measures one system on a fresh testbed and tears it down. The
// error is only for a teardown that left something behind.
func (b *bencher) runOnce(ctx context.Context, round int, s System) (Trial, error) {
	_, overlayd := s.(overlaydSystem)
	run := Trial{Round: round, System: s.Name(), Overlayd: overlayd}
	dir := filepath.Join(b.work, fmt.Sprintf("r%d-%s", round, s.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		run.SetupError = err.Error()
		return run, nil
	}
	b.say("round %d/%d  %-14s setting up", round, b.opts.Rounds, s.Name())
	tb, err := s.Setup(ctx, Env{
		Prefix:   netns.Prefix("bench"),
		WorkDir:  dir,
		Overlayd: b.opts.Overlayd,
		Logf:     func(string, ...any) {},
	})
	if err != nil {
		run.SetupError = err.Error()
		b.say("round %d/%d  %-14s setup failed: %v", round, b.opts.Rounds, s.Name(), err)
		return run, nil
	}
	for _, w := range workloads {
		if ctx.Err() != nil {
			break
		}
		m := b.measure(ctx, tb, w, filepath.Join(dir, w.name))
		if ctx.Err() != nil {
			break // interrupted: not a result
		}
		b.say("round %d/%d  %-14s %-6s %s", round, b.opts.Rounds, s.Name(), w.name, describe(m))
		run.Tests = append(run.Tests, m)
	}
	if err := tb.Teardown(); err != nil {
		run.TeardownError = err.Error()
		return run, fmt.Errorf("%s round %d: teardown: %w", s.Name(), round, err)
	}
	return run, nil
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
	m := Measurement{Test: w.name}
	rep, use, err := iperfRun{bin: b.bin, tb: tb, w: w, duration: b.opts.Duration, logs: logs}.run(ctx)
	if err != nil {
		m.Error = err.Error()
		return m
	}
	r := &Result{Gbps: rep.Gbps, Gbit: float64(rep.Bytes) * 8 / 1e9, Wall: use.Wall.Seconds(), CPU: use.Machine}
	if rep.Protocol == "UDP" {
		r.UDP = &UDPResult{Sent: rep.SentPackets, Delivered: rep.DeliveredPackets, PPS: rep.PPS(), LossPct: rep.LossPct()}
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
		return s
	case r.UDP != nil:
		return fmt.Sprintf("%.0f kpps delivered, %.1f%% lost, %.1f CPU s", r.UDP.PPS/1e3, r.UDP.LossPct, r.CPU)
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
