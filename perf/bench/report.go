package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// columns of the table, in order.
var columns = []string{
	"system",
	"TCP 1x Gbit/s", "x kVXLAN",
	"TCP 4x Gbit/s", "x kVXLAN",
	"64B kpps", "x kVXLAN",
	"loss%", "at rcvr%",
	"CPU s/Gbit", "overlayd CPU s/Gbit",
}

// latencyColumns are those of the latency table, whose ratios read the
// other way: above 1 is slower than the baseline.
var latencyColumns = []string{
	"system",
	"TCP RR p50 µs", slowerRatio, "TCP RR p99 µs", slowerRatio, "TCP RR tx/s", "TCP RR CPU µs/tx",
	"UDP RR p50 µs", slowerRatio, "UDP RR p99 µs", slowerRatio, "UDP RR tx/s", "UDP RR lost%",
	"ping avg µs", slowerRatio, "ping p99 µs",
}

const slowerRatio = "x kVXLAN (>1 slower)"

// latencyTextHeader is latencyColumns in two rows, narrow enough for a
// terminal, below a caption that says which way the ratios read.
var latencyTextHeader = [][]string{
	{"", "TCP RR", "", "", "", "", "", "UDP RR", "", "", "", "", "", "ping"},
	{"system", "p50 µs", "x kVXLAN", "p99 µs", "x kVXLAN", "tx/s", "CPU µs/tx", "p50 µs", "x kVXLAN", "p99 µs", "x kVXLAN", "tx/s", "lost%", "avg µs", "x kVXLAN", "p99 µs"},
}

const latencyCaption = "Latency (x kVXLAN above 1 is slower than " + Baseline + ")"

// forwarderColumns are those of the table of the forwarders' threads in a
// TCP RR transaction.
var forwarderColumns = []string{
	"system", "sleeps/tx", "CPU µs/tx", "CPU µs/sleep", "run-queue wait µs/tx",
}

const forwarderCaption = "Forwarding processes' threads per TCP RR transaction, both hosts"

// forwarderRows renders that table's cells, a row for each system whose
// forwarders were measured.
func forwarderRows(sums []Summary) [][]string {
	var out [][]string
	for _, s := range sums {
		if s.TCPRRFwdSleeps.Runs == 0 {
			continue
		}
		out = append(out, []string{
			s.System,
			stat(s.TCPRRFwdSleeps, "%.2f"), stat(s.TCPRRFwdCPU, "%.1f"),
			stat(s.TCPRRFwdCPUPerSleep, "%.1f"), stat(s.TCPRRFwdWait, "%.1f"),
		})
	}
	return out
}

const forwarderFootnote = "Forwarding processes: overlayd, or flanneld with its udp backend. " +
	"From the scheduler's account of their threads (/proc/<pid>/task/*/schedstat and status), summed over the threads: " +
	"sleeps are voluntary context switches, each ended by a wake-up (a forwarder that sleeps whenever its queue is empty " +
	"sleeps once per hop, and a round trip crosses four; a busy poller sleeps less); " +
	"CPU is their time on a CPU, in all and per sleep (busy polling included); " +
	"run-queue wait is time they were runnable but waited for a CPU, summed over the threads, so it can exceed the round trip " +
	"(a busy poller's yields count here).\n"

// latencyRows renders the latency table's cells, as rows does.
func latencyRows(sums []Summary) [][]string {
	var out [][]string
	for _, s := range sums {
		out = append(out, []string{
			s.System,
			stat(s.TCPRRP50, "%.1f"), ratio(s.TCPRRP50Ratio), stat(s.TCPRRP99, "%.1f"), ratio(s.TCPRRP99Ratio), stat(s.TCPRRTPS, "%.0f"), stat(s.TCPRRCPU, "%.1f"),
			stat(s.UDPRRP50, "%.1f"), ratio(s.UDPRRP50Ratio), stat(s.UDPRRP99, "%.1f"), ratio(s.UDPRRP99Ratio), stat(s.UDPRRTPS, "%.0f"), stat(s.UDPRRLost, "%.2f"),
			stat(s.PingMean, "%.1f"), ratio(s.PingMeanRatio), stat(s.PingP99, "%.1f"),
		})
	}
	return out
}

