package bench

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// recorded reads a results file a real run wrote.
func recorded(t *testing.T, name string) *Results {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var r Results
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

// TestChartsRecorded draws the charts of recorded runs: one with the sweeps
// and two flanneld rows that could not run (no binary), and one from
// before the sweeps, which has only the headline chart. Every PNG must
// decode; what they show is checked by eye (see the README).
func TestChartsRecorded(t *testing.T) {
	for _, tt := range []struct {
		file   string
		charts []string
	}{
		{"results-sweeps.json", []string{"headline", SweepWindow, SweepUDPSize, SweepTCPSize}},
		{"results-latency.json", []string{"headline"}},
	} {
		t.Run(tt.file, func(t *testing.T) {
			r := recorded(t, tt.file)
			dir := t.TempDir()
			charts, err := WriteCharts(dir, "bench-x", r)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, c := range charts {
				names = append(names, c.Name)
				if want := filepath.Join(dir, "bench-x-"+c.Name+".png"); c.Path != want {
					t.Errorf("%s at %s, want %s", c.Name, c.Path, want)
				}
				f, err := os.Open(c.Path)
				if err != nil {
					t.Fatal(err)
				}
				img, err := png.Decode(f)
				f.Close()
				if err != nil {
					t.Fatalf("%s: %v", c.Path, err)
				}
				if b := img.Bounds(); b.Dx() < 800 || b.Dy() < 400 {
					t.Errorf("%s is %v: too small to read", c.Name, b)
				}
			}
			if !slices.Equal(names, tt.charts) {
				t.Errorf("charts %v, want %v", names, tt.charts)
			}
		})
	}
}

// TestReportRecorded checks the Markdown report of a recorded run with
// sweeps and failed rows against its golden file: the run's machine and
// command, the charts by file name, every sweep's table, and why the
// flanneld rows failed.
func TestReportRecorded(t *testing.T) {
	r := recorded(t, "results-sweeps.json")
	if again := SummarizeSweeps(r.Systems, r.Runs); !reflect.DeepEqual(again, r.Sweeps) {
		t.Errorf("summarising the sweeps again changed them:\n got %+v\nwant %+v", again, r.Sweeps)
	}
	charts, err := WriteCharts(t.TempDir(), "bench-x", r)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteReport(&b, r, charts, nil); err != nil {
		t.Fatal(err)
	}
	golden(t, "report-sweeps.md.golden", b.Bytes())
	for _, want := range []string{
		"![Headline: medians, with the ratio to kernel-vxlan](bench-x-headline.png)",
		"![TCP throughput across TCP window sizes](bench-x-tcp_window.png)",
		"| kernel | Linux 6.18.44-fc-v1045 |",
		"| command | `bin/overlayd-lab bench",
		"**flanneld-udp**, setup (round 1): flanneld-udp: flanneld binary: stat /nonexistent/flanneld: no such file or directory",
		"| flanneld-vxlan | failed | failed | failed |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	var text bytes.Buffer
	if err := WriteTable(&text, r); err != nil {
		t.Fatal(err)
	}
	golden(t, "table-sweeps.golden", text.Bytes())
}

// TestReportInterrupted: a run stopped by Ctrl-C says so at the top of
// its report and table.
func TestReportInterrupted(t *testing.T) {
	r := recorded(t, "results-sweeps.json")
	r.Interrupted = "interrupted in round 1 of 3, during overlayd-udp: the figures are of what was measured until then"
	var md, text bytes.Buffer
	if err := WriteReport(&md, r, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := WriteTable(&text, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "**Interrupted:** interrupted in round 1 of 3") {
		t.Errorf("report does not say it was interrupted:\n%s", md.String()[:400])
	}
	if !strings.Contains(text.String(), "INTERRUPTED: interrupted in round 1 of 3") {
		t.Errorf("table does not say it was interrupted")
	}
}

// TestWriteFilesCharts: the JSON, the report and the charts land side by
// side, and the report links the charts by their file names.
func TestWriteFilesCharts(t *testing.T) {
	r := recorded(t, "results-sweeps.json")
	path := filepath.Join(t.TempDir(), "bench-y.json")
	files, err := WriteFiles(path, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(files.Charts) != 4 {
		t.Fatalf("charts %v, want 4", files.Charts)
	}
	report, err := os.ReadFile(files.Report)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range files.Charts {
		if filepath.Dir(c) != filepath.Dir(path) {
			t.Errorf("chart %s not beside %s", c, path)
		}
		if !strings.Contains(string(report), "]("+filepath.Base(c)+")") {
			t.Errorf("report does not link %s", filepath.Base(c))
		}
	}
}
