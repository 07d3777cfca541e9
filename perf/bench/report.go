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
	"loss%",
	"CPU s/Gbit", "overlayd CPU s/Gbit",
}

// rows renders the summaries as table cells. A metric that failed in every
// run reads "failed"; one that failed in some runs carries a '*' (the
// median of the others). Ratios to the baseline read "-" when there is none.
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
			stat(s.UDP64Loss, "%.1f"),
			stat(s.CPUPerGbit, "%.3f"), overlayd,
		})
	}
	return out
}

func stat(s Stat, format string) string {
	switch {
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
	fmt.Fprintf(&b, "workload  %s; %gs per test, median of %d rounds\n\n", r.Iperf3, r.Duration, r.Rounds)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(columns, "\t"))
	cells := rows(r.Medians)
	for _, row := range cells {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
	b.WriteString("\n" + footnotes(cells))
	_, err := w.Write(b.Bytes())
	return err
}

// WriteMarkdown prints the same table as GitHub markdown, for the README.
func WriteMarkdown(w io.Writer, r *Results) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "overlayd bench, %s: Linux %s, %s (%d cores), %s, %gs per test, median of %d rounds.\n\n",
		r.Started.UTC().Format("2006-01-02"), r.Machine.Kernel, r.Machine.CPUModel, r.Machine.Cores, r.Iperf3, r.Duration, r.Rounds)
	fmt.Fprintf(&b, "| %s |\n", strings.Join(columns, " | "))
	b.WriteString("|---" + strings.Repeat("|--:", len(columns)-1) + "|\n")
	cells := rows(r.Medians)
	for _, row := range cells {
		fmt.Fprintf(&b, "| %s |\n", strings.Join(row, " | "))
	}
	b.WriteString("\n" + footnotes(cells))
	_, err := w.Write(b.Bytes())
	return err
}

func footnotes(cells [][]string) string {
	s := "x kVXLAN: ratio to " + Baseline + " in the same run. CPU: the single-stream TCP test; " +
		"machine-wide busy time (all cores) or overlayd's own, per Gbit delivered.\n"
	if anyPartial(cells) {
		s += "*: some runs failed; the median of the others (see the JSON file).\n"
	}
	return s
}

// WriteFiles writes the results as JSON to path and the markdown table
// beside it, with the extension .md; it returns the markdown file's path.
func WriteFiles(path string, r *Results) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return "", err
	}
	md := strings.TrimSuffix(path, filepath.Ext(path)) + ".md"
	var b bytes.Buffer
	if err := WriteMarkdown(&b, r); err != nil {
		return "", err
	}
	return md, os.WriteFile(md, b.Bytes(), 0o644)
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