// rows renders the summaries as table cells. A metric that failed in every
// run reads "failed"; one that failed in some runs carries a '*' (the
// median of the others); one never measured reads "-". Ratios to the
// baseline read "-" when there is none.
func rows(sums []Summary) [][]string {
	var out [][]string
	for _, s := range sums {
		overlayd := "-"
		if s.OverlaydCPUPerGbit != nil {
			overlayd = stat(*s.OverlaydCPUPerGbit, "%.3f")
		}
		out = append(out, []string{
			s.System,
			stat(s.TCP1Gbps, "%.2f"), ratio(s.TCP1Ratio),
			stat(s.TCP4Gbps, "%.2f"), ratio(s.TCP4Ratio),
			stat(s.UDP64KPPS, "%.0f"), ratio(s.UDP64Ratio),
			stat(s.UDP64Loss, "%.1f"), stat(s.UDP64RcvLoss, "%.1f"),
			stat(s.CPUPerGbit, "%.3f"), overlayd,
		})
	}
	return out
}

func stat(s Stat, format string) string {
	switch {
	case s.Runs == 0 && s.Failed == 0:
		return "-"
	case s.Runs == 0:
		return "failed"
	case s.Failed > 0:
		return fmt.Sprintf(format, s.Median) + "*"
	default:
		return fmt.Sprintf(format, s.Median)
	}
}

func ratio(r *float64) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f", *r)
}

// anyPartial reports whether a cell carries the '*' footnote.
func anyPartial(cells [][]string) bool {
	for _, row := range cells {
		for _, c := range row {
			if strings.HasSuffix(c, "*") {
				return true
			}
		}
	}
	return false
}

// WriteTable prints the results for a terminal: the machine, then the
// table of medians.
func WriteTable(w io.Writer, r *Results) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "date      %s\n", r.Started.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "kernel    %s\n", r.Machine.Kernel)
	fmt.Fprintf(&b, "cpu       %s, %d cores\n", r.Machine.CPUModel, r.Machine.Cores)
	fmt.Fprintf(&b, "workload  %s; %gs per test, median of %d rounds\n", r.Iperf3, r.Duration, r.Rounds)
	if r.Latency != "" {
		fmt.Fprintf(&b, "latency   %s\n", r.Latency)
	}
	if r.Underlay != nil {
		fmt.Fprintf(&b, "underlay  %s\n", underlayText(r.Underlay))
	}
	if r.SweepDuration > 0 {
		fmt.Fprintf(&b, "sweeps    %gs per point\n", r.SweepDuration)
	}
	if r.Interrupted != "" {
		fmt.Fprintf(&b, "INTERRUPTED: %s\n", r.Interrupted)
	}
	b.WriteString("\n")
	cells := rows(r.Medians)
	textTable(&b, [][]string{columns}, cells)
	latency := r.hasLatency()
	var fcells [][]string
	if latency {
		lcells := latencyRows(r.Medians)
		b.WriteString("\n" + latencyCaption + "\n")
		textTable(&b, latencyTextHeader, lcells)
		cells = append(cells, lcells...)
		fcells = forwarderRows(r.Medians)
		if len(fcells) > 0 {
			b.WriteString("\n" + forwarderCaption + "\n")
			textTable(&b, [][]string{forwarderColumns}, fcells)
			cells = append(cells, fcells...)
		}
	}
	b.WriteString("\n" + footnotes(cells, latency, len(fcells) > 0))
	for _, d := range sweepDefs {
		if sums := r.sweepOf(d.name); len(sums) > 0 {
			header, scells := sweepRows(d, sums)
			fmt.Fprintf(&b, "\n%s, Gbit/s (%s)\n", d.title, d.xLabel)
			textTable(&b, [][]string{header}, scells)
		}
	}
	if fails := failures(r); len(fails) > 0 {
		b.WriteString("\nWhat failed:\n")
		for _, f := range fails {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(f, "**", ""))
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

func textTable(b *bytes.Buffer, header [][]string, cells [][]string) {
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	for _, row := range header {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	for _, row := range cells {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
}

func markdownTable(b *bytes.Buffer, header []string, cells [][]string) {
	fmt.Fprintf(b, "| %s |\n", strings.Join(header, " | "))
	b.WriteString("|---" + strings.Repeat("|--:", len(header)-1) + "|\n")
	for _, row := range cells {
		fmt.Fprintf(b, "| %s |\n", strings.Join(row, " | "))
	}
}

// WriteMarkdown prints the same table as GitHub markdown, for the README.
func WriteMarkdown(w io.Writer, r *Results) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "overlayd bench, %s: Linux %s, %s (%d cores), %s, %gs per test, median of %d rounds.",
		r.Started.UTC().Format("2006-01-02"), r.Machine.Kernel, r.Machine.CPUModel, r.Machine.Cores, r.Iperf3, r.Duration, r.Rounds)
	if r.Latency != "" {
		fmt.Fprintf(&b, " Latency: %s.", r.Latency)
	}
	b.WriteString("\n\n")
	r.markdownTables(&b)
	_, err := w.Write(b.Bytes())
	return err
}

// markdownTables writes the headline table, the latency table when the
// run measured latency, and their footnotes.
func (r *Results) markdownTables(b *bytes.Buffer) {
	cells := rows(r.Medians)
	markdownTable(b, columns, cells)
	latency := r.hasLatency()
	var fcells [][]string
	if latency {
		lcells := latencyRows(r.Medians)
		b.WriteString("\n")
		markdownTable(b, latencyColumns, lcells)
		cells = append(cells, lcells...)
		fcells = forwarderRows(r.Medians)
		if len(fcells) > 0 {
			b.WriteString("\n" + forwarderCaption + ":\n\n")
			markdownTable(b, forwarderColumns, fcells)
			cells = append(cells, fcells...)
		}
	}
	b.WriteString("\n" + footnotes(cells, latency, len(fcells) > 0))
}

func footnotes(cells [][]string, latency, forwarders bool) string {
	s := "x kVXLAN: ratio to " + Baseline + " in the same run. CPU: the single-stream TCP test; " +
		"machine-wide busy time (all cores, with the time idle CPUs spent polling) or overlayd's own, per Gbit delivered. " +
		"loss%: 64 B datagrams sent but not received; at rcvr%: the part of them that reached the receiving container " +
		"and was dropped there, its socket buffer full (Udp RcvbufErrors).\n"
	if latency {
		s += "Latency: x kVXLAN above 1 is slower than " + Baseline + ". TCP RR, UDP RR: request/response as netperf's TCP_RR and UDP_RR, " +
			"one transaction in flight for the test's duration; p50 and p99 of every round trip, transactions per second, " +
			"the machine's CPU time per TCP transaction (all cores, with the time idle CPUs spent polling, but not the 1-2 s " +
			"they go on polling after the test with --idle-poll), " +
			"and UDP requests that got no response in time (lost%). ping: ICMP echoes with idle gaps between them, " +
			"so that each also pays for waking the path; average and p99 round trip. " +
			"Each figure is the median over the rounds.\n"
		if forwarders {
			s += forwarderFootnote
		}
	}
	if anyPartial(cells) {
		s += "*: some runs failed; the median of the others (see the JSON file).\n"
	}
	return s
}

// Files are what WriteFiles wrote.
type Files struct {
	JSON   string
	Report string   // Markdown, beside the JSON
	Charts []string // PNGs, beside the JSON
}

// WriteFiles writes the results as JSON to path, the charts beside it
// (<name>-<chart>.png) and the Markdown report with the same name and the
// extension .md. A chart that cannot be drawn is named in the report and
// the error; the JSON and the report are written anyway.
func WriteFiles(path string, r *Results) (Files, error) {
	files := Files{JSON: path}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return files, err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return files, err
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return files, err
	}
	return writeReportFiles(path, r)
}

