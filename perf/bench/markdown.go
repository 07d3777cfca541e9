package bench

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/overlayd/overlayd/perf/topo"
)

// WriteReport prints the Markdown report of a run: where and how it ran,
// the charts (linked by file name: the report lives beside them), the
// tables of medians, each sweep's table, and why anything failed.
// chartErr, if any, is said where the charts would be.
func WriteReport(w io.Writer, r *Results, charts []Chart, chartErr error) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# overlayd bench, %s\n\n", r.Started.UTC().Format("2006-01-02 15:04 UTC"))
	b.WriteString("| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| machine | %s, %d cores |\n", orUnknown(r.Machine.CPUModel), r.Machine.Cores)
	fmt.Fprintf(&b, "| kernel | Linux %s |\n", orUnknown(r.Machine.Kernel))
	fmt.Fprintf(&b, "| date | %s to %s (%s) |\n", r.Started.UTC().Format(time.DateTime), r.Finished.UTC().Format("15:04:05 UTC"),
		r.Finished.Sub(r.Started).Round(time.Second))
	if r.Command != "" {
		fmt.Fprintf(&b, "| command | `%s` |\n", strings.ReplaceAll(r.Command, "|", `\|`))
	}
	fmt.Fprintf(&b, "| underlay | %s |\n", underlayText(r.Underlay))
	tests := fmt.Sprintf("%s; headline tests %g s", r.Iperf3, r.Duration)
	if r.SweepDuration > 0 {
		tests += fmt.Sprintf(", sweep points %g s", r.SweepDuration)
	}
	fmt.Fprintf(&b, "| tests | %s; median of %d round(s), systems interleaved in each |\n", tests, r.Rounds)
	if r.Latency != "" {
		fmt.Fprintf(&b, "| latency | %s |\n", r.Latency)
	}
	if r.Interrupted != "" {
		fmt.Fprintf(&b, "\n**Interrupted:** %s.\n", r.Interrupted)
	}

	chart := func(name string) {
		for _, c := range charts {
			if c.Name == name {
				fmt.Fprintf(&b, "![%s](%s)\n\n", c.Title, filepath.Base(c.Path))
			}
		}
	}
	b.WriteString("\n## Headline\n\n")
	if chartErr != nil {
		fmt.Fprintf(&b, "Charts could not be drawn: %v\n\n", chartErr)
	}
	chart("headline")
	r.markdownTables(&b)

	for _, d := range sweepDefs {
		sums := r.sweepOf(d.name)
		if len(sums) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n## %s\n\n", d.title)
		chart(d.name)
		header, scells := sweepRows(d, sums)
		markdownTable(&b, header, scells)
		fmt.Fprintf(&b, "\nGbit/s delivered, median over the rounds; %s.", d.xLabel)
		if d.name != SweepWindow {
			b.WriteString(" The last column is the largest message one packet of the system's container MTU carries (its size after @).")
		}
		if anyPartial(scells) {
			b.WriteString(" *: some runs failed; the median of the others.")
		}
		b.WriteString("\n")
	}

	if fails := failures(r); len(fails) > 0 {
		b.WriteString("\n## What failed\n\n")
		for _, f := range fails {
			fmt.Fprintf(&b, "- %s\n", f)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// underlayText describes the emulated underlay link.
func underlayText(u *Underlay) string {
	if u == nil {
		return "veth, MTU 1500"
	}
	s := fmt.Sprintf("veth, MTU %d", u.MTU)
	shape := topo.Shape{Delay: time.Duration(u.DelayUS) * time.Microsecond, LossPct: u.LossPct, RateBit: u.RateBit}
	if !shape.IsZero() {
		s += "; " + shape.String() + " on each host's egress"
	}
	return s
}

// sweepRows renders a sweep as a table: a row per system, a column per
// point. For the message-size sweeps the largest point depends on the
// system's MTU: it gets a column of its own, "one packet".
func sweepRows(d sweepDef, sums []SweepSummary) (header []string, cells [][]string) {
	full := d.name != SweepWindow
	var xs []int
	for _, s := range sums {
		for i, p := range s.Points {
			if full && i == len(s.Points)-1 {
				continue
			}
			if !slices.Contains(xs, p.X) {
				xs = append(xs, p.X)
			}
		}
	}
	slices.Sort(xs)
	header = []string{"system"}
	for _, x := range xs {
		header = append(header, formatBytes(x))
	}
	if full {
		header = append(header, "one packet")
	}
	for _, s := range sums {
		row := []string{s.System}
		for _, x := range xs {
			cell := "-"
			for i, p := range s.Points {
				if p.X == x && !(full && i == len(s.Points)-1) {
					cell = stat(p.Gbps, "%.2f")
				}
			}
			row = append(row, cell)
		}
		if full {
			cell := "-"
			if n := len(s.Points); n > 0 {
				cell = stat(s.Points[n-1].Gbps, "%.2f") + fmt.Sprintf(" @%d", s.Points[n-1].X)
			}
			row = append(row, cell)
		}
		if len(s.Points) == 0 {
			for i := 1; i < len(row); i++ {
				row[i] = "-" // never measured
				if s.SetupFailed > 0 {
					row[i] = "failed"
				}
			}
		}
		cells = append(cells, row)
	}
	return header, cells
}

// failures says what failed in the run, one line per system and reason,
// with the rounds it happened in: rows that failed say why rather than
// vanish.
func failures(r *Results) []string {
	type key struct{ system, what, err string }
	var order []key
	rounds := map[key][]int{}
	add := func(k key, round int) {
		if _, ok := rounds[k]; !ok {
			order = append(order, k)
		}
		rounds[k] = append(rounds[k], round)
	}
	for _, t := range r.Runs {
		if t.SetupError != "" {
			add(key{t.System, "setup", t.SetupError}, t.Round)
		}
		for _, m := range t.Tests {
			if !m.OK() {
				add(key{t.System, m.Test, oneLine(m.Error)}, t.Round)
			}
		}
		if t.TeardownError != "" {
			add(key{t.System, "teardown", oneLine(t.TeardownError)}, t.Round)
		}
	}
	var out []string
	for _, k := range order {
		rs := make([]string, len(rounds[k]))
		for i, n := range rounds[k] {
			rs[i] = fmt.Sprint(n)
		}
		out = append(out, fmt.Sprintf("**%s**, %s (round %s): %s", k.system, k.what, strings.Join(rs, ", "), oneLine(k.err)))
	}
	return out
}

// oneLine keeps an error message to one line of a list, and short.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 500 {
		s = s[:500] + "…"
	}
	return s
}
