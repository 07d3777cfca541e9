package bench

import (
	"bufio"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The charts are PNGs drawn by gonum/plot, whose fonts (Liberation) are
// compiled in: they render without network access or system fonts.

// Chart is one PNG of a run.
type Chart struct {
	Name  string // "headline" or a sweep's name
	Title string
	Path  string
}

const chartDPI = 96

// headlinePanel is one bar chart of the headline figure.
type headlinePanel struct {
	title  string
	format string
	value  func(Summary) Stat
	lower  bool // lower is better: the ratio reads the other way
}

var headlinePanels = []headlinePanel{
	{"TCP throughput, 1 stream (Gbit/s)", "%.2f", func(s Summary) Stat { return s.TCP1Gbps }, false},
	{"TCP throughput, 4 streams (Gbit/s)", "%.2f", func(s Summary) Stat { return s.TCP4Gbps }, false},
	{"64-byte UDP packet rate (kpps delivered)", "%.0f", func(s Summary) Stat { return s.UDP64KPPS }, false},
	{"CPU per Gbit, machine-wide (CPU s; lower is better)", "%.3f", func(s Summary) Stat { return s.CPUPerGbit }, true},
	{"TCP_RR latency p50 (µs; lower is better)", "%.1f", func(s Summary) Stat { return s.TCPRRP50 }, true},
	{"TCP_RR latency p99 (µs; lower is better)", "%.1f", func(s Summary) Stat { return s.TCPRRP99 }, true},
}

// WriteCharts draws the run's charts as PNGs named <base>-<name>.png in
// dir: the headline bars, then one line chart per sweep.
func WriteCharts(dir, base string, r *Results) ([]Chart, error) {
	var out []Chart
	if len(r.Medians) > 0 {
		c := Chart{Name: "headline", Title: "Headline: medians, with the ratio to " + Baseline, Path: filepath.Join(dir, base+"-headline.png")}
		if err := writeHeadline(c.Path, r); err != nil {
			return out, fmt.Errorf("chart %s: %w", c.Path, err)
		}
		out = append(out, c)
	}
	for _, d := range sweepDefs {
		sums := r.sweepOf(d.name)
		if len(sums) == 0 {
			continue
		}
		c := Chart{Name: d.name, Title: d.title, Path: filepath.Join(dir, base+"-"+d.name+".png")}
		if err := writeSweep(c.Path, d, sums, r.Systems); err != nil {
			return out, fmt.Errorf("chart %s: %w", c.Path, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// palette tells ten systems apart (Tableau 10, reordered), more than
// plotutil's seven.
var palette = []color.RGBA{
	{0x4e, 0x79, 0xa7, 0xff}, // blue
	{0xf2, 0x8e, 0x2b, 0xff}, // orange
	{0x59, 0xa1, 0x4f, 0xff}, // green
	{0xe1, 0x57, 0x59, 0xff}, // red
	{0xb0, 0x7a, 0xa1, 0xff}, // purple
	{0x9c, 0x75, 0x5f, 0xff}, // brown
	{0xff, 0x9d, 0xa7, 0xff}, // pink
	{0x76, 0xb7, 0xb2, 0xff}, // teal
	{0xbc, 0xbd, 0x22, 0xff}, // olive
	{0x79, 0x70, 0x6e, 0xff}, // grey
}

// systemIndex is a system's place in the run, which picks its color and
// glyph in every chart; -1 if it is not in the run.
func systemIndex(systems []string, name string) int {
	for i, s := range systems {
		if s == name {
			return i
		}
	}
	return -1
}

func systemColor(systems []string, name string) color.Color {
	i := systemIndex(systems, name)
	if i < 0 {
		return color.Gray{Y: 128}
	}
	return palette[i%len(palette)]
}

// writeHeadline draws one horizontal bar chart per headline metric, in a
// grid, each bar labelled with its value and its ratio to the baseline.
func writeHeadline(path string, r *Results) error {
	var base *Summary
	for i := range r.Medians {
		if r.Medians[i].System == Baseline {
			base = &r.Medians[i]
		}
	}
	const cols = 2
	rowsN := (len(headlinePanels) + cols - 1) / cols
	grid := make([][]*plot.Plot, rowsN)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
	}
	for i, panel := range headlinePanels {
		p, err := headlinePlot(panel, r, base)
		if err != nil {
			return err
		}
		grid[i/cols][i%cols] = p
	}
	w := 13 * vg.Inch
	h := vg.Length(rowsN)*(vg.Length(len(r.Medians))*0.42*vg.Inch+1.1*vg.Inch) + 0.6*vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(chartDPI))
	dc := draw.New(img)
	title := fmt.Sprintf("overlayd bench %s: medians of %d round(s); ×: ratio to %s in the same run",
		r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Rounds, Baseline)
	if r.Interrupted != "" {
		title += " (interrupted)"
	}
	dc.FillText(titleStyle(12), vg.Point{X: w / 2, Y: h - 0.3*vg.Inch}, title)
	tiles := draw.Tiles{Rows: rowsN, Cols: cols, PadTop: 0.55 * vg.Inch, PadX: 0.4 * vg.Inch, PadY: 0.25 * vg.Inch, PadLeft: 0.1 * vg.Inch, PadRight: 0.2 * vg.Inch, PadBottom: 0.1 * vg.Inch}
	canvases := plot.Align(grid, tiles, dc)
	for i := range grid {
		for j, p := range grid[i] {
			if p != nil {
				p.Draw(canvases[i][j])
			}
		}
	}
	return writePNG(path, img)
}

func titleStyle(size vg.Length) text.Style {
	s := plot.New().Title.TextStyle
	s.Font.Size = size
	s.XAlign = draw.XCenter
	s.YAlign = draw.YCenter
	return s
}

// headlinePlot is one panel: a bar per system, the first at the top.
func headlinePlot(panel headlinePanel, r *Results, base *Summary) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = panel.title
	p.Title.TextStyle.Font.Size = vg.Points(11)
	n := len(r.Medians)
	names := make([]string, n)
	var xys plotter.XYs
	var labels []string
	maxV := 0.0
	for i, s := range r.Medians {
		y := float64(n - 1 - i)
		names[n-1-i] = s.System
		st := panel.value(s)
		label := stat(st, panel.format)
		switch {
		case st.Runs == 0 && st.Failed == 0:
			label = "not measured"
		case st.Runs == 0:
			label = "failed"
		default:
			bar, err := plotter.NewBarChart(plotter.Values{st.Median}, vg.Points(14))
			if err != nil {
				return nil, err
			}
			bar.Horizontal = true
			bar.XMin = y
			bar.Color = systemColor(r.Systems, s.System)
			bar.LineStyle.Width = 0
			p.Add(bar)
			maxV = max(maxV, st.Median)
			if base != nil {
				if q := Ratio(st, panel.value(*base)); q != nil {
					label += fmt.Sprintf("   ×%.2f", *q)
				}
			}
		}
		xys = append(xys, plotter.XY{X: max(st.Median, 0), Y: y})
		labels = append(labels, label)
	}
	lab, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
	if err != nil {
		return nil, err
	}
	for i := range lab.TextStyle {
		lab.TextStyle[i].YAlign = draw.YCenter
		lab.TextStyle[i].Font.Size = vg.Points(9)
	}
	lab.Offset = vg.Point{X: vg.Points(4)}
	p.Add(lab)
	p.NominalY(names...)
	p.Y.Tick.Label.Font.Size = vg.Points(9)
	p.X.Min = 0
	if maxV <= 0 {
		maxV = 1
	}
	p.X.Max = maxV * 1.55 // room for the labels
	p.X.Tick.Label.Font.Size = vg.Points(8)
	p.Add(plotter.NewGrid())
	return p, nil
}

// writeSweep draws a sweep: throughput against its parameter on a log
// scale, a line per system. Systems without points are named as failed
// in the legend.
func writeSweep(path string, d sweepDef, sums []SweepSummary, systems []string) error {
	p := plot.New()
	p.Title.Text = d.title + " (median Gbit/s delivered)"
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.Title.Padding = vg.Points(10)
	p.X.Label.Text = d.xLabel
	p.Y.Label.Text = "Gbit/s"
	p.X.Scale = plot.LogScale{}
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	p.Add(plotter.NewGrid())
	top := 0.0
	for _, s := range sums {
		var xys plotter.XYs
		failed := 0
		for _, pt := range s.Points {
			if pt.Gbps.Runs == 0 {
				failed++
				continue
			}
			xys = append(xys, plotter.XY{X: float64(pt.X), Y: pt.Gbps.Median})
			top = max(top, pt.Gbps.Median)
		}
		switch {
		case len(xys) == 0 && (s.SetupFailed > 0 || failed > 0):
			p.Legend.Add(s.System + " (failed)")
			continue
		case len(xys) == 0:
			p.Legend.Add(s.System + " (not measured)")
			continue
		}
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return err
		}
		c := systemColor(systems, s.System)
		line.Color, line.Width = c, vg.Points(2)
		points.Color, points.Shape, points.Radius = c, plotutil.Shape(max(systemIndex(systems, s.System), 0)), vg.Points(3.5)
		p.Add(line, points)
		name := s.System
		if failed > 0 {
			name += fmt.Sprintf(" (%d point(s) failed)", failed)
		}
		p.Legend.Add(name, line, points)
	}
	xt := sweepTicks(d, sums)
	if len(xt) == 0 {
		return fmt.Errorf("%s: no points", d.name)
	}
	p.X.Tick.Marker = plot.ConstantTicks(xt)
	// Room for the legend above the lines.
	p.Y.Max = max(top, 0.01) * (1.15 + 0.05*float64(len(sums)))
	p.X.Min, p.X.Max = xt[0].Value/1.25, xt[len(xt)-1].Value*1.25
	img := vgimg.NewWith(vgimg.UseWH(10*vg.Inch, 5.5*vg.Inch), vgimg.UseDPI(chartDPI))
	p.Draw(draw.New(img))
	return writePNG(path, img)
}

// sweepTicks labels a sweep's x axis at its points. The message-size
// sweeps end at a size that differs a little per system (their MTUs), so
// those last points share one label, "8922-8972", at the largest.
func sweepTicks(d sweepDef, sums []SweepSummary) []plot.Tick {
	full := d.name != SweepWindow
	xs := map[int]bool{}
	lo, hi := 0, 0
	for _, s := range sums {
		for i, p := range s.Points {
			if full && i == len(s.Points)-1 {
				if lo == 0 || p.X < lo {
					lo = p.X
				}
				hi = max(hi, p.X)
				continue
			}
			xs[p.X] = true
		}
	}
	var out []plot.Tick
	for _, x := range sortedKeys(xs) {
		out = append(out, plot.Tick{Value: float64(x), Label: formatBytes(x)})
	}
	switch {
	case hi == 0:
	case lo == hi:
		out = append(out, plot.Tick{Value: float64(hi), Label: formatBytes(hi)})
	default:
		out = append(out, plot.Tick{Value: float64(hi), Label: fmt.Sprintf("%d-%d", lo, hi)})
	}
	return out
}

func writePNG(path string, img *vgimg.Canvas) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// chartBase is the charts' file name stem for a results file.
func chartBase(jsonPath string) string {
	return strings.TrimSuffix(filepath.Base(jsonPath), filepath.Ext(jsonPath))
}