// writeReportFiles writes the charts and the report of the results in
// path beside it.
func writeReportFiles(path string, r *Results) (Files, error) {
	files := Files{JSON: path}
	dir := filepath.Dir(path)
	charts, chartErr := WriteCharts(dir, chartBase(path), r)
	for _, c := range charts {
		files.Charts = append(files.Charts, c.Path)
	}
	files.Report = strings.TrimSuffix(path, filepath.Ext(path)) + ".md"
	var b bytes.Buffer
	if err := WriteReport(&b, r, charts, chartErr); err != nil {
		return files, err
	}
	if err := os.WriteFile(files.Report, b.Bytes(), 0o644); err != nil {
		return files, err
	}
	return files, chartErr
}

// Rerender draws the charts and writes the report of a results file again,
// e.g. after the report's layout changed; the JSON is left as it is.
func Rerender(path string) (Files, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Files{}, err
	}
	var r Results
	if err := json.Unmarshal(data, &r); err != nil {
		return Files{}, fmt.Errorf("%s: %w", path, err)
	}
	return writeReportFiles(path, &r)
}

// DefaultOut is the default results path for a run started at t.
func DefaultOut(t time.Time) string {
	return filepath.Join("perf", "results", "bench-"+t.UTC().Format("20060102T150405Z")+".json")
}

// ReadMachine describes this machine from /proc.
func ReadMachine() Machine {
	m := Machine{Cores: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		model, cores := ParseCPUInfo(b)
		m.CPUModel = model
		if cores > 0 {
			m.Cores = cores
		}
	}
	return m
}

// ParseCPUInfo returns the first "model name" of /proc/cpuinfo and the
// number of processors it lists.
func ParseCPUInfo(data []byte) (model string, cores int) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(key) {
		case "processor":
			cores++
		case "model name":
			if model == "" {
				model = strings.TrimSpace(value)
			}
		}
	}
	return model, cores
}
